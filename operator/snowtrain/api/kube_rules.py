"""What Kubernetes (or the trainer) would refuse later, refused at admission instead.

A spec that the CRD schema admits can still make a child the API server refuses (a Service
named after a job whose name starts with a digit), a pod the scheduler never places (a
malformed toleration), or a trainer that fails after scheduling and an image pull (a model
URI it cannot read). Each rule here mirrors the Kubernetes validation it stands for (label
keys and values, DNS-1035 Service names, tolerations, extended resource names) or the
trainer's own model locations, so the webhook and ``snowtrain validate`` refuse them with
the field and the reason. Pure functions: no Kubernetes client.
"""

from __future__ import annotations

import re
from typing import Any

from .kinds import AnyJob
from .pod import RESERVED_VOLUME_NAMES, PodOverrides

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
PATH_PART = re.compile(r"^[A-Za-z0-9_.\-][A-Za-z0-9_.\- +=@,]*$")

TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
TOLERATION_EFFECTS = {"", "NoSchedule", "PreferNoSchedule", "NoExecute"}
#: Suffix the serving Service gets (children.serving_name); the name must stay a DNS-1035 label.
SERVE_SUFFIX = "-serve"

Problem = tuple[str, str]  # (path, reason)


def qualified_name_problem(key: str) -> str | None:
    """Why ``key`` is not a Kubernetes qualified name (``[prefix/]name``), or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
        return "the prefix before '/' must be a DNS subdomain (lowercase, at most 253 characters)"
    if not name or len(name) > 63 or not QUALIFIED_NAME.match(name):
        return (
            "must be at most 63 characters of letters, digits, '-', '_' or '.', starting and "
            "ending with a letter or digit (optionally prefixed by a DNS subdomain and '/')"
        )
    return None


def label_value_problem(value: str) -> str | None:
    if len(value) > 63 or not LABEL_VALUE.match(value):
        return (
            "must be at most 63 characters of letters, digits, '-', '_' or '.', starting and "
            "ending with a letter or digit"
        )
    return None


def node_selector_problems(path: str, selector: dict[str, Any]) -> list[Problem]:
    out: list[Problem] = []
    for key, value in selector.items():
        if why := qualified_name_problem(key):
            out.append((f"{path}[{key!r}]", f"invalid label key: {why}"))
        if not isinstance(value, str):
            out.append((f"{path}[{key!r}]", "a label value must be a string"))
        elif why := label_value_problem(value):
            out.append((f"{path}[{key!r}]", f"invalid label value: {why}"))
    return out


def toleration_problems(path: str, tolerations: list[Any]) -> list[Problem]:
    """core/v1 Toleration rules (what the API server checks on the pod, after the Job)."""
    out: list[Problem] = []
    for i, tol in enumerate(tolerations):
        at = f"{path}[{i}]"
        if not isinstance(tol, dict):
            out.append((at, "a toleration must be a mapping"))
            continue
        unknown = sorted(set(tol) - TOLERATION_KEYS)
        if unknown:
            out.append((at, f"unknown field(s) {', '.join(unknown)}"))
        key, op, value = tol.get("key", ""), tol.get("operator", "Equal"), tol.get("value", "")
        effect = tol.get("effect", "")
        if not isinstance(key, str) or (key and qualified_name_problem(key)):
            out.append((f"{at}.key", "must be a label key"))
        if op not in ("Equal", "Exists"):
            out.append((f"{at}.operator", "must be Equal or Exists"))
        elif op == "Exists" and value:
            out.append((f"{at}.value", "must be empty when operator is Exists"))
        elif op == "Equal" and not key:
            out.append((f"{at}.key", "an empty key needs operator Exists"))
        if not isinstance(value, str) or (value and label_value_problem(value)):
            out.append((f"{at}.value", "must be a label value"))
        if effect not in TOLERATION_EFFECTS:
            out.append((f"{at}.effect", "must be NoSchedule, PreferNoSchedule or NoExecute"))
        seconds = tol.get("tolerationSeconds")
        if seconds is not None:
            if not isinstance(seconds, int) or isinstance(seconds, bool):
                out.append((f"{at}.tolerationSeconds", "must be an integer"))
            elif effect != "NoExecute":
                out.append((f"{at}.tolerationSeconds", "only applies with effect NoExecute"))
    return out


def extended_resource_problem(name: str) -> str | None:
    """A device plugin's resource (``vendor.example/gpu``): a qualified name with a domain
    prefix outside kubernetes.io, as the API server requires of extended resources."""
    prefix, slash, _ = name.rpartition("/")
    if not slash or qualified_name_problem(name):
        return "must be a vendor resource name such as nvidia.com/gpu (domain/name)"
    if prefix == "kubernetes.io" or prefix.endswith(".kubernetes.io"):
        return "the kubernetes.io domain is reserved for Kubernetes' own resources"
    return None


def _path_problem(path: str) -> str | None:
    parts = [p for p in path.removeprefix("./").split("/") if p]
    if any(p in (".", "..") for p in parts):
        return "'.' and '..' are not allowed in the path"
    if any(not PATH_PART.match(p) for p in parts):
        return "the path holds characters a file name should not"
    return None


def model_uri_problem(uri: str) -> str | None:
    """The forms the trainer reads: ``pvc://CLAIM/PATH``, an absolute path, a hub id."""
    if uri.startswith("pvc://"):
        claim, _, rest = uri.removeprefix("pvc://").partition("/")
        if not claim or len(claim) > 253 or not DNS1123_SUBDOMAIN.match(claim):
            return "the claim in pvc://CLAIM/PATH must be a PersistentVolumeClaim name"
        return _path_problem(rest)
    if uri.startswith(("/", "./")):  # ./: local mode reads it relative to the YAML file
        return _path_problem(uri)
    if "://" in uri or uri.startswith(("~", ".")):
        return "use pvc://CLAIM/PATH, an absolute path, or a hub id such as org/name"
    if not HUB_ID.match(uri) or ".." in uri or "--" in uri or len(uri) > 96:
        return "not a hub id (org/name); use pvc://CLAIM/PATH or an absolute path"
    return None


