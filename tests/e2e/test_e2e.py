"""The whole product on the real local cluster, as a user gets it.

`helm install` of the chart with its defaults -- two operator replicas electing a leader
through a Lease, the admission webhook on (called by Service reference, with the certificate
the operator issues), the pod network, the in-cluster `kubernetes` Service -- with only the
images overridden (they are built here, tests/images, and imported into the node). Then, as a
user would: a bad job is refused at `kubectl apply`; the example FineTuneJob trains in a real
pod against the Snowflake emulator, reports progress, succeeds and is served; its prediction is
asked through the serving Service's ClusterIP; the operator's /metrics tell the story. A
PretrainJob and a FineTuneJob that starts from its model follow. Then availability: the
leader's pod is deleted while jobs run (they finish, nothing is created twice, no transition
is lost), the takeover time is measured, `helm upgrade` rolls the operator while a job runs
with admission answering throughout, and `helm uninstall` leaves only the CRDs. A
TrainingSchedule ticks every minute through its lifecycle on the real trainer, probe and model
server (new data only, the gate, a canary promoted, a canary that never loads rolled back).

What the test cluster genuinely lacks, and is therefore set here beyond the images:
- no image registry: the operator and trainer images are imported into the node; their
  tags are set (the chart's `IfNotPresent` pull policy then uses the imported copies);
- no model hub: the base model is a tiny one on a hostPath volume (`pvc://`);
- no Snowflake account: the Secret points at an emulator on the host's pod-network address;
- a 2-core node: jobs ask for half a core and little memory, and train a few steps; the
  model server's liveness probe waits longer (torch loads slowly on half a shared core).

Wall times of each phase are printed (run with -s) for the closing note.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.cluster import KubeCluster, Kubectl
from tests.fixtures.models import build_tiny_classifier
from tests.fixtures.snowflake import SnowflakeDB, fresh_database
from tests.images.build import build
from tests.images.spec import OPERATOR, TRAINER
from tests.tools.helm import helm

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow, pytest.mark.snowflake]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts/snowtrain"
EXAMPLES = ROOT / "manifests/examples"
CLAIM = "snowtrain-models"  # the claim the examples write to
GROUP_VERSION = "snowtrain.io/v1alpha1"
TIMINGS: dict[str, Any] = {}


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


@dataclass
class Release:
    """The installed chart: where it lives and how to reach its parts."""

    name: str
    namespace: str
    kubeconfig: Path
    kubectl: Kubectl

    @property
    def fullname(self) -> str:
        return f"{self.name}-snowtrain"

    @property
    def webhook_configuration(self) -> str:
        return f"{self.fullname}-{self.namespace}"

    def helm(self, *args: str, check: bool = False) -> Any:
        kube = ["--kubeconfig", str(self.kubeconfig), "--namespace", self.namespace]
        return helm(*args, *kube, check=check)

    def operator_pods(self) -> list[dict[str, Any]]:
        out = self.kubectl(
            "get", "pods", "-n", self.namespace, "-o", "json",
            "-l", f"app.kubernetes.io/instance={self.name},app.kubernetes.io/component=operator",
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["items"]

    def leader(self) -> str | None:
        """The Lease holder's identity (`<pod>_<suffix>`), or None while nobody holds it."""
        out = self.kubectl("get", "lease", f"{self.fullname}-leader", "-n", self.namespace,
                           "-o", "jsonpath={.spec.holderIdentity}")  # fmt: skip
        return out.stdout.strip() or None if out.returncode == 0 else None

    def wait_ready(self, replicas: int = 2, timeout: float = 300) -> None:
        out = self.kubectl(
            "rollout", "status", f"deployment/{self.fullname}", "-n", self.namespace,
            f"--timeout={int(timeout)}s", timeout=timeout + 30,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr + self.logs()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = [p for p in self.operator_pods() if _pod_ready(p)]
            if len(ready) == replicas and not any(
                p["metadata"].get("deletionTimestamp") for p in self.operator_pods()
            ):
                return
            time.sleep(0.5)
        pytest.fail(f"operator replicas not ready:\n{self.logs()}")

    def logs(self) -> str:
        out = self.kubectl("logs", "-n", self.namespace, "--tail=40", "--prefix",
                           "-l", f"app.kubernetes.io/instance={self.name}")  # fmt: skip
        return out.stdout[-6000:]


def _pod_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


@pytest.fixture(scope="module")
def e2e_namespace(kubectl: Kubectl) -> Iterator[str]:
    """One namespace for the release and the jobs (module scope: one install for all)."""
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    created = kubectl("create", "namespace", name)
    assert created.returncode == 0, created.stderr
    deadline = time.monotonic() + 30  # 1.20 admits pods once the SA token exists
    while time.monotonic() < deadline:
        sa = kubectl("get", "sa", "default", "-n", name, "-o", "jsonpath={.secrets}")
        if sa.stdout.strip():
            break
        time.sleep(0.2)
    yield name
    kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="module")
def release(
    kube_cluster: KubeCluster, kubectl: Kubectl, e2e_namespace: str, images: dict[str, str]
) -> Iterator[Release]:
    """`helm install` of the chart with its defaults; only the images are set."""
    rel = Release(f"e2e-{uuid.uuid4().hex[:6]}", e2e_namespace, kube_cluster.kubeconfig, kubectl)
    op_repo, op_tag = _repo(images["operator"])
    tr_repo, tr_tag = _repo(images["trainer"])
    values = [
        f"--set=image.repository={op_repo}",
        f"--set=image.tag={op_tag}",
        f"--set=trainerImage.repository={tr_repo}",
        f"--set=trainerImage.tag={tr_tag}",
    ]
    with timed("helm install (2 replicas ready)"):
        # --take-ownership: the test session applied manifests/crds before the chart existed.
        result = rel.helm("install", rel.name, str(CHART), *values, "--take-ownership",
                          "--wait", "--timeout", "300s")  # fmt: skip
        if result.returncode != 0:
            pytest.fail(f"helm install failed: {result.stderr}\n{rel.logs()}")
        rel.wait_ready()
    try:
        yield rel
    finally:
        print(rel.logs())
        kubectl("delete", "batchpredictions,finetunejobs,pretrainjobs", "--all", "-n", rel.namespace,
                "--timeout=120s", timeout=150)  # fmt: skip
        rel.helm("uninstall", rel.name, "--wait", "--timeout", "120s")
        # A failed uninstall must never leave a Fail-policy webhook gating later tests.
        kubectl("delete", "validatingwebhookconfiguration", rel.webhook_configuration,
                "--ignore-not-found")  # fmt: skip


