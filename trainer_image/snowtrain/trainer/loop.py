"""The training loop: one function, read top to bottom (in the spirit of nanoGPT).

``fit`` takes a model and map-style datasets and runs seeded AdamW steps with gradient
accumulation, warmup + decay, clipping, mixed precision, periodic evaluation, checkpoints and
resume. Its parts live next to it: the data order (``order``), the number format
(``precision``), the optimizer and schedule (``optim``), evaluation (``evaluate``) and what a
checkpoint holds (``checkpoint``).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from snowtrain.api.events import now_iso
from snowtrain.api.spec import TrainingSpec

from .batches import Collate, real_tokens, to_device
from .checkpoint import CheckpointManager, Trainables, TrainState
from .compilation import maybe_compile
from .distributed import World, any_rank, barrier
from .errors import Preempted
from .evaluate import evaluate
from .metrics import mfu
from .optim import build_optimizer, build_scheduler
from .order import EpochOrder, plan_steps
from .precision import Precision, choose_precision
from .progress import Reporter

# The loop's API, plus the import paths its parts had before they moved out (EpochOrder,
# Precision, evaluate: the tests import them from here).
__all__ = [
    "EpochOrder",
    "FlopRates",
    "Objective",
    "Precision",
    "RunContext",
    "TrainData",
    "TrainResult",
    "evaluate",
    "fit",
    "seed_everything",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainData:
    """The token datasets of one run, how to batch them, and which data they came from."""

    train: Dataset[Any]
    eval: Dataset[Any] | None
    """None when there is no validation split: no evaluation."""
    collate: Collate
    fingerprint: str | None = None
    """The data's fingerprint; a checkpoint written on other data is resumed with a warning."""
    shard_size: int | None = None
    """Set when each rank holds only its share of the data (a sharded ingest): the examples
    every rank trains on per epoch. None: every rank holds all of it."""


@dataclass(frozen=True)
class Objective:
    """What is trained, beyond the ``TrainingSpec``: the task and the choices it implies."""

    task: str
    num_labels: int | None = None
    """Classes of a classifier (its confusion matrix); None for language models."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW's betas: pretraining uses (0.9, 0.95), fine-tunes the default."""


@dataclass(frozen=True)
class RunContext:
    """Where the run happens and how it meets the outside: ranks, events, saves, SIGTERM."""

    world: World
    reporter: Reporter
    checkpoints: CheckpointManager | None = None
    """Where checkpoints go and are resumed from; None trains without any."""
    should_stop: Callable[[], bool] = lambda: False
    """Asked after every step: True (SIGTERM) checkpoints and raises ``Preempted``."""


@dataclass(frozen=True)
class FlopRates:
    """The model's training FLOPs per token and the device's peak FLOP/s, for ``mfu``."""

    per_token: float | None = None
    peak_per_device: float | None = None

    def utilisation(self, tokens_per_second: float) -> dict[str, float]:
        """``{"mfu": ...}`` for one device's throughput, or nothing when a figure is unknown."""
        if not (self.per_token and self.peak_per_device):
            return {}
        return {"mfu": round(mfu(self.per_token, tokens_per_second, self.peak_per_device), 4)}


@dataclass
class TrainResult:
    """What the loop reports back: final metrics (camelCase, metrics.json) and position."""

    metrics: dict[str, Any]
    step: int
    total_steps: int
    resumed_from_step: int | None
    history: list[dict[str, Any]] = field(default_factory=list)
    """(step, loss) pairs of the progress events, for a loss curve."""


