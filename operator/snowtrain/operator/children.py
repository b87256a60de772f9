"""Desired children of a job, as plain Kubernetes manifests (pure: no API calls).

From a validated FineTuneJob/PretrainJob and the operator settings this module builds the
trainer ConfigMap, one batch/v1 Job per attempt (for multi-node training also the attempt's
rendezvous store, a one-pod Job behind a ClusterIP Service), and the serving Deployment +
Service. Names are deterministic and every child
carries an owner reference, so re-running a reconcile never creates anything twice and
deleting the job garbage-collects everything.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Protocol

from snowtrain.api.batch import BatchPrediction
from snowtrain.api.kinds import API_VERSION, AnyJob, FineTuneJob
from snowtrain.api.schedule import TrainingSchedule
from snowtrain.api.serve_command import serve_command
from snowtrain.api.spec import ServingSpec
from snowtrain.api.torchrun import POD_IP_ENV, RENDEZVOUS_PORT, rendezvous_env
from snowtrain.api.trainer_config import default_output_path, render_trainer_config

from .settings import OperatorSettings

LABEL_JOB = "snowtrain.io/job"
LABEL_KIND = "snowtrain.io/kind"
LABEL_ATTEMPT = "snowtrain.io/attempt"
LABEL_SERVING = "snowtrain.io/serving"
LABEL_COMPONENT = "app.kubernetes.io/component"
COMPONENT_TRAINER = "trainer"
COMPONENT_RENDEZVOUS = "rendezvous"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
SPEC_HASH_ANNOTATION = "snowtrain.io/spec-hash"

CONFIG_DIR = "/etc/snowtrain"
CONFIG_FILE = f"{CONFIG_DIR}/config.json"
CREDENTIALS_DIR = "/var/run/secrets/snowtrain/snowflake"
SERVE_AUTH_DIR = "/var/run/secrets/snowtrain/serve-auth"
SERVE_AUTH_FILE = f"{SERVE_AUTH_DIR}/token"
BASE_MODEL_MOUNT = "/mnt/base-model"
CHAMPION_MOUNT = "/mnt/champion"
SCRATCH_DIR = "/tmp"
TERMINATION_LOG = "/dev/termination-log"
TRAINER_CONTAINER = "trainer"
SERVER_CONTAINER = "server"
TRAINER_COMMAND = ("python", "-m", "snowtrain.trainer", "--config", CONFIG_FILE)
#: Seconds the trainer pod gets to save a checkpoint after SIGTERM (preemption, deletion).
TRAINER_GRACE_SECONDS = 120
RUN_AS_USER = 1000


@dataclass(frozen=True)
class Capabilities:
    """What the API server supports, derived from its version (``/version``)."""

    major: int = 1
    minor: int = 30

    @classmethod
    def from_version(cls, major: str, minor: str) -> Capabilities:
        """Parse ``/version``'s strings; providers append ``+`` to the minor (``"27+"``)."""
        return cls(
            int("".join(c for c in major if c.isdigit()) or 1),
            int("".join(c for c in minor if c.isdigit()) or 0),
        )

    @property
    def job_suspend(self) -> bool:
        """``Job.spec.suspend`` exists from 1.21 (alpha, on by default from 1.22)."""
        return (self.major, self.minor) >= (1, 21)


@dataclass(frozen=True)
class ModelLocation:
    """A model directory on a volume: ``claim`` None means an emptyDir (not persistent)."""

    claim: str | None
    path: str

    @property
    def uri(self) -> str | None:
        return f"pvc://{self.claim}/{self.path}" if self.claim else None

    @classmethod
    def parse(cls, uri: str) -> ModelLocation | None:
        """``pvc://claim/path`` -> location; anything else -> None."""
        if not uri.startswith("pvc://"):
            return None
        claim, _, path = uri.removeprefix("pvc://").partition("/")
        return cls(claim, path.strip("/")) if claim else None


Owner = AnyJob | BatchPrediction | TrainingSchedule
"""Any snowtrain resource that owns children."""

# --- names and metadata -------------------------------------------------------------------


