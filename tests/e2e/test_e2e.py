"""The whole product on the real local cluster, as a user runs it.

Helm installs the operator (image built by tests/images, no Docker); the example
manifests/examples/finetune.yaml is applied with only what this cluster needs changed (the
Snowflake emulator's address and database, a tiny base model on a hostPath volume, CPU-sized
resources and steps, host networking because the cluster has no Service network); the real
trainer image trains in a real pod; the status reports progress, then Succeeded; the inference
Deployment becomes ready and answers a prediction. Then a PretrainJob, and a FineTuneJob that
starts from its model, served.

Wall times of each phase are printed (run with -s) for the closing note.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.cluster import KubeCluster, Kubectl
from tests.fixtures.models import build_tiny_classifier
from tests.fixtures.snowflake import SnowflakeDB
from tests.images.build import build
from tests.images.spec import OPERATOR, TRAINER
from tests.tools.helm import helm

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow, pytest.mark.snowflake]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "manifests/examples"
CLAIM = "snowtrain-models"  # the claim the examples write to
GROUP_VERSION = "snowtrain.io/v1alpha1"
TIMINGS: dict[str, float] = {}


@contextlib.contextmanager
def timed(phase: str) -> Iterator[None]:
    start = time.monotonic()
    yield
    TIMINGS[phase] = round(time.monotonic() - start, 1)
    print(f"[e2e] {phase}: {TIMINGS[phase]} s", flush=True)


def _repo(tag: str) -> tuple[str, str]:
    repo, _, version = tag.rpartition(":")
    return repo, version


@pytest.fixture(scope="module")
def images(kube_cluster: KubeCluster) -> dict[str, str]:
    """Both images built (cached) and imported into the node; name -> tag."""
    out = {}
    for spec in (OPERATOR, TRAINER):
        with timed(f"image {spec.name} build"):
            tarball, _ = build(spec)
        with timed(f"image {spec.name} import"):
            kube_cluster.import_image(tarball)
        out[spec.name] = spec.tag
    return out


@pytest.fixture
def models_dir(kubectl: Kubectl, namespace: str) -> Iterator[Path]:
    """A hostPath PersistentVolume bound to the examples' claim (no provisioner here)."""
    host_dir = Path(tempfile.mkdtemp(prefix="snowtrain-e2e-models-"))
    host_dir.chmod(0o777)  # pods run as uid 1000; hostPath ignores fsGroup
    pv = f"{namespace}-models"
    manifests = [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv},
            "spec": {
                "capacity": {"storage": "5Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": str(host_dir), "type": "Directory"},
                "claimRef": {"namespace": namespace, "name": CLAIM},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": CLAIM, "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "volumeName": pv,
                "resources": {"requests": {"storage": "5Gi"}},
            },
        },
    ]
    applied = kubectl("apply", "-f", "-", input=yaml.safe_dump_all(manifests))
    assert applied.returncode == 0, applied.stderr
    try:
        yield host_dir
    finally:
        kubectl("delete", "pv", pv, "--wait=false")
        shutil.rmtree(host_dir, ignore_errors=True)


