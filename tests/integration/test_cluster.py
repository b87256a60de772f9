"""The local cluster is a real Kubernetes: a locally built image runs on the kubelet, its logs
and termination message come back through the apiserver, and the scheduler honours the
node's (fake) `nvidia.com/gpu` capacity exactly like a GPU node's."""

from __future__ import annotations

import json
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.cluster import images, procs

FAKE_TRAINER = (
    'echo \'{"step": 1, "loss": 2.5}\'; echo \'{"step": 2, "loss": 1.25}\'; '
    'echo \'{"phase": "done"}\' > /dev/termination-log'
)


def _pod(name: str, image: str, command: str, gpus: int = 0) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main",
        "image": image,
        "imagePullPolicy": "IfNotPresent",  # local tag on our node; pulled elsewhere
        "command": ["/bin/sh", "-c", command],
        "securityContext": {"runAsUser": 1000},
    }
    if gpus:
        # The client validates models: quantities must be strings.
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "containers": [container],
        },
    }


def _wait_phase(
    core: client.CoreV1Api, ns: str, name: str, phases: set[str], timeout: float = 90
) -> client.V1Pod:
    deadline = time.monotonic() + timeout
    pod = core.read_namespaced_pod(name, ns)
    while time.monotonic() < deadline:
        pod = core.read_namespaced_pod(name, ns)
        if pod.status.phase in phases:
            return pod
        time.sleep(0.5)
    events = core.list_namespaced_event(ns, field_selector=f"involvedObject.name={name}")
    raise AssertionError(
        f"pod {name} still {pod.status.phase}; events: "
        + "; ".join(f"{e.reason}: {e.message}" for e in events.items)
    )


def _require_gpus(core: client.CoreV1Api, at_least: int) -> None:
    """The local node has 4 fake GPUs; an external cluster may have none."""
    total = sum(
        int((n.status.allocatable or {}).get("nvidia.com/gpu", "0")) for n in core.list_node().items
    )
    if total < at_least:
        pytest.skip(f"cluster advertises {total} nvidia.com/gpu, test needs {at_least}")


@pytest.mark.parametrize(
    ("ref", "resolved"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("snowtrain/trainer:dev", "docker.io/snowtrain/trainer:dev"),
        ("localhost/snowtrain/pause:3.4.1", "localhost/snowtrain/pause:3.4.1"),
        ("registry.example:5000/team/op", "registry.example:5000/team/op:latest"),
    ],
)
def test_image_names_resolve_like_the_kubelet(ref: str, resolved: str) -> None:
    # ctr must store the name the kubelet asks containerd for, or pods never find the image.
    assert images.normalize(ref) == resolved


def test_image_build_writes_a_named_oci_layout_with_its_config(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "app").mkdir(parents=True)
    (rootfs / "app" / "run.sh").write_text("echo hi\n")
    out = images.build_oci(
        rootfs,
        "snowtrain/trainer:dev",
        tmp_path / "img.tar",
        entrypoint=["/bin/sh", "/app/run.sh"],
        env=["HF_HUB_OFFLINE=1"],
        user="1000",
        workdir="/app",
    )

    with tarfile.open(out) as tar:
        names = tar.getnames()
        index = json.load(tar.extractfile("index.json"))
        manifest_digest = index["manifests"][0]["digest"].split(":")[1]
        manifest = json.load(tar.extractfile(f"blobs/sha256/{manifest_digest}"))
        config = json.load(tar.extractfile(f"blobs/sha256/{manifest['config']['digest'][7:]}"))
    assert "oci-layout" in names
    annotations = index["manifests"][0]["annotations"]
    assert annotations["io.containerd.image.name"] == "docker.io/snowtrain/trainer:dev"
    assert config["config"]["Entrypoint"] == ["/bin/sh", "/app/run.sh"]
    assert "HF_HUB_OFFLINE=1" in config["config"]["Env"]
    assert config["config"]["User"] == "1000"
    assert config["config"]["WorkingDir"] == "/app"
    assert len(manifest["layers"]) == 1


def test_daemons_are_stopped_through_their_pid_files_only(tmp_path: Path) -> None:
    run, logs = tmp_path / "run", tmp_path / "logs"
    pid = procs.start("sleeper", ["sleep", "60"], run, logs)
    assert procs.pid_of("sleeper", run) == pid

    # A PID file whose process start time does not match (a recycled pid) is not ours.
    (run / "stranger.pid").write_text(f"{pid} 1\n")
    assert procs.pid_of("stranger", run) is None
    assert procs.stop("stranger", run) is False
    assert procs.alive(pid)

    assert procs.stop("sleeper", run, timeout=5) is True
    assert not procs.alive(pid)
    assert not (run / "sleeper.pid").exists()
    assert procs.stop("sleeper", run) is False  # idempotent