def child_name(name: str, suffix: str, limit: int = 63) -> str:
    """``<name>-<suffix>``, shortened with a hash when it would exceed a label's 63 chars."""
    full = f"{name}-{suffix}"
    if len(full) <= limit:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    return f"{name[: limit - len(suffix) - 10].rstrip('-')}-{digest}-{suffix}"


def config_map_name(name: str) -> str:
    return child_name(name, "config")


def job_name(name: str, attempt: int) -> str:
    return child_name(name, f"a{attempt}")


def rendezvous_name(name: str, attempt: int) -> str:
    """The rendezvous store's Job and Service of a multi-node attempt."""
    return child_name(name, f"a{attempt}-rdzv")


def serving_name(name: str) -> str:
    return child_name(name, "serve")


def training_policy_name(name: str) -> str:
    return child_name(name, "training")


def selector_labels(job: Owner) -> dict[str, str]:
    """Labels that find every training child of ``job`` (list by these before creating)."""
    return {LABEL_JOB: job.metadata.name or "", LABEL_KIND: job.kind}


def owner_reference(job: Owner) -> dict[str, Any]:
    """Controller owner reference: deleting the job garbage-collects the child."""
    return {
        "apiVersion": API_VERSION,
        "kind": job.kind,
        "name": job.metadata.name,
        "uid": job.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(job: Owner, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": job.metadata.namespace,
        "labels": {**selector_labels(job), LABEL_MANAGED_BY: "snowtrain", **(labels or {})},
        "ownerReferences": [owner_reference(job)],
    }


def output_location(job: AnyJob) -> ModelLocation:
    """Where this job writes its model (claim None: an emptyDir that dies with the pod)."""
    out = job.spec.output
    return ModelLocation(out.volume_claim_name, out.path or default_output_path(job))


def spec_hash(obj: Any) -> str:
    """Stable hash of a manifest part: lets a reconcile tell whether a child needs a patch."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


# --- pod template merging -------------------------------------------------------------------

_MERGE_BY_NAME = {"containers", "initContainers", "volumes", "volumeMounts", "env", "ports"}


def merge_pod_template(base: dict[str, Any], override: dict[str, Any] | None) -> dict[str, Any]:
    """Deep-merge ``override`` onto ``base`` (neither is modified).

    Maps merge recursively; lists of named items (containers, volumes, env, ...) merge item by
    item on ``name`` with new names appended; any other list is replaced. This is the subset of
    strategic merge that pod templates need, so a user's ``podTemplate`` can add an env var
    to the "trainer" container without restating it.
    """
    result = copy.deepcopy(base)
    for key, value in (override or {}).items():
        current = result.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            result[key] = merge_pod_template(current, value)
        elif key in _MERGE_BY_NAME and isinstance(current, list) and isinstance(value, list):
            result[key] = _merge_named(current, value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _merge_named(base: list[Any], override: list[Any]) -> list[Any]:
    merged = [copy.deepcopy(item) for item in base]
    index = {item.get("name"): i for i, item in enumerate(merged) if isinstance(item, dict)}
    for item in override:
        name = item.get("name") if isinstance(item, dict) else None
        if name is not None and name in index:
            merged[index[name]] = merge_pod_template(merged[index[name]], item)
        else:
            merged.append(copy.deepcopy(item))
    return merged


# --- security -------------------------------------------------------------------------------


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


class Placement(Protocol):
    """Where a pod may run: a spec's resources block (training or prediction)."""

    node_selector: dict[str, str]
    tolerations: list[dict[str, Any]]
    priority_class_name: str | None


def batch_pod_spec(
    container: dict[str, Any],
    volumes: list[dict[str, Any]],
    grace_seconds: int,
    placement: Placement,
) -> dict[str, Any]:
    """The pod of a run-to-completion Job (trainer, predictor): never restarted in place (the
    Job replaces it), no service account token, no service links, non-root, placed as the
    spec asks."""
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": volumes,
        "terminationGracePeriodSeconds": grace_seconds,
    }
    if placement.node_selector:
        pod_spec["nodeSelector"] = dict(placement.node_selector)
    if placement.tolerations:
        pod_spec["tolerations"] = copy.deepcopy(placement.tolerations)
    if placement.priority_class_name:
        pod_spec["priorityClassName"] = placement.priority_class_name
    return pod_spec


