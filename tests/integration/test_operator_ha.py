"""Operator high availability on the real API server: leader election over a Lease and the
webhook certificate every replica shares (the pieces the chart's two replicas run; the whole
install is exercised in tests/e2e)."""

from __future__ import annotations

import base64
import datetime
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from snowtrain.operator import certs
from snowtrain.operator.leader import LeaderElector
from snowtrain.operator.webhook_tls import WebhookTls, WebhookTlsError
from tests.fixtures.operator import OperatorProcess, delete_jobs
from tests.integration.test_operator_lifecycle import Api, ftj

pytestmark = [pytest.mark.cluster]


def _eventually(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def electors(kube_api: client.ApiClient, namespace: str) -> Iterator[list[LeaderElector]]:
    client.CoordinationV1Api(kube_api).create_namespaced_lease(
        namespace, {"metadata": {"name": "op-leader"}, "spec": {}}
    )
    lost: list[str] = []
    made = [
        LeaderElector(
            kube_api,
            namespace,
            "op-leader",
            pod_name=f"replica-{i}",
            on_lost=lambda: lost.append("x"),
        )
        for i in range(2)
    ]
    for e in made:
        e.start()
    try:
        yield made
    finally:
        for e in made:
            e.release()
    assert not lost, "a leader lost its Lease without releasing it"


def _holder(kube_api: client.ApiClient, namespace: str) -> str | None:
    return _lease_holder(kube_api, namespace, "op-leader")


def test_exactly_one_replica_leads_and_a_release_hands_over(
    kube_api: client.ApiClient, namespace: str, electors: list[LeaderElector]
) -> None:
    leader = _eventually("a leader", lambda: next((e for e in electors if e.is_leader()), None))
    follower = next(e for e in electors if e is not leader)
    assert _holder(kube_api, namespace) == leader.identity
    # The follower keeps trying every retry period and never leads while the Lease is held.
    for _ in range(30):
        assert not follower.is_leader()
        time.sleep(0.1)
    assert leader.release()
    assert not leader.is_leader()
    _eventually("the follower to take over", follower.is_leader)
    assert _holder(kube_api, namespace) == follower.identity
    time.sleep(3)  # the released one does not come back
    assert not leader.is_leader() and follower.is_leader()


@pytest.fixture
def webhook_objects(kube_api: client.ApiClient, namespace: str) -> Iterator[str]:
    """An empty Secret and a webhook configuration, as the chart installs them. The
    configuration matches a resource nobody creates, so it gates nothing."""
    core = client.CoreV1Api(kube_api)
    admission = client.AdmissionregistrationV1Api(kube_api)
    core.create_namespaced_secret(namespace, {"metadata": {"name": "wh-tls"}, "type": "Opaque"})
    name = f"{namespace}-test-webhook"
    hook = {
        "clientConfig": {"service": {"name": "wh", "namespace": namespace, "path": "/x"}},
        "rules": [
            {
                "apiGroups": ["snowtrain.io"],
                "apiVersions": ["v1alpha1"],
                "operations": ["CREATE"],
                "resources": ["nothing-matches"],
            }
        ],
        "failurePolicy": "Ignore",
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    }
    admission.create_validating_webhook_configuration(
        {
            "metadata": {"name": name},
            "webhooks": [{**hook, "name": f"a.{namespace}.test.snowtrain.io"},
                         {**hook, "name": f"b.{namespace}.test.snowtrain.io"}],
        }
    )  # fmt: skip
    try:
        yield name
    finally:
        admission.delete_validating_webhook_configuration(name)


def _tls(kube_api: client.ApiClient, namespace: str, config: str, directory: Path) -> WebhookTls:
    return WebhookTls(
        kube_api,
        namespace=namespace,
        secret="wh-tls",
        service="wh",
        configuration=config,
        directory=directory,
    )


def test_replicas_share_one_certificate_that_the_configuration_trusts(
    kube_api: client.ApiClient, namespace: str, webhook_objects: str, tmp_path: Path
) -> None:
    first = _tls(kube_api, namespace, webhook_objects, tmp_path / "a")
    second = _tls(kube_api, namespace, webhook_objects, tmp_path / "b")
    first.sync()
    second.sync()
    for name in ("tls.crt", "tls.key", "ca.crt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    cfg = client.AdmissionregistrationV1Api(kube_api).read_validating_webhook_configuration(
        webhook_objects
    )
    ca = (tmp_path / "a" / "ca.crt").read_bytes()
    assert [base64.b64decode(h.client_config.ca_bundle) for h in cfg.webhooks] == [ca, ca]
    # What the chart labelled stays; the data is the operator's.
    secret = client.CoreV1Api(kube_api).read_namespaced_secret("wh-tls", namespace)
    assert set(secret.data) == set(certs.KEYS)


def test_a_certificate_near_expiry_is_renewed_under_the_same_ca(
    kube_api: client.ApiClient, namespace: str, webhook_objects: str, tmp_path: Path
) -> None:
    hosts = certs.service_hostnames("wh", namespace)
    old = certs.issue(hosts, datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=340))
    client.CoreV1Api(kube_api).patch_namespaced_secret(
        "wh-tls",
        namespace,
        {"data": {k: base64.b64encode(v).decode() for k, v in old.as_secret_data().items()}},
    )
    tls = _tls(kube_api, namespace, webhook_objects, tmp_path)
    tls.sync()
    assert tls.certfile.read_bytes() != old.cert
    assert tls.cafile.read_bytes() == old.ca_bundle  # the caBundle need not change
    stored = client.CoreV1Api(kube_api).read_namespaced_secret("wh-tls", namespace).data
    assert base64.b64decode(stored["tls.crt"]) == tls.certfile.read_bytes()


