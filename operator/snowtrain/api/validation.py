"""Validation shared by the admission webhook, the operator and local mode.

Every problem is reported as ``FieldError(path, reason)`` with the path spelled as in the YAML
(``spec.training.learningRate``), so a person can find and fix the field. The same function
runs at admission (webhook), in the operator when no webhook is installed (the job then ends
Failed/InvalidSpec instead of crash-looping) and in ``snowtrain run``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from . import kube_rules as kr
from .batch import BatchPrediction
from .kinds import JOB_KINDS, TASK_COLUMNS, AnyJob, FineTuneJob, PretrainJob
from .promotion import TASK_METRICS
from .query import UnsafeQuery, check_query
from .schedule import MAX_SCHEDULE_NAME, TrainingSchedule


@dataclass(frozen=True)
class FieldError:
    """One invalid field and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class InvalidJob(ValueError):
    """A resource that does not validate; ``errors`` lists every problem found."""

    def __init__(self, errors: list[FieldError]):
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


def _loc_to_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
        elif isinstance(item, str) and item.startswith(("function-", "tagged-union")):
            continue
        else:
            parts.append(str(item))
    return ".".join(parts)


def _clean_message(msg: str) -> str:
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def errors_from_pydantic(exc: ValidationError, prefix: str = "") -> list[FieldError]:
    """Turn pydantic's errors into field errors with YAML paths."""
    out = []
    for err in exc.errors(include_url=False):
        path = _loc_to_path(err["loc"])
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        reason = _clean_message(err["msg"])
        if err["type"] == "extra_forbidden":
            reason = "unknown field"
        elif err["type"] == "literal_error":
            reason = f"unsupported value {err.get('input')!r}: {reason}"
        out.append(FieldError(path, reason))
    return out


def _query_errors(path: str, query: str | None) -> list[FieldError]:
    """A query that is not one read-only SELECT, refused at admission rather than in the pod.

    The reason names a position at most, never the query text (it may hold secrets).
    """
    if query is None:
        return []
    try:
        check_query(query)
    except UnsafeQuery as exc:
        return [FieldError(path, str(exc))]
    return []


def _kubernetes_errors(job: AnyJob) -> list[FieldError]:
    """What the API server, the scheduler or the trainer would refuse after admission."""
    from .trainer_config import default_output_path  # it imports this module

    spec = job.spec
    problems = kr.name_problems(job)
    problems += kr.node_selector_problems(
        "spec.resources.nodeSelector", spec.resources.node_selector
    )
    problems += kr.toleration_problems("spec.resources.tolerations", spec.resources.tolerations)
    if why := kr.extended_resource_problem(spec.resources.gpu_resource_name):
        problems.append(("spec.resources.gpuResourceName", why))
    if spec.resources.queue_name and (why := kr.label_value_problem(spec.resources.queue_name)):
        problems.append(("spec.resources.queueName", f"becomes a label value: {why}"))
    uris: list[tuple[str, str | None]]
    if isinstance(job, FineTuneJob):
        uris = [("spec.baseModel.uri", job.spec.base_model.uri)]
    else:
        uris = [("spec.tokenizer.uri", job.spec.tokenizer.uri)]
    if job.spec.promotion is not None:
        uris.append(("spec.promotion.championUri", job.spec.promotion.champion_uri))
    for path, uri in uris:
        if uri and (why := kr.model_uri_problem(uri)):
            problems.append((path, why))
    if why := kr.output_path_problem(job, default_output_path(job)):
        problems.append(("spec.output.path", why))
    problems += kr.pod_override_problems("spec.podTemplate", spec.pod_template, "trainer")
    if spec.serving is not None:
        problems += kr.pod_override_problems(
            "spec.serving.podTemplate", spec.serving.pod_template, "server"
        )
    return [FieldError(path, reason) for path, reason in problems]


