"""The trainer program: config in, model directory + metrics out (README: "The trainer
contract").

``run`` wires the parts in order — credentials, data profile (fail fast on bad data), model
and tokenizer, token datasets, the training loop, export — and turns every ending into an
exit code, a ``done`` event and the termination message the operator reads. It knows nothing
of Kubernetes. The token datasets are the one phase that tokenizes in parallel, on the pod's
CPUs (``cpus.py`` says why only there).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from snowtrain.api.events import (
    ChampionEvaluation,
    DataLineage,
    ModelInfo,
    TrainerMetrics,
    TrainerSummary,
)
from snowtrain.api.trainer_config import ConfigFileError, TrainerConfig

from . import stop_requests
from .allocator import PRELOAD, active_allocator
from .cpus import ingest_threads, serial_tokenizers
from .errors import DataError, InvalidConfig, Preempted
from .progress import Reporter, conclude, failure_of, write_termination_message
from .redact import Redactor, setup_logging

log = logging.getLogger("snowtrain.trainer")


class SignalGuard:
    """SIGTERM handling by phase.

    Before training there is nothing to save: SIGTERM stops at once (Preempted), or at the
    next batch while ingest waits on its threads (``stop_requests``). During
    training it sets a flag the loop checks after each optimizer step; the loop checkpoints
    and raises Preempted. The champion's evaluation, after the final checkpoint, checks it
    before each batch as the loop's evaluation does. During export it is noted and the
    (short) export finishes.
    """

    def __init__(self) -> None:
        self.phase = "prepare"
        self.requested = False

    def install(self) -> None:
        # SIGINT (Ctrl-C in local mode) means the same as a pod's SIGTERM: save and stop.
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        if self.phase == "prepare":
            # At once, or at ingest's next batch (see stop_requests: not mid-wait on a thread)
            stop_requests.deliver(
                Preempted(f"{signal.Signals(signum).name} received before training started")
            )
            return
        log.warning(
            "%s received during %s; stopping at the next safe point",
            signal.Signals(signum).name,
            self.phase,
        )


@dataclass
class Outcome:
    """What the run achieved; becomes the termination message and the done event."""

    step: int = 0
    total_steps: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    data: DataLineage | None = None
    model_uri: str | None = None
    model_stage: str | None = None
    champion: ChampionEvaluation | None = None
    """The champion's metrics on the same validation rows (a job with an evaluation gate)."""

    def summary(self, exit_code: int, reason: str | None, message: str | None) -> TrainerSummary:
        """The ``done`` event's body and the termination message."""
        return TrainerSummary.of_exit(
            exit_code,
            reason=reason,
            message=message,
            step=self.step,
            total_steps=self.total_steps,
            metrics=TrainerMetrics.model_validate(self.metrics),
            model=ModelInfo(uri=self.model_uri, stage=self.model_stage) if self.model_uri else None,
            data=self.data,
            champion=self.champion,
        )


def run(config: TrainerConfig) -> int:
    """Train as configured; return the process exit code (a ``snowtrain.api.events.ExitCode``)."""
    redactor = setup_logging()
    serial_tokenizers()  # before any encode: ingest brings its own threads (cpus.py)
    log.info("tokenizing on %d threads", ingest_threads())
    allocator = active_allocator()
    log.info("memory allocator: %s", allocator)
    if allocator == "glibc":
        log.info("the tokenizer needs about 2x the CPU on glibc malloc; preload %s", PRELOAD)
    from transformers.utils import logging as hf_logging

    from .distributed import init_world, shutdown

    hf_logging.disable_progress_bar()  # bars are noise in pod logs; progress is our events

    world = init_world()
    reporter = Reporter(config.progress.interval_seconds, enabled=world.is_main, redactor=redactor)
    guard = SignalGuard()
    guard.install()
    outcome = Outcome()
    reason: str | None = None
    message: str | None = None
    exit_code = 0
    try:
        _train_and_export(config, world, reporter, redactor, guard, outcome)
    except Exception as exc:
        reason, message, exit_code = failure_of(exc)
        outcome.step = getattr(exc, "step", outcome.step)  # Preempted knows where it stopped
        outcome.total_steps = getattr(exc, "total_steps", outcome.total_steps)
    finally:
        summary = outcome.summary(exit_code, reason, redactor(message) if message else None)
        reporter.event("done", **summary.model_dump(exclude_none=True))
        # Rank 0 speaks for the job; the first rank of every other pod only says why its
        # pod failed (its launcher exits with that code; a success needs no second summary).
        if world.is_main or (world.local_rank == 0 and exit_code != 0):
            write_termination_message(summary, redactor)
        shutdown(world)
    return exit_code