@pytest.mark.cluster
def test_pod_from_locally_built_image_runs_and_its_logs_come_back(
    kube_api: client.ApiClient, namespace: str, busybox_image: str
) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_pod(namespace, _pod("fake-trainer", busybox_image, FAKE_TRAINER))

    pod = _wait_phase(core, namespace, "fake-trainer", {"Succeeded", "Failed"})

    assert pod.status.phase == "Succeeded"
    assert pod.status.pod_ip.startswith("10.244.0.")  # the CNI bridge, own netns
    logs = core.read_namespaced_pod_log("fake-trainer", namespace)
    lines = [json.loads(line) for line in logs.splitlines()]
    assert lines == [{"step": 1, "loss": 2.5}, {"step": 2, "loss": 1.25}]
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 0
    assert json.loads(terminated.message) == {"phase": "done"}


@pytest.mark.cluster
def test_nonzero_exit_is_reported_with_its_code(
    kube_api: client.ApiClient, namespace: str, busybox_image: str
) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_pod(namespace, _pod("crash", busybox_image, "echo boom >&2; exit 3"))

    pod = _wait_phase(core, namespace, "crash", {"Succeeded", "Failed"})

    assert pod.status.phase == "Failed"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 3
    assert "boom" in core.read_namespaced_pod_log("crash", namespace)


@pytest.mark.cluster
def test_pod_requesting_a_gpu_is_scheduled_and_runs(
    kube_api: client.ApiClient, namespace: str, busybox_image: str
) -> None:
    core = client.CoreV1Api(kube_api)
    _require_gpus(core, 1)
    core.create_namespaced_pod(namespace, _pod("gpu-1", busybox_image, "echo gpu ok", gpus=1))

    pod = _wait_phase(core, namespace, "gpu-1", {"Succeeded", "Failed"})

    assert pod.status.phase == "Succeeded"
    assert pod.spec.node_name
    assert core.read_namespaced_pod_log("gpu-1", namespace).strip() == "gpu ok"


@pytest.mark.cluster
def test_pod_requesting_more_gpus_than_any_node_has_stays_pending(
    kube_api: client.ApiClient, namespace: str, busybox_image: str
) -> None:
    core = client.CoreV1Api(kube_api)
    _require_gpus(core, 1)
    total = sum(
        int((n.status.allocatable or {}).get("nvidia.com/gpu", "0")) for n in core.list_node().items
    )
    core.create_namespaced_pod(namespace, _pod("gpu-many", busybox_image, "true", gpus=total + 1))

    deadline = time.monotonic() + 30
    condition = None
    while time.monotonic() < deadline and condition is None:
        pod = core.read_namespaced_pod("gpu-many", namespace)
        condition = next((c for c in pod.status.conditions or [] if c.type == "PodScheduled"), None)
        time.sleep(0.5)

    assert condition is not None, "the scheduler never looked at the pod"
    assert condition.status == "False"
    assert condition.reason == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in condition.message
    assert core.read_namespaced_pod("gpu-many", namespace).status.phase == "Pending"


@pytest.mark.cluster
def test_service_cluster_ips_route_from_the_host_from_pods_and_to_the_api_server(
    kube_api: client.ApiClient, namespace: str, busybox_image: str
) -> None:
    """What a real cluster's Service network gives (kube-proxy): a ClusterIP answers from the
    host (as a node, and the API server calling a webhook), from another pod, from the pod
    behind it (hairpin), and the `kubernetes` Service reaches the API server from a pod."""
    import urllib.request

    core = client.CoreV1Api(kube_api)
    web = _pod("web", busybox_image, "mkdir -p /tmp/w && echo hello > /tmp/w/index.html && httpd -f -p 8080 -h /tmp/w")  # fmt: skip
    web["metadata"]["labels"] = {"app": "web"}
    core.create_namespaced_pod(namespace, web)
    core.create_namespaced_pod(namespace, _pod("client", busybox_image, "sleep 3600"))
    svc = core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"app": "web"},
                "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}],
            },
        },
    )
    ip = svc.spec.cluster_ip
    for name in ("web", "client"):
        _wait_phase(core, namespace, name, {"Running"})

    def from_host() -> str:
        with urllib.request.urlopen(f"http://{ip}/", timeout=5) as resp:
            return resp.read().decode().strip()

    def from_pod(pod: str, script: str) -> str:
        from kubernetes.stream import stream

        return stream(
            core.connect_get_namespaced_pod_exec, pod, namespace,
            command=["/bin/sh", "-c", script], stderr=True, stdout=True, stdin=False, tty=False,
        )  # fmt: skip

    get = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {ip} 80 | tail -1"
    deadline = time.monotonic() + 60  # kube-proxy syncs the new endpoints within moments
    while True:
        try:
            if from_host() == "hello":
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "the ClusterIP never answered from the host"
        time.sleep(0.5)
    assert from_pod("client", get).strip() == "hello"
    assert from_pod("web", get).strip() == "hello"  # through its own Service
    api_server = from_pod(
        "client",
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | "
        "nc -w 5 $KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT | head -1",
    )
    # Plain HTTP to the TLS port: the API server itself answers that it wants TLS.
    assert api_server.startswith("HTTP/1.0 400"), api_server
