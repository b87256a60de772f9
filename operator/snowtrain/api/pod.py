"""What a job may change about its pods: a typed, bounded subset of a pod template.

A job author is not a cluster admin. Whoever may create a FineTuneJob must not be able to
run a privileged container, mount the node's disk, join the host's network, pick a service
account with its token, or swap the image or command of the container that holds the
Snowflake credentials. So ``spec.podTemplate`` (and ``spec.serving.podTemplate``) accept only
what placement, configuration and observability need -- labels, annotations, node
selection, affinity, tolerations, priority, grace period, environment, extra volumes of safe
kinds with their mounts, probe timings -- in the shape of a pod template, so it reads and
merges like one. Everything else is refused at admission with the field and the reason
(``extra="forbid"``; well-known privileged fields get a reason of their own).

An installation can allow more through the chart's values: named service accounts and
further volume kinds (csi, nfs, ephemeral), checked by the operator's policy.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from .base import ApiModel

ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
#: Variables the trainer and the model server own: the Snowflake connection (which a pod
#: override could otherwise point elsewhere) and snowtrain's own settings.
RESERVED_ENV_PREFIXES = ("SNOWFLAKE_", "SNOWTRAIN_")
#: The operator's own volumes (config, credentials, model volume...): an override volume of
#: the same name would merge into it (another Secret as the credentials, another claim as the
#: model volume). tests/unit/test_pod_overrides.py keeps this in step with the builders.
RESERVED_VOLUME_NAMES = frozenset(
    {"config", "scratch", "dshm", "models", "snowflake", "base-model", "serve-auth"}
)
#: Volume kinds an installation must allow explicitly (chart value podOverrides.volumeKinds).
ADMIN_VOLUME_KINDS = ("csi", "nfs", "ephemeral")

#: Pod template fields that widen what a pod may do, with the reason they are refused.
PRIVILEGED_POD_FIELDS = {
    "hostNetwork": "joins the node's network",
    "hostPID": "sees the node's processes",
    "hostIPC": "shares the node's IPC",
    "nodeName": "bypasses the scheduler and its policies",
    "securityContext": "the pod's security context is the operator's (non-root, seccomp)",
    "automountServiceAccountToken": "the trainer needs no Kubernetes credentials",
    "serviceAccount": "use serviceAccountName, if the installation allows it",
    "initContainers": "extra containers run with the pod's credentials mounted",
    "ephemeralContainers": "extra containers run with the pod's credentials mounted",
    "hostAliases": "rewrites the pod's name resolution",
    "shareProcessNamespace": "exposes the trainer's process and memory to other containers",
    "runtimeClassName": "a runtime class is the admin's choice",
    "overhead": "set by the runtime class",
}
PRIVILEGED_CONTAINER_FIELDS = {
    "securityContext": "privileged, capabilities and the user are the operator's",
    "image": "the image is spec.image, within the installation's allowed repositories",
    "command": "the trainer's command is the operator's",
    "args": "the trainer's arguments are the operator's",
    "envFrom": "would import variables without their names being checked",
    "resources": "use spec.resources (or spec.serving.resources)",
    "ports": "the ports are the operator's",
    "volumeDevices": "raw block devices",
    "lifecycle": "hooks run commands in the trainer's container",
    "workingDir": "the working directory is the image's",
}
PRIVILEGED_VOLUME_KINDS = {
    "hostPath": "mounts the node's filesystem",
    "gitRepo": "deprecated and runs git on the node",
    "flexVolume": "runs a driver on the node",
}


#: Unknown fields are kept by the API server (not pruned) so the webhook sees them and refuses
#: them with the field and the reason, instead of the API server dropping them silently.
KEEP_UNKNOWN = ApiModel.model_config | {
    "json_schema_extra": {"x-kubernetes-preserve-unknown-fields": True}
}


def _refuse(data: Any, refused: dict[str, str], what: str) -> Any:
    if isinstance(data, dict):
        for key, why in refused.items():
            if key in data:
                raise ValueError(f"{key} is not allowed in a {what}: {why}")
    return data


class MetadataOverrides(ApiModel):
    """Labels and annotations added to the pods."""

    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class EnvVar(ApiModel):
    """An environment variable (core/v1 EnvVar)."""

    name: str = Field(pattern=ENV_NAME_PATTERN, max_length=253)
    value: str | None = None
    value_from: dict[str, Any] | None = None
    """configMapKeyRef, secretKeyRef, fieldRef or resourceFieldRef."""

    @model_validator(mode="after")
    def _not_reserved(self) -> EnvVar:
        if self.name.upper().startswith(RESERVED_ENV_PREFIXES):
            raise ValueError(
                f"{self.name}: SNOWFLAKE_* and SNOWTRAIN_* belong to the trainer "
                "(the connection comes from spec.data.snowflake and its Secret)"
            )
        return self


class VolumeMount(ApiModel):
    """Where a volume of ``spec.volumes`` appears in the container."""

    name: str = Field(max_length=63)
    mount_path: str = Field(pattern=r"^/", max_length=1024)
    read_only: bool = False
    sub_path: str | None = Field(default=None, pattern=r"^[^/].*$", max_length=1024)


class ProbeTimings(ApiModel):
    """The timings of a probe (what it calls is the operator's)."""

    initial_delay_seconds: int | None = Field(default=None, ge=0, le=3600)
    period_seconds: int | None = Field(default=None, ge=1, le=3600)
    timeout_seconds: int | None = Field(default=None, ge=1, le=3600)
    failure_threshold: int | None = Field(default=None, ge=1, le=1000)


class ContainerOverrides(ApiModel):
    """Additions to the job's own container (``trainer``, or ``server`` when serving)."""

    model_config = KEEP_UNKNOWN

    name: str = Field(max_length=63)
    env: list[EnvVar] = Field(default_factory=list)
    volume_mounts: list[VolumeMount] = Field(default_factory=list)
    liveness_probe: ProbeTimings | None = None
    readiness_probe: ProbeTimings | None = None
    startup_probe: ProbeTimings | None = None

    @model_validator(mode="before")
    @classmethod
    def _not_privileged(cls, data: Any) -> Any:
        return _refuse(data, PRIVILEGED_CONTAINER_FIELDS, "container override")


class VolumeOverride(ApiModel):
    """An extra volume: configMap, secret, persistentVolumeClaim or emptyDir (csi, nfs and
    ephemeral where the installation allows them)."""

    model_config = KEEP_UNKNOWN

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    config_map: dict[str, Any] | None = None
    secret: dict[str, Any] | None = None
    persistent_volume_claim: dict[str, Any] | None = None
    empty_dir: dict[str, Any] | None = None
    csi: dict[str, Any] | None = None
    nfs: dict[str, Any] | None = None
    ephemeral: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _not_privileged(cls, data: Any) -> Any:
        return _refuse(data, PRIVILEGED_VOLUME_KINDS, "volume")

    @model_validator(mode="after")
    def _one_kind(self) -> VolumeOverride:
        if len(self.kinds()) != 1:
            raise ValueError("set exactly one volume kind")
        return self

    def kinds(self) -> list[str]:
        return [
            alias
            for name, alias in (
                ("config_map", "configMap"),
                ("secret", "secret"),
                ("persistent_volume_claim", "persistentVolumeClaim"),
                ("empty_dir", "emptyDir"),
                ("csi", "csi"),
                ("nfs", "nfs"),
                ("ephemeral", "ephemeral"),
            )
            if getattr(self, name) is not None
        ]


class PodSpecOverrides(ApiModel):
    """The pod spec fields a job may set."""

    model_config = KEEP_UNKNOWN

    node_selector: dict[str, str] = Field(default_factory=dict)
    affinity: dict[str, Any] | None = None
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    priority_class_name: str | None = Field(default=None, max_length=253)
    termination_grace_period_seconds: int | None = Field(default=None, ge=0, le=86_400)
    service_account_name: str | None = Field(default=None, max_length=253)
    """Only a service account the installation names (podOverrides.serviceAccounts); its
    token is never mounted."""
    volumes: list[VolumeOverride] = Field(default_factory=list)
    containers: list[ContainerOverrides] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _not_privileged(cls, data: Any) -> Any:
        return _refuse(data, PRIVILEGED_POD_FIELDS, "pod override")


class PodOverrides(ApiModel):
    """Typed additions merged onto the pod template the operator builds ({metadata, spec});
    containers and volumes merge by name."""

    model_config = KEEP_UNKNOWN

    metadata: MetadataOverrides | None = None
    spec: PodSpecOverrides | None = None

    def container_names(self) -> list[str]:
        return [c.name for c in (self.spec.containers if self.spec else [])]

    def as_template(self) -> dict[str, Any]:
        """The pod template fragment to merge: only what the job set (an unset list must not
        replace the operator's, e.g. the tolerations from spec.resources)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude_none=True)