def mount_snowflake_secret(
    volumes: list[dict[str, Any]], mounts: list[dict[str, Any]], secret: Any | None
) -> None:
    """The Snowflake Secret as files under CREDENTIALS_DIR (never env vars: they show in the
    pod spec and in ``env``), group-readable for the non-root user."""
    if secret:
        volumes.append(
            {"name": "snowflake", "secret": {"secretName": secret.name, "defaultMode": 0o440}}
        )
        mounts.append({"name": "snowflake", "mountPath": CREDENTIALS_DIR, "readOnly": True})


def run_container(
    command: list[str],
    image: str,
    settings: OperatorSettings,
    resources: dict[str, Any],
    mounts: list[dict[str, Any]],
) -> dict[str, Any]:
    """The container of a run-to-completion pod that speaks the trainer's protocol (the
    predictor, the data probe): its summary in the termination message, non-root, read-only
    root filesystem."""
    return {
        "name": TRAINER_CONTAINER,
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": command,
        "env": [*_scratch_env(), {"name": "TERMINATION_MESSAGE_PATH", "value": TERMINATION_LOG}],
        "resources": resources,
        "volumeMounts": mounts,
        "securityContext": container_security_context(),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _scratch_env() -> list[dict[str, str]]:
    """Point every cache at the writable /tmp emptyDir (the root filesystem is read-only)."""
    env = {
        "HOME": SCRATCH_DIR,
        "HF_HOME": f"{SCRATCH_DIR}/hf",
        "XDG_CACHE_HOME": f"{SCRATCH_DIR}/.cache",
        "TORCHINDUCTOR_CACHE_DIR": f"{SCRATCH_DIR}/torchinductor",
        "TRITON_CACHE_DIR": f"{SCRATCH_DIR}/triton",
        "MPLCONFIGDIR": f"{SCRATCH_DIR}/matplotlib",
        "PYTHONUNBUFFERED": "1",
    }
    return [{"name": k, "value": v} for k, v in env.items()]


def _resources(
    cpu: str | None, memory: str | None, gpus: int, gpu_name: str
) -> dict[str, dict[str, str]]:
    """Requests equal limits (Guaranteed QoS when both are set; GPUs require it)."""
    limits: dict[str, str] = {}
    if cpu:
        limits["cpu"] = cpu
    if memory:
        limits["memory"] = memory
    if gpus:
        limits[gpu_name] = str(gpus)
    return {"requests": dict(limits), "limits": dict(limits)} if limits else {}


# --- training -------------------------------------------------------------------------------


def base_model_location(job: AnyJob, pretrain_model_uri: str | None = None) -> ModelLocation | None:
    """The volume to mount read-only for the starting model, if it lives on a claim.

    ``pretrain_model_uri`` is the referenced PretrainJob's ``status.model.uri`` (the caller
    reads it; a FineTuneJob with a pretrainJobRef waits until it exists).
    """
    if not isinstance(job, FineTuneJob):
        return None
    uri = pretrain_model_uri if job.spec.base_model.pretrain_job_ref else job.spec.base_model.uri
    return ModelLocation.parse(uri) if uri else None


def champion_location(job: AnyJob) -> ModelLocation | None:
    """The volume to mount read-only for the evaluation gate's champion, if on a claim."""
    promotion = job.spec.promotion
    uri = promotion.champion_uri if promotion else None
    return ModelLocation.parse(uri) if uri else None


def build_trainer_config_text(
    job: AnyJob, settings: OperatorSettings, pretrain_model_uri: str | None = None
) -> str:
    """The trainer config JSON: paths as the pod sees them, credentials as a directory only."""
    out = output_location(job)
    output_dir = f"{settings.model_mount_path}/{out.path}"
    base = base_model_location(job, pretrain_model_uri)
    base_model = f"{BASE_MODEL_MOUNT}/{base.path}".rstrip("/") if base else None
    if isinstance(job, FineTuneJob) and job.spec.base_model.pretrain_job_ref and not base:
        base_model = pretrain_model_uri
    champion = champion_location(job)
    secret = job.spec.data.snowflake.secret_ref
    config = render_trainer_config(
        job,
        output_dir=output_dir,
        checkpoint_dir=f"{output_dir}/checkpoints",
        output_uri=out.uri,
        base_model=base_model,
        credentials_dir=CREDENTIALS_DIR if secret else None,
        progress_interval_seconds=min(5.0, settings.progress_refresh_seconds),
        champion_path=f"{CHAMPION_MOUNT}/{champion.path}".rstrip("/") if champion else None,
    )
    return config.dumps()


def build_config_map(
    job: AnyJob, settings: OperatorSettings, pretrain_model_uri: str | None = None
) -> dict[str, Any]:
    """``<name>-config`` with ``config.json``; never a secret (those stay in their Secret)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(job, config_map_name(job.metadata.name or "")),
        "data": {"config.json": build_trainer_config_text(job, settings, pretrain_model_uri)},
    }


def _training_volumes(
    job: AnyJob, settings: OperatorSettings, pretrain_model_uri: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    spec = job.spec
    out = output_location(job)
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": config_map_name(job.metadata.name or "")}},
        {"name": "scratch", "emptyDir": {}},
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "scratch", "mountPath": SCRATCH_DIR},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    if spec.resources.shared_memory:
        volumes[2]["emptyDir"]["sizeLimit"] = spec.resources.shared_memory
    if out.claim:
        volumes.append({"name": "models", "persistentVolumeClaim": {"claimName": out.claim}})
    else:
        volumes.append({"name": "models", "emptyDir": {}})
    mounts.append({"name": "models", "mountPath": settings.model_mount_path})
    mount_snowflake_secret(volumes, mounts, spec.data.snowflake.secret_ref)
    base = base_model_location(job, pretrain_model_uri)
    for location, mount in ((base, BASE_MODEL_MOUNT), (champion_location(job), CHAMPION_MOUNT)):
        if location is not None:
            _mount_read_only(volumes, mounts, location.claim, mount)
    return volumes, mounts


def _mount_read_only(
    volumes: list[dict[str, Any]], mounts: list[dict[str, Any]], claim: str | None, path: str
) -> None:
    """Mount ``claim`` read-only at ``path``, reusing the pod's volume of that claim if it
    has one: the same claim twice in one pod never mounts (the kubelet waits on the second
    volume forever), so a claim already there is mounted a second time instead."""
    for volume in volumes:
        if (volume.get("persistentVolumeClaim") or {}).get("claimName") == claim:
            mounts.append({"name": volume["name"], "mountPath": path, "readOnly": True})
            return
    name = path.rsplit("/", 1)[-1]
    volumes.append({"name": name, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
    mounts.append({"name": name, "mountPath": path, "readOnly": True})


def build_training_job(
    job: AnyJob,
    settings: OperatorSettings,
    attempt: int,
    capabilities: Capabilities,
    pretrain_model_uri: str | None = None,
    rendezvous_endpoint: str | None = None,
) -> dict[str, Any]:
    """batch/v1 Job of one attempt (``<name>-a<attempt>``).

    A Kueue queue label makes the Job start suspended (Kueue unsuspends it on admission),
    as does ``spec.suspend``; both only where the API server has ``Job.spec.suspend``.
    Several nodes are ``nodes`` alike pods of one Job (one gang for Kueue, no Indexed Job
    needed) meeting at ``rendezvous_endpoint``, the attempt's store Service (required then).
    """
    spec = job.spec
    res = spec.resources
    name = job.metadata.name or ""
    jname = job_name(name, attempt)
    labels = {LABEL_ATTEMPT: str(attempt), LABEL_COMPONENT: COMPONENT_TRAINER}
    job_labels = dict(labels)
    if res.queue_name:
        job_labels[KUEUE_QUEUE_LABEL] = res.queue_name
    volumes, mounts = _training_volumes(job, settings, pretrain_model_uri)
    env: list[dict[str, Any]] = [
        *_scratch_env(),
        {"name": "SNOWTRAIN_ATTEMPT", "value": str(attempt)},
        {"name": "TERMINATION_MESSAGE_PATH", "value": TERMINATION_LOG},
    ]
    if res.nodes > 1:
        if not rendezvous_endpoint:
            raise ValueError(f"{jname}: {res.nodes} nodes need the rendezvous store's endpoint")
        # The pods regroup (a lost pod's replacement joins) as often as the Job may replace.
        meet = rendezvous_env(res.nodes, rendezvous_endpoint, jname, spec.backoff_limit)
        env += [{"name": k, "value": v} for k, v in meet.items()]
        env.append({"name": POD_IP_ENV, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    container = {
        "name": TRAINER_CONTAINER,
        "image": spec.image or settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": list(TRAINER_COMMAND),
        "env": env,
        "resources": _resources(res.cpu, res.memory, res.gpus_per_node, res.gpu_resource_name),
        "volumeMounts": mounts,
        "securityContext": container_security_context(),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    # Time for the trainer to save a checkpoint on SIGTERM (exit 75 -> resume).
    pod_spec = batch_pod_spec(container, volumes, TRAINER_GRACE_SECONDS, res)
    template = {
        "metadata": {"labels": {**selector_labels(job), **labels}},
        "spec": pod_spec,
    }
    template = merge_pod_template(
        template, spec.pod_template.as_template() if spec.pod_template else None
    )
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.backoff_limit,
        "completions": res.nodes,
        "parallelism": res.nodes,
        "template": template,
    }
    if spec.active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if capabilities.job_suspend:
        job_spec["suspend"] = bool(spec.suspend or res.queue_name)
    manifest: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(job, jname, job_labels),
        "spec": job_spec,
    }
    manifest["metadata"]["annotations"] = {SPEC_HASH_ANNOTATION: spec_hash(job_spec)}
    return manifest


def _rendezvous_labels(job: AnyJob, attempt: int) -> dict[str, str]:
    return {
        **selector_labels(job),
        LABEL_ATTEMPT: str(attempt),
        LABEL_COMPONENT: COMPONENT_RENDEZVOUS,
    }


def build_rendezvous_job(
    job: AnyJob, settings: OperatorSettings, attempt: int, capabilities: Capabilities
) -> dict[str, Any]:
    """The store a multi-node attempt's pods meet on: a one-pod Job (its controller replaces
    the pod if its node goes) of the trainer image, a quarter core at most and no GPU. With
    a Kueue queue it joins the queue too (starts suspended), so a Kueue that manages every
    Job admits it rather than hold it forever.

    Its pod carries the job's selector labels, so the training NetworkPolicy admits the
    trainer pods and nothing else; the operator deletes it when the attempt ends."""
    spec = job.spec
    labels = _rendezvous_labels(job, attempt)
    container = {
        "name": COMPONENT_RENDEZVOUS,
        "image": spec.image or settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["python", "-m", "snowtrain.trainer.rendezvous_store"],
        "args": [f"--port={RENDEZVOUS_PORT}"],
        "ports": [{"name": COMPONENT_RENDEZVOUS, "containerPort": RENDEZVOUS_PORT}],
        "env": _scratch_env(),
        "readinessProbe": {
            "tcpSocket": {"port": RENDEZVOUS_PORT},
            "periodSeconds": 2,
        },
        "resources": {
            "requests": {"cpu": "50m", "memory": "320Mi"},
            "limits": {"cpu": "250m", "memory": "512Mi"},
        },
        "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH_DIR}],
        "securityContext": container_security_context(),
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "OnFailure",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": [{"name": "scratch", "emptyDir": {}}],
        "terminationGracePeriodSeconds": 5,
    }
    if spec.resources.tolerations:  # where only tainted nodes exist, the store fits there too
        pod_spec["tolerations"] = copy.deepcopy(spec.resources.tolerations)
    job_spec: dict[str, Any] = {
        "backoffLimit": 6,
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    job_labels = dict(labels)
    queue = spec.resources.queue_name
    if queue:
        job_labels[KUEUE_QUEUE_LABEL] = queue
        if capabilities.job_suspend:
            job_spec["suspend"] = True
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(job, rendezvous_name(job.metadata.name or "", attempt), job_labels),
        "spec": job_spec,
    }


def build_rendezvous_service(job: AnyJob, attempt: int) -> dict[str, Any]:
    """ClusterIP Service in front of the attempt's store: the trainer pods dial its IP (no
    cluster DNS needed); kube-proxy or the network plugin takes it to the store pod."""
    labels = _rendezvous_labels(job, attempt)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(job, rendezvous_name(job.metadata.name or "", attempt), labels),
        "spec": {
            "type": "ClusterIP",
            "selector": labels,
            "ports": [
                {
                    "name": COMPONENT_RENDEZVOUS,
                    "port": RENDEZVOUS_PORT,
                    "targetPort": RENDEZVOUS_PORT,
                }
            ],
        },
    }


# --- serving --------------------------------------------------------------------------------


def serving_labels(job: AnyJob) -> dict[str, str]:
    """Serving pods carry their own label (not ``snowtrain.io/job``): training selectors never
    match them."""
    return {LABEL_SERVING: job.metadata.name or "", LABEL_KIND: job.kind}


def serving_endpoint(job: AnyJob) -> str:
    port = (job.spec.serving or ServingSpec()).port
    return f"http://{serving_name(job.metadata.name or '')}.{job.metadata.namespace}.svc:{port}"


def build_serving_deployment(
    job: AnyJob, settings: OperatorSettings, model_uri: str | None = None
) -> dict[str, Any]:
    """Deployment running ``python -m snowtrain.serve`` on the job's model."""
    serving = job.spec.serving
    assert serving is not None
    location = (ModelLocation.parse(model_uri) if model_uri else None) or output_location(job)
    return serving_deployment(
        job,
        serving_name(job.metadata.name or ""),
        serving,
        location,
        settings,
        image=job.spec.image,
        gpu_resource_name=job.spec.resources.gpu_resource_name,
        labels=serving_labels(job),
    )