def test_a_missing_secret_is_an_error_naming_it(
    kube_api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    tls = WebhookTls(
        kube_api, namespace=namespace, secret="absent", service="wh", configuration=None,
        directory=tmp_path,
    )  # fmt: skip
    with pytest.raises(WebhookTlsError, match=f"Secret {namespace}/absent does not exist"):
        tls.sync()


def test_two_operator_processes_one_reconciles_and_sigusr1_hands_over(
    kube_cluster: Any, kube_api: client.ApiClient, namespace: str, fake_trainer_image: str
) -> None:
    """Two real operators on one Lease (as the chart's replicas): a job is reconciled by the
    leader; SIGUSR1 (the pod's preStop hook) makes it stop and hand over while it keeps
    running, and the next job is reconciled by the other, exactly once."""
    client.CoordinationV1Api(kube_api).create_namespaced_lease(
        namespace, {"metadata": {"name": "ops-leader"}, "spec": {}}
    )
    ops = [
        OperatorProcess(
            kube_cluster.kubeconfig,
            [namespace],
            fake_trainer_image,
            env={
                "SNOWTRAIN_STANDALONE": "false",
                "SNOWTRAIN_POD_NAMESPACE": namespace,
                "SNOWTRAIN_POD_NAME": f"replica-{i}",
                "SNOWTRAIN_LEADER_LEASE_NAME": "ops-leader",
            },
        )
        for i in range(2)
    ]
    api = Api(kube_api, namespace)
    try:
        for op in ops:
            op.start()
        holder = _eventually("a leader", lambda: _lease_holder(kube_api, namespace, "ops-leader"))
        leader = ops[int(holder.split("_")[0].removeprefix("replica-"))]
        follower = next(op for op in ops if op is not leader)

        api.create(ftj("before", "succeed"))
        assert api.wait_phase("before", {"Succeeded"}, timeout=120)["phase"] == "Succeeded"
        assert [j.metadata.name for j in api.jobs("before")] == ["before-a1"]

        assert leader.proc is not None
        leader.proc.send_signal(signal.SIGUSR1)
        _eventually(
            "the other replica to hold the Lease",
            lambda: (_lease_holder(kube_api, namespace, "ops-leader") or "").startswith(
                f"replica-{ops.index(follower)}_"
            ),
        )
        assert leader.proc.poll() is None, "stepping down must not stop the process"
        api.create(ftj("after", "succeed"))
        assert api.wait_phase("after", {"Succeeded"}, timeout=120)["phase"] == "Succeeded"
        assert [j.metadata.name for j in api.jobs("after")] == ["after-a1"]
    finally:
        delete_jobs(kube_cluster.kubeconfig, namespace)
        for op in ops:
            op.stop()
            op.log_path.unlink(missing_ok=True)


def _lease_holder(kube_api: client.ApiClient, namespace: str, name: str) -> str | None:
    lease = client.CoordinationV1Api(kube_api).read_namespaced_lease(name, namespace)
    return lease.spec.holder_identity