def seed_everything(seed: int) -> None:
    """Python, numpy and torch (all devices) from one seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def fit(
    model: nn.Module,
    data: TrainData,
    spec: TrainingSpec,
    objective: Objective,
    context: RunContext,
    flops: FlopRates = FlopRates(),  # frozen: one shared default is safe
) -> TrainResult:
    """Train ``model`` in place; return final metrics. Raises Preempted after saving on stop.

    The model must already carry its initial weights (seeded by the caller) and sit on
    ``world.device``. A checkpoint in ``checkpoints.directory`` is resumed from automatically.
    Given the model's training FLOPs per token and the device's peak FLOP/s, progress and
    metrics also report ``mfu`` (per device).
    """
    world, reporter, checkpoints = context.world, context.reporter, context.checkpoints
    train_data, eval_data, collate = data.train, data.eval, data.collate
    fingerprint, should_stop = data.fingerprint, context.should_stop
    device = world.device
    precision = choose_precision(spec.precision, device)
    if spec.gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if getattr(model, "config", None) is not None:
            model.config.use_cache = False

    lengths = getattr(train_data, "lengths", None) if spec.group_by_length else None
    order = EpochOrder(
        len(train_data),
        spec.batch_size,
        spec.seed,
        world,
        lengths=None if lengths is None else np.asarray(lengths).tolist(),
        shard_size=data.shard_size,
    )
    steps_per_epoch, total_steps = plan_steps(spec, order)
    optimizer = build_optimizer(model, spec, device, objective.betas)
    scheduler = build_scheduler(optimizer, spec, total_steps)
    parts = Trainables(model, optimizer, scheduler, precision.scaler)
    state = TrainState(fingerprint=fingerprint)

    # ---- resume from the newest checkpoint, if any
    resumed_from: int | None = None
    restored = (
        checkpoints.resume(parts, restore_generators=not world.distributed) if checkpoints else None
    )
    if restored is not None:
        state = restored
        if world.distributed:  # rank 0's generators were saved; give each rank its own
            seed_everything(spec.seed + 1000 * world.rank + state.step)
        if fingerprint and state.fingerprint and state.fingerprint != fingerprint:
            log.warning(
                "data changed since checkpoint step %d (%s -> %s); resuming anyway",
                state.step,
                state.fingerprint,
                fingerprint,
            )
        state.fingerprint = fingerprint
        resumed_from = state.step

    def run_eval() -> dict[str, float] | None:
        """Evaluate; None when SIGTERM arrived meanwhile (on any rank)."""
        assert eval_data is not None
        return evaluate(
            model,
            eval_data,
            collate,
            task=objective.task,
            batch_size=spec.batch_size,
            precision=precision,
            world=world,
            num_labels=objective.num_labels,
            should_abort=lambda: any_rank(world, should_stop())[0],
            sharded=data.shard_size is not None,
        )

    def preempted() -> Preempted:
        error = Preempted(
            f"stopped by SIGTERM at step {state.step}/{total_steps}; checkpoint saved"
        )
        error.step, error.total_steps = state.step, total_steps  # type: ignore[attr-defined]
        return error

    def save_checkpoint() -> None:
        if checkpoints is None:
            return
        if world.is_main:
            path = checkpoints.save_training(state, parts, total_steps=total_steps)
            reporter.event("checkpoint", step=state.step, path=str(path))
        barrier(world)

    # ---- wrap for speed / parallelism only after the weights are final
    forward_model: nn.Module = model
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel

        forward_model = DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            # gradients live in DDP's all-reduce buckets instead of beside them: one copy
            # of the gradients less in memory
            gradient_as_bucket_view=True,
        )
    compiled = False
    if spec.compile:
        forward_model, compiled = maybe_compile(forward_model, device)

    reporter.event(
        "start",
        totalSteps=total_steps,
        epochs=round(total_steps / steps_per_epoch, 4),
        resumedFromStep=resumed_from,
        ranks=world.size,
        examplesPerRank=order.shard_size,
        compiled=compiled,
        time=now_iso(),
    )

    accum = spec.gradient_accumulation_steps
    batches = order.batches(state)
    params = [p for p in model.parameters() if p.requires_grad]
    samples_per_step = spec.batch_size * accum * world.size
    history: list[dict[str, Any]] = []
    # Losses stay on the device; .item() (a GPU sync) happens only when reporting or saving.
    loss_total = torch.zeros((), dtype=torch.float64, device=device)
    loss_sum_before = state.loss_sum
    window_loss = torch.zeros((), dtype=torch.float64, device=device)
    window_steps = 0
    session_tokens = 0
    session_start = time.perf_counter()
    train_seconds_before = state.train_seconds
    last_eval: dict[str, float] = {}
    forward_model.train()

    while state.step < total_steps:
        # -- one optimizer step = `accum` micro-batches
        for micro in range(accum):
            batch = collate([train_data[i] for i in next(batches)])
            tokens = real_tokens(batch)
            state.tokens_trained += tokens * world.size
            session_tokens += tokens * world.size
            batch = to_device(batch, device)
            sync = micro == accum - 1 or not world.distributed
            no_sync = contextlib.nullcontext() if sync else forward_model.no_sync()
            with no_sync, precision.autocast(device):
                loss = forward_model(**batch).loss / accum
            if precision.scaler is not None:
                precision.scaler.scale(loss).backward()
            else:
                loss.backward()
            loss_total += loss.detach()
            window_loss += loss.detach()
        if precision.scaler is not None:
            precision.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, spec.max_grad_norm)
        if precision.scaler is not None:
            precision.scaler.step(optimizer)
            precision.scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()

        state.step += 1
        state.samples_trained += samples_per_step
        window_steps += 1
        last = state.step == total_steps
        elapsed = time.perf_counter() - session_start
        state.train_seconds = train_seconds_before + elapsed

        # -- report: at most one progress line per interval, plus the last step
        if reporter.enabled and (last or reporter.due()):
            loss_value = window_loss.item() / window_steps
            window_loss.zero_()
            window_steps = 0
            done_here = state.step - (resumed_from or 0)
            tokens_per_second = session_tokens / max(elapsed, 1e-9)
            reporter.progress(
                force=True,
                **flops.utilisation(tokens_per_second / world.size),
                step=state.step,
                totalSteps=total_steps,
                percent=round(100.0 * state.step / total_steps, 2),
                epoch=round(state.epoch + state.position / order.batches_per_epoch, 4),
                loss=round(loss_value, 6),
                learningRate=scheduler.get_last_lr()[0],
                tokensPerSecond=round(tokens_per_second, 2),
                samplesPerSecond=round(done_here * samples_per_step / max(elapsed, 1e-9), 3),
                etaSeconds=round(elapsed / done_here * (total_steps - state.step), 1),
                **({"evalLoss": last_eval["evalLoss"]} if last_eval else {}),
            )
            history.append({"step": state.step, "loss": loss_value})

        # -- every rank takes the same branches: stop if SIGTERM reached any rank; the
        #    checkpoint cadence is rank 0's (it alone saves, so only its clock restarts)
        stop, due = any_rank(
            world,
            should_stop(),
            world.is_main and checkpoints is not None and checkpoints.due(state.step),
        )
        eval_interrupted = False
        if (
            eval_data is not None
            and (last or (spec.eval_every_steps and state.step % spec.eval_every_steps == 0))
            and (last or not stop)
        ):
            result = run_eval()
            if result is None:
                stop = eval_interrupted = True
            else:
                last_eval = result
                reporter.event("eval", step=state.step, **last_eval)

        # -- checkpoint on cadence, at the end, and when asked to stop (SIGTERM)
        if last or stop or due:
            state.loss_sum = loss_sum_before + loss_total.item()
            save_checkpoint()
        if stop and (not last or eval_interrupted):
            raise preempted()

    if eval_data is not None and not last_eval:  # resumed after the final step: evaluate again
        result = run_eval()
        if result is None:
            raise preempted()
        last_eval = result
    elapsed = time.perf_counter() - session_start
    done_here = state.step - (resumed_from or 0)
    metrics: dict[str, Any] = {
        "trainLoss": (loss_sum_before + loss_total.item()) / max(state.step, 1),
        **last_eval,
        "tokensPerSecond": session_tokens / elapsed if done_here else None,
        "tokensTrained": state.tokens_trained,
        "samplesPerSecond": done_here * samples_per_step / elapsed if done_here else None,
        "trainSeconds": state.train_seconds,
        "steps": state.step,
    }
    if done_here:
        metrics.update(flops.utilisation(session_tokens / elapsed / world.size))
    return TrainResult(
        metrics=metrics,
        step=state.step,
        total_steps=total_steps,
        resumed_from_step=resumed_from,
        history=history,
    )