def _apiserver(kube_cluster: KubeCluster) -> tuple[str, str]:
    config = yaml.safe_load(kube_cluster.kubeconfig.read_text())
    server = config["clusters"][0]["cluster"]["server"]
    host, port = re.match(r"https://([^:/]+):(\d+)", server).groups()  # type: ignore[union-attr]
    return host, port


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def operator_release(
    kube_cluster: KubeCluster, kubectl: Kubectl, namespace: str, images: dict[str, str]
) -> Iterator[str]:
    """`helm install` of the chart with the local images, watching the test's namespace."""
    release = f"e2e-{uuid.uuid4().hex[:6]}"
    host, port = _apiserver(kube_cluster)
    op_repo, op_tag = _repo(images["operator"])
    tr_repo, tr_tag = _repo(images["trainer"])
    values = {
        "watchNamespaces": [namespace],
        "image": {"repository": op_repo, "tag": op_tag, "pullPolicy": "Never"},
        "trainerImage": {"repository": tr_repo, "tag": tr_tag, "pullPolicy": "Never"},
        "peering": {"name": release},
        # What this cluster needs: no Service network (host networking, the API server on
        # 127.0.0.1, a free health port) and no admission webhook (its configuration is
        # cluster-wide and would gate other tests' resources).
        "hostNetwork": True,
        "healthPort": _free_port(),
        "webhook": {"enabled": False},
        "extraEnv": [
            {"name": "KUBERNETES_SERVICE_HOST", "value": host},
            {"name": "KUBERNETES_SERVICE_PORT", "value": port},
            {"name": "SNOWTRAIN_PROGRESS_REFRESH_SECONDS", "value": "2"},
        ],
    }
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(values, f)
        f.flush()
        with timed("helm install (operator ready)"):
            result = helm(
                "install",
                release,
                str(ROOT / "charts/snowtrain"),
                "--kubeconfig",
                str(kube_cluster.kubeconfig),
                "--namespace",
                namespace,
                "--values",
                f.name,
                "--take-ownership",
                "--wait",
                "--timeout",
                "180s",
                check=False,
            )
    if result.returncode != 0:
        logs = kubectl("logs", "-n", namespace, "-l", "app.kubernetes.io/component=operator")
        pytest.fail(f"helm install failed: {result.stderr}\n{logs.stdout[-3000:]}")
    try:
        yield release
    finally:
        logs = kubectl("logs", "-n", namespace, "-l", "app.kubernetes.io/component=operator")
        print(logs.stdout[-4000:])
        # Jobs first: the operator puts no finalizers on them, so this never waits for it.
        kubectl("delete", "finetunejobs,pretrainjobs", "--all", "-n", namespace, "--timeout=90s")
        helm("uninstall", release, "--kubeconfig", str(kube_cluster.kubeconfig), "-n", namespace)
        kubectl("delete", "kopfpeering", release, "-n", namespace, "--ignore-not-found")


def _credentials_secret(db: SnowflakeDB, namespace: str) -> dict[str, Any]:
    """The example Secret with the emulator's address instead of an account's."""
    secret = yaml.safe_load((EXAMPLES / "snowflake-secret.yaml").read_text())
    secret["metadata"]["namespace"] = namespace
    secret["stringData"] = {
        "account": db.account,
        "user": db.user,
        "password": db.password,
        "host": db.host,
        "port": str(db.port),
        "protocol": "http",
    }
    return secret


def _cluster_sized(spec: dict[str, Any], db: SnowflakeDB) -> None:
    """What every example needs here: the emulator, a 2-core node, host networking."""
    spec["data"]["snowflake"]["database"] = db.database
    spec["data"]["snowflake"]["schema"] = db.schema
    spec["resources"].update({"cpu": "500m", "memory": "3Gi"})
    host_network = {"spec": {"hostNetwork": True}}
    if spec.get("serving"):
        # Pod IPs are not routed from the host here, so the kubelet's HTTP probes (and we)
        # reach a model server only on the host network, on a port free on the host. Half a
        # shared core loads torch slowly: give the server time before liveness counts.
        slow_start = {"name": "server", "livenessProbe": {"initialDelaySeconds": 180}}
        spec["serving"].update(
            resources={"cpu": "500m", "memory": "1Gi"},
            port=_free_port(),
            podTemplate={"spec": {"hostNetwork": True, "containers": [slow_start]}},
        )
    spec["backoffLimit"] = 0
    spec["podTemplate"] = host_network


