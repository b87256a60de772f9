"""Desired children of a BatchPrediction, as plain manifests (pure, like ``children.py``).

One ConfigMap (the predictor config), one NetworkPolicy (the pod accepts no connection: it
only dials Snowflake) and one batch/v1 Job running ``python -m snowtrain.predict``. The pod
is the training pod's twin where it matters to the admin: non-root, read-only root
filesystem, no service account token, the model volume mounted read-only, the Snowflake
Secret as files; the Job controller's pod retries (``spec.backoffLimit``) each go on from
the rows committed before them.
"""

from __future__ import annotations

from typing import Any

from snowtrain.api.batch import BatchPrediction
from snowtrain.api.predictor_config import render_predictor_config

from . import children as ch
from .settings import OperatorSettings

COMPONENT_PREDICTOR = "predictor"
PREDICT_COMMAND = ("python", "-m", "snowtrain.predict", "--config", ch.CONFIG_FILE)
#: A preempted predictor loses at most its chunk in flight; it needs no time to save.
PREDICTOR_GRACE_SECONDS = 30


def prediction_job_name(name: str) -> str:
    return ch.child_name(name, "predict")


def prediction_policy_name(name: str) -> str:
    return ch.child_name(name, "predict")


def run_id(job: BatchPrediction) -> str:
    """The RUN_ID of the run's rows: the resource's identity (a re-created one of the same
    name is another run), the same for every pod of the run."""
    meta = job.metadata
    return f"{meta.namespace or 'default'}/{meta.name}/{meta.uid or 'local'}"


def model_mount(location: ch.ModelLocation | None, uri: str) -> str:
    """Where the pod finds the model: under the read-only mount of its claim, or the
    absolute path the spec names (inside the image or a volume of the pod template)."""
    return f"{ch.BASE_MODEL_MOUNT}/{location.path}".rstrip("/") if location else uri


def build_prediction_config_map(
    job: BatchPrediction, settings: OperatorSettings, model_uri: str, model_name: str
) -> dict[str, Any]:
    """``<name>-config`` with ``config.json``; credentials stay in their Secret."""
    secret = job.spec.input.snowflake.secret_ref
    config = render_predictor_config(
        job,
        run_id=run_id(job),
        model_dir=model_mount(ch.ModelLocation.parse(model_uri), model_uri),
        model_name=model_name,
        credentials_dir=ch.CREDENTIALS_DIR if secret else None,
        progress_interval_seconds=min(5.0, settings.progress_refresh_seconds),
    )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": ch._metadata(job, ch.config_map_name(job.metadata.name or "")),
        "data": {"config.json": config.dumps()},
    }


def build_prediction_network_policy(job: BatchPrediction) -> dict[str, Any]:
    """The predictor pod accepts no connection at all."""
    return ch._network_policy(
        job, prediction_policy_name(job.metadata.name or ""), ch.selector_labels(job), []
    )


def build_prediction_job(
    job: BatchPrediction, settings: OperatorSettings, model_uri: str
) -> dict[str, Any]:
    """batch/v1 Job ``<name>-predict``: one pod at a time, retried by the Job controller."""
    spec = job.spec
    res = spec.resources
    name = job.metadata.name or ""
    labels = {ch.LABEL_COMPONENT: COMPONENT_PREDICTOR}
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": ch.config_map_name(name)}},
        {"name": "scratch", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": ch.CONFIG_DIR, "readOnly": True},
        {"name": "scratch", "mountPath": ch.SCRATCH_DIR},
    ]
    location = ch.ModelLocation.parse(model_uri)
    if location is not None:
        volumes.append(
            {
                "name": "model",
                "persistentVolumeClaim": {"claimName": location.claim, "readOnly": True},
            }
        )
        mounts.append({"name": "model", "mountPath": ch.BASE_MODEL_MOUNT, "readOnly": True})
    ch.mount_snowflake_secret(volumes, mounts, spec.input.snowflake.secret_ref)
    container = ch.run_container(
        list(PREDICT_COMMAND),
        spec.image or settings.trainer_image,
        settings,
        ch._resources(res.cpu, res.memory, res.gpus, res.gpu_resource_name),
        mounts,
    )
    pod_spec = ch.batch_pod_spec(container, volumes, PREDICTOR_GRACE_SECONDS, res)
    template = {"metadata": {"labels": {**ch.selector_labels(job), **labels}}, "spec": pod_spec}
    template = ch.merge_pod_template(
        template, spec.pod_template.as_template() if spec.pod_template else None
    )
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.backoff_limit,
        "completions": 1,
        "parallelism": 1,
        "template": template,
    }
    if spec.active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": ch._metadata(job, prediction_job_name(name), labels),
        "spec": job_spec,
    }
