"""The host resources one cluster takes, and how `down` gives them back.

Pods live in cgroups below the cluster's own cgroup root, in network namespaces bind-mounted
under its state dir, on its own bridge, with logs in the kubelet's fixed /var/log/pods; every
function here touches only what belongs to the given layout, so a second cluster (or the
host's own containers) is never disturbed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.cluster import images
from tests.cluster.config import Layout


def cgroup_hierarchies(unified: bool = False) -> list[Path]:
    """Mounted cgroup v1 hierarchies (cpu, memory, ..., name=systemd), plus with `unified`
    the hybrid-mode cgroup2 mount, where runc mirrors the pod cgroups too."""
    types = {"cgroup", "cgroup2"} if unified else {"cgroup"}
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] in types:
            found.append(Path(fields[1]))
    return found


def prepare_cgroups(lay: Layout) -> None:
    """Create /snowtrain in every hierarchy (kubelet requires --cgroup-root to exist)."""
    for hier in cgroup_hierarchies():
        d = hier / lay.cgroup_root
        d.mkdir(exist_ok=True)
        if (hier / "cpuset.cpus").exists():
            # A new cpuset cgroup starts empty and would refuse tasks.
            for f in ("cpuset.cpus", "cpuset.mems"):
                if not (d / f).read_text().strip():
                    (d / f).write_text((hier / f).read_text())


def cgroup_pids(lay: Layout) -> set[int]:
    pids: set[int] = set()
    for hier in cgroup_hierarchies(unified=True):
        root = hier / lay.cgroup_root
        # os.walk, not rglob: a pod's cgroup removed while the tree is read (its processes
        # just ended) is skipped, where rglob raised FileNotFoundError mid-walk.
        for folder, _dirs, files in os.walk(root):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError, ValueError):
                    procs = Path(folder, "cgroup.procs").read_text().split()
                    pids.update(int(x) for x in procs)
    return pids


def kill_pod_processes(lay: Layout) -> None:
    """SIGKILL everything in our pod cgroups (containers, not the daemons)."""
    for _ in range(50):
        pids = cgroup_pids(lay)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def remove_containers(lay: Layout) -> None:
    """Delete tasks and containers from our containerd so no snapshot stays mounted."""
    ctr = images.ctr_argv(lay.containerd_sock)

    def ids(*args: str) -> list[str]:
        res = subprocess.run([*ctr, *args], capture_output=True, text=True, check=False)
        return res.stdout.split() if res.returncode == 0 else []

    for task in ids("tasks", "ls", "-q"):
        subprocess.run([*ctr, "tasks", "kill", "-s", "SIGKILL", task], capture_output=True)
        subprocess.run([*ctr, "tasks", "delete", "-f", task], capture_output=True)
    for cid in ids("containers", "ls", "-q"):
        subprocess.run([*ctr, "containers", "delete", cid], capture_output=True)


def mounts_under(root: Path) -> list[str]:
    """Mount points below root, deepest first."""
    prefix = str(root.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mnt = line.split()[4].replace("\\040", " ")
        if mnt == prefix or mnt.startswith(prefix + "/"):
            found.append(mnt)
    return sorted(set(found), key=lambda m: m.count("/"), reverse=True)


def unmount_all(root: Path) -> None:
    for _ in range(5):
        mounts = mounts_under(root)
        if not mounts:
            return
        for m in mounts:
            subprocess.run(["umount", m], capture_output=True, check=False)
        for m in mounts_under(root):
            subprocess.run(["umount", "-l", m], capture_output=True, check=False)


def remove_cgroups(lay: Layout) -> None:
    for hier in cgroup_hierarchies(unified=True):
        root = hier / lay.cgroup_root
        if not root.is_dir():
            continue
        dirs = sorted(
            (p for p in root.rglob("*") if p.is_dir()),
            key=lambda p: len(p.parts),
            reverse=True,
        )
        for d in [*dirs, root]:
            with contextlib.suppress(OSError):
                d.rmdir()


IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def prepare_network(lay: Layout, service_range: str) -> None:
    """The pod bridge with the host's address on it, before anything binds that address.

    The CNI bridge plugin would create the bridge only with the first pod; the API server
    must listen on `host_ip` before that. Service ClusterIPs are routed to the bridge, so the
    host (and the API server calling webhooks) reaches them even on a machine without a
    default route; kube-proxy's rules then rewrite them to pod addresses. A pod reaching a
    Service is forwarded back out of the same bridge, which needs IPv4 forwarding: its
    previous value is saved and restored by `remove_network`.
    """
    saved = lay.root / "ip_forward.orig"
    if not saved.exists():
        saved.write_text(IP_FORWARD.read_text().strip())
    IP_FORWARD.write_text("1")
    if not Path(f"/sys/class/net/{lay.bridge}").exists():
        _ip("link", "add", "name", lay.bridge, "type", "bridge")
    prefix = lay.pod_subnet.split("/")[1]
    _ip("addr", "replace", f"{lay.host_ip}/{prefix}", "dev", lay.bridge)
    _ip("link", "set", lay.bridge, "up")
    _ip("route", "replace", service_range, "dev", lay.bridge, "src", lay.host_ip)


def remove_network(lay: Layout) -> None:
    if Path(f"/sys/class/net/{lay.bridge}").exists():
        # Its address and the Service route go with it.
        subprocess.run(["ip", "link", "delete", lay.bridge], capture_output=True)
    saved = lay.root / "ip_forward.orig"
    if saved.exists():
        IP_FORWARD.write_text(saved.read_text().strip() or "0")
        saved.unlink()
    # libcni caches results per network name under /var/lib/cni (not configurable in 1.6).
    for cache in (Path("/var/lib/cni/results"), Path("/var/lib/cni")):
        if cache.is_dir():
            for f in cache.glob(f"{lay.cni_network}-*"):
                f.unlink(missing_ok=True)


def remove_pod_logs(lay: Layout) -> None:
    """Delete /var/log/pods entries (fixed path in kubelet 1.20) of this kubelet's pods only.

    The kubelet keeps one directory per pod UID under its root dir, so those UIDs name
    exactly the log directories and /var/log/containers links that this cluster created.
    """
    pods_dir = lay.kubelet_root / "pods"
    uids = {p.name for p in pods_dir.iterdir()} if pods_dir.is_dir() else set()
    if not uids:
        return
    log_root = Path("/var/log/pods")
    ours = [d for d in log_root.glob("*_*") if d.name.rsplit("_", 1)[-1] in uids]
    links = Path("/var/log/containers")
    if links.is_dir():
        for link in links.iterdir():
            if link.is_symlink() and any(str(d) in os.readlink(link) for d in ours):
                link.unlink(missing_ok=True)
    for d in ours:
        shutil.rmtree(d, ignore_errors=True)