def _semantic_errors(job: AnyJob) -> list[FieldError]:
    """Rules the schema cannot express."""
    errors: list[FieldError] = _kubernetes_errors(job)
    spec = job.spec
    errors += _query_errors("spec.data.query", spec.data.query)
    errors += _query_errors("spec.data.validation.query", spec.data.validation.query)
    roles = TASK_COLUMNS[job.task]
    for role in spec.data.columns:
        if role not in roles:
            errors.append(
                FieldError(
                    f"spec.data.columns.{role}",
                    f"unknown column role for task {job.task!r}; expected {', '.join(roles)}",
                )
            )
    lora = spec.training.lora
    if isinstance(job, FineTuneJob) and lora and lora.enabled and job.spec.task != "causal-lm":
        errors.append(FieldError("spec.training.lora", "LoRA is supported for task causal-lm only"))
    if isinstance(job, PretrainJob):
        arch = job.spec.architecture
        if arch.hidden_size and arch.num_heads and arch.hidden_size % arch.num_heads:
            errors.append(
                FieldError(
                    "spec.architecture.numHeads",
                    f"must divide hiddenSize ({arch.hidden_size})",
                )
            )
        if arch.num_kv_heads and arch.num_heads and arch.num_heads % arch.num_kv_heads:
            errors.append(FieldError("spec.architecture.numKvHeads", "must divide numHeads"))
        if arch.num_kv_heads and arch.family == "gpt2":
            errors.append(
                FieldError("spec.architecture.numKvHeads", "only the llama family supports it")
            )
    if spec.training.precision == "fp16" and spec.resources.gpus_per_node == 0:
        errors.append(FieldError("spec.training.precision", "fp16 needs a GPU; use fp32 or auto"))
    if spec.promotion is not None and spec.promotion.metric not in TASK_METRICS[job.task]:
        errors.append(
            FieldError(
                "spec.promotion.metric",
                f"task {job.task!r} does not evaluate {spec.promotion.metric}; "
                f"use one of {', '.join(TASK_METRICS[job.task])}",
            )
        )
    return errors


def _envelope(obj: Any, kinds: set[str]) -> dict[str, Any]:
    """The resource without kind and apiVersion, once both are right and a spec is there."""
    if not isinstance(obj, dict):
        raise InvalidJob([FieldError("", "a resource must be a YAML mapping")])
    kind = obj.get("kind")
    if kind not in kinds:
        raise InvalidJob(
            [
                FieldError(
                    "kind", f"unknown kind {kind!r}; expected one of {', '.join(sorted(kinds))}"
                )
            ]
        )
    api_version = obj.get("apiVersion")
    if api_version != "snowtrain.io/v1alpha1":
        raise InvalidJob(
            [FieldError("apiVersion", f"expected snowtrain.io/v1alpha1, got {api_version!r}")]
        )
    if "spec" not in obj:
        raise InvalidJob([FieldError("spec", "field required")])
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


def parse_job(obj: dict[str, Any]) -> AnyJob:
    """Validate a resource dict (as from YAML or the API) and return the typed job.

    Raises :class:`InvalidJob` naming every bad field.
    """
    body = _envelope(obj, set(JOB_KINDS))
    kind = obj["kind"]
    try:
        # Strict, as the API server's schema is: `batchSize: "16"` or `true` is refused here
        # too. JSON mode, so enums and timestamps still come as the strings they are.
        job = JOB_KINDS[kind].model_validate_json(json.dumps(body, default=str), strict=True)
    except ValidationError as exc:
        raise InvalidJob(errors_from_pydantic(exc)) from None
    errors = _semantic_errors(job)
    if errors:
        raise InvalidJob(errors)
    return job


def parse_prediction(obj: dict[str, Any]) -> BatchPrediction:
    """Validate a BatchPrediction dict; raises :class:`InvalidJob` naming every bad field."""
    body = _envelope(obj, {BatchPrediction.KIND})
    try:
        job = BatchPrediction.model_validate_json(json.dumps(body, default=str), strict=True)
    except ValidationError as exc:
        raise InvalidJob(errors_from_pydantic(exc)) from None
    spec = job.spec
    errors = _query_errors("spec.input.query", spec.input.query)
    problems = kr.node_selector_problems(
        "spec.resources.nodeSelector", spec.resources.node_selector
    )
    problems += kr.toleration_problems("spec.resources.tolerations", spec.resources.tolerations)
    if why := kr.extended_resource_problem(spec.resources.gpu_resource_name):
        problems.append(("spec.resources.gpuResourceName", why))
    if spec.model.uri and (why := kr.model_uri_problem(spec.model.uri)):
        problems.append(("spec.model.uri", why))
    if spec.model.uri and not spec.model.uri.startswith(("pvc://", "/", "./")):
        problems.append(("spec.model.uri", "use pvc://CLAIM/PATH or an absolute path"))
    problems += kr.pod_override_problems("spec.podTemplate", spec.pod_template, "trainer")
    errors += [FieldError(path, reason) for path, reason in problems]
    if errors:
        raise InvalidJob(errors)
    return job