def serving_deployment(
    owner: Owner,
    deployment_name: str,
    serving: ServingSpec,
    location: ModelLocation,
    settings: OperatorSettings,
    *,
    image: str | None,
    gpu_resource_name: str,
    labels: dict[str, str],
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Deployment running ``python -m snowtrain.serve`` on the model at ``location``,
    mounted read-only; ``labels`` select its pods (a job's endpoint, or one track of a
    schedule's). The spec hash annotation says when it must roll."""
    name = owner.metadata.name or ""
    model_dir = f"{settings.model_mount_path}/{location.path}"
    volumes: list[dict[str, Any]] = [{"name": "scratch", "emptyDir": {}}]
    if location.claim:
        volumes.append(
            {
                "name": "models",
                "persistentVolumeClaim": {"claimName": location.claim, "readOnly": True},
            }
        )
    else:
        volumes.append({"name": "models", "emptyDir": {}})
    mounts = [
        {"name": "scratch", "mountPath": SCRATCH_DIR},
        {"name": "models", "mountPath": settings.model_mount_path, "readOnly": True},
    ]
    if serving.auth:
        ref = serving.auth.secret_ref
        # Mounted as a file, not an env var: a rotated Secret reaches the running server
        # (it re-reads the file), and the token never shows in the pod spec or `env`.
        volumes.append(
            {
                "name": "serve-auth",
                "secret": {
                    "secretName": ref.name,
                    "items": [{"key": ref.key, "path": "token"}],
                    "defaultMode": 0o440,
                },
            }
        )
        mounts.append({"name": "serve-auth", "mountPath": SERVE_AUTH_DIR, "readOnly": True})
    port = serving.port
    probe = {"httpGet": {"port": "http"}, "periodSeconds": 5, "timeoutSeconds": 3}
    container = {
        "name": SERVER_CONTAINER,
        "image": image or settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": serve_command(
            model_dir,
            name=name,
            host="0.0.0.0",
            port=port,
            max_batch_size=serving.max_batch_size,
            max_wait_ms=serving.max_wait_ms,
            max_queue=serving.max_queue,
            # Only when asked: an unchanged command keeps existing Deployments from rolling.
            quantize=serving.quantize if serving.quantize != "none" else None,
            token_file=SERVE_AUTH_FILE if serving.auth else None,
        ),
        "ports": [{"name": "http", "containerPort": port}],
        "env": _scratch_env(),
        "resources": _resources(
            serving.resources.cpu,
            serving.resources.memory,
            serving.resources.gpus,
            gpu_resource_name,
        ),
        "readinessProbe": merge_pod_template(probe, {"httpGet": {"path": "/readyz"}}),
        # Loading torch and the weights can take minutes on a small CPU limit: the startup
        # probe gives it 10 minutes, after which liveness takes over with a short fuse.
        "startupProbe": merge_pod_template(
            probe, {"httpGet": {"path": "/healthz"}, "failureThreshold": 120}
        ),
        "livenessProbe": merge_pod_template(
            probe, {"httpGet": {"path": "/healthz"}, "failureThreshold": 6}
        ),
        # Endpoints drop a terminating pod at the same time as it gets SIGTERM: keep serving a
        # few seconds so in-flight routing settles, then the server drains (--graceful-timeout).
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
        "volumeMounts": mounts,
        "securityContext": container_security_context(),
        # A server that exits (a model that will not load) leaves its log's tail in the pod's
        # status: the canary's rollback and `kubectl describe` quote why.
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    template = {
        "metadata": {"labels": dict(labels)},
        "spec": {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": pod_security_context(),
            "terminationGracePeriodSeconds": 45,
            "containers": [container],
            "volumes": volumes,
        },
    }
    template = merge_pod_template(
        template, serving.pod_template.as_template() if serving.pod_template else None
    )
    spec = {
        "replicas": serving.replicas,
        "selector": {"matchLabels": dict(labels)},
        "template": template,
    }
    meta = _metadata(owner, deployment_name, {**labels, LABEL_COMPONENT: "server"})
    meta["annotations"] = {**(annotations or {}), SPEC_HASH_ANNOTATION: spec_hash(spec)}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}


def build_serving_service(job: AnyJob) -> dict[str, Any]:
    """ClusterIP Service in front of the serving pods (``status.serving.endpoint``)."""
    serving = job.spec.serving
    assert serving is not None
    labels = serving_labels(job)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(
            job, serving_name(job.metadata.name or ""), {**labels, LABEL_COMPONENT: "server"}
        ),
        "spec": {
            "selector": dict(labels),
            "ports": [{"name": "http", "port": serving.port, "targetPort": "http"}],
        },
    }