def _train_and_export(
    config: TrainerConfig,
    world: Any,
    reporter: Reporter,
    redactor: Redactor,
    guard: SignalGuard,
    outcome: Outcome,
) -> None:
    """The happy path, in order. Raises TrainerError subclasses for expected failures."""
    from .data.credentials import load_credentials
    from .data.source import SnowflakeSource
    from .distributed import barrier

    _check_config(config)
    credentials = load_credentials(config.data.snowflake)
    redactor.add(credentials.secret_values())
    shard = None
    if world.distributed:  # each rank reads and tokenizes only its share (data/shard.py)
        from .data.shard import Shard
        from .distributed import GroupExchange

        shard = Shard(world.rank, world.size, GroupExchange(world))
    with SnowflakeSource(config.data, credentials=credentials, shard=shard) as source:
        model, tokenizer, labels = _prepare_and_train(
            config, source, world, reporter, guard, outcome
        )
    guard.phase = "export"
    if world.is_main:
        _export(config, model, tokenizer, labels, outcome, credentials)
    barrier(world)


def _prepare_and_train(
    config: TrainerConfig,
    source: Any,
    world: Any,
    reporter: Reporter,
    guard: SignalGuard,
    outcome: Outcome,
) -> tuple[Any, Any, list[str] | None]:
    """Profile the data (bad data fails here), build model and datasets, run the loop."""
    from . import models
    from .loop import FlopRates, Objective, RunContext, TrainData, fit, seed_everything
    from .metrics import device_peak_flops

    profile = source.profile(config.task)
    labels = profile.labels if config.task == "classification" else None
    if config.task != "pretrain":  # a PretrainJob reads the data first to train its tokenizer
        source.start_training_query()
        log.info("data query submitted; loading the base model meanwhile")
    seed_everything(config.training.seed)
    model, tokenizer = _model_and_tokenizer(config, source, labels, world)
    workdir = Path(tempfile.mkdtemp(prefix="snowtrain-data-"))
    try:
        train_data, eval_data = _datasets(config, source, tokenizer, labels, workdir)
        outcome.data = DataLineage.model_validate(source.fingerprint.to_wire())
        reporter.event("data", **outcome.data.model_dump(), labels=labels)
        shard_size = _shard_size(source, len(train_data))
        if config.training.lora is not None and config.training.lora.enabled:
            from .lora import apply_lora

            model = apply_lora(model, config.training.lora, config.task)
        flops_per_token = (
            models.pretraining_flops_per_token(
                model, config.architecture, config.training.max_seq_length
            )
            if config.task == "pretrain" and config.architecture is not None
            else None
        )
        model.to(world.device)
        guard.phase = "train"
        result = fit(
            model,
            TrainData(
                train_data,
                eval_data,
                train_data.collate,
                fingerprint=outcome.data.fingerprint,
                shard_size=shard_size,
            ),
            config.training,
            Objective(
                config.task,
                num_labels=len(labels) if labels else None,
                betas=(0.9, 0.95) if config.task == "pretrain" else (0.9, 0.999),
            ),
            RunContext(world, reporter, _checkpoints(config), should_stop=lambda: guard.requested),
            FlopRates(flops_per_token, device_peak_flops(world.device)),
        )
        outcome.step, outcome.total_steps = result.step, result.total_steps
        outcome.metrics = {k: v for k, v in result.metrics.items() if v is not None}
        if config.champion is not None:
            # Here, while the validation rows (and the source they came from) still exist.
            guard.phase = "the champion's evaluation"
            outcome.champion = _evaluate_champion(
                config, source, eval_data, tokenizer, labels, world, guard, workdir
            )
            if world.is_main:
                from .champion import comparison

                log.info("%s", comparison(outcome.champion, outcome.metrics))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return model, tokenizer, labels


