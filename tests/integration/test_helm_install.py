"""The install artefacts against the real API server of the local cluster.

kubernetes-validate (tests/unit/test_manifests.py) checks schemas offline; here the API server
itself admits the objects (its defaulting, RBAC escalation checks, CRD structural-schema
rules), Helm really installs and uninstalls the release, and the ServiceAccount really has
the permissions the operator needs and not others.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from tests.fixtures.cluster import KubeCluster, Kubectl
from tests.tools.helm import helm

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts/snowtrain"
SNOWTRAIN_CRDS = (
    "finetunejobs.snowtrain.io",
    "pretrainjobs.snowtrain.io",
    "batchpredictions.snowtrain.io",
    "trainingschedules.snowtrain.io",
)

pytestmark = pytest.mark.cluster


def test_kustomize_base_is_accepted_by_the_api_server(kubectl: Kubectl) -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "manifests")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # A server dry run creates nothing, so the namespaced objects need the namespace for real.
    ns = kubectl("apply", "-f", str(ROOT / "manifests/namespace.yaml"))
    assert ns.returncode == 0, ns.stderr
    result = kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
    assert result.returncode == 0, result.stderr
    assert "deployment.apps/snowtrain-operator created (server dry run)" in result.stdout
    assert "clusterrole.rbac.authorization.k8s.io/snowtrain-operator" in result.stdout


def _can_i(kubectl: Kubectl, sa: str, verb: str, resource: str, namespace: str) -> bool:
    resource, _, sub = resource.partition("/")
    extra = [f"--subresource={sub}"] if sub else []
    result = kubectl("auth", "can-i", verb, resource, *extra, "-n", namespace, f"--as={sa}")
    return result.stdout.strip() == "yes"


@pytest.mark.parametrize("cluster_wide", [False, True], ids=["namespaced", "cluster-wide"])
def test_helm_install_then_uninstall_keeps_the_crds(
    kube_cluster: KubeCluster, kubectl: Kubectl, namespace: str, cluster_wide: bool
) -> None:
    release = f"st-{uuid.uuid4().hex[:6]}"
    kube = ["--kubeconfig", str(kube_cluster.kubeconfig), "--namespace", namespace]
    # No webhook and no replicas: the release must not act on other tests' resources; what
    # is tested is that every object is admitted and grants what it should.
    values = ["--set=webhook.enabled=false", "--set=replicaCount=0"]
    if not cluster_wide:
        values.append(f"--set=watchNamespaces={{{namespace}}}")
    # The session applied manifests/crds before the chart existed; Helm adopts them.
    install = helm("install", release, str(CHART), *kube, *values, "--take-ownership", check=False)
    assert install.returncode == 0, install.stderr
    try:
        status = helm("status", release, *kube).stdout
        assert "STATUS: deployed" in status
        deploy = kubectl("get", "deployment", "-n", namespace, f"{release}-snowtrain", "-o", "name")
        assert deploy.returncode == 0, deploy.stderr
        lease = kubectl("get", "lease", f"{release}-snowtrain-leader", "-n", namespace)
        assert lease.returncode == 0, lease.stderr

        sa = f"system:serviceaccount:{namespace}:{release}-snowtrain"
        for verb, resource in [
            ("create", "jobs.batch"),
            ("watch", "finetunejobs.snowtrain.io"),
            ("patch", "pretrainjobs.snowtrain.io/status"),
            ("get", "pods/log"),
            ("update", "deployments.apps"),
            ("create", "finetunejobs.snowtrain.io"),  # a TrainingSchedule's runs
            ("patch", "trainingschedules.snowtrain.io/status"),
        ]:
            assert _can_i(kubectl, sa, verb, resource, namespace), (verb, resource)
        lease_by_name = f"lease.coordination.k8s.io/{release}-snowtrain-leader"
        can = kubectl("auth", "can-i", "update", lease_by_name, "-n", namespace, f"--as={sa}")
        assert can.stdout.strip() == "yes", can.stdout + can.stderr
        denied = [
            ("get", "secrets", namespace),  # credentials are mounted, never read by the operator
            # A schedule's runs are created and deleted (pruned), never edited.
            ("update", "finetunejobs.snowtrain.io", namespace),
            ("patch", "pretrainjobs.snowtrain.io", namespace),
            ("delete", "trainingschedules.snowtrain.io", namespace),
            ("update", "leases", namespace),  # only its own, by name
            ("create", "leases", namespace),
        ]
        if not cluster_wide:
            denied.append(("create", "jobs.batch", "default"))  # outside the watched namespaces
        for verb, resource, ns in denied:
            assert not _can_i(kubectl, sa, verb, resource, ns), (verb, resource, ns)
    finally:
        uninstall = helm("uninstall", release, *kube, "--wait", check=False)
    assert uninstall.returncode == 0, uninstall.stderr
    for crd in SNOWTRAIN_CRDS:
        assert kubectl("get", "crd", crd).returncode == 0, f"{crd} deleted on uninstall"
    role = f"{release}-snowtrain" if cluster_wide else f"{release}-snowtrain-cluster"
    assert kubectl("get", "clusterrole", role).returncode != 0
