"""Configuration files of one cluster: kubeconfigs, containerd, CNI, kubelet.

Everything lives under the cluster state dir and points only at 127.0.0.1, so the host's own
/etc, /var/lib/containerd or /etc/cni are never read or written. Values that are not obvious
carry their reason in a comment beside them.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.cluster import images, paths
from tests.cluster.pki import Pki

NODE_NAME = "localhost"
SERVICE_RANGE = "10.96.0.0/16"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"


@dataclass(frozen=True)
class Layout:
    """Paths inside the cluster state dir."""

    root: Path

    @property
    def suffix(self) -> str:
        """'' for the default cluster; a short hash of the state dir for any other, so a
        second cluster (e.g. the up/down test's) shares no bridge, subnet or cgroup."""
        if self.root.resolve() == (paths.cache_root() / "cluster").resolve():
            return ""
        return hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:6]

    @property
    def bridge(self) -> str:
        return f"st-{self.suffix}" if self.suffix else "snowtrain0"

    @property
    def cni_network(self) -> str:
        return f"snowtrain-{self.suffix}" if self.suffix else "snowtrain"

    @property
    def pod_subnet(self) -> str:
        third = 1 + int(self.suffix, 16) % 250 if self.suffix else 0
        return f"10.244.{third}.0/24"

    @property
    def host_ip(self) -> str:
        """The host's address on the pod bridge (the subnet's gateway): what pods reach the
        host by. The API server listens here, so the in-cluster `kubernetes` Service has a
        real endpoint; servers the pods must reach on the host (an emulator) bind here too."""
        return self.pod_subnet.rsplit(".", 1)[0] + ".1"

    @property
    def cgroup_root(self) -> str:
        """Each cgroup v1 hierarchy gets a child of this name; pods live below it (kubelet
        --cgroup-root), so `down` removes exactly this cluster's cgroups and processes."""
        return self.cni_network

    @property
    def pki(self) -> Pki:
        return Pki(self.root / "pki")

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    def component_kubeconfig(self, name: str) -> Path:
        return self.root / "kubeconfigs" / f"{name}.kubeconfig"

    @property
    def containerd(self) -> Path:
        return self.root / "containerd"

    @property
    def containerd_root(self) -> Path:
        """Image store; kept across `down` so built images survive (no mounts live here)."""
        return self.containerd / "root"

    @property
    def containerd_state(self) -> Path:
        return self.containerd / "state"

    @property
    def containerd_sock(self) -> Path:
        return self.containerd / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.containerd / "config.toml"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_ipam(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet-config.yaml"

    @property
    def state_json(self) -> Path:
        return self.root / "cluster.json"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, server: str, pki: Pki, user: str) -> Path:
    """A kubeconfig with the CA and client certificate embedded (portable, one file)."""
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "snowtrain-local",
                "cluster": {"server": server, "certificate-authority-data": _b64(pki.ca)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(pki.crt(user)),
                    "client-key-data": _b64(pki.key(user)),
                },
            }
        ],
        "contexts": [
            {"name": "snowtrain-local", "context": {"cluster": "snowtrain-local", "user": user}}
        ],
        "current-context": "snowtrain-local",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    path.chmod(0o600)
    return path


def containerd_toml(lay: Layout) -> str:
    """containerd 1.6 config with private dirs and the CRI settings this machine needs."""
    return f"""\
version = 2
root = "{lay.containerd_root}"
state = "{lay.containerd_state}"

[grpc]
  address = "{lay.containerd_sock}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{lay.containerd / "opt"}"

[plugins."io.containerd.grpc.v1.cri"]
  # No registry is reachable: the sandbox image is built locally (tests/cluster/images.py).
  sandbox_image = "{images.PAUSE_IMAGE}"
  # root here lacks CAP_SYS_RESOURCE; without this every sandbox fails with
  # "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  # Pod network namespaces are bind-mounted under our state dir, not /var/run/netns.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{lay.cni_conf_dir}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        Root = "{lay.containerd_state / "runc"}"
        SystemdCgroup = false
"""


def cni_conflist(lay: Layout) -> dict[str, object]:
    """A bridge whose address is the pods' gateway (the host, `Layout.host_ip`): pods get
    10.244.0.x in their own netns, reach each other, the host and, through kube-proxy's
    rules, Service ClusterIPs. No masquerade: nothing is routed off the machine."""
    return {
        "cniVersion": "0.4.0",
        "name": lay.cni_network,
        "plugins": [
            {
                "type": "bridge",
                "bridge": lay.bridge,
                "isGateway": True,
                # ...and the pods' default route, so they reach ClusterIPs and the host.
                "isDefaultGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": lay.pod_subnet, "gateway": lay.host_ip}]],
                    "dataDir": str(lay.cni_ipam),
                },
            }
        ],
    }


def write_cni(lay: Layout) -> None:
    lay.cni_conf_dir.mkdir(parents=True, exist_ok=True)
    (lay.cni_conf_dir / "10-snowtrain.conflist").write_text(json.dumps(cni_conflist(lay)))


def kubelet_config(lay: Layout, port: int, healthz_port: int) -> dict[str, object]:
    """KubeletConfiguration: loopback only, webhook authn/z, cgroupfs under our root."""
    pki = lay.pki
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": "127.0.0.1",
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(pki.crt("kubelet-serving")),
        "tlsPrivateKeyFile": str(pki.key("kubelet-serving")),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki.ca)},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{lay.cgroup_root}",
        "failSwapOn": False,
        # kube-proxy owns the Service rules; the kubelet adds no chains of its own.
        "makeIPTablesUtilChains": False,
        "volumePluginDir": str(lay.kubelet_root / "volume-plugins"),
        # A shared dev machine: never evict test pods for disk the tests did not use.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "resolvConf": "/etc/resolv.conf",
        "maxPods": 110,
        "serializeImagePulls": False,
        "nodeStatusReportFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
        "syncFrequency": "10s",
    }


def write_kubelet_config(lay: Layout, port: int, healthz_port: int) -> None:
    lay.kubelet_config.write_text(yaml.safe_dump(kubelet_config(lay, port, healthz_port)))


def server_url(port: int, host: str) -> str:
    return f"https://{host}:{port}"


def default_layout() -> Layout:
    return Layout(paths.cluster_dir())
