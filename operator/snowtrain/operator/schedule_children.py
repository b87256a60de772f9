"""Desired children of a TrainingSchedule, as plain manifests (pure, like ``children.py``).

- a *run* per tick: a FineTuneJob or PretrainJob from the template, owned by the schedule,
  named from its tick (``<schedule>-<minutes since the epoch>``), its own serving switched
  off (the schedule serves) and, with a gate, the model in service named as its champion;
- a *probe* Job per tick (with a data trigger): ``python -m snowtrain.probe``, a small pod
  boxed in like a training pod, whose termination message carries the data's fingerprint;
- the *endpoint*: one Service named after the schedule in front of two Deployments, the
  stable track (the model in service) and, during a promotion, the canary track;
- a *prune* Job per pruned run: removes the run's model directory from the claim.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any, Final

from snowtrain.api.identifiers import canonical_column
from snowtrain.api.pod import PodOverrides
from snowtrain.api.probe_config import ProbeConfig
from snowtrain.api.schedule import ANNOTATION_FINGERPRINT as ANNOTATION_FINGERPRINT
from snowtrain.api.schedule import ANNOTATION_ROWS as ANNOTATION_ROWS
from snowtrain.api.schedule import ANNOTATION_TICK as ANNOTATION_TICK
from snowtrain.api.schedule import LABEL_SCHEDULE as LABEL_SCHEDULE
from snowtrain.api.schedule import TrainingSchedule, run_manifest
from snowtrain.api.spec import ServingSpec
from snowtrain.api.trainer_config import snowflake_settings
from snowtrain.api.validation import template_job

from . import children as ch
from .settings import OperatorSettings

# LABEL_SCHEDULE and the run's ANNOTATION_* are defined where the run is built (local mode
# builds runs too) and re-exported above (``import X as X``), so the reconcile and the tests
# keep reading them from here.
LABEL_TRACK: Final = "snowtrain.io/track"
LABEL_RUN: Final = "snowtrain.io/run"
ANNOTATION_RUN: Final = "snowtrain.io/run"
ANNOTATION_MODEL: Final = "snowtrain.io/model"
ANNOTATION_SINCE: Final = "snowtrain.io/since"
COMPONENT_PROBE: Final = "probe"
COMPONENT_PRUNE: Final = "prune"
PROBE_COMMAND: Final = ("python", "-m", "snowtrain.probe", "--config", ch.CONFIG_FILE)
STABLE: Final = "stable"
CANARY: Final = "canary"


def minutes(tick: datetime) -> int:
    return int(tick.timestamp()) // 60


def probe_name(schedule: str, tick: datetime) -> str:
    return ch.child_name(schedule, f"probe-{minutes(tick)}")


def endpoint_name(schedule: str) -> str:
    """The Service (and the stable Deployment): the same whatever run's model it serves."""
    return ch.serving_name(schedule)


def canary_name(schedule: str) -> str:
    return ch.child_name(schedule, "serve-canary")


def prune_name(run: str) -> str:
    return ch.child_name(run, "prune")


def build_run(
    schedule: TrainingSchedule,
    tick: datetime,
    *,
    champion_uri: str | None,
    fingerprint: str | None = None,
    rows: int | None = None,
) -> dict[str, Any]:
    """The run of ``tick``: the template's job (:func:`snowtrain.api.schedule.run_manifest`,
    which local mode builds too), owned by the schedule and labelled as the operator's."""
    manifest = run_manifest(
        schedule, tick, champion_uri=champion_uri, fingerprint=fingerprint, rows=rows
    )
    metadata = manifest["metadata"]
    metadata["labels"][ch.LABEL_MANAGED_BY] = "snowtrain"
    # Deleting the schedule deletes its runs (and, through them, their children).
    metadata["ownerReferences"] = [ch.owner_reference(schedule)]
    return manifest