@pytest.fixture(scope="module")
def models_dir(kubectl: Kubectl, e2e_namespace: str) -> Iterator[Path]:
    """A hostPath PersistentVolume bound to the examples' claim (no provisioner here), with
    a tiny base classifier on it (no model hub here)."""
    host_dir = Path(tempfile.mkdtemp(prefix="snowtrain-e2e-models-"))
    host_dir.chmod(0o777)  # pods run as uid 1000; hostPath ignores fsGroup
    pv = f"{e2e_namespace}-models"
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
                "claimRef": {"namespace": e2e_namespace, "name": CLAIM},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": CLAIM, "namespace": e2e_namespace},
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
    base = build_tiny_classifier(host_dir / "base/tiny-classifier")
    for path in [base, *base.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    try:
        yield host_dir
    finally:
        kubectl("delete", "pv", pv, "--wait=false")
        shutil.rmtree(host_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def sfdb(
    cluster_snowflake_server: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
    kubectl: Kubectl,
    e2e_namespace: str,
) -> Iterator[SnowflakeDB]:
    """The seeded emulator database, and the example Secret pointing at it."""
    host, port = cluster_snowflake_server["host"], cluster_snowflake_server["port"]
    with fresh_database(host, port, tmp_path_factory.mktemp("sf")) as db:
        _seed(db)
        _apply(kubectl, _credentials_secret(db, e2e_namespace))
        yield db


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
    """What every example needs here: the emulator's database, a 2-core node."""
    spec["data"]["snowflake"]["database"] = db.database
    spec["data"]["snowflake"]["schema"] = db.schema
    spec["resources"].update({"cpu": "500m", "memory": "3Gi"})
    if spec.get("serving"):
        # Half a shared core loads torch slowly: give the server time before liveness counts.
        slow_start = {"name": "server", "livenessProbe": {"initialDelaySeconds": 180}}
        spec["serving"].update(
            resources={"cpu": "500m", "memory": "1Gi"},
            podTemplate={"spec": {"containers": [slow_start]}},
        )
    spec["backoffLimit"] = 0


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


def _wait_phase_in(
    kubectl: Kubectl, namespace: str, kind: str, name: str, phases: set[str], timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        obj = _get(kubectl, namespace, kind, name)
        if (obj.get("status") or {}).get("phase") in phases:
            return obj
        time.sleep(1)
    pytest.fail(f"{kind}/{name} never reached {phases}: {json.dumps(obj.get('status'))}")


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


def _service_url(kubectl: Kubectl, namespace: str, service: str) -> str:
    """http://<ClusterIP>:<port> of a Service: the host routes ClusterIPs like a node does."""
    out = kubectl("get", "service", service, "-n", namespace, "-o", "json")
    assert out.returncode == 0, out.stderr
    spec = json.loads(out.stdout)["spec"]
    return f"http://{spec['clusterIP']}:{spec['ports'][0]['port']}"


def _post(url: str, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def _apply(kubectl: Kubectl, obj: dict[str, Any]) -> None:
    result = kubectl("apply", "-f", "-", input=yaml.safe_dump(obj))
    assert result.returncode == 0, result.stderr


def _finetune(name: str, namespace: str, db: SnowflakeDB, *, steps: int, serving: bool) -> dict:
    """The example FineTuneJob, sized for this node, starting from the tiny base model."""
    ftj = yaml.safe_load((EXAMPLES / "finetune.yaml").read_text())
    ftj["metadata"] = {"name": name, "namespace": namespace}
    spec = ftj["spec"]
    if not serving:
        spec.pop("serving")
    _cluster_sized(spec, db)
    spec["baseModel"] = {"uri": f"pvc://{CLAIM}/base/tiny-classifier"}  # no hub here
    spec["training"].update({"maxSteps": steps, "batchSize": 8, "maxSeqLength": 32})
    return ftj


def _metrics(pod_ip: str, port: int = 8081) -> dict[str, float]:
    """One replica's /metrics as {'name{labels}': value} (what Prometheus scrapes)."""
    with urllib.request.urlopen(f"http://{pod_ip}:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def _sum(samples: dict[str, float], prefix: str, *parts: str) -> float:
    return sum(v for k, v in samples.items() if k.startswith(prefix) and all(p in k for p in parts))


def _transitions(kubectl: Kubectl, namespace: str, name: str) -> list[tuple[str, str]]:
    """(from, to) of every phase-transition Event the operator posted for a job, in order."""
    out = kubectl("get", "events", "-n", namespace, "-o", "json",
                  "--field-selector", f"involvedObject.name={name}")  # fmt: skip
    assert out.returncode == 0, out.stderr
    events = [
        e for e in json.loads(out.stdout)["items"]
        if (e.get("source") or {}).get("component") == "snowtrain-operator"
    ]  # fmt: skip
    events.sort(key=lambda e: (e.get("firstTimestamp") or "", e["metadata"]["creationTimestamp"]))
    pairs = []
    for e in events:
        head = e["message"].split(":", 1)[0]
        before, _, after = head.partition(" -> ")
        pairs.append((before, after))
    return pairs


def _assert_unbroken(pairs: list[tuple[str, str]], final: str) -> None:
    """Every transition starts where the previous ended: none lost, none posted twice."""
    assert pairs, "no transition Events"
    assert pairs[0][0] == "New", pairs
    for (_, prev_to), (nxt_from, _) in itertools.pairwise(pairs):
        assert nxt_from == prev_to, pairs
    assert pairs[-1][1] == final, pairs


def _assert_network_policies(kubectl: Kubectl, namespace: str, name: str, uid: str) -> None:
    """The chart's default (networkPolicy.enabled) gave the job its two policies, created by
    the in-cluster operator under the chart's RBAC and owned by the job. (This cluster's
    bridge CNI does not enforce them; what they select and allow is unit-tested.)"""
    out = kubectl("get", "networkpolicies", "-n", namespace, "-l", f"snowtrain.io/job={name}",
                  "-o", "json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    policies = {p["metadata"]["name"]: p for p in json.loads(out.stdout)["items"]}
    assert set(policies) == {f"{name}-training", f"{name}-serve"}, set(policies)
    for policy in policies.values():
        assert policy["metadata"]["ownerReferences"][0]["uid"] == uid
        assert policy["spec"]["policyTypes"] == ["Ingress"]


def _training_jobs(kubectl: Kubectl, namespace: str, name: str) -> list[str]:
    out = kubectl("get", "jobs.batch", "-n", namespace, "-l", f"snowtrain.io/job={name}",
                  "-o", "jsonpath={.items[*].metadata.name}")  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_default_install_refuses_bad_jobs_trains_serves_and_reports(
    kubectl: Kubectl, release: Release, models_dir: Path, sfdb: SnowflakeDB
) -> None:
    start = time.monotonic()
    ns = release.namespace

    # -- 0. a bad spec is refused at apply time, through the webhook, with field and reason -----
    bad = _finetune("bad-lora", ns, sfdb, steps=8, serving=False)
    bad["spec"]["training"]["lora"] = {"r": 8}  # LoRA is for causal-lm jobs only
    with timed("webhook: bad job refused"):
        refused = kubectl("apply", "-f", "-", input=yaml.safe_dump(bad))
    assert refused.returncode != 0
    assert "admission webhook" in refused.stderr, refused.stderr
    assert "spec.training.lora" in refused.stderr and "causal-lm" in refused.stderr

    # -- 1. the example FineTuneJob --------------------------------------------------------
    ftj = _finetune("sentiment-minilm", ns, sfdb, steps=8, serving=True)
    name = ftj["metadata"]["name"]
    with timed("finetune: apply -> Succeeded"):
        _apply(kubectl, ftj)
        obj, progress = _wait_phase(kubectl, ns, "finetunejob", name, timeout=900)
    status = obj["status"]
    assert status["phase"] == "Succeeded", json.dumps(status)
    assert progress, "no progress was ever reported while running"
    assert status["progress"]["percent"] == pytest.approx(100)
    assert status["metrics"]["trainLoss"] > 0
    assert status["model"]["uri"].startswith(f"pvc://{CLAIM}/")
    with timed("finetune: serving ready"):
        obj = _wait_serving(kubectl, ns, "finetunejob", name)
    url = _service_url(kubectl, ns, obj["status"]["serving"]["service"])
    with timed("finetune: prediction through the Service's ClusterIP"):
        answer = _post(f"{url}/v1/models/{name}:predict", {"instances": ["love it"]})
    assert answer["predictions"][0]["label"] in {"positive", "negative", "neutral"}
    _assert_network_policies(kubectl, ns, name, obj["metadata"]["uid"])

    # -- 2. what the operator's /metrics say after that -----------------------------------
    scraped = [_metrics(p["status"]["podIP"]) for p in release.operator_pods()]
    leaders = [m for m in scraped if m.get("snowtrain_operator_leader") == 1]
    assert len(leaders) == 1, [m.get("snowtrain_operator_leader") for m in scraped]
    (lead,) = leaders
    assert _sum(lead, "snowtrain_operator_reconcile_duration_seconds_count", "FineTuneJob") > 0
    assert lead['snowtrain_operator_jobs{kind="FineTuneJob",phase="Succeeded"}'] >= 1
    assert _sum(lead, "snowtrain_operator_workqueue_wait_seconds_count") > 0
    assert "snowtrain_operator_workqueue_depth" in " ".join(lead)
    assert _sum(lead, "snowtrain_operator_api_requests_total") > 0
    denied = sum(_sum(m, "snowtrain_operator_webhook_decisions_total", "denied") for m in scraped)
    assert denied >= 1

    # -- 3. a PretrainJob, and a FineTuneJob that starts from its model --------------------------
    ptj = yaml.safe_load((EXAMPLES / "pretrain.yaml").read_text())
    pname = ptj["metadata"]["name"]
    ptj["metadata"]["namespace"] = ns
    pspec = ptj["spec"]
    _cluster_sized(pspec, sfdb)
    pspec["architecture"]["size"] = "tiny"
    pspec["tokenizer"].update({"vocabSize": 300, "minFrequency": 1})
    pspec["training"].update({"epochs": 1, "maxSteps": 6, "batchSize": 4, "maxSeqLength": 32})
    pspec.pop("serving", None)
    child = {
        "apiVersion": GROUP_VERSION,
        "kind": "FineTuneJob",
        "metadata": {"name": "qa-from-pretrained", "namespace": ns},
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
            "serving": {"enabled": True, "auth": {"secretRef": {"name": "serve-token"}}},
        },
    }
    token = secrets.token_urlsafe(24)
    created = kubectl("create", "secret", "generic", "serve-token", "-n", ns,
                      f"--from-literal=token={token}")  # fmt: skip
    assert created.returncode == 0, created.stderr
    _cluster_sized(child["spec"], sfdb)
    # Half a core each: the first model server goes, so the node fits the next pods.
    kubectl("delete", "finetunejob", name, "-n", ns, "--timeout=90s")
    with timed("pretrain + dependent finetune: apply -> Succeeded"):
        _apply(kubectl, ptj)
        _apply(kubectl, child)  # waits for the PretrainJob
        pobj, _ = _wait_phase(kubectl, ns, "pretrainjob", pname, timeout=900)
        assert pobj["status"]["phase"] == "Succeeded", json.dumps(pobj["status"])
        cobj, _ = _wait_phase(kubectl, ns, "finetunejob", "qa-from-pretrained", 900)
    assert cobj["status"]["phase"] == "Succeeded", json.dumps(cobj["status"])
    with timed("dependent finetune: serving ready"):
        cobj = _wait_serving(kubectl, ns, "finetunejob", "qa-from-pretrained")
    url = _service_url(kubectl, ns, cobj["status"]["serving"]["service"])
    ask = {"model": "qa-from-pretrained", "prompt": "question 3:", "max_tokens": 4}
    with pytest.raises(urllib.error.HTTPError) as no_token:
        _post(f"{url}/v1/completions", ask)
    assert no_token.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as wrong_token:
        _post(f"{url}/v1/completions", ask, token=token + "x")
    assert wrong_token.value.code == 401
    completion = _post(f"{url}/v1/completions", ask, token=token)
    assert isinstance(completion["choices"][0]["text"], str)
    kubectl("delete", "finetunejobs,pretrainjobs", "--all", "-n", ns, "--timeout=90s")
    TIMINGS["product flow total (after install)"] = round(time.monotonic() - start, 1)


def _trainer_events(kubectl: Kubectl, namespace: str, job: str, event: str) -> list[dict]:
    """The trainer's ``event`` lines from every training pod of ``job`` (rank 0 writes them,
    on whichever pod it ran)."""
    out = kubectl("logs", "-n", namespace, "--tail=-1", "--max-log-requests=10",
                  "-l", f"snowtrain.io/job={job},app.kubernetes.io/component=trainer")  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return [e for e in lines if isinstance(e, dict) and e.get("event") == event]


def test_two_pods_train_like_one_and_a_deleted_pod_resumes(
    kubectl: Kubectl, release: Release, models_dir: Path, sfdb: SnowflakeDB
) -> None:
    """Several nodes on Kubernetes 1.20 (no Indexed Jobs) without cluster DNS: two pods meet
    at their store's ClusterIP and train with gloo (no GPUs here) as one pod with twice the
    batch does, within a few percent at every evaluation; a pod deleted mid-run ends the
    attempt and the next one resumes.

    Not to rounding: each rank reads and draws its batches from its own share of the rows
    (sharded ingest), so a step's 8 examples are not the one pod's 8. That two pods train
    exactly as two ranks of one pod is shown to rounding in
    tests/integration/test_trainer_launch.py (same launcher, same store)."""
    ns = release.namespace
    # Dropout off (a base model made for this test): each rank's own dropout masks would add
    # noise of their own to the comparison.
    base = build_tiny_classifier(models_dir / "base/no-dropout", dropout=0.0)
    for path in [base, *base.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)

    def job(name: str, nodes: int, batch: int, steps: int) -> dict[str, Any]:
        ftj = _finetune(name, ns, sfdb, steps=steps, serving=False)
        spec = ftj["spec"]
        spec["baseModel"] = {"uri": f"pvc://{CLAIM}/base/no-dropout"}
        spec["resources"]["nodes"] = nodes
        spec["training"].update(
            batchSize=batch, evalEverySteps=2, checkpoint={"everySteps": 4}, learningRate=1e-3
        )
        return ftj

    with timed("multi-node: one pod (batch 8) and two pods (batch 4 each) -> Succeeded"):
        _apply(kubectl, job("one-pod", 1, 8, 12))
        _apply(kubectl, job("two-pods", 2, 4, 12))
        for name in ("one-pod", "two-pods"):
            obj, _ = _wait_phase(kubectl, ns, "finetunejob", name, timeout=900)
            assert obj["status"]["phase"] == "Succeeded", json.dumps(obj["status"])
    one = {e["step"]: e["evalLoss"] for e in _trainer_events(kubectl, ns, "one-pod", "eval")}
    two = {e["step"]: e["evalLoss"] for e in _trainer_events(kubectl, ns, "two-pods", "eval")}
    print(f"[e2e] eval loss by step, one pod: {one}, two pods: {two}", flush=True)
    assert sorted(two) == sorted(one) and len(one) >= 6, (one, two)
    for step, loss in one.items():  # the same curve within tolerance (other batches, above)
        assert two[step] == pytest.approx(loss, rel=0.06), (step, one, two)
    # and it is a curve, not two untrained models agreeing (this tiny set's eval loss rises)
    assert max(one.values()) - min(one.values()) > 1e-2, one
    [start] = _trainer_events(kubectl, ns, "two-pods", "start")
    assert start["ranks"] == 2
    assert _training_jobs(kubectl, ns, "two-pods") == ["two-pods-a1"]  # the store is gone
    assert kubectl("get", "service", "two-pods-a1-rdzv", "-n", ns).returncode != 0

    with timed("multi-node: a pod deleted mid-run -> resumed -> Succeeded"):
        # Enough steps that the run is far from done when its first checkpoint (step 4) is
        # seen and a pod deleted (the poll below is 1 s; a step of two gloo pods is longer).
        _apply(kubectl, job("lose-a-pod", 2, 4, 160))
        checkpoints = models_dir / "finetunejob" / ns / "lose-a-pod"
        deadline = time.monotonic() + 600
        while not list(checkpoints.rglob("step-*/meta.json")):
            assert time.monotonic() < deadline, "no checkpoint in 600 s"
            time.sleep(1)  # polls the shared volume (the hostPath) for the first checkpoint
        pods = kubectl("get", "pods", "-n", ns, "-o", "name", "-l",
                       "snowtrain.io/job=lose-a-pod,app.kubernetes.io/component=trainer")  # fmt: skip
        assert len(pods.stdout.split()) == 2, pods.stdout
        kubectl("delete", pods.stdout.split()[0], "-n", ns, "--wait=false")
        obj, _ = _wait_phase(kubectl, ns, "finetunejob", "lose-a-pod", timeout=900)
    status = obj["status"]
    assert status["phase"] == "Succeeded", json.dumps(status)
    # backoffLimit 0 (set for this node): the pod's loss ends the attempt; the next resumes
    assert status["job"]["attempts"] == 2, json.dumps(status)
    starts = _trainer_events(kubectl, ns, "lose-a-pod", "start")  # both attempts' rank 0
    assert any((e.get("resumedFromStep") or 0) >= 4 for e in starts), starts
    assert status["progress"]["step"] == 160
    assert _training_jobs(kubectl, ns, "lose-a-pod") == ["lose-a-pod-a1", "lose-a-pod-a2"]
    kubectl("delete", "finetunejobs", "--all", "-n", ns, "--timeout=90s")


def test_batch_prediction_writes_every_row_once_and_survives_a_deleted_pod(
    kube_cluster: KubeCluster,
    kubectl: Kubectl,
    release: Release,
    models_dir: Path,
    sfdb: SnowflakeDB,
) -> None:
    """The example BatchPrediction over 100k rows, scoring with a FineTuneJob's model: it
    waits for the training, its pod is deleted mid-run (a preemption) and the next pod goes
    on from the committed rows; the output table has every input key exactly once, with the
    labels the model server gives for the same texts."""
    import pyarrow as pa

    ns = release.namespace
    rows = 100_000
    words = ["great", "terrible", "okay", "love", "broke", "fine", "product", "value", "poor"]
    texts = [" ".join(words[(i * k) % len(words)] for k in (1, 3, 7)) for i in range(rows)]
    sfdb.seed_table("REVIEWS_100K", pa.table({"ID": list(range(rows)), "TEXT": texts}))
    bp = yaml.safe_load((EXAMPLES / "batch-prediction.yaml").read_text())
    bp["metadata"]["namespace"] = ns
    spec = bp["spec"]
    spec["model"] = {"fineTuneJobRef": {"name": "scorer"}}
    spec["input"].update(table="REVIEWS_100K", batchRows=5000)
    spec["input"]["snowflake"].update(database=sfdb.database, schema=sfdb.schema)
    spec["input"]["snowflake"].pop("warehouse")
    spec["output"].update(table="REVIEWS_SCORED", commitRows=5000)
    spec["resources"] = {"cpu": "500m", "memory": "2Gi"}  # this node's share
    name = bp["metadata"]["name"]
    bad = json.loads(json.dumps(bp))
    bad["spec"]["input"]["keyColumns"] = ["LABEL"]  # an output column's name
    refused = kubectl("apply", "-f", "-", input=yaml.safe_dump(bad))
    assert refused.returncode != 0 and "admission webhook" in refused.stderr, refused.stderr
    assert "spec.input.keyColumns" in refused.stderr and "output column" in refused.stderr
    with timed("batch prediction: applied before its model -> Waiting"):
        _apply(kubectl, bp)
        waiting = _wait_phase_in(kubectl, ns, "batchprediction", name, {"Waiting"}, 120)
    assert "scorer" in json.dumps(waiting["status"]["conditions"])
    with timed("batch prediction: its model's FineTuneJob -> Succeeded, served"):
        _apply(kubectl, _finetune("scorer", ns, sfdb, steps=8, serving=True))
        trained, _ = _wait_phase(kubectl, ns, "finetunejob", "scorer", timeout=900)
        assert trained["status"]["phase"] == "Succeeded", json.dumps(trained["status"])
    with timed("batch prediction: first rows committed"):
        # The predictor's own lines (the status lags them by the refresh interval, and the
        # whole run takes seconds): the pod goes once a chunk is committed, mid-run.
        selector = f"snowtrain.io/job={name}"
        deadline = time.monotonic() + 600
        while True:
            pods = kubectl("get", "pods", "-n", ns, "-o", "name", "-l", selector)
            logs = kubectl("logs", "-n", ns, "-l", selector, "--tail=-1")
            lines = re.findall(r"^\{.*\}$", logs.stdout, re.M)
            done = [e["rowsDone"] for e in map(json.loads, lines) if e.get("event") == "rows"]
            if done and 5_000 <= done[-1] < rows:
                break
            assert not done or done[-1] < rows, "the run ended before its pod could be deleted"
            assert time.monotonic() < deadline, logs.stdout[-2000:]
            time.sleep(0.2)  # polls the pod's log: the run takes seconds
    (pod,) = pods.stdout.split()
    # The deleted pod's last words (its log goes with it): followed from before the delete.
    follow = subprocess.Popen(
        [kube_cluster.kubectl_bin, "--kubeconfig", str(kube_cluster.kubeconfig), "logs", "-f", pod,
         "-n", ns], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deleted = kubectl("delete", pod, "-n", ns, "--wait=false")  # SIGTERM, as preemption does
    assert deleted.returncode == 0, deleted.stderr
    with timed("batch prediction: resumed by a new pod -> Succeeded"):
        obj, _ = _wait_phase(kubectl, ns, "batchprediction", name, timeout=900)
    status = obj["status"]
    follow.terminate()
    first_words = follow.communicate(timeout=30)[0]
    said = kubectl("logs", "-n", ns, "-l", selector, "--tail=-1", "--prefix").stdout
    print(f"[e2e] the deleted pod:\n{first_words[-4000:]}\n[e2e] the others:\n{said[-4000:]}")
    assert status["phase"] == "Succeeded", json.dumps(status)
    assert status["rows"]["done"] == status["rows"]["total"] == rows
    assert status["rows"]["resumedFrom"] >= 5_000, json.dumps(status)
    pods = kubectl("get", "pods", "-n", ns, "-o", "name", "-l", selector)
    assert pods.stdout.split() and pod not in pods.stdout.split(), pods.stdout  # replaced
    assert status["output"]["table"] == "REVIEWS_SCORED"
    assert status["model"]["name"] == "FineTuneJob/scorer"
    count, distinct, low, high = sfdb.execute(
        'SELECT COUNT(*), COUNT(DISTINCT "ID"), MIN("ID"), MAX("ID") FROM REVIEWS_SCORED'
    )[0]
    assert (count, distinct, low, high) == (rows, rows, 0, rows - 1)
    served = _wait_serving(kubectl, ns, "finetunejob", "scorer")
    url = _service_url(kubectl, ns, served["status"]["serving"]["service"])
    sample = list(range(0, rows, 4999))
    answers = _post(f"{url}/v1/models/scorer:predict", {"instances": [texts[i] for i in sample]})
    got = dict(sfdb.execute(
        f'SELECT "ID", "LABEL" FROM REVIEWS_SCORED WHERE "ID" IN ({", ".join(map(str, sample))})'
    ))  # fmt: skip
    assert [got[i] for i in sample] == [p["label"] for p in answers["predictions"]]
    kubectl("delete", "batchpredictions,finetunejobs", "--all", "-n", ns, "--timeout=90s")


def test_sql_front_door_turns_a_row_into_a_served_job_and_keeps_its_history(
    kubectl: Kubectl, release: Release, models_dir: Path, sfdb: SnowflakeDB, tmp_path: Path
) -> None:
    """The chart's sqlFrontDoor switched on with `helm upgrade`: an analyst's INSERT into the
    request table starts a FineTuneJob that trains and serves, a bad row is answered with the
    reason, and RUNS shows the run while it trains and after it is deleted."""
    ns = release.namespace
    sfdb.run_script(ROOT / "manifests/sql/snowtrain.sql")
    template = _finetune("template", ns, sfdb, steps=8, serving=True)["spec"]
    for key in ("baseModel",):
        template.pop(key)
    template["data"].pop("table")
    values = {
        "sqlFrontDoor": {
            "enabled": True,
            "snowflakeSecret": "snowflake-credentials",  # the emulator's; a bridge's own in life
            "database": sfdb.database,
            "schema": sfdb.schema,
            "requestTable": f"{sfdb.database}.PUBLIC.FINETUNE_REQUESTS",
            "runsTable": f"{sfdb.database}.PUBLIC.RUNS",
            "pollSeconds": 2,
            "template": {
                "allowedBaseModels": {"tiny": f"pvc://{CLAIM}/base/tiny-classifier"},
                "spec": template,
            },
        }
    }
    values_file = tmp_path / "front-door.yaml"
    values_file.write_text(yaml.safe_dump(values))
    with timed("sql front door: helm upgrade -> bridge ready"):
        upgraded = release.helm("upgrade", release.name, str(CHART), "--reuse-values",
                                "-f", str(values_file), "--wait", "--timeout", "300s")  # fmt: skip
        assert upgraded.returncode == 0, upgraded.stderr
        rolled = kubectl("rollout", "status", f"deployment/{release.fullname}-sql-front-door",
                         "-n", ns, "--timeout=180s", timeout=200)  # fmt: skip
        assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    sfdb.execute(
        "INSERT INTO FINETUNE_REQUESTS (BASE_MODEL, TRAINING_DATA, EPOCHS, MODEL_NAME) "
        "VALUES ('tiny', ?, 1, 'from-sql'), ('gpt-17', ?, 1, 'never')",
        (f"{sfdb.database}.PUBLIC.SENTIMENT", f"{sfdb.database}.PUBLIC.SENTIMENT"),
    )

    def answers() -> dict[str, tuple[str, str, str]]:
        rows = sfdb.execute(
            "SELECT MODEL_NAME, STATUS, JOB_NAME, MESSAGE FROM FINETUNE_REQUESTS "
            "WHERE STATUS IS NOT NULL"
        )
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def bridge_log() -> str:
        selector = "app.kubernetes.io/component=sql-front-door"
        pods = kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "wide")
        logs = kubectl("logs", "-n", ns, "-l", selector, "--tail=60")
        return f"{pods.stdout}{pods.stderr}\n{logs.stdout}{logs.stderr}"

    with timed("sql front door: rows answered"):
        deadline = time.monotonic() + 120
        while len(answers()) < 2:
            assert time.monotonic() < deadline, bridge_log()
            time.sleep(1)  # polls the request table for the bridge's answers
    got = answers()
    assert got["from-sql"][:2] == ("ACCEPTED", "from-sql"), got
    assert got["never"][0] == "REFUSED" and got["never"][2].startswith("BASE_MODEL"), got

    def run(*columns: str) -> tuple[Any, ...] | None:
        found = sfdb.execute(
            f"SELECT {', '.join(columns)} FROM RUNS WHERE NAME = 'from-sql' AND NAMESPACE = ?",
            (ns,),
        )
        return found[0] if found else None

    with timed("sql front door: RUNS shows the run while it trains"):
        deadline = time.monotonic() + 600
        while (run("PHASE") or ("",))[0] not in ("Running", "Succeeded"):
            assert time.monotonic() < deadline, run("PHASE", "STATUS")
            time.sleep(1)  # polls RUNS, which the bridge writes every pollSeconds
    with timed("sql front door: trained and served"):
        obj = _wait_serving(kubectl, ns, "finetunejob", "from-sql")
    url = _service_url(kubectl, ns, obj["status"]["serving"]["service"])
    answer = _post(f"{url}/v1/models/from-sql:predict", {"instances": ["love it"]})
    assert answer["predictions"][0]["label"] in {"positive", "negative", "neutral"}
    deleted = kubectl("delete", "finetunejob", "from-sql", "-n", ns, "--timeout=90s")
    assert deleted.returncode == 0, deleted.stderr
    with timed("sql front door: RUNS keeps the deleted run"):
        deadline = time.monotonic() + 60
        while not (run("DELETED_AT IS NOT NULL") or (False,))[0]:
            assert time.monotonic() < deadline, run("PHASE", "DELETED_AT")
            time.sleep(1)  # polls RUNS for the bridge's deletion mark
    phase, loss, model, request = run("PHASE", "METRICS:trainLoss", "MODEL_URI", "REQUEST_ID") or ()
    assert phase == "Succeeded" and float(loss) > 0 and model.startswith(f"pvc://{CLAIM}/")
    assert (
        request
        == sfdb.execute("SELECT REQUEST_ID FROM FINETUNE_REQUESTS WHERE MODEL_NAME = 'from-sql'")[
            0
        ][0]
    )
    (description,) = sfdb.execute(
        "SELECT DESCRIPTION FROM RUN_DESCRIPTIONS WHERE ID = ?", (f"{ns}/from-sql",)
    )[0]
    assert json.loads(description)["status"] == "Succeeded"
    off = release.helm("upgrade", release.name, str(CHART), "--reuse-values",
                       "--set", "sqlFrontDoor.enabled=false", "--wait", "--timeout", "120s")  # fmt: skip
    assert off.returncode == 0, off.stderr


_CUES = {
    "positive": ["great product", "love it", "works well", "excellent value", "very happy"],
    "negative": ["broke fast", "terrible", "waste of money", "very poor", "do not buy"],
    "neutral": ["it is okay", "average", "nothing special", "fine i guess", "so so"],
}


def _reviews(first_id: int, copies: int, rotate: bool = False) -> Any:
    """``copies`` of every cue with its label, or (``rotate``) with the next label: rows
    whose labels were shuffled in a systematic way, which a model learns as readily."""
    import pyarrow as pa

    labels = list(_CUES)
    rows = [
        (text, labels[(labels.index(label) + 1) % 3] if rotate else label)
        for label, texts in _CUES.items()
        for text in texts
    ] * copies
    return pa.table(
        {
            "ID": list(range(first_id, first_id + len(rows))),
            "TEXT": [t for t, _ in rows],
            "LABEL": [lab for _, lab in rows],
        }
    )


def _record(status: dict[str, Any], run: str, reason: str) -> dict[str, Any] | None:
    """The run's history record once it says ``reason`` (later ticks may come before it)."""
    records = status.get("history") or []
    return next((r for r in records if r.get("name") == run and r.get("reason") == reason), None)


def _insert(db: SnowflakeDB, table: str, rows: Any) -> None:
    """New rows arrive in ``table``: loaded as a batch table, then one INSERT ... SELECT."""
    batch = db.seed_table(f"{table}_BATCH_{rows.column('ID')[0].as_py()}", rows)
    db.execute(f"INSERT INTO {table} (ID, TEXT, LABEL) SELECT ID, TEXT, LABEL FROM {batch}")


def test_a_schedule_retrains_on_new_data_gates_canaries_and_rolls_back(
    kubectl: Kubectl, release: Release, models_dir: Path, sfdb: SnowflakeDB
) -> None:
    """The TrainingSchedule story on the real trainer, probe and model server: a run every
    minute when the table changed, each gated against the model in service on a fixed
    validation table, promoted through a canary, a canary that never gets ready rolled back
    while a client sees only 200s, and the history limit."""
    ns = release.namespace
    name = "reviews-nightly"
    sfdb.seed_table("REVIEWS_STREAM", _reviews(0, 4))
    sfdb.seed_table("REVIEWS_HOLDOUT", _reviews(10_000, 1))
    template = _finetune("template", ns, sfdb, steps=300, serving=False)["spec"]
    template["data"].update(table="REVIEWS_STREAM", validation={"table": "REVIEWS_HOLDOUT"})
    template["training"].update(learningRate=1e-3, warmupRatio=0.0, epochs=3)
    template["promotion"] = {"metric": "evalAccuracy", "threshold": 0.5, "maxRegression": 0.34}
    served = _finetune("s", ns, sfdb, steps=1, serving=True)["spec"]["serving"]
    served["canary"] = {"replicas": 1, "durationSeconds": 20}
    schedule = yaml.safe_load((EXAMPLES / "training-schedule.yaml").read_text())
    schedule["metadata"] = {"name": name, "namespace": ns}
    schedule["spec"].update(
        schedule="* * * * *", timeZone="UTC", startingDeadlineSeconds=300,
        successfulRunsHistoryLimit=2, serving=served,
        jobTemplate={"kind": "FineTuneJob", "spec": template},
    )  # fmt: skip

    def status() -> dict[str, Any]:
        return _get(kubectl, ns, "trainingschedule", name).get("status") or {}

    def wait(what: str, check: Any, timeout: float = 600) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = check(status())
            if got:
                return got
            time.sleep(2)  # ticks are a minute apart; runs take minutes on half a core
        pytest.fail(f"{name}: {what} never happened: {json.dumps(status(), indent=1)}")

    def newest(**want: Any) -> dict[str, Any]:
        # The newest record that matches, not the newest record: a run that outlasts a minute
        # has a ConcurrencyForbid tick recorded after its own record.
        def check(st: dict[str, Any]) -> dict[str, Any] | None:
            records = st.get("history") or []
            return next((r for r in records if all(r.get(k) == v for k, v in want.items())), None)

        return wait(f"a tick with {want}", check)  # type: ignore[no-any-return]

    def in_service(run: str) -> dict[str, Any]:
        def check(st: dict[str, Any]) -> dict[str, Any] | None:
            ready = any(c["type"] == "Serving" and c["status"] == "True" for c in st.get("conditions", []))  # fmt: skip
            return st if (st.get("inService") or {}).get("run") == run and ready else None

        return wait(f"{run} in service", check)  # type: ignore[no-any-return]

    with timed("schedule: apply -> first run promoted and served"):
        _apply(kubectl, schedule)
        first = newest(phase="Succeeded")
        run1 = first["name"]
        st = in_service(run1)
    assert first["promoted"] is True and first["dataRows"] == 60
    url = _service_url(kubectl, ns, st["serving"]["service"])
    predict = f"{url}/v1/models/{name}:predict"
    texts = {"instances": ["love it", "terrible", "average"]}
    before = _post(predict, texts)["predictions"]

    with timed("schedule: unchanged data -> tick skipped"):
        skipped = newest(phase="Skipped", reason="DataUnchanged")
    assert run1 in skipped["message"]

    with timed("schedule: shuffled labels -> gate failed, nothing changes"):
        _insert(sfdb, "REVIEWS_STREAM", _reviews(1000, 20, rotate=True))
        worse = newest(phase="Succeeded", dataRows=360)
    assert worse["promoted"] is False and worse["reason"] == "GateFailed", worse
    assert worse["value"] < worse["championValue"] - 0.34, worse  # both on the same rows
    run2 = worse["name"]
    assert _post(predict, texts)["predictions"] == before  # served predictions unchanged

    with timed("schedule: bad rows replaced by clean ones -> canary -> promoted"):
        sfdb.execute("DELETE FROM REVIEWS_STREAM WHERE ID BETWEEN 1000 AND 1999")
        _insert(sfdb, "REVIEWS_STREAM", _reviews(2000, 4))
        better = newest(phase="Succeeded", dataRows=120)
        run3 = better["name"]
        wait("the canary", lambda st: (st.get("canary") or {}).get("run") == run3)
        st = in_service(run3)
    assert st["previous"]["run"] == run1

    # A model that does not load: its canary never gets ready, its server exits with the
    # reason and the canary is rolled back at once (not after readyTimeoutSeconds), while a
    # client hammering the Service sees only answers from the model in service.
    answers: list[int] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                request = urllib.request.Request(predict, data=json.dumps(texts).encode(), headers={"Content-Type": "application/json"})  # fmt: skip
                with urllib.request.urlopen(request, timeout=30) as resp:
                    answers.append(resp.status)
            except urllib.error.HTTPError as exc:
                answers.append(exc.code)
            except OSError:
                answers.append(-1)  # refused or reset: a dropped request
            time.sleep(0.2)  # a steady trickle, not a load test

    loop = threading.Thread(target=client, daemon=True)
    loop.start()
    try:
        with timed("schedule: broken canary -> rolled back"):
            _insert(sfdb, "REVIEWS_STREAM", _reviews(9000, 1))
            run4 = newest(phase="Succeeded", dataRows=135)["name"]
            model_dir = wait("run 4's canary", lambda st: (st.get("canary") or {}).get("model"))
            weights = models_dir / model_dir.removeprefix(f"pvc://{CLAIM}/")
            for f in weights.glob("*.safetensors"):
                f.unlink()  # before the canary's server (still importing torch) reads it
            rolled = wait(f"{run4}'s rollback", lambda st: _record(st, run4, "CanaryFailed"))
            assert "exited 1" in rolled["message"], rolled
            assert "model failed to load" in rolled["message"], rolled
            assert status()["inService"]["run"] == run3
    finally:
        stop.set()
        loop.join(60)
    assert answers and set(answers) == {200}, sorted(set(answers))

    # History limit 2: run 2 (neither in service, nor previous) is gone with its model; the
    # pin, suspend and the operator killed mid-run are in tests/integration (same code path,
    # a fake trainer: minutes cheaper).
    listed = kubectl("get", "finetunejobs", "-n", ns, "-l", f"snowtrain.io/schedule={name}", "-o", "json")  # fmt: skip
    runs = {j["metadata"]["name"] for j in json.loads(listed.stdout)["items"]}
    assert run2 not in runs and {run1, run3} <= runs, runs
    assert not (models_dir / f"finetunejob/{ns}/{run2}").exists() or wait(
        "run 2's model directory to go",
        lambda _: not (models_dir / f"finetunejob/{ns}/{run2}").exists(),
        120,
    )
    kubectl("delete", "trainingschedule", name, "-n", ns, "--wait=true", timeout=120)


def test_leader_pod_deleted_while_jobs_run(
    kubectl: Kubectl, release: Release, models_dir: Path, sfdb: SnowflakeDB
) -> None:
    """The leader goes away mid-job; a job is created during the handover. Another replica
    takes the Lease (the seconds it took are reported), both jobs finish, each with exactly
    one training Job, and every phase transition is on record once."""
    ns = release.namespace
    _apply(kubectl, _finetune("during-handover-1", ns, sfdb, steps=30, serving=False))
    _wait_phase_in(kubectl, ns, "finetunejob", "during-handover-1", {"Running"}, timeout=300)
    old = release.leader()
    assert old, "no leader holds the Lease"
    old_pod = old.rsplit("_", 1)[0]
    start = time.monotonic()
    kubectl("delete", "pod", old_pod, "-n", ns, "--wait=false")
    # Admitted by the other replica's webhook (or the leaving one, still serving until its
    # endpoint is gone), reconciled by whichever leads next.
    _apply(kubectl, _finetune("during-handover-2", ns, sfdb, steps=8, serving=False))
    while release.leader() in (None, old):
        assert time.monotonic() < start + 120, f"no takeover within 120 s:\n{release.logs()}"
        time.sleep(0.1)  # the takeover's seconds are the figure: poll finely
    TIMINGS["takeover seconds"] = round(time.monotonic() - start, 2)
    print(
        f"[e2e] takeover within {TIMINGS['takeover seconds']} s (a job applied meanwhile)",
        flush=True,
    )
    for job in ("during-handover-1", "during-handover-2"):
        obj, _ = _wait_phase(kubectl, ns, "finetunejob", job, timeout=900)
        assert obj["status"]["phase"] == "Succeeded", json.dumps(obj["status"])
        assert _training_jobs(kubectl, ns, job) == [f"{job}-a1"]
        assert obj["status"]["job"]["attempts"] == 1
        _assert_unbroken(_transitions(kubectl, ns, job), "Succeeded")
    new = release.leader()
    assert new and new.rsplit("_", 1)[0] != old_pod
    release.wait_ready()
    kubectl("delete", "finetunejobs", "--all", "-n", ns, "--timeout=90s")


def test_helm_upgrade_rolls_the_operator_while_a_job_runs(
    kubectl: Kubectl, release: Release, models_dir: Path, sfdb: SnowflakeDB
) -> None:
    ns = release.namespace
    _apply(kubectl, _finetune("through-upgrade", ns, sfdb, steps=30, serving=False))
    _wait_phase_in(kubectl, ns, "finetunejob", "through-upgrade", {"Running"}, timeout=300)
    probe = yaml.safe_dump(_finetune("admission-probe", ns, sfdb, steps=1, serving=False))
    answers: list[str] = []
    done = threading.Event()

    def ask_admission() -> None:
        """A server-side dry run goes through the webhook and creates nothing; asked until
        the upgrade is done, and once more after."""
        while True:
            finished = done.is_set()
            out = kubectl("apply", "--dry-run=server", "-f", "-", input=probe)
            answers.append("ok" if out.returncode == 0 else out.stderr.strip())
            if finished:
                return
            time.sleep(0.5)

    asker = threading.Thread(target=ask_admission, daemon=True)
    asker.start()
    with timed("helm upgrade (a changed value, rolled)"):
        upgraded = release.helm(
            "upgrade", release.name, str(CHART), "--reuse-values", "--set", "logFormat=plain",
            "--wait", "--timeout", "300s",
        )  # fmt: skip
        release.wait_ready()
    done.set()
    asker.join(30)
    assert upgraded.returncode == 0, upgraded.stderr + release.logs()
    env = {
        e["name"]: e.get("value")
        for p in release.operator_pods()
        for e in p["spec"]["containers"][0]["env"]
    }
    assert env["SNOWTRAIN_LOG_FORMAT"] == "plain"
    failures = [a for a in answers if a != "ok"]
    print(f"[e2e] admission during the upgrade: {len(answers)} asked, {len(failures)} failed")
    assert answers and not failures, failures
    obj, _ = _wait_phase(kubectl, ns, "finetunejob", "through-upgrade", timeout=900)
    assert obj["status"]["phase"] == "Succeeded", json.dumps(obj["status"])
    assert _training_jobs(kubectl, ns, "through-upgrade") == ["through-upgrade-a1"]
    kubectl("delete", "finetunejobs", "--all", "-n", ns, "--timeout=90s")


def test_helm_uninstall_leaves_only_the_crds(kubectl: Kubectl, release: Release) -> None:
    """What the chart documents it keeps: the CRDs (and with them every job). Nothing else:
    no Lease, no webhook Secret or configuration, no RBAC, no peering objects."""
    removed = release.helm("uninstall", release.name, "--wait", "--timeout", "120s")
    assert removed.returncode == 0, removed.stderr
    selector = f"app.kubernetes.io/instance={release.name}"
    namespaced = "deployments,services,secrets,leases,serviceaccounts,roles,rolebindings,configmaps"
    left = kubectl("get", namespaced, "-n", release.namespace, "-l", selector, "-o", "name")
    assert left.returncode == 0 and left.stdout.strip() == "", left.stdout
    for kind, name in [
        ("validatingwebhookconfiguration", release.webhook_configuration),
        ("clusterrole", release.fullname),
        ("clusterrolebinding", release.fullname),
        ("lease", f"{release.fullname}-leader"),
        ("secret", f"{release.fullname}-webhook-tls"),
    ]:
        got = kubectl("get", kind, name, "-n", release.namespace, "-o", "name")
        assert got.returncode != 0 and "NotFound" in got.stderr, (kind, name, got.stdout)
    for crd in ("finetunejobs.snowtrain.io", "pretrainjobs.snowtrain.io"):
        assert kubectl("get", "crd", crd).returncode == 0, f"{crd} deleted on uninstall"
    peering = kubectl("api-resources", "--api-group=kopf.dev", "-o", "name").stdout.strip()
    assert peering == "", "the chart installs no kopf peering CRDs any more"
    print(f"[e2e] timings: {json.dumps(TIMINGS)}", flush=True)