def name_problems(job: AnyJob) -> list[Problem]:
    """The job's name must make valid child names: the serving Service's is a DNS-1035
    label (it must start with a letter)."""
    name = job.metadata.name or ""  # a missing name is reported where names are required
    serving = job.spec.serving
    if name and serving is not None and serving.enabled and not DNS1035_LABEL.match(name[:1]):
        return [
            (
                "metadata.name",
                f"a served job's name must start with a letter: its Service "
                f"{name}{SERVE_SUFFIX} must be a DNS-1035 label",
            )
        ]
    return []


def output_path_problem(job: AnyJob, default_path: str) -> str | None:
    """A path under another job's default folder (``<kind>/<namespace>/<name>``) could
    overwrite that job's model and checkpoints."""
    path = job.spec.output.path
    if not path:
        return None
    first = path.split("/", 1)[0]
    kinds = {"finetunejob", "pretrainjob"}
    if first.lower() in kinds and path != default_path and not path.startswith(default_path + "/"):
        return (
            f"{first}/... holds other jobs' default output folders; use a path outside it or "
            f"this job's own ({default_path})"
        )
    return None


def pod_override_problems(path: str, pod: PodOverrides | None, container: str) -> list[Problem]:
    """The only container a job may add to is its own (another name would be a sidecar with
    any image); placement fields follow the same rules as spec.resources'."""
    if pod is None or pod.spec is None:
        return []
    out: list[Problem] = [
        (f"{path}.spec.containers[{i}].name", f"only the {container!r} container can be changed")
        for i, name in enumerate(pod.container_names())
        if name != container
    ]
    out += node_selector_problems(f"{path}.spec.nodeSelector", pod.spec.node_selector)
    out += toleration_problems(f"{path}.spec.tolerations", pod.spec.tolerations)
    out += [
        (f"{path}.spec.volumes[{i}].name", "the operator's own volume; choose another name")
        for i, v in enumerate(pod.spec.volumes)
        if v.name in RESERVED_VOLUME_NAMES
    ]
    volumes = {v.name for v in pod.spec.volumes}
    for i, c in enumerate(pod.spec.containers):
        for j, mount in enumerate(c.volume_mounts):
            if mount.name not in volumes:
                out.append(
                    (
                        f"{path}.spec.containers[{i}].volumeMounts[{j}].name",
                        f"no volume {mount.name!r} in {path}.spec.volumes",
                    )
                )
    return out