# --- network policies -----------------------------------------------------------------------


def _network_policy(
    job: Owner, name: str, pods: dict[str, str], ingress: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(job, name),
        "spec": {
            "podSelector": {"matchLabels": dict(pods)},
            # Ingress only: the trainer reaches Snowflake, stages and registries whose
            # addresses no policy can list, and serving pods answer on established flows.
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def build_training_network_policy(job: AnyJob) -> dict[str, Any]:
    """Training pods accept connections from their own job's pods only (torchrun's
    rendezvous and NCCL/Gloo pick ports at run time, so every port, but no other pod)."""
    own = selector_labels(job)
    return _network_policy(
        job,
        training_policy_name(job.metadata.name or ""),
        own,
        [{"from": [{"podSelector": {"matchLabels": dict(own)}}]}],
    )


def build_serving_network_policy(job: AnyJob, settings: OperatorSettings) -> dict[str, Any]:
    """Serving pods accept the serving port only, from pods of their own namespace and the
    peers the installation lists (``serving_ingress_from``): not from every pod in the
    cluster. The kubelet's probes come from the node and are not subject to it."""
    serving = job.spec.serving
    assert serving is not None
    peers = [{"podSelector": {}}, *copy.deepcopy(settings.serving_ingress_from)]
    return _network_policy(
        job,
        serving_name(job.metadata.name or ""),
        serving_labels(job),
        [{"from": peers, "ports": [{"protocol": "TCP", "port": serving.port}]}],
    )