def build_probe_config_map(schedule: TrainingSchedule, tick: datetime) -> dict[str, Any]:
    """``<probe>-config``: the run's source and the trigger's column; no secret."""
    job = template_job(schedule)
    data = job.spec.data
    trigger = schedule.spec.data_trigger
    secret = data.snowflake.secret_ref
    config = ProbeConfig(
        name=schedule.metadata.name or "schedule",
        snowflake=snowflake_settings(data.snowflake, ch.CREDENTIALS_DIR if secret else None),
        table=data.table,
        query=data.query,
        column=canonical_column(trigger.column) if trigger and trigger.column else None,
    )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": ch._metadata(
            schedule, ch.config_map_name(probe_name(schedule.metadata.name or "", tick))
        ),
        "data": {"config.json": config.dumps()},
    }


#: The probe runs one query: a small pod, whatever the runs ask for.
PROBE_RESOURCES: Final = {"cpu": "250m", "memory": "512Mi"}
PROBE_GRACE_SECONDS: Final = 10
PROBE_DEADLINE_SECONDS: Final = 600


def build_probe_job(
    schedule: TrainingSchedule, tick: datetime, settings: OperatorSettings
) -> dict[str, Any]:
    """batch/v1 Job ``<schedule>-probe-<minutes>``: the training pod's box (non-root, read-only
    root filesystem, no token, the Snowflake Secret as files, the template's placement and
    pod additions) around one query."""
    job = template_job(schedule)
    spec = job.spec
    name = probe_name(schedule.metadata.name or "", tick)
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": ch.config_map_name(name)}},
        {"name": "scratch", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": ch.CONFIG_DIR, "readOnly": True},
        {"name": "scratch", "mountPath": ch.SCRATCH_DIR},
    ]
    ch.mount_snowflake_secret(volumes, mounts, spec.data.snowflake.secret_ref)
    container = ch.run_container(
        list(PROBE_COMMAND),
        spec.image or settings.trainer_image,
        settings,
        {"requests": dict(PROBE_RESOURCES), "limits": dict(PROBE_RESOURCES)},
        mounts,
    )
    pod_spec = ch.batch_pod_spec(container, volumes, PROBE_GRACE_SECONDS, spec.resources)
    labels = {ch.LABEL_COMPONENT: COMPONENT_PROBE}
    template = {
        "metadata": {"labels": {**ch.selector_labels(schedule), **labels}},
        "spec": pod_spec,
    }
    template = ch.merge_pod_template(template, _probe_overrides(spec.pod_template))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": ch._metadata(schedule, name, labels),
        "spec": {
            "backoffLimit": 2,
            "completions": 1,
            "parallelism": 1,
            "activeDeadlineSeconds": PROBE_DEADLINE_SECONDS,
            "template": template,
        },
    }


def _probe_overrides(overrides: PodOverrides | None) -> dict[str, Any] | None:
    """The run's pod additions that also concern the probe (placement, labels, the
    container's env for a proxy); never its resources or probes, which are the trainer's."""
    if overrides is None:
        return None
    template = overrides.as_template()
    for container in (template.get("spec") or {}).get("containers") or []:
        for key in ("resources", "livenessProbe", "readinessProbe", "startupProbe"):
            container.pop(key, None)
    return template


def endpoint_labels(schedule: TrainingSchedule) -> dict[str, str]:
    """What the Service selects: every serving pod of the schedule, either track."""
    return {ch.LABEL_SERVING: schedule.metadata.name or "", ch.LABEL_KIND: schedule.KIND}