def _seed(db: SnowflakeDB) -> None:
    import pyarrow as pa

    good = ["great product", "love it", "works well", "excellent value", "very happy"]
    bad = ["broke fast", "terrible", "waste of money", "very poor", "do not buy"]
    meh = ["it is okay", "average", "nothing special", "fine i guess", "so so"]
    rows = [
        (t, lab)
        for lab, ts in (("positive", good), ("negative", bad), ("neutral", meh))
        for t in ts
    ]
    rows *= 4
    db.seed_table(
        "SENTIMENT",
        pa.table(
            {
                "ID": list(range(len(rows))),
                "TEXT": [t for t, _ in rows],
                "LABEL": [lab for _, lab in rows],
            }
        ),
    )
    words = [
        "the",
        "model",
        "reads",
        "snowflake",
        "rows",
        "and",
        "learns",
        "to",
        "write",
        "short",
        "text",
        "about",
        "data",
    ]
    corpus = [" ".join(words[i % 7 :] + words[: i % 7]) for i in range(120)]
    db.seed_table("CORPUS", pa.table({"TEXT": corpus}))
    db.seed_table(
        "PAIRS",
        pa.table(
            {
                "PROMPT": [f"question {i}:" for i in range(40)],
                "COMPLETION": [f" answer {i % 5}" for i in range(40)],
            }
        ),
    )


