"""Least privilege, checked against the code: the RBAC grants exactly what the operator calls.

The permissions the operator needs are derived from its source, not listed by hand:

- every Kubernetes Python client method named in operator/snowtrain/operator (e.g.
  ``create_namespaced_job`` -> batch/jobs create, ``read_namespaced_pod_log`` -> pods/log get,
  methods passed to ``watch.Watch().stream`` or named in the informers'
  ``watched_lister`` -> list + watch);
- every kopf handler decorator (``@kopf.on.create(GROUP, VERSION, PLURAL)`` -> list, watch,
  patch, and status patch for resources with a status subresource; ``@kopf.on.event`` /
  ``@kopf.index`` -> list, watch; ``@kopf.on.validate`` -> the webhook configuration);
- what kopf itself does (documented in kopf's RBAC docs): post events, CRD observation.

Objects the operator touches by name only (its leader Lease, its webhook Secret, its own
ValidatingWebhookConfiguration) must be granted with ``resourceNames``, never by type.

Then every Role/ClusterRole in the kustomize base and in both Helm renderings must grant
exactly that set: a rule more (privilege creep) or a rule less (a 403 in production) fails.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path
from typing import Any

import pytest

from snowtrain.api import kinds
from snowtrain.api.validation import RESOURCE_KINDS
from tests.unit.test_manifests import helm_template, kustomize

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "operator/snowtrain/operator"
Triple = tuple[str, str, str]  # (apiGroup, resource, verb)

#: Kubernetes client resource names (as in method names) -> (API group, plural resource).
CLIENT_RESOURCES: dict[str, tuple[str, str]] = {
    "pod": ("", "pods"),
    "pod_log": ("", "pods/log"),
    "pod_status": ("", "pods/status"),
    "config_map": ("", "configmaps"),
    "service": ("", "services"),
    "secret": ("", "secrets"),
    "event": ("", "events"),
    "persistent_volume_claim": ("", "persistentvolumeclaims"),
    "namespace": ("", "namespaces"),
    "node": ("", "nodes"),
    "job": ("batch", "jobs"),
    "job_status": ("batch", "jobs/status"),
    "deployment": ("apps", "deployments"),
    "deployment_status": ("apps", "deployments/status"),
    "deployment_scale": ("apps", "deployments/scale"),
    "network_policy": ("networking.k8s.io", "networkpolicies"),
    "lease": ("coordination.k8s.io", "leases"),
    "validating_webhook_configuration": (
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
    ),
}
VERBS = {
    "get": "get",  # CustomObjectsApi says get_..., the typed APIs read_...
    "read": "get",
    "list": "list",
    "create": "create",
    "patch": "patch",
    "replace": "update",
    "delete": "delete",
    "delete_collection": "deletecollection",
}
CLIENT_METHOD = re.compile(
    r"^(?P<verb>get|read|list|create|patch|replace|delete_collection|delete)_"
    r"(?:namespaced_)?(?P<res>[a-z_]+?)(?:_for_all_namespaces)?(?:_with_http_info)?$"
)
#: Names that match the pattern but are not API calls.
NOT_API = {"create_task"}
SNOWTRAIN = [(kinds.GROUP, m.PLURAL) for m in RESOURCE_KINDS.values()]
RUNS = [(kinds.GROUP, m.PLURAL) for m in kinds.JOB_KINDS.values()]

# What kopf does on its own (https://kopf.readthedocs.io/en/stable/deployment/#rbac).
KOPF_EVENTS: set[Triple] = {("", "events", "create")}
KOPF_CRD_OBSERVATION: set[Triple] = {
    ("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")
}
#: Watching explicit namespaces, kopf lists and watches Namespace objects (it logs a 403 and
#: falls back to assuming they exist, retrying for minutes on every start, without it).
KOPF_NAMESPACE_OBSERVATION: set[Triple] = {("", "namespaces", v) for v in ("list", "watch")}
#: Resources the operator may touch only by name: granted with resourceNames, or not at all.
BY_NAME_ONLY = {"leases", "secrets", "validatingwebhookconfigurations"}


def _sources() -> list[tuple[str, ast.Module]]:
    out = []
    for path in sorted(SOURCE.rglob("*.py")):
        module = "snowtrain.operator." + ".".join(path.relative_to(SOURCE).with_suffix("").parts)
        out.append((module.removesuffix(".__init__"), ast.parse(path.read_text())))
    return out


_UNRESOLVED = object()


def _loop_names(tree: ast.Module) -> set[str]:
    """Names bound inside ``for`` loops: their module-level value is only the last one."""
    names: set[str] = set()
    for loop in ast.walk(tree):
        if isinstance(loop, ast.For):
            for node in ast.walk(loop):
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    names.add(node.id)
    return names


def _eval(node: ast.expr, module: str, loop_names: set[str]) -> Any:
    """Value of a kopf argument: a literal or a module-level constant; a loop variable (the
    handlers are registered in ``for _kind in (FineTuneJob, PretrainJob)``) is unresolved."""
    if any(isinstance(n, ast.Name) and n.id in loop_names for n in ast.walk(node)):
        return _UNRESOLVED
    namespace = vars(importlib.import_module(module))
    try:
        return eval(compile(ast.Expression(node), "<rbac>", "eval"), namespace)
    except NameError:
        return _UNRESOLVED


def _kopf_target(call: ast.Call, module: str, loops: set[str]) -> list[tuple[str, str]]:
    """(group, plural) of a kopf registration: (GROUP, VERSION, PLURAL) or keywords."""
    args = [_eval(a, module, loops) for a in call.args]
    kw = {k.arg: _eval(k.value, module, loops) for k in call.keywords if k.arg}
    group = args[0] if len(args) >= 3 else kw.get("group", "")
    plural = args[2] if len(args) >= 3 else kw.get("plural", _UNRESOLVED)
    if len(args) == 2:  # ("group/version", "plural")
        group, plural = str(args[0]).split("/")[0], args[1]
    if group == kinds.GROUP:
        if plural is _UNRESOLVED:
            return SNOWTRAIN
        return [(g, p) for g, p in SNOWTRAIN if p == plural] or pytest.fail(f"{plural}?")
    if plural is _UNRESOLVED or not isinstance(group, str):
        pytest.fail(f"{module}: {ast.unparse(call)}: cannot resolve; teach test_rbac")
    return [("" if group in ("v1", "core") else group, str(plural))]


def _kopf_registrations(tree: ast.Module, module: str) -> tuple[set[Triple], bool]:
    """Permissions implied by kopf handler registrations (decorators or direct calls)."""
    needs: set[Triple] = set()
    webhook = False
    loops = _loop_names(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        if not re.match(r"^kopf\.(on\.\w+|timer|daemon|index)$", name):
            continue
        kind = name.rsplit(".", 1)[-1]
        if kind in ("startup", "cleanup", "login", "probe"):
            continue
        if kind in ("validate", "mutate"):
            webhook = True  # kopf manages the webhook configuration (settings.admission)
            continue
        for group, plural in _kopf_target(node, module, loops):
            needs |= {(group, plural, v) for v in ("list", "watch")}
            if kind not in ("event", "index"):
                # kopf stores handler progress in annotations (patch) and status (subresource).
                needs.add((group, plural, "patch"))
                if (group, plural) in SNOWTRAIN:
                    needs.add((group, plural + "/status", "patch"))
    return needs, webhook


def _client_calls(tree: ast.Module, module: str) -> set[Triple]:
    """Permissions implied by Kubernetes client methods named in the source."""
    needs: set[Triple] = set()
    streamed = {
        id(arg)
        for call in ast.walk(tree)
        if isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and call.func.attr == "stream"
        for arg in call.args[:1]
    } | {
        id(node)
        for fn in ast.walk(tree)
        if isinstance(fn, ast.FunctionDef) and fn.name == "watched_lister"
        for node in ast.walk(fn)
    }
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or node.attr in NOT_API:
            continue
        m = CLIENT_METHOD.match(node.attr)
        if not m:
            continue
        verb, res = VERBS[m["verb"]], m["res"]
        verbs = {verb, "watch"} if id(node) in streamed else {verb}
        if res in ("custom_object", "custom_object_status", "cluster_custom_object"):
            sub = "/status" if res.endswith("_status") else ""
            # The only custom objects the operator creates or deletes are a
            # TrainingSchedule's runs (schedule.py), which are FineTuneJobs or PretrainJobs.
            kinds = RUNS if verb in ("create", "delete") and module.endswith(".schedule") else SNOWTRAIN  # fmt: skip
            needs |= {(g, p + sub, v) for g, p in kinds for v in verbs}
            continue
        if res not in CLIENT_RESOURCES:
            if "namespaced" in node.attr or "custom_object" in node.attr:
                pytest.fail(f"{module}: {node.attr}: unknown API resource {res!r}; teach test_rbac")
            continue  # read_text, list_dir, ...: not a Kubernetes client method
        group, plural = CLIENT_RESOURCES[res]
        needs |= {(group, plural, v) for v in verbs}
    return needs


def needed(cluster_wide: bool) -> set[Triple]:
    needs = set(KOPF_EVENTS)
    webhook = False
    for module, tree in _sources():
        needs |= _client_calls(tree, module)
        handler_needs, has_webhook = _kopf_registrations(tree, module)
        needs |= handler_needs
        webhook |= has_webhook
    needs |= KOPF_CRD_OBSERVATION
    if not cluster_wide:
        needs |= KOPF_NAMESPACE_OBSERVATION
    # kopf's validate handlers need no permission in a cluster: the chart installs the
    # configuration (kopf manages one only outside a cluster, with an admin's kubeconfig).
    assert webhook, "the admission handlers are gone: teach test_rbac"
    return needs


def granted(docs: list[dict[str, Any]]) -> set[Triple]:
    out: set[Triple] = set()
    for doc in docs:
        if doc["kind"] not in ("Role", "ClusterRole"):
            continue
        for rule in doc["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
            by_name = set(rule["resources"]) & BY_NAME_ONLY
            assert not by_name or rule.get("resourceNames"), f"{by_name} granted by type: {rule}"
            assert not rule.get("resourceNames") or by_name, (
                f"resourceNames: teach test_rbac {rule}"
            )
            out |= {
                (g, r, v)
                for g in rule["apiGroups"]
                for r in rule["resources"]
                for v in rule["verbs"]
            }
    return out


def _missing_handlers() -> bool:
    return not any(
        isinstance(d, ast.Call) and ast.unparse(d.func).startswith("kopf.on.")
        for _, tree in _sources()
        for d in ast.walk(tree)
    )


@pytest.fixture(autouse=True)
def _operator_written() -> None:
    if _missing_handlers():
        pytest.skip("the operator's kopf handlers are not written yet")


@pytest.mark.parametrize(
    ("render", "cluster_wide"),
    [
        (kustomize, True),
        (helm_template, True),
        (lambda: helm_template("--set", "watchNamespaces={ml}"), False),
    ],
    ids=["kustomize", "helm-cluster-wide", "helm-namespaced"],
)
def test_rbac_grants_exactly_what_the_operator_calls(render: Any, cluster_wide: bool) -> None:
    need, have = needed(cluster_wide), granted(render())
    assert not have - need, f"granted but never used: {sorted(have - need)}"
    assert not need - have, f"used but not granted: {sorted(need - have)}"


def test_namespaced_roles_hold_all_workload_permissions() -> None:
    """In namespaced mode only kopf's own cluster-scoped needs are in the ClusterRole."""
    docs = helm_template("--set", "watchNamespaces={ml}")
    (cluster_role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    cluster_scoped = {"customresourcedefinitions", "validatingwebhookconfigurations", "namespaces"}
    assert {r for _, r, _ in granted([cluster_role])} <= cluster_scoped


@pytest.mark.parametrize(
    "render",
    [kustomize, helm_template, lambda: helm_template("--set", "watchNamespaces={ml}")],
    ids=["kustomize", "helm-cluster-wide", "helm-namespaced"],
)
def test_own_objects_are_granted_by_name_in_the_operators_namespace(render: Any) -> None:
    """The Lease and the webhook Secret: only in the operator's namespace, only by name; the
    webhook configuration: only the one this install created."""
    docs = render()
    operator_ns = next(d for d in docs if d["kind"] == "Deployment")["metadata"]["namespace"]
    names = {d["kind"]: d["metadata"]["name"] for d in docs if d["kind"] in ("Lease", "Secret")}
    names["ValidatingWebhookConfiguration"] = next(
        d["metadata"]["name"] for d in docs if d["kind"] == "ValidatingWebhookConfiguration"
    )
    expected = {
        "leases": names["Lease"],
        "secrets": names["Secret"],
        "validatingwebhookconfigurations": names["ValidatingWebhookConfiguration"],
    }
    seen = set()
    for doc in docs:
        if doc["kind"] not in ("Role", "ClusterRole"):
            continue
        for rule in doc["rules"]:
            for resource in set(rule["resources"]) & BY_NAME_ONLY:
                seen.add(resource)
                assert rule["resourceNames"] == [expected[resource]], rule
                if resource != "validatingwebhookconfigurations":
                    assert doc["kind"] == "Role", doc["metadata"]
                    assert doc["metadata"]["namespace"] == operator_ns
    assert seen == set(expected)