def build_endpoint_deployment(
    schedule: TrainingSchedule,
    settings: OperatorSettings,
    *,
    run: str,
    model_uri: str,
    track: str,
    since: str | None = None,
) -> dict[str, Any]:
    """One track of the endpoint: the stable Deployment (the model in service) or the canary
    (a promoted model on trial, ``canary.replicas`` pods). The stable one rolls with a surge
    and never below its ready pods, so a new model replaces the old without a dropped
    request."""
    serving = schedule.spec.serving
    assert serving is not None
    location = ch.ModelLocation.parse(model_uri) or ch.ModelLocation(None, model_uri)
    job = template_job(schedule)
    plain = ServingSpec.model_validate(serving.model_dump(exclude={"canary"}))
    if track == CANARY and serving.canary is not None:
        plain = plain.model_copy(update={"replicas": serving.canary.replicas})
    name = endpoint_name(schedule.metadata.name or "")
    deployment = ch.serving_deployment(
        schedule,
        name if track == STABLE else canary_name(schedule.metadata.name or ""),
        plain,
        location,
        settings,
        image=job.spec.image,
        gpu_resource_name=job.spec.resources.gpu_resource_name,
        # A canary's pods also carry its run: a Deployment per trial, so the pods of the one
        # before (still terminating, still Ready) are never counted as this one's.
        labels={
            **endpoint_labels(schedule),
            LABEL_TRACK: track,
            **({LABEL_RUN: run} if track == CANARY else {}),
        },
        annotations={
            ANNOTATION_RUN: run,
            ANNOTATION_MODEL: model_uri,
            **({ANNOTATION_SINCE: since} if since else {}),
        },
    )
    deployment["spec"]["strategy"] = {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    # The server reports its model as the schedule's name, whichever run trained it.
    return deployment


def build_endpoint_service(schedule: TrainingSchedule) -> dict[str, Any]:
    """The stable Service: both tracks' ready pods answer behind it."""
    serving = schedule.spec.serving
    assert serving is not None
    labels = endpoint_labels(schedule)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": ch._metadata(
            schedule,
            endpoint_name(schedule.metadata.name or ""),
            {**labels, ch.LABEL_COMPONENT: "server"},
        ),
        "spec": {
            "selector": dict(labels),
            "ports": [{"name": "http", "port": serving.port, "targetPort": "http"}],
        },
    }


def build_endpoint_network_policy(
    schedule: TrainingSchedule, settings: OperatorSettings
) -> dict[str, Any]:
    """Serving pods accept the serving port from their namespace and the installation's
    listed peers, as a job's serving pods do, and from the operator's namespace: the
    operator reads a canary's error rate from its /metrics."""
    serving = schedule.spec.serving
    assert serving is not None
    peers = [{"podSelector": {}}, *copy.deepcopy(settings.serving_ingress_from)]
    if settings.pod_namespace:
        operator_ns = {"kubernetes.io/metadata.name": settings.pod_namespace}
        peers.append({"namespaceSelector": {"matchLabels": operator_ns}})
    return ch._network_policy(
        schedule,
        endpoint_name(schedule.metadata.name or ""),
        endpoint_labels(schedule),
        [{"from": peers, "ports": [{"protocol": "TCP", "port": serving.port}]}],
    )


def build_prune_job(
    schedule: TrainingSchedule, run: str, model_uri: str, settings: OperatorSettings
) -> dict[str, Any] | None:
    """A Job that deletes a pruned run's model directory (and its checkpoints) from the
    claim; None when the model is on no claim (nothing outlived the run's pod)."""
    location = ch.ModelLocation.parse(model_uri)
    if location is None or not location.claim or not location.path:
        return None
    job = template_job(schedule)
    target = f"{settings.model_mount_path}/{location.path}"
    container = {
        "name": ch.TRAINER_CONTAINER,
        "image": job.spec.image or settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": [
            "python",
            "-c",
            "import shutil, sys; shutil.rmtree(sys.argv[1], ignore_errors=True)",
            target,
        ],
        "env": ch._scratch_env(),
        "resources": {"requests": dict(PROBE_RESOURCES), "limits": dict(PROBE_RESOURCES)},
        "volumeMounts": [
            {"name": "models", "mountPath": settings.model_mount_path},
            {"name": "scratch", "mountPath": ch.SCRATCH_DIR},
        ],
        "securityContext": ch.container_security_context(),
    }
    volumes = [
        {"name": "models", "persistentVolumeClaim": {"claimName": location.claim}},
        {"name": "scratch", "emptyDir": {}},
    ]
    labels = {ch.LABEL_COMPONENT: COMPONENT_PRUNE}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": ch._metadata(schedule, prune_name(run), labels),
        "spec": {
            "backoffLimit": 3,
            "ttlSecondsAfterFinished": 600,
            "template": {
                "metadata": {"labels": {**ch.selector_labels(schedule), **labels}},
                "spec": ch.batch_pod_spec(
                    container, volumes, PROBE_GRACE_SECONDS, job.spec.resources
                ),
            },
        },
    }