def _evaluate_champion(
    config: TrainerConfig,
    source: Any,
    eval_data: Any,
    tokenizer: Any,
    labels: list[str] | None,
    world: Any,
    guard: SignalGuard,
    workdir: Path,
) -> ChampionEvaluation:
    """The champion on this run's validation rows, as ``fit`` evaluated the run's model.

    A classifier with another tokenizer gets the same rows tokenized again with its own: the
    source reads the validation split again (the training pass's local spill, or the
    validation relation's ordered query). Raises Preempted on SIGTERM.
    """
    from .champion import ValidationRows, evaluate_champion
    from .distributed import any_rank
    from .precision import choose_precision

    assert config.champion is not None
    max_len = config.training.max_seq_length

    def retokenize(champion_tokenizer: Any) -> Any:
        from .data import tokenize

        assert labels is not None
        where = workdir / "champion-validation"
        where.mkdir(exist_ok=True)
        label2id = {label: i for i, label in enumerate(labels)}
        return tokenize.build_classification(
            source, "validation", champion_tokenizer, label2id, max_len, where
        )

    rows = None
    if eval_data is not None:
        rows = ValidationRows(
            data=eval_data,
            collate=eval_data.collate,
            tokenizer=tokenizer,
            task=config.task,
            labels=labels,
            batch_size=config.training.batch_size,
            precision=choose_precision(config.training.precision, world.device),
            sharded=source.shard is not None,  # as fit's: a sharded ingest, a share per rank
            retokenize=retokenize if config.task == "classification" else None,
        )
    return evaluate_champion(
        config.champion,
        rows,
        world=world,
        should_abort=lambda: any_rank(world, guard.requested)[0],
    )


def _check_config(config: TrainerConfig) -> None:
    """Cross-field rules the config schema cannot state."""
    if config.task == "pretrain" and config.architecture is None:
        raise InvalidConfig("a pretrain task needs architecture")
    if config.task != "pretrain" and not config.base_model:
        raise InvalidConfig(f"a {config.task} fine-tune needs baseModel")
    if bool(config.data.table) == bool(config.data.query):
        raise InvalidConfig("set exactly one of data.table or data.query")


