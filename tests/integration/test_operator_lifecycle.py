"""The operator on the real local cluster (kube-apiserver, controller-manager, scheduler,
kubelet + containerd): resources in, Jobs and pods run, status tells the truth.

The operator runs as a subprocess on the host (fixture `operator_process`); pods run the fake
trainer image (tests/fixtures/fake_trainer.sh) until the real trainer image exists.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from snowtrain.operator.kube import get_or_none
from tests.fixtures.operator import free_port

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

GROUP, VERSION = "snowtrain.io", "v1alpha1"


def ftj(name: str, mode: str = "succeed", **spec: Any) -> dict[str, Any]:
    """A FineTuneJob running the fake trainer in `mode` (FAKE_TRAINER_MODE)."""
    env = [
        {"name": "FAKE_TRAINER_MODE", "value": mode},
        {"name": "FAKE_TRAINER_STEPS", "value": str(spec.pop("steps", 4))},
        {"name": "FAKE_TRAINER_STEP_SECONDS", "value": str(spec.pop("step_seconds", 1))},
    ]
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": {
            "baseModel": {"uri": "/models/minilm"},
            "data": {"table": "REVIEWS"},
            "resources": {"gpusPerNode": 0, "memory": "64Mi", "cpu": "100m"},
            "backoffLimit": 0,
            "podTemplate": {
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "trainer", "env": env}],
                }
            },
        },
    }
    body["spec"].update(spec)
    return body


class Api:
    """The handful of calls the tests make, bound to one namespace."""

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.ns = namespace
        self.custom = client.CustomObjectsApi(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.networking = client.NetworkingV1Api(api_client)

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        plural = body["kind"].lower() + "s"
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, plural, body)

    def get(self, name: str, plural: str = "finetunejobs") -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, plural, name)

    def patch_spec(self, name: str, spec: dict[str, Any], plural: str = "finetunejobs") -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.ns, plural, name, {"spec": spec}
        )

    def status(self, name: str, plural: str = "finetunejobs") -> dict[str, Any]:
        return self.get(name, plural).get("status") or {}

    def jobs(self, owner: str | None = None) -> list[client.V1Job]:
        selector = f"snowtrain.io/job={owner}" if owner else "snowtrain.io/job"
        return self.batch.list_namespaced_job(self.ns, label_selector=selector).items

    def wait(
        self, what: str, check: Callable[[], Any], timeout: float = 90, every: float = 0.3
    ) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = check()
            except ApiException as exc:
                if exc.status != 404:
                    raise
                last = None
            if last:
                return last
            time.sleep(every)
        raise AssertionError(f"timed out waiting for {what}; last: {last!r}")

    def wait_phase(
        self, name: str, phases: set[str], timeout: float = 90, plural: str = "finetunejobs"
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            status = self.status(name, plural)
            return status if status.get("phase") in phases else None

        try:
            return self.wait(f"{name} in {phases}", check, timeout)
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\nstatus: {json.dumps(self.status(name, plural))}"
            ) from None


def condition(status: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == ctype), {})


@pytest.fixture
def api(kube_api: client.ApiClient, namespace: str) -> Api:
    return Api(kube_api, namespace)


@pytest.fixture
def model_claim(api: Api, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A hostPath PersistentVolume bound to claim `models` (no provisioner in this cluster)."""
    root = tmp_path_factory.mktemp("models")
    root.chmod(0o777)
    pv_name = f"models-{api.ns}"
    api.core.create_persistent_volume(
        {
            "metadata": {"name": pv_name},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": str(root), "type": "Directory"},
            },
        }
    )
    api.core.create_namespaced_persistent_volume_claim(
        api.ns,
        {
            "metadata": {"name": "models"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "volumeName": pv_name,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    yield "models"
    api.core.delete_persistent_volume(pv_name)


def test_fine_tune_job_runs_reports_progress_succeeds_and_serves(
    api: Api, operator_process: Any, model_claim: str, kubectl: Callable[..., Any], tmp_path: Path
) -> None:
    port = free_port()
    body = ftj(
        "sentiment",
        steps=20,
        step_seconds=1,
        resources={"gpusPerNode": 1, "memory": "64Mi", "cpu": "100m"},
        output={"volumeClaimName": model_claim, "path": "sentiment/v1"},
        # A port other than the default, to see it reach the Service and the endpoint.
        serving={"replicas": 1, "port": port},
    )
    api.create(body)

    # The Job appears with the expected pod spec.
    job = api.wait(
        "Job sentiment-a1", lambda: api.batch.read_namespaced_job("sentiment-a1", api.ns)
    )
    owner = job.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.controller) == ("FineTuneJob", "sentiment", True)
    pod_spec = job.spec.template.spec
    (trainer,) = pod_spec.containers
    assert trainer.name == "trainer"
    assert trainer.command == [
        "python", "-m", "snowtrain.trainer", "--config", "/etc/snowtrain/config.json",
    ]  # fmt: skip
    assert trainer.resources.limits == {"cpu": "100m", "memory": "64Mi", "nvidia.com/gpu": "1"}
    assert trainer.security_context.read_only_root_filesystem is True
    assert trainer.security_context.allow_privilege_escalation is False
    assert pod_spec.automount_service_account_token is False
    assert pod_spec.security_context.run_as_non_root is True
    config = api.core.read_namespaced_config_map("sentiment-config", api.ns)
    assert json.loads(config.data["config.json"])["output"]["uri"] == "pvc://models/sentiment/v1"

    # A real pod runs; the status shows progress while it does.
    running = api.wait_phase("sentiment", {"Running"}, timeout=60)
    assert condition(running, "Running")["status"] == "True"
    live = api.wait(
        "progress while Running",
        lambda: (s := api.status("sentiment")).get("phase") == "Running"
        and (s.get("progress") or {}).get("percent", 0) > 0
        and s,
        timeout=40,
    )  # fmt: skip
    progress = live["progress"]
    assert progress["totalSteps"] == 20
    assert 0 < progress["step"] <= 20
    assert api.status("sentiment")["metrics"]["trainLoss"] > 0

    done = api.wait_phase("sentiment", {"Succeeded", "Failed"}, timeout=90)
    assert done["phase"] == "Succeeded", done
    assert done["progress"]["percent"] == 100
    assert done["metrics"]["evalAccuracy"] == 0.875
    assert done["data"] == {
        "rows": 1000, "validationRows": 100, "queryId": "01fake-query", "fingerprint": "sha256:fake",
    }  # fmt: skip
    assert done["model"] == {"uri": "pvc://models/sentiment/v1", "format": "safetensors"}
    assert done["job"]["name"] == "sentiment-a1" and done["job"]["attempts"] == 1
    assert done["job"]["completionTime"]

    waited = kubectl("wait", "-n", api.ns, "--for=condition=Succeeded", "ftj/sentiment", "--timeout=30s")  # fmt: skip
    assert waited.returncode == 0, waited.stderr
    table = kubectl("get", "ftj", "-n", api.ns).stdout
    header, row = table.splitlines()[:2]
    assert "PHASE" in header and "PROGRESS" in header.upper()
    assert "Succeeded" in row and "100" in row

    # Serving: Deployment + Service, ServingReady True, endpoint in status.
    ready = api.wait(
        "ServingReady",
        lambda: condition(s := api.status("sentiment"), "ServingReady").get("status") == "True"
        and s,
        timeout=90,
    )  # fmt: skip
    assert ready["serving"]["endpoint"] == f"http://sentiment-serve.{api.ns}.svc:{port}"
    assert condition(ready, "Ready")["status"] == "True"
    dep = api.apps.read_namespaced_deployment("sentiment-serve", api.ns)
    (server,) = dep.spec.template.spec.containers
    assert server.command[:5] == [
        "python", "-m", "snowtrain.serve", "--model-dir", "/mnt/models/sentiment/v1",
    ]  # fmt: skip
    assert server.readiness_probe.http_get.path == "/readyz"
    assert api.core.read_namespaced_service("sentiment-serve", api.ns).spec.ports[0].port == port
    # Network policies (on by default): training pods open to their own job only, serving
    # pods on the serving port only; both owned by the job.
    policies = {
        p.metadata.name: p
        for p in api.networking.list_namespaced_network_policy(
            api.ns, label_selector="snowtrain.io/job=sentiment"
        ).items
    }
    assert set(policies) == {"sentiment-training", "sentiment-serve"}
    assert all(p.metadata.owner_references[0].name == "sentiment" for p in policies.values())
    assert policies["sentiment-serve"].spec.ingress[0].ports[0].port == port
    assert kubectl("wait", "-n", api.ns, "--for=condition=Ready", "ftj/sentiment", "--timeout=10s").returncode == 0  # fmt: skip

    # An event on every transition.
    events = api.core.list_namespaced_event(
        api.ns, field_selector="involvedObject.name=sentiment,involvedObject.kind=FineTuneJob"
    ).items
    messages = " | ".join(e.message for e in events)
    assert "-> Running" in messages and "Running -> Succeeded" in messages

    # A serving edit rolls the Deployment.
    api.patch_spec("sentiment", {"serving": {"replicas": 2, "port": port}})
    api.wait(
        "2 replicas",
        lambda: api.apps.read_namespaced_deployment("sentiment-serve", api.ns).spec.replicas == 2,
        timeout=30,
    )

    # Serving switched off: the Deployment, its Service and its policy go; training's stays.
    api.patch_spec("sentiment", {"serving": {"enabled": False}})

    def serving_gone() -> bool:
        for read in (
            api.apps.read_namespaced_deployment,
            api.core.read_namespaced_service,
            api.networking.read_namespaced_network_policy,
        ):
            try:
                read("sentiment-serve", api.ns)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                continue
            return False
        return True

    api.wait("serving children removed", serving_gone, timeout=60)
    assert operator_process.failed_reconciles() == []  # every delete answered as expected
    api.networking.read_namespaced_network_policy("sentiment-training", api.ns)
    assert condition(api.status("sentiment"), "ServingReady").get("status") != "True"


def test_a_model_server_that_exits_is_named_in_serving_ready(
    api: Api, operator_process: Any, model_claim: str
) -> None:
    """Training succeeded but its model does not load: ServingReady names the pod, its exit
    and the server's last line (from the pod's status), not only "0/1 ready"."""
    body = ftj(
        "unloadable",
        steps=1,
        output={"volumeClaimName": model_claim, "path": "unloadable"},
        serving={"replicas": 1},
    )
    env = body["spec"]["podTemplate"]["spec"]["containers"][0]["env"]
    env.append({"name": "FAKE_UNLOADABLE_MODEL", "value": "1"})
    api.create(body)

    def failing() -> dict[str, Any] | None:
        ready = condition(api.status("unloadable"), "ServingReady")
        return ready if ready.get("reason") == "ServerFailing" else None

    ready = api.wait("ServingReady ServerFailing", failing, timeout=180)
    assert ready["status"] == "False"
    assert "unloadable-serve-" in ready["message"] and "exited 1" in ready["message"], ready
    assert ready["message"].endswith("error: model failed to load: the fake model in /mnt/models/unloadable"), ready  # fmt: skip
    assert api.status("unloadable")["phase"] == "Succeeded"  # training's outcome stands


def test_failures_end_with_the_right_reason(api: Api, operator_process: Any) -> None:
    api.create(ftj("bad-data", "dataerror"))
    api.create(ftj("oom", "oom", resources={"gpusPerNode": 0, "memory": "64Mi"}))
    api.create(ftj("greedy", resources={"gpusPerNode": 8}))

    # More GPUs than the node has: Unschedulable shows while Pending.
    pending = api.wait(
        "Unschedulable condition",
        lambda: condition(s := api.status("greedy"), "Running").get("reason") == "Unschedulable"
        and s,
        timeout=60,
    )  # fmt: skip
    assert pending["phase"] == "Queued"
    assert "nvidia.com/gpu" in condition(pending, "Running")["message"]

    failed = api.wait_phase("bad-data", {"Failed", "Succeeded"}, timeout=60)
    assert failed["failure"] == {
        "reason": "DataError",
        "message": "column LABEL: 3 of 1000 rows are NULL; fill or filter them",
        "exitCode": 65,
    }
    assert condition(failed, "Failed")["status"] == "True"
    assert condition(failed, "Ready")["reason"] == "DataError"

    oom = api.wait_phase("oom", {"Failed", "Succeeded"}, timeout=60)
    assert oom["failure"]["reason"] == "OOMKilled", oom


def test_invalid_spec_without_webhook_fails_once_without_a_crash_loop(
    api: Api, operator_process: Any
) -> None:
    # Valid for the CRD schema, invalid for the semantic rules (LoRA needs causal-lm).
    api.create(ftj("lora-cls", training={"lora": {"r": 8}}))
    status = api.wait_phase("lora-cls", {"Failed"}, timeout=30)
    assert status["failure"]["reason"] == "InvalidSpec"
    assert "spec.training.lora" in status["failure"]["message"]
    assert api.jobs("lora-cls") == []
    assert operator_process.proc.poll() is None


def test_several_nodes_meet_at_a_store_service_ip_on_1_20_and_the_store_goes_after(
    api: Api, operator_process: Any
) -> None:
    """Kubernetes 1.20: no Indexed Jobs; no cluster DNS here. The fake trainer pods reach
    the store only through its Service's ClusterIP (kube-proxy), or they fail."""
    api.create(
        ftj(
            "ddp",
            steps=3,
            resources={"gpusPerNode": 0, "nodes": 2, "cpu": "100m", "memory": "64Mi"},
        )
    )
    service = api.wait(
        "the store's Service",
        lambda: get_or_none(api.core.read_namespaced_service, "ddp-a1-rdzv", api.ns),
    )
    [job] = api.wait(
        "the attempt's Job", lambda: [j for j in api.jobs("ddp") if j.metadata.name == "ddp-a1"]
    )
    assert job.spec.completions == job.spec.parallelism == 2 and job.spec.completion_mode is None
    env = {e.name: e.value for e in job.spec.template.spec.containers[0].env}
    assert env["SNOWTRAIN_RENDEZVOUS_ENDPOINT"] == f"{service.spec.cluster_ip}:29400"
    status = api.wait_phase("ddp", {"Succeeded", "Failed"}, timeout=180)
    assert status["phase"] == "Succeeded", status
    pods = api.core.list_namespaced_pod(
        api.ns, label_selector="snowtrain.io/job=ddp,app.kubernetes.io/component=trainer"
    ).items
    assert len(pods) == 2 and all(p.status.phase == "Succeeded" for p in pods)
    # the store (Job, pod, Service) is deleted once the attempt is over
    api.wait(
        "the store to go",
        lambda: (
            not [j for j in api.jobs("ddp") if j.metadata.name == "ddp-a1-rdzv"]
            and get_or_none(api.core.read_namespaced_service, "ddp-a1-rdzv", api.ns) is None
        ),
    )
    assert operator_process.failed_reconciles() == []


def test_operator_killed_mid_reconcile_restarts_without_duplicates(
    api: Api, operator_process: Any
) -> None:
    names = [f"burst-{i}" for i in range(6)]
    for name in names:
        api.create(ftj(name, steps=2, step_seconds=0.5))
    # Kill as soon as the first Job exists: the others are mid-reconcile or not started.
    api.wait("first Job", lambda: api.jobs(), timeout=30, every=0.05)
    operator_process.kill()
    operator_process.start()
    for name in names:
        assert api.wait_phase(name, {"Succeeded", "Failed"}, timeout=120)["phase"] == "Succeeded"
    jobs = api.jobs()
    assert sorted(j.metadata.name for j in jobs) == sorted(f"{n}-a1" for n in names)
    maps = api.core.list_namespaced_config_map(api.ns, label_selector="snowtrain.io/job").items
    assert len(maps) == len(names)


def test_delete_garbage_collects_children(api: Api, operator_process: Any) -> None:
    api.create(ftj("doomed", "sleep"))
    # Running, not only created: a pod still mounting when its ConfigMap is collected is not
    # deleted until a 1.20 kubelet's mount wait gives up (~2 min). Deleting mid-training is
    # what users do.
    api.wait(
        "a running pod of the Job",
        lambda: [
            p
            for p in api.core.list_namespaced_pod(api.ns, label_selector="snowtrain.io/job=doomed").items
            if p.status.phase == "Running"
        ],
        timeout=120,
    )  # fmt: skip
    api.custom.delete_namespaced_custom_object(GROUP, VERSION, api.ns, "finetunejobs", "doomed")
    api.wait("Job garbage-collected", lambda: not api.jobs("doomed"), timeout=60)
    api.wait(
        "ConfigMap garbage-collected",
        lambda: not api.core.list_namespaced_config_map(api.ns, label_selector="snowtrain.io/job=doomed").items,
        timeout=60,
    )  # fmt: skip
    api.wait(
        "pods gone",
        lambda: not api.core.list_namespaced_pod(api.ns, label_selector="snowtrain.io/job=doomed").items,
        timeout=90,
    )  # fmt: skip


def test_a_job_deletes_while_the_operator_is_down(api: Api, operator_process: Any) -> None:
    # No finalizers: deleting never waits for the operator (an uninstalled or crashed one
    # would otherwise keep the job, and its namespace, Terminating forever).
    api.create(ftj("orphan", "sleep"))
    api.wait("its Job", lambda: api.jobs("orphan"), timeout=60)
    operator_process.kill()
    api.custom.delete_namespaced_custom_object(GROUP, VERSION, api.ns, "finetunejobs", "orphan")

    def gone() -> bool:
        try:
            api.get("orphan")
        except ApiException as exc:
            return exc.status == 404
        return False

    api.wait("the job gone", gone, timeout=30)
    api.wait("Job garbage-collected", lambda: not api.jobs("orphan"), timeout=60)
    operator_process.start()  # the fixture's teardown expects it running


def test_suspend_then_resume_starts_a_new_attempt(api: Api, operator_process: Any) -> None:
    # Kubernetes 1.20 has no Job.spec.suspend: suspend deletes the attempt, resume starts the
    # next one (which restores from the checkpoint on the model volume).
    api.create(ftj("pausable", "sleep"))
    api.wait_phase("pausable", {"Running"}, timeout=60)
    api.patch_spec("pausable", {"suspend": True})
    suspended = api.wait_phase("pausable", {"Suspended"}, timeout=30)
    assert condition(suspended, "Suspended")["status"] == "True"
    api.wait("attempt 1 gone", lambda: not api.jobs("pausable"), timeout=60)
    api.patch_spec("pausable", {"suspend": False})
    resumed = api.wait_phase("pausable", {"Running"}, timeout=90)
    assert resumed["job"]["name"] == "pausable-a2"
    assert resumed["job"]["attempts"] == 2
    assert condition(resumed, "Suspended")["status"] == "False"
    assert [j.metadata.name for j in api.jobs("pausable")] == ["pausable-a2"]


def test_preempted_attempt_is_retried_as_a_new_attempt(api: Api, operator_process: Any) -> None:
    api.create(ftj("preempted", "preempt-first", steps=2, step_seconds=0.5))
    done = api.wait_phase("preempted", {"Succeeded", "Failed"}, timeout=120)
    assert done["phase"] == "Succeeded", done
    assert done["job"] == {**done["job"], "name": "preempted-a2", "attempts": 2}


def test_fine_tune_waits_for_its_pretrain_job(
    api: Api, operator_process: Any, model_claim: str
) -> None:
    ptj = ftj("gpt", steps=6, step_seconds=1, output={"volumeClaimName": model_claim})
    ptj["kind"] = "PretrainJob"
    ptj["spec"].pop("baseModel")
    ptj["spec"]["architecture"] = {"size": "tiny"}
    api.create(ft := ftj("chat", baseModel={"pretrainJobRef": {"name": "gpt"}}, task="causal-lm"))
    assert ft
    waiting = api.wait_phase("chat", {"Waiting"}, timeout=30)
    assert condition(waiting, "WaitingForBaseModel")["status"] == "True"
    assert api.jobs("chat") == []
    api.create(ptj)
    api.wait_phase("gpt", {"Running"}, timeout=60, plural="pretrainjobs")
    assert api.status("chat")["phase"] == "Waiting"
    api.wait_phase("gpt", {"Succeeded"}, timeout=60, plural="pretrainjobs")
    done = api.wait_phase("chat", {"Succeeded", "Failed"}, timeout=90)
    assert done["phase"] == "Succeeded", done
    assert condition(done, "WaitingForBaseModel")["status"] == "False"
    (job,) = api.jobs("chat")
    volumes = {v.name: v for v in job.spec.template.spec.volumes}
    assert volumes["base-model"].persistent_volume_claim.claim_name == model_claim
    assert volumes["base-model"].persistent_volume_claim.read_only is True
    config = json.loads(api.core.read_namespaced_config_map("chat-config", api.ns).data["config.json"])  # fmt: skip
    assert config["baseModel"] == f"/mnt/base-model/pretrainjob/{api.ns}/gpt"


# -- ownership: children are the job's by owner uid, never by name; a refused child ends the
# job with the reason instead of a hang.


def _foreign_deployment(name: str, image: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


def test_a_foreign_serving_deployment_is_left_untouched(
    api: Api, operator_process: Any, model_claim: str, kube_api: client.ApiClient,
    fake_trainer_image: str,
) -> None:  # fmt: skip
    apps = client.AppsV1Api(kube_api)
    theirs = apps.create_namespaced_deployment(
        api.ns, _foreign_deployment("sentiment-serve", fake_trainer_image)
    )
    api.create(ftj("sentiment", output={"volumeClaimName": model_claim}, serving={"replicas": 1}))
    status = api.wait_phase("sentiment", {"Succeeded"}, timeout=120)
    serving = api.wait(
        "ServingReady=False/Conflict",
        lambda: (
            (c := condition(api.status("sentiment"), "ServingReady")).get("reason") == "Conflict"
            and c
        ),
    )
    assert serving["status"] == "False"
    assert "sentiment-serve" in serving["message"] and "not this job's" in serving["message"]
    after = apps.read_namespaced_deployment("sentiment-serve", api.ns)
    assert after.metadata.uid == theirs.metadata.uid
    # Its spec was never written (the deployment controller's status writes aside).
    assert after.metadata.generation == theirs.metadata.generation == 1
    assert after.spec.template.spec.containers[0].image == fake_trainer_image
    assert after.metadata.labels == {"app": "sentiment-serve"}
    assert not after.metadata.owner_references
    assert status["phase"] == "Succeeded"  # the training itself is unaffected
    # Deleting the job (garbage collection by owner) must not take theirs either.
    api.custom.delete_namespaced_custom_object(
        "snowtrain.io", "v1alpha1", api.ns, "finetunejobs", "sentiment"
    )
    api.wait("the job gone", lambda: not api.custom.list_namespaced_custom_object(
        "snowtrain.io", "v1alpha1", api.ns, "finetunejobs")["items"])  # fmt: skip
    assert apps.read_namespaced_deployment("sentiment-serve", api.ns).metadata.uid == (
        theirs.metadata.uid
    )


def test_a_foreign_trainer_config_fails_the_job_as_a_conflict(
    api: Api, operator_process: Any, kube_api: client.ApiClient
) -> None:
    client.CoreV1Api(kube_api).create_namespaced_config_map(
        api.ns,
        {"metadata": {"name": "sentiment-config"}, "data": {"config.json": '{"not": "ours"}'}},
    )
    api.create(ftj("sentiment"))
    status = api.wait_phase("sentiment", {"Failed"}, timeout=60)
    assert status["failure"]["reason"] == "Conflict", status
    assert "ConfigMap sentiment-config" in status["failure"]["message"]
    assert api.jobs("sentiment") == []  # nothing ran with a config that is not the job's


def test_a_name_that_makes_an_invalid_child_never_hangs(
    api: Api, operator_process: Any, model_claim: str
) -> None:
    """A leading digit is fine for the job (a DNS subdomain) but not for its serving Service
    (a DNS label starting with a letter). Without a webhook the operator refuses it the same
    way (Failed/InvalidSpec naming the field) instead of never reporting; nothing is created."""
    api.create(ftj("1st-model", output={"volumeClaimName": model_claim}, serving={"replicas": 1}))
    status = api.wait_phase("1st-model", {"Failed"}, timeout=120)
    assert status["failure"]["reason"] == "InvalidSpec", status
    assert "metadata.name" in status["failure"]["message"]
    assert "1st-model-serve" in status["failure"]["message"]
    assert api.jobs("1st-model") == []


def test_a_pod_refused_by_a_resource_quota_gives_the_reason_then_fails(
    api: Api, kube_cluster: Any, namespace: str, fake_trainer_image: str, kube_api: client.ApiClient
) -> None:
    """No pod is ever created, so only the Job's Events know why: the status says it at
    once, and the job fails after the configured time instead of waiting for ever."""
    from tests.fixtures.operator import OperatorProcess, delete_jobs

    client.CoreV1Api(kube_api).create_namespaced_resource_quota(
        namespace, {"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}}
    )
    op = OperatorProcess(
        kube_cluster.kubeconfig,
        [namespace],
        fake_trainer_image,
        env={"SNOWTRAIN_STUCK_TIMEOUT_SECONDS": "20"},
    )
    op.start()
    try:
        api.create(ftj("quota"))
        queued = api.wait(
            "the quota named in the status",
            lambda: (
                (c := condition(api.status("quota"), "Running")).get("reason") == "QuotaExceeded"
                and c
            ),
            timeout=120,
        )
        assert "no-pods" in queued["message"]
        failed = api.wait_phase("quota", {"Failed"}, timeout=180)
        assert failed["failure"]["reason"] == "QuotaExceeded"
        assert "for more than 20 s" in failed["failure"]["message"]
    finally:
        delete_jobs(kube_cluster.kubeconfig, namespace)
        op.stop()
        op.log_path.unlink(missing_ok=True)
