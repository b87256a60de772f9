"""The validating admission webhook on the real API server: kopf serves it on 127.0.0.1 with
a self-signed certificate and keeps the ValidatingWebhookConfiguration up to date."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.fixtures.operator import OperatorProcess, delete_jobs, free_port
from tests.integration.test_operator_lifecycle import Api, ftj

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture
def webhook_operator(
    kube_cluster: Any, kube_api: client.ApiClient, namespace: str, fake_trainer_image: str
) -> Iterator[OperatorProcess]:
    """The operator with its webhook; the webhook configuration is removed afterwards (its
    failurePolicy is Fail, so leaving it would block every later create)."""
    name = f"validating.{namespace}.snowtrain.io"
    op = OperatorProcess(
        kube_cluster.kubeconfig,
        [namespace],
        fake_trainer_image,
        env={
            "SNOWTRAIN_WEBHOOK_ENABLED": "true",
            "SNOWTRAIN_WEBHOOK_HOST": "127.0.0.1",
            "SNOWTRAIN_WEBHOOK_PORT": str(free_port()),
            "SNOWTRAIN_WEBHOOK_MANAGED_NAME": name,
        },
    )
    admission = client.AdmissionregistrationV1Api(kube_api)
    op.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                cfg = admission.read_validating_webhook_configuration(name)
                if cfg.webhooks:
                    break
            except ApiException as exc:
                if exc.status != 404:
                    raise
            time.sleep(0.3)
        else:
            raise AssertionError(f"no webhook configuration:\n{op.logs()}")
        yield op
    finally:
        delete_jobs(kube_cluster.kubeconfig, namespace)
        op.stop()
        try:
            admission.delete_validating_webhook_configuration(name)
        except ApiException as exc:
            if exc.status != 404:
                raise
        op.log_path.unlink(missing_ok=True)


def test_webhook_rejects_invalid_specs_and_training_edits_after_start(
    kube_api: client.ApiClient, namespace: str, webhook_operator: OperatorProcess,
    kubectl: Callable[..., Any],
) -> None:  # fmt: skip
    api = Api(kube_api, namespace)
    # Valid for the CRD schema but not for the semantic rules: refused at apply time.
    bad = ftj("lora-cls", training={"lora": {"r": 8}})
    applied = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(bad))
    assert applied.returncode != 0
    assert "spec.training.lora" in applied.stderr
    assert "causal-lm" in applied.stderr

    api.create(ftj("ok", "sleep"))
    # Started = its training Job exists (the status names it).
    api.wait("Job in status", lambda: (api.status("ok").get("job") or {}).get("name"), timeout=60)
    with pytest.raises(ApiException) as refused:
        api.patch_spec("ok", {"training": {"learningRate": 0.001}})
    assert refused.value.status in (400, 422)
    assert "spec.training: cannot change after training started" in refused.value.body
    # Serving and suspend stay editable.
    api.patch_spec("ok", {"serving": {"replicas": 1}, "suspend": True})
    assert api.wait_phase("ok", {"Suspended"}, timeout=30)["phase"] == "Suspended"


def test_every_hostile_job_is_refused_at_apply_naming_the_field(
    namespace: str, webhook_operator: OperatorProcess, kubectl: Callable[..., Any]
) -> None:
    """The corpus of tests/hostile_jobs.py against the real API server and the webhook: the
    same verdicts `snowtrain validate` gives (tests/unit/test_hostile_jobs.py). Type errors
    are the API server's own schema's; the rest the webhook's."""
    from tests.hostile_jobs import CASES

    admitted = []
    for case in CASES:
        applied = kubectl("apply", "-f", "-", input=json.dumps(case.manifest(namespace)))
        if applied.returncode == 0:
            admitted.append(case.id)
            kubectl("delete", case.kind.lower(), case.name, "-n", namespace, "--wait=false")
            continue
        assert case.field in applied.stderr, (case.id, case.why, applied.stderr)
    assert not admitted, f"admitted: {admitted}"


def test_the_installations_policy_is_enforced_at_apply(
    namespace: str, webhook_operator: OperatorProcess, kubectl: Callable[..., Any]
) -> None:
    """What the admin did not allow (an image from another repository, a Snowflake role, an
    account that is not the Secret's) is refused by the webhook, naming the field."""
    from tests.hostile_jobs import Hostile

    for patch, field in [
        ({"spec": {"image": "docker.io/attacker/miner:latest"}}, "spec.image"),
        ({"spec": {"data": {"snowflake": {"role": "ACCOUNTADMIN"}}}}, "spec.data.snowflake.role"),
        ({"spec": {"data": {"snowflake": {"account": "other"}}}}, "spec.data.snowflake.account"),
        (
            {"spec": {"podTemplate": {"spec": {"serviceAccountName": "admin"}}}},
            "spec.podTemplate.spec.serviceAccountName",
        ),
    ]:
        job = Hostile("policy", "", patch, field).manifest(namespace)
        applied = kubectl("apply", "-f", "-", input=json.dumps(job))
        assert applied.returncode != 0 and field in applied.stderr, (field, applied.stderr)