def _model_and_tokenizer(
    config: TrainerConfig, source: Any, labels: list[str] | None, world: Any
) -> tuple[Any, Any]:
    """Load the base model, or build a fresh LM with a tokenizer trained on the corpus.

    A trained tokenizer is kept next to the checkpoints: a resumed run must tokenize exactly
    as the interrupted one did.
    """
    from . import models
    from .distributed import barrier

    if config.task == "classification":
        assert config.base_model and labels is not None
        tokenizer = models.load_tokenizer(config.base_model)
        return models.load_classifier(config.base_model, labels, tokenizer), tokenizer
    if config.task == "causal-lm":
        assert config.base_model
        tokenizer = models.load_tokenizer(config.base_model)
        return models.load_causal_lm(config.base_model, tokenizer), tokenizer

    assert config.architecture is not None
    spec = config.tokenizer
    saved = Path(config.output.checkpoint_dir) / "tokenizer"
    if spec is not None and spec.uri:
        tokenizer = models.load_tokenizer(spec.uri)
    else:
        if world.is_main and not (saved / "tokenizer.json").is_file():
            from snowtrain.api.spec import TokenizerSpec

            spec = spec or TokenizerSpec()
            trained = models.train_tokenizer(
                source.iter_texts(spec.train_rows), spec, config.training.max_seq_length
            )
            tmp = saved.with_name(".tokenizer.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            trained.save_pretrained(tmp)
            tmp.rename(saved)
        barrier(world)
        tokenizer = models.load_tokenizer(str(saved))
    model = models.build_causal_lm(config.architecture, tokenizer, config.training.max_seq_length)
    return model, tokenizer


def _datasets(
    config: TrainerConfig, source: Any, tokenizer: Any, labels: list[str] | None, workdir: Path
) -> tuple[Any, Any]:
    """Token datasets for both splits (validation None when it has no rows)."""
    from .data import tokenize

    max_len = config.training.max_seq_length
    built = {}
    for split in ("train", "validation"):
        where = workdir / split
        where.mkdir()
        if config.task == "classification":
            assert labels is not None
            label2id = {label: i for i, label in enumerate(labels)}
            built[split] = tokenize.build_classification(
                source, split, tokenizer, label2id, max_len, where
            )
        elif config.task == "causal-lm":
            built[split] = tokenize.build_causal_lm(source, split, tokenizer, max_len, where)
        else:
            built[split] = tokenize.build_packed(source, split, tokenizer, max_len, where)
    held_out = len(built["validation"])
    if source.shard is not None:  # evaluate if any rank holds validation rows
        held_out = source.shard.total(held_out)
    validation = built["validation"] if held_out else None
    return built["train"], validation


def _shard_size(source: Any, rows: int) -> int | None:
    """Training examples per rank of a sharded pass (the largest rank's; the others repeat
    some); None when this rank holds the whole data. Raises DataError with no rows to train."""
    if source.shard is None:
        if rows == 0:
            raise DataError("no training rows left after the validation split")
        return None
    sizes = source.shard.exchange.all_gather(rows)
    if min(sizes) == 0:
        raise DataError(
            f"{sum(sizes)} training rows for {len(sizes)} ranks: a rank would have none "
            "(add rows, or train on fewer GPUs or nodes)"
        )
    return int(max(sizes))


def _checkpoints(config: TrainerConfig) -> Any:
    from .checkpoint import CheckpointManager

    cadence = config.training.checkpoint
    return CheckpointManager(
        config.output.checkpoint_dir,
        keep=cadence.keep,
        every_steps=cadence.every_steps,
        every_minutes=cadence.every_minutes,
    )


def _export(
    config: TrainerConfig,
    model: Any,
    tokenizer: Any,
    labels: list[str] | None,
    outcome: Outcome,
    credentials: Any,
) -> None:
    from .export import export_model, lineage

    lora = config.training.lora
    out = export_model(
        config.output.dir,
        model,
        tokenizer,
        lineage_record=lineage(config, outcome.data, labels),
        metrics=outcome.metrics,
        labels=labels,
        lora_merge=lora.merge if lora is not None and lora.enabled else None,
        redactor=Redactor(credentials.secret_values()),
    )
    outcome.model_uri = config.output.uri or str(out)
    if config.output.stage:
        from .data.stage import upload_model

        # The reads' login timeouts, retries and error mapping (data.snowflake).
        upload_model(out, config.output.stage, config.data.snowflake, credentials)
        outcome.model_stage = config.output.stage


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m snowtrain.trainer --config FILE``."""
    parser = argparse.ArgumentParser(prog="python -m snowtrain.trainer", description=__doc__)
    parser.add_argument("--config", required=True, help="trainer config file (JSON or YAML)")
    args = parser.parse_args(argv)
    try:
        config = TrainerConfig.load(args.config)
    except (OSError, ConfigFileError) as exc:  # neither quotes the file's content
        text = f"cannot read trainer config {args.config}: {exc}"
        print(text, file=sys.stderr)
        summary = Outcome().summary(InvalidConfig.exit_code, InvalidConfig.reason, text)
        conclude(summary, Redactor())
        return InvalidConfig.exit_code
    return run(config)