def _get(kubectl: Kubectl, namespace: str, kind: str, name: str) -> dict[str, Any]:
    out = kubectl("get", kind, name, "-n", namespace, "-o", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _wait_phase(
    kubectl: Kubectl, namespace: str, kind: str, name: str, timeout: float
) -> tuple[dict[str, Any], list[float]]:
    """Poll until Succeeded or Failed; returns the last object and the progress seen."""
    seen: list[float] = []
    deadline = time.monotonic() + timeout
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        obj = _get(kubectl, namespace, kind, name)
        status = obj.get("status") or {}
        percent = (status.get("progress") or {}).get("percent")
        if percent is not None and (not seen or seen[-1] != percent):
            seen.append(percent)
        if status.get("phase") in ("Succeeded", "Failed"):
            return obj, seen
        time.sleep(2)
    pytest.fail(f"{kind}/{name} did not finish in {timeout} s: {json.dumps(obj.get('status'))}")


def _wait_serving(kubectl: Kubectl, namespace: str, kind: str, name: str) -> dict[str, Any]:
    result = kubectl(
        "wait",
        f"{kind}/{name}",
        "-n",
        namespace,
        "--for=condition=ServingReady",
        "--timeout=300s",
        timeout=330,
    )
    obj = _get(kubectl, namespace, kind, name)
    assert result.returncode == 0, json.dumps(obj.get("status"))
    return obj


@contextlib.contextmanager
def port_forward(
    kube_cluster: KubeCluster, namespace: str, target: str, port: int
) -> Iterator[str]:
    """`kubectl port-forward` to the model server (no route from the host to pod IPs here)."""
    proc = subprocess.Popen(
        [
            kube_cluster.kubectl_bin,
            "--kubeconfig",
            str(kube_cluster.kubeconfig),
            "port-forward",
            "-n",
            namespace,
            target,
            f":{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"127\.0\.0\.1:(\d+)", line)
        assert match, line
        yield f"http://127.0.0.1:{match.group(1)}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def _apply(kubectl: Kubectl, obj: dict[str, Any]) -> None:
    result = kubectl("apply", "-f", "-", input=yaml.safe_dump(obj))
    assert result.returncode == 0, result.stderr


def test_helm_install_finetune_serve_then_pretrain_and_finetune_from_it(
    kube_cluster: KubeCluster,
    kubectl: Kubectl,
    namespace: str,
    snowflake_db: SnowflakeDB,
    models_dir: Path,
    operator_release: str,
) -> None:
    start = time.monotonic()
    _seed(snowflake_db)
    _apply(kubectl, _credentials_secret(snowflake_db, namespace))
    base = build_tiny_classifier(models_dir / "base/tiny-classifier")
    for path in [base, *base.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)

    # -- 1. the example FineTuneJob ----------------------------------------------------------
    ftj = yaml.safe_load((EXAMPLES / "finetune.yaml").read_text())
    name = ftj["metadata"]["name"]
    ftj["metadata"]["namespace"] = namespace
    spec = ftj["spec"]
    _cluster_sized(spec, snowflake_db)
    spec["baseModel"] = {"uri": f"pvc://{CLAIM}/base/tiny-classifier"}  # no hub here
    spec["training"].update({"maxSteps": 8, "batchSize": 8, "maxSeqLength": 32})
    with timed("finetune: apply -> Succeeded"):
        _apply(kubectl, ftj)
        obj, progress = _wait_phase(kubectl, namespace, "finetunejob", name, timeout=900)
    status = obj["status"]
    assert status["phase"] == "Succeeded", json.dumps(status)
    assert progress, "no progress was ever reported while running"
    assert status["progress"]["percent"] == pytest.approx(100)
    assert status["metrics"]["trainLoss"] > 0
    assert status["model"]["uri"].startswith(f"pvc://{CLAIM}/")
    with timed("finetune: serving ready"):
        obj = _wait_serving(kubectl, namespace, "finetunejob", name)
    with (
        timed("finetune: prediction"),
        port_forward(
            kube_cluster,
            namespace,
            f"svc/{obj['status']['serving']['service']}",
            spec["serving"]["port"],
        ) as url,
    ):
        answer = _post(f"{url}/v1/models/{name}:predict", {"instances": ["love it"]})
    assert answer["predictions"][0]["label"] in {"positive", "negative", "neutral"}

    # -- 2. a PretrainJob, and a FineTuneJob that starts from its model -------------------------
    ptj = yaml.safe_load((EXAMPLES / "pretrain.yaml").read_text())
    pname = ptj["metadata"]["name"]
    ptj["metadata"]["namespace"] = namespace
    pspec = ptj["spec"]
    _cluster_sized(pspec, snowflake_db)
    pspec["architecture"]["size"] = "tiny"
    pspec["tokenizer"].update({"vocabSize": 300, "minFrequency": 1})
    pspec["training"].update({"epochs": 1, "maxSteps": 6, "batchSize": 4, "maxSeqLength": 32})
    pspec.pop("serving", None)
    child = {
        "apiVersion": GROUP_VERSION,
        "kind": "FineTuneJob",
        "metadata": {"name": "qa-from-pretrained", "namespace": namespace},
        "spec": {
            "task": "causal-lm",
            "baseModel": {"pretrainJobRef": {"name": pname}},
            "data": {
                "snowflake": {"secretRef": {"name": "snowflake-credentials"}},
                "table": "PAIRS",
                "columns": {"prompt": "PROMPT", "completion": "COMPLETION"},
            },
            "training": {"maxSteps": 4, "batchSize": 4, "maxSeqLength": 32},
            "resources": {"gpusPerNode": 1},
            "output": {"volumeClaimName": CLAIM},
            "serving": {"enabled": True},
        },
    }
    _cluster_sized(child["spec"], snowflake_db)
    with timed("pretrain + dependent finetune: apply -> Succeeded"):
        _apply(kubectl, ptj)
        _apply(kubectl, child)  # waits for the PretrainJob
        pobj, _ = _wait_phase(kubectl, namespace, "pretrainjob", pname, timeout=900)
        assert pobj["status"]["phase"] == "Succeeded", json.dumps(pobj["status"])
        cobj, _ = _wait_phase(kubectl, namespace, "finetunejob", "qa-from-pretrained", 900)
    assert cobj["status"]["phase"] == "Succeeded", json.dumps(cobj["status"])
    with timed("dependent finetune: serving ready"):
        cobj = _wait_serving(kubectl, namespace, "finetunejob", "qa-from-pretrained")
    with port_forward(
        kube_cluster,
        namespace,
        f"svc/{cobj['status']['serving']['service']}",
        child["spec"]["serving"]["port"],
    ) as url:
        completion = _post(
            f"{url}/v1/completions",
            {"model": "qa-from-pretrained", "prompt": "question 3:", "max_tokens": 4},
        )
    assert isinstance(completion["choices"][0]["text"], str)
    TIMINGS["e2e total (after images)"] = round(time.monotonic() - start, 1)
    print(f"[e2e] timings: {json.dumps(TIMINGS)}", flush=True)
