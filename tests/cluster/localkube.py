"""Bring the single-node cluster up and down.

Order matters: the pod bridge with the host's address (the API server binds it)
-> etcd -> kube-apiserver -> CRDs (before the controller-manager, whose garbage collector
otherwise learns new types only every 30 s) -> controller-manager and scheduler -> containerd
(with the CNI config already present, or the node stays NotReady) -> kubelet -> node Ready ->
fake `nvidia.com/gpu` capacity patched onto the Node status -> kube-proxy (iptables mode), which
gives Services their ClusterIPs: from the host, from pods, and from the API server calling an
admission webhook by Service reference. There is no cluster DNS: Debian packages no DNS server
that serves Kubernetes records (no CoreDNS, no kube-dns), so in-cluster clients use the
`KUBERNETES_SERVICE_*` environment and ClusterIPs, as kubelets inject them.

Only one cluster per host runs kube-proxy: its iptables chains (KUBE-SERVICES, ...) are
host-global.

`down` undoes exactly that: it stops the daemons through their PID files, kills what runs in
our pod cgroups, stops the containerd shims that belong to our socket, unmounts everything
under the state dir, removes the bridge, IPAM state and cgroups. Both are idempotent.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.cluster import build, config, debian, host, images, locks, paths, pki, procs
from tests.cluster.config import Layout
from tests.cluster.kubeapi import Api

#: Start order; `down` stops in reverse.
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "containerd",
    "kubelet",
    "kube-proxy",
)
FAKE_GPUS = "4"
GPU_RESOURCE = "nvidia.com/gpu"


@dataclass
class Cluster:
    """A running local cluster: what tests and tools need to talk to it."""

    kubeconfig: Path
    server: str
    state_dir: Path
    containerd_address: Path
    ports: dict[str, int] = field(default_factory=dict)
    node_name: str = config.NODE_NAME
    #: The host's address on the pod bridge (pods reach the host, and the API server, here).
    host_ip: str = ""
    #: True when this `up` call started the daemons (False: it was already running).
    started: bool = False

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the version-matched kubectl against this cluster."""
        return subprocess.run(
            [str(kubectl_path()), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            check=check,
        )


def _log(msg: str) -> None:
    print(f"[localkube] {msg}", file=sys.stderr, flush=True)


def kubectl_path() -> Path:
    """The kubectl built with the cluster (same version: no skew warnings)."""
    return paths.binary("kubectl")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(what: str, check: Callable[[], bool], timeout: float, lay: Layout, log: str) -> None:
    """Poll `check` until true; on timeout raise with the tail of the component's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if log and procs.pid_of(log, lay.run) is None:
            raise RuntimeError(f"{log} exited while waiting for {what}:\n{_tail(lay, log)}")
        time.sleep(0.25)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}:\n{_tail(lay, log)}")


def _tail(lay: Layout, name: str, lines: int = 30) -> str:
    path = lay.logs / f"{name}.log"
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _http_ok(url: str, expect: bytes = b"") -> bool:
    """A plain-HTTP health endpoint answers 200 (with `expect` in its body)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200 and expect in r.read()
    except OSError:
        return False


def _read_state(lay: Layout) -> dict[str, object] | None:
    try:
        return json.loads(lay.state_json.read_text())
    except (OSError, ValueError):
        return None


def _cluster_from_state(lay: Layout, state: dict[str, object]) -> Cluster:
    ports = dict(state["ports"])  # type: ignore[call-overload]
    return Cluster(
        kubeconfig=lay.kubeconfig,
        server=config.server_url(ports["apiserver"], lay.host_ip),
        state_dir=lay.root,
        containerd_address=lay.containerd_sock,
        ports=ports,
        host_ip=lay.host_ip,
    )


def running_components(lay: Layout | None = None) -> dict[str, int]:
    """Component name -> pid for those of ours that are alive."""
    lay = lay or config.default_layout()
    found = {}
    for name in COMPONENTS:
        pid = procs.pid_of(name, lay.run)
        if pid is not None:
            found[name] = pid
    return found


def is_running(lay: Layout | None = None) -> bool:
    """Every daemon of ours is alive (no API call: cheap, and true while it is busy)."""
    return len(running_components(lay)) == len(COMPONENTS)


def is_up(lay: Layout | None = None) -> bool:
    """All daemons alive, the apiserver ready and the node Ready."""
    lay = lay or config.default_layout()
    state = _read_state(lay)
    if state is None or len(running_components(lay)) != len(COMPONENTS):
        return False
    cluster = _cluster_from_state(lay, state)
    api = Api(cluster.server, lay.pki)
    return api.ok("/readyz") and _node_ready(api)


def current(lay: Layout | None = None) -> Cluster | None:
    """The running cluster, or None."""
    lay = lay or config.default_layout()
    state = _read_state(lay)
    if state is None or not is_up(lay):
        return None
    return _cluster_from_state(lay, state)


def _node_ready(api: Api) -> bool:
    try:
        status, node = api.request("GET", f"/api/v1/nodes/{config.NODE_NAME}", timeout=3.0)
    except OSError:
        return False
    if status != 200:
        return False
    conds = node.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def _sa_has_token(api: Api) -> bool:
    """1.20 admits pods only once the token controller attached a Secret to the SA."""
    try:
        status, sa = api.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")
    except OSError:
        return False
    return status == 200 and bool(sa.get("secrets"))


# ---------------------------------------------------------------------------- start


def _start_etcd(lay: Layout, ports: dict[str, int]) -> None:
    client = f"http://127.0.0.1:{ports['etcd']}"
    peer = f"http://127.0.0.1:{ports['etcd_peer']}"
    lay.etcd_data.mkdir(parents=True, exist_ok=True)
    lay.etcd_data.chmod(0o700)
    procs.start(
        "etcd",
        [
            debian.require("etcd"),
            "--name=snowtrain",
            f"--data-dir={lay.etcd_data}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=snowtrain={peer}",
            "--listen-metrics-urls=",
            "--logger=zap",
            "--log-level=warn",
            "--quota-backend-bytes=2147483648",
            "--snapshot-count=5000",
        ],
        lay.run,
        lay.logs,
    )

    _wait("etcd health", lambda: _http_ok(f"{client}/health", b'"true"'), 30, lay, "etcd")


def _start_apiserver(lay: Layout, ports: dict[str, int]) -> Api:
    p = lay.pki
    procs.start(
        "kube-apiserver",
        [
            str(paths.binary("kube-apiserver")),
            f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
            # The host's address on the pod bridge: reachable from the host and from pods,
            # and published as the endpoint of the in-cluster `kubernetes` Service.
            f"--bind-address={lay.host_ip}",
            f"--advertise-address={lay.host_ip}",
            f"--secure-port={ports['apiserver']}",
            # 1.20 would also serve unauthenticated HTTP on :8080 otherwise.
            "--insecure-port=0",
            f"--tls-cert-file={p.crt('apiserver')}",
            f"--tls-private-key-file={p.key('apiserver')}",
            f"--client-ca-file={p.ca}",
            f"--service-account-key-file={p.sa_pub}",
            f"--service-account-signing-key-file={p.sa_key}",
            f"--service-account-issuer={config.SA_ISSUER}",
            f"--kubelet-client-certificate={p.crt('apiserver-kubelet-client')}",
            f"--kubelet-client-key={p.key('apiserver-kubelet-client')}",
            "--kubelet-preferred-address-types=Hostname,InternalIP",
            "--authorization-mode=Node,RBAC",
            f"--service-cluster-ip-range={config.SERVICE_RANGE}",
            "--allow-privileged=true",
            "--profiling=false",
            "--event-ttl=1h",
            "--v=1",
        ],
        lay.run,
        lay.logs,
    )
    api = Api(config.server_url(ports["apiserver"], lay.host_ip), p)
    _wait("kube-apiserver /readyz", lambda: api.ok("/readyz"), 90, lay, "kube-apiserver")
    return api


def _start_controller_manager(lay: Layout) -> None:
    p = lay.pki
    procs.start(
        "kube-controller-manager",
        [
            str(paths.binary("kube-controller-manager")),
            f"--kubeconfig={lay.component_kubeconfig('controller-manager')}",
            "--controllers=*",
            "--use-service-account-credentials=true",
            "--leader-elect=false",
            f"--root-ca-file={p.ca}",
            f"--service-account-private-key-file={p.sa_key}",
            f"--cluster-signing-cert-file={p.ca}",
            f"--cluster-signing-key-file={p.key('ca')}",
            "--port=0",
            "--secure-port=0",
            "--v=1",
        ],
        lay.run,
        lay.logs,
    )


def _start_scheduler(lay: Layout) -> None:
    procs.start(
        "kube-scheduler",
        [
            str(paths.binary("kube-scheduler")),
            f"--kubeconfig={lay.component_kubeconfig('scheduler')}",
            "--leader-elect=false",
            "--port=0",
            "--secure-port=0",
            "--v=1",
        ],
        lay.run,
        lay.logs,
    )


def _start_containerd(lay: Layout) -> None:
    for d in (lay.containerd_root, lay.containerd_state, lay.containerd / "opt"):
        d.mkdir(parents=True, exist_ok=True)
    config.write_cni(lay)
    lay.containerd_config.write_text(config.containerd_toml(lay))
    lay.containerd_sock.unlink(missing_ok=True)
    procs.start(
        "containerd",
        [debian.require("containerd"), "--config", str(lay.containerd_config)],
        lay.run,
        lay.logs,
    )

    def serving() -> bool:
        if not lay.containerd_sock.exists():
            return False
        res = subprocess.run(
            [*images.ctr_argv(lay.containerd_sock), "version"], capture_output=True, check=False
        )
        return res.returncode == 0

    _wait("containerd socket", serving, 30, lay, "containerd")
    if not images.has_image(images.PAUSE_IMAGE, lay.containerd_sock):
        images.import_tarball(images.build_pause(), lay.containerd_sock)


def _start_kubelet(lay: Layout, ports: dict[str, int]) -> None:
    lay.kubelet_root.mkdir(parents=True, exist_ok=True)
    config.write_kubelet_config(lay, ports["kubelet"], ports["kubelet_healthz"])
    sock = f"unix://{lay.containerd_sock}"
    procs.start(
        "kubelet",
        [
            str(paths.binary("kubelet")),
            f"--config={lay.kubelet_config}",
            f"--kubeconfig={lay.component_kubeconfig('kubelet')}",
            f"--root-dir={lay.kubelet_root}",
            f"--cert-dir={lay.kubelet_root / 'pki'}",
            "--container-runtime=remote",
            f"--container-runtime-endpoint={sock}",
            f"--image-service-endpoint={sock}",
            # The apiserver reaches the kubelet (logs, exec) by this hostname; --node-ip
            # 127.0.0.1 would be refused as loopback.
            f"--hostname-override={config.NODE_NAME}",
            f"--pod-infra-container-image={images.PAUSE_IMAGE}",
            "--runtime-request-timeout=2m",
            "--v=1",
        ],
        lay.run,
        lay.logs,
    )


def _start_kube_proxy(lay: Layout, ports: dict[str, int]) -> None:
    healthz = f"127.0.0.1:{ports['kube_proxy_healthz']}"
    procs.start(
        "kube-proxy",
        [
            str(paths.binary("kube-proxy")),
            f"--kubeconfig={lay.component_kubeconfig('kube-proxy')}",
            f"--hostname-override={config.NODE_NAME}",
            "--proxy-mode=iptables",
            # Traffic from outside the pod network to a ClusterIP is masqueraded, so replies
            # from a pod find their way back through the bridge.
            f"--cluster-cidr={lay.pod_subnet}",
            f"--healthz-bind-address={healthz}",
            f"--metrics-bind-address=127.0.0.1:{ports['kube_proxy_metrics']}",
            # Leave the host's conntrack table size and timeouts alone.
            "--conntrack-max-per-core=0",
            "--conntrack-tcp-timeout-established=0",
            "--conntrack-tcp-timeout-close-wait=0",
            # root here lacks CAP_SYS_RESOURCE (see the containerd config): no -999.
            "--oom-score-adj=0",
            "--v=1",
        ],
        lay.run,
        lay.logs,
    )

    _wait(
        "kube-proxy's first sync",
        lambda: _http_ok(f"http://{healthz}/healthz"),
        60,
        lay,
        "kube-proxy",
    )


#: Chains kube-proxy 1.20's --cleanup leaves behind (it shares them with a kubelet's rules).
LEFTOVER_CHAINS = ("KUBE-PROXY-CANARY", "KUBE-MARK-DROP", "KUBE-MARK-MASQ")


def _cleanup_service_rules() -> None:
    """Remove kube-proxy's iptables chains: its own --cleanup mode, then the few chains it
    leaves (each only if nothing refers to it any more: -X refuses a referenced chain)."""
    binary = paths.binary("kube-proxy")
    if binary.exists():
        subprocess.run([str(binary), "--cleanup"], capture_output=True, check=False)
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        for table in ("nat", "filter", "mangle"):
            for chain in LEFTOVER_CHAINS:
                for op in ("-F", "-X"):
                    subprocess.run([tool, "-t", table, op, chain], capture_output=True, check=False)


def patch_fake_gpus(api: Api, count: str = FAKE_GPUS) -> None:
    """Advertise `count` nvidia.com/gpu on the node, as a device plugin would.

    The kubelet keeps extended resources it did not create, so the scheduler then places
    pods requesting GPUs; containers get no device (there is none), which the tests accept.
    """
    patch = {"status": {"capacity": {GPU_RESOURCE: count}, "allocatable": {GPU_RESOURCE: count}}}
    status, body = api.request(
        "PATCH",
        f"/api/v1/nodes/{config.NODE_NAME}/status",
        patch,
        content_type="application/merge-patch+json",
    )
    if status != 200:
        raise RuntimeError(f"patching GPU capacity failed: {status} {body}")


def apply_crds(cluster: Cluster, crds_dir: Path, timeout: float = 60) -> list[str]:
    """kubectl apply every CRD yaml in crds_dir and wait until all are Established."""
    files = sorted(p for p in crds_dir.iterdir() if p.suffix in {".yaml", ".yml", ".json"})
    if not files:
        return []
    names: list[str] = []
    for f in files:
        out = cluster.kubectl("apply", "-o", "name", "-f", str(f)).stdout
        names += [n for n in out.split() if n.startswith("customresourcedefinition")]
    if names:
        cluster.kubectl("wait", "--for=condition=Established", f"--timeout={int(timeout)}s", *names)
    return names


def up(crds_dir: Path | str | None = None, *, timeout: float = 180) -> Cluster:
    """Start the cluster unless it is already up; returns it. Builds binaries if needed."""
    lay = config.default_layout()
    build.build()  # outside the cluster lock: a cold build takes minutes
    with locks.exclusive(_lock_path(lay), "cluster up/down"):
        return _up(lay, crds_dir, timeout)


def _lock_path(lay: Layout) -> Path:
    return lay.root.parent / f".{lay.root.name}.lock"


def _up(lay: Layout, crds_dir: Path | str | None, timeout: float) -> Cluster:
    crds = Path(crds_dir) if crds_dir else None
    state = _read_state(lay)
    if state is not None and is_running(lay):
        # Never restart a running cluster others may be using because it answers slowly
        # (a loaded 2-core machine): wait for it instead.
        existing = _cluster_from_state(lay, state)
        api = Api(existing.server, lay.pki)
        _wait(
            "the running cluster",
            lambda: api.ok("/readyz") and _node_ready(api),
            120,
            lay,
            "kube-apiserver",
        )
        if crds is not None:
            apply_crds(existing, crds)
        return existing
    if running_components(lay) or state is not None or lay.run.exists():
        # Part of a previous cluster survived (crash, killed session): clear it first.
        _log("cleaning up the remains of a previous cluster first")
        _down(lay)
    build.build()
    debian.ensure_packages()
    started = time.monotonic()
    lay.root.mkdir(parents=True, exist_ok=True)
    keys = pki.ensure(lay.pki.root, (lay.host_ip,))
    ports = {
        name: _free_port()
        for name in (
            "etcd",
            "etcd_peer",
            "apiserver",
            "kubelet",
            "kubelet_healthz",
            "kube_proxy_healthz",
            "kube_proxy_metrics",
        )
    }
    server = config.server_url(ports["apiserver"], lay.host_ip)
    config.write_kubeconfig(lay.kubeconfig, server, keys, "admin")
    for comp in ("controller-manager", "scheduler", "kubelet", "kube-proxy"):
        config.write_kubeconfig(lay.component_kubeconfig(comp), server, keys, comp)
    cluster = Cluster(
        lay.kubeconfig,
        server,
        lay.root,
        lay.containerd_sock,
        ports,
        started=True,
        host_ip=lay.host_ip,
    )
    stages: dict[str, float] = {}

    def mark(stage: str) -> None:
        stages[stage] = round(time.monotonic() - started, 1)

    try:
        host.prepare_network(lay, config.SERVICE_RANGE)
        _start_etcd(lay, ports)
        mark("etcd")
        api = _start_apiserver(lay, ports)
        mark("apiserver_ready")
        crd_names = apply_crds(cluster, crds) if crds is not None else []
        mark("crds_established")
        _start_controller_manager(lay)
        _start_scheduler(lay)
        host.prepare_cgroups(lay)
        _start_containerd(lay)
        mark("containerd")
        _start_kubelet(lay, ports)
        _wait("node Ready", lambda: _node_ready(api), timeout, lay, "kubelet")
        mark("node_ready")
        patch_fake_gpus(api)
        _start_kube_proxy(lay, ports)
        mark("kube_proxy_synced")
        _wait(
            "default ServiceAccount token",
            lambda: _sa_has_token(api),
            60,
            lay,
            "kube-controller-manager",
        )
        mark("sa_token")
    except BaseException:
        _log("bring-up failed; logs are in " + str(lay.logs))
        _down(lay)
        raise
    lay.state_json.write_text(
        json.dumps(
            {
                "ports": ports,
                "crds": crd_names,
                "up_seconds": round(time.monotonic() - started, 1),
                "up_stages_seconds": stages,
            },
            indent=2,
        )
    )
    _log(f"up in {time.monotonic() - started:.1f} s; kubeconfig {lay.kubeconfig}")
    return cluster


# --------------------------------------------------------------------------- leases


def _leases(lay: Layout) -> Path:
    return lay.root / "leases"


def acquire_lease(lay: Layout | None = None) -> Path:
    """Record that this process uses the cluster (test sessions share one cluster).

    A session that started the cluster stops it at its end only when no other live process
    holds a lease, so it never pulls the cluster from under a concurrent session.
    """
    lay = lay or config.default_layout()
    d = _leases(lay)
    d.mkdir(parents=True, exist_ok=True)
    path = d / str(os.getpid())
    procs.write_pidfile(path, os.getpid())
    return path


def release_lease(path: Path) -> None:
    path.unlink(missing_ok=True)


def other_users(lay: Layout | None = None) -> int:
    """Live processes other than this one holding a lease."""
    lay = lay or config.default_layout()
    d = _leases(lay)
    if not d.is_dir():
        return 0
    count = 0
    for path in d.iterdir():
        pid = procs.pid_of(path.name, d, suffix="")
        if pid is None:
            path.unlink(missing_ok=True)
        elif pid != os.getpid():
            count += 1
    return count


# ----------------------------------------------------------------------------- stop


def down(lay: Layout | None = None) -> list[str]:
    """Stop everything `up` started and remove its traces; returns the stopped components."""
    lay = lay or config.default_layout()
    with locks.exclusive(_lock_path(lay), "cluster up/down"):
        return _down(lay)


def _down(lay: Layout) -> list[str]:
    stopped = []
    for name in ("kube-proxy", "kubelet"):
        if procs.stop(name, lay.run):
            stopped.append(name)
    _cleanup_service_rules()
    host.kill_pod_processes(lay)
    if procs.pid_of("containerd", lay.run) is not None:
        host.remove_containers(lay)
    for name in reversed(COMPONENTS[:-2]):
        if procs.stop(name, lay.run, timeout=15):
            stopped.append(name)
    # Shims re-parent to init and outlive containerd; ours carry our socket path.
    for pid in procs.shim_pids(str(lay.containerd_sock)):
        procs.stop_pid(pid, timeout=5)
    host.kill_pod_processes(lay)
    if lay.root.exists():
        host.unmount_all(lay.root)
    host.remove_cgroups(lay)
    host.remove_network(lay)
    host.remove_pod_logs(lay)
    for d in (
        lay.run,
        lay.etcd_data,
        lay.kubelet_root,
        lay.containerd_state,
        lay.containerd / "opt",
        lay.cni_ipam,
        lay.state_json,
        Path(f"{lay.containerd_sock}.ttrpc"),
    ):
        if d.is_dir():
            shutil.rmtree(d, ignore_errors=True)
        else:
            d.unlink(missing_ok=True)
    return stopped


def status(lay: Layout | None = None) -> dict[str, object]:
    """Components with pid and RSS, readiness, kubeconfig: for `python -m tests.cluster status`."""
    lay = lay or config.default_layout()
    comps = running_components(lay)
    rss = {name: procs.rss_kib(pid) // 1024 for name, pid in comps.items()}
    shims = procs.shim_pids(str(lay.containerd_sock))
    state = _read_state(lay) or {}
    return {
        "up": is_up(lay),
        "kubeconfig": str(lay.kubeconfig),
        "components": {n: {"pid": p, "rss_mib": rss[n]} for n, p in comps.items()},
        "shims": len(shims),
        "shims_rss_mib": sum(procs.rss_kib(p) for p in shims) // 1024,
        "total_rss_mib": sum(rss.values()),
        "ports": state.get("ports", {}),
        "up_seconds": state.get("up_seconds"),
        "up_stages_seconds": state.get("up_stages_seconds"),
        "build_seconds": build.build_times(),
    }