def parse_schedule(obj: dict[str, Any]) -> TrainingSchedule:
    """Validate a TrainingSchedule dict, its job template as the job a tick would create;
    raises :class:`InvalidJob` naming every bad field (the template's as
    ``spec.jobTemplate.spec...``)."""
    body = _envelope(obj, {TrainingSchedule.KIND})
    try:
        schedule = TrainingSchedule.model_validate_json(json.dumps(body, default=str), strict=True)
    except ValidationError as exc:
        raise InvalidJob(errors_from_pydantic(exc)) from None
    errors: list[FieldError] = []
    name = schedule.metadata.name or "schedule"
    if len(name) > MAX_SCHEDULE_NAME:
        errors.append(
            FieldError(
                "metadata.name",
                f"at most {MAX_SCHEDULE_NAME} characters: runs are named <name>-<minutes>",
            )
        )
    try:
        template_job(schedule)
    except InvalidJob as exc:
        errors += [
            FieldError(f"spec.jobTemplate.{e.path}" if e.path else "spec.jobTemplate", e.reason)
            for e in exc.errors
        ]
    serving = schedule.spec.serving
    if serving is not None:
        problems = kr.pod_override_problems(
            "spec.serving.podTemplate", serving.pod_template, "server"
        )
        errors += [FieldError(path, reason) for path, reason in problems]
    if errors:
        raise InvalidJob(errors)
    return schedule


def template_job(schedule: TrainingSchedule) -> AnyJob:
    """The job a tick of ``schedule`` creates, as a typed job with the schedule's endpoint
    in place of the template's serving block: what the runs share (data, image, output
    claim, placement) and what the installation's policy must allow, checked once for all
    runs. Raises :class:`InvalidJob` (paths as the template's own)."""
    template = schedule.spec.job_template
    serving = schedule.spec.serving
    spec = {k: v for k, v in template.spec.items() if k != "serving"}
    if serving is not None:
        spec["serving"] = serving.model_dump(mode="json", by_alias=True, exclude={"canary"},
                                             exclude_none=True)  # fmt: skip
    name = (schedule.metadata.name or "schedule")[:MAX_SCHEDULE_NAME]
    return parse_job(
        {
            "apiVersion": "snowtrain.io/v1alpha1",
            "kind": template.kind,
            "metadata": {"name": f"{name}-0", "namespace": schedule.metadata.namespace},
            "spec": spec,
        }
    )


RESOURCE_KINDS: dict[str, type[AnyJob] | type[BatchPrediction] | type[TrainingSchedule]] = {
    **JOB_KINDS,
    BatchPrediction.KIND: BatchPrediction,
    TrainingSchedule.KIND: TrainingSchedule,
}
"""Every kind the operator reconciles, by name."""

AnyResource = AnyJob | BatchPrediction | TrainingSchedule


def parse_resource(obj: dict[str, Any]) -> AnyResource:
    """Any snowtrain kind: a job (:func:`parse_job`), a BatchPrediction or a TrainingSchedule."""
    kind = obj.get("kind") if isinstance(obj, dict) else None
    if kind == BatchPrediction.KIND:
        return parse_prediction(obj)
    if kind == TrainingSchedule.KIND:
        return parse_schedule(obj)
    return parse_job(obj)


#: Spec fields that may change after training started; everything else is frozen.
MUTABLE_AFTER_START = frozenset({"serving", "suspend", "activeDeadlineSeconds", "backoffLimit"})


#: A started BatchPrediction's run is fixed (its staged rows answer that spec).
PREDICTION_MUTABLE_AFTER_START = frozenset({"activeDeadlineSeconds", "backoffLimit"})


def immutable_changes(
    old_spec: dict[str, Any],
    new_spec: dict[str, Any],
    mutable: frozenset[str] | None = None,
) -> list[FieldError]:
    """Fields of the training part that differ between two specs.

    Once training started, changing data, hyper-parameters or the base model would make the
    checkpoints and the status describe a different job than the spec; such edits are refused
    (create a new job instead). Serving, suspend and lifecycle settings stay editable;
    ``mutable`` names another kind's editable fields.
    """
    if mutable is None:
        mutable = MUTABLE_AFTER_START
        why = (
            "training started (only serving, suspend, activeDeadlineSeconds and backoffLimit "
            "can); create a new job instead"
        )
    else:
        editable = " and ".join(sorted(mutable))
        why = f"the run started (only {editable} can); create a new one instead"
    errors = []
    for key in sorted(set(old_spec) | set(new_spec)):
        if key in mutable:
            continue
        if old_spec.get(key) != new_spec.get(key):
            errors.append(
                FieldError(
                    f"spec.{key}",
                    f"cannot change after {why}",
                )
            )
    return errors
