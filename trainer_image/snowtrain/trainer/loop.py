"""The training loop: one function, read top to bottom (in the spirit of nanoGPT).

``train`` takes a model and map-style datasets and runs seeded AdamW steps with gradient
accumulation, warmup + decay, clipping, mixed precision, periodic evaluation, checkpoints and
resume. The data order is a seeded permutation per epoch, sharded over DDP ranks the way
``DistributedSampler`` shards it; the loop's position in it is part of every checkpoint, so a
resumed run sees exactly the batches the interrupted one would have seen.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from snowtrain.api.spec import TrainingSpec

from .checkpoint import CheckpointManager, TrainState, capture_rng, restore_rng, train_state_to
from .compilation import maybe_compile
from .distributed import World, all_reduce_sum, any_rank, barrier
from .errors import InvalidConfig, Preempted
from .loss import cross_entropy_sum
from .metrics import accuracy, confusion_matrix, macro_f1, mfu, perplexity
from .progress import Reporter

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]
Collate = Callable[[list[dict[str, torch.Tensor]]], Batch]


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


# --------------------------------------------------------------------------- data order
class EpochOrder:
    """A seeded permutation per epoch, padded and strided over ranks like DistributedSampler.

    Given item ``lengths``, the permutation is length-grouped the way transformers'
    ``LengthGroupedSampler`` does it (random megabatches of 50 batches, each sorted by
    length), with one global batch (``batch_size`` x ranks) as the unit, so the ranks' batches
    of one step come from the same sorted run and all pad to about the same width.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int,
        world: World,
        lengths: Sequence[int] | None = None,
    ) -> None:
        self.size, self.batch_size, self.seed, self.world = size, batch_size, seed, world
        self.lengths = lengths
        self.shard_size = math.ceil(size / world.size)
        self.batches_per_epoch = max(1, math.ceil(self.shard_size / batch_size))
        self._cached: tuple[int, list[int]] | None = None

    def shard(self, epoch: int) -> list[int]:
        if self._cached and self._cached[0] == epoch:
            return self._cached[1]
        generator = torch.Generator().manual_seed(self.seed + epoch)
        if self.lengths is None:
            perm = torch.randperm(self.size, generator=generator).tolist()
        else:
            from transformers.trainer_pt_utils import get_length_grouped_indices

            perm = get_length_grouped_indices(
                self.lengths, self.batch_size * self.world.size, generator=generator
            )
        perm += perm[: self.shard_size * self.world.size - self.size]  # equal shards
        shard = perm[self.world.rank :: self.world.size]
        self._cached = (epoch, shard)
        return shard

    def batches(self, state: TrainState) -> Iterator[list[int]]:
        """Endless index batches from ``state.epoch/position``, advancing the state as it goes."""
        while True:
            if state.position >= self.batches_per_epoch:
                state.epoch, state.position = state.epoch + 1, 0
            start = state.position * self.batch_size
            indices = self.shard(state.epoch)[start : start + self.batch_size]
            state.position += 1
            yield indices


# --------------------------------------------------------------------------- precision
@dataclass
class Precision:
    dtype: torch.dtype | None
    """Autocast dtype, or None for plain fp32."""
    scaler: torch.amp.GradScaler | None

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)


def choose_precision(requested: str, device: torch.device) -> Precision:
    """bf16 autocast (+TF32 matmuls) on GPUs that have it; fp16 with loss scaling; else fp32."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        bf16_ok = torch.cuda.is_bf16_supported()
        if requested == "bf16" or (requested == "auto" and bf16_ok):
            return Precision(torch.bfloat16, None)
        if requested == "fp16" or requested == "auto":
            return Precision(torch.float16, torch.amp.GradScaler("cuda"))
        return Precision(None, None)
    if requested == "bf16":
        return Precision(torch.bfloat16, None)
    if requested == "fp16":
        log.warning("precision fp16 needs a GPU; training in fp32 on %s", device)
    return Precision(None, None)


# --------------------------------------------------------------------------- optimizer
def build_optimizer(
    model: nn.Module, spec: TrainingSpec, device: torch.device, betas: tuple[float, float]
) -> torch.optim.AdamW:
    """AdamW; matrices decay, biases and norm weights (1-D tensors) do not.

    The fused kernel (one launch for all parameters) exists for CUDA and, since torch 2.4,
    for CPU; it is what makes the optimizer step cheap next to the model's step.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": spec.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups, lr=spec.learning_rate, betas=betas, eps=1e-8, fused=device.type in ("cuda", "cpu")
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, spec: TrainingSpec, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warmup over ``warmupRatio`` of the steps, then cosine / linear decay or flat."""
    from transformers import get_scheduler

    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}
    return get_scheduler(
        name[spec.lr_scheduler],
        optimizer,
        num_warmup_steps=math.ceil(spec.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )


def plan_steps(spec: TrainingSpec, order: EpochOrder) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps)."""
    per_epoch = max(1, math.ceil(order.batches_per_epoch / spec.gradient_accumulation_steps))
    total = spec.max_steps or max(1, math.ceil(spec.epochs * per_epoch))
    return per_epoch, total


def _real_tokens(batch: Batch) -> int:
    """Tokens that are not padding; a batch without a mask has none (see ``collate``)."""
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else batch["input_ids"].numel()


def _to_device(batch: Batch, device: torch.device) -> Batch:
    """Copy a CPU batch to ``device`` without making the host wait for the GPU.

    A copy from pageable memory may synchronise with the stream, so the host would sit idle
    until the previous step's kernels finish instead of queueing the next ones. From pinned
    (page-locked) memory the copy is truly asynchronous; PyTorch's caching host allocator
    keeps each pinned buffer alive until its copy has run.
    """
    if device.type != "cuda":
        return {k: v.to(device) for k, v in batch.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset,
    collate: Collate,
    *,
    task: str,
    batch_size: int,
    precision: Precision,
    world: World,
    num_labels: int | None = None,
    should_abort: Callable[[], bool] = lambda: False,
) -> dict[str, float] | None:
    """Loss summed per example (classification) or per target token (LMs), over all ranks.

    Returns None when ``should_abort`` (asked before each batch every rank reaches, so it
    may be a collective) says to stop: a SIGTERM must not wait for a long evaluation to
    finish, or the pod's grace period runs out before the checkpoint is written.
    """
    was_training = model.training
    model.eval()
    device = world.device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    confusion = torch.zeros((num_labels or 1, num_labels or 1), dtype=torch.int64)
    indices = list(range(world.rank, len(data), world.size))  # eval shards: no padding
    lengths = getattr(data, "lengths", None)
    if lengths is not None:  # the metrics are sums over rows, so any order; sorted pads least
        by_length = np.argsort(-np.asarray(lengths)[indices], kind="stable")
        indices = [indices[i] for i in by_length]
    batches_on_every_rank = math.ceil(len(data) // world.size / batch_size)
    for start in range(0, len(indices), batch_size):
        if start // batch_size < batches_on_every_rank and should_abort():
            model.train(was_training)
            return None
        batch = _to_device(collate([data[i] for i in indices[start : start + batch_size]]), device)
        labels = batch.pop("labels")
        with precision.autocast(device):
            logits = model(**batch).logits
        if task == "classification":
            loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
            count += labels.numel()
            confusion += confusion_matrix(labels, logits.argmax(-1), num_labels or 1)
        else:  # token t predicts token t + 1; the last position predicts nothing
            targets = F.pad(labels[:, 1:], (0, 1), value=-100)
            loss_sum += cross_entropy_sum(logits, targets)  # no fp32 copy of all the logits
            count += (targets != -100).sum()
    all_reduce_sum(world, loss_sum)
    all_reduce_sum(world, count)
    model.train(was_training)
    mean_loss = (loss_sum / count.clamp(min=1)).item()
    if task == "classification":
        confusion = all_reduce_sum(world, confusion.to(device)).cpu()
        return {
            "evalLoss": mean_loss,
            "evalAccuracy": accuracy(confusion),
            "evalMacroF1": macro_f1(confusion),
        }
    return {"evalLoss": mean_loss, "perplexity": perplexity(mean_loss)}


# --------------------------------------------------------------------------- the loop
def train(
    model: nn.Module,
    train_data: Dataset,
    eval_data: Dataset | None,
    collate: Collate,
    spec: TrainingSpec,
    *,
    task: str,
    world: World,
    reporter: Reporter,
    checkpoints: CheckpointManager | None = None,
    num_labels: int | None = None,
    fingerprint: str | None = None,
    betas: tuple[float, float] = (0.9, 0.999),
    should_stop: Callable[[], bool] = lambda: False,
    flops_per_token: float | None = None,
    peak_flops_per_device: float | None = None,
) -> TrainResult:
    """Train ``model`` in place; return final metrics. Raises Preempted after saving on stop.

    The model must already carry its initial weights (seeded by the caller) and sit on
    ``world.device``. A checkpoint in ``checkpoints.directory`` is resumed from automatically.
    Given the model's training FLOPs per token and the device's peak FLOP/s, progress and
    metrics also report ``mfu`` (per device).
    """
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
    )
    steps_per_epoch, total_steps = plan_steps(spec, order)
    optimizer = build_optimizer(model, spec, device, betas)
    scheduler = build_scheduler(optimizer, spec, total_steps)
    state = TrainState(fingerprint=fingerprint)

    # ---- resume from the newest checkpoint, if any
    resumed_from: int | None = None
    latest = checkpoints.latest() if checkpoints else None
    if latest is not None:
        payload = checkpoints.load(latest)  # type: ignore[union-attr]
        _load_weights(model, payload["model"], latest)
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        if precision.scaler is not None and payload.get("scaler"):
            precision.scaler.load_state_dict(payload["scaler"])
        state = TrainState(**payload["train_state"])
        if world.distributed:  # rank 0's generators were saved; give each rank its own
            seed_everything(spec.seed + 1000 * world.rank + state.step)
        else:
            restore_rng(payload["rng"])
        if fingerprint and state.fingerprint and state.fingerprint != fingerprint:
            log.warning(
                "data changed since checkpoint step %d (%s -> %s); resuming anyway",
                state.step,
                state.fingerprint,
                fingerprint,
            )
        state.fingerprint = fingerprint
        resumed_from = state.step
        del payload

    def run_eval() -> dict[str, float] | None:
        """Evaluate; None when SIGTERM arrived meanwhile (on any rank)."""
        return evaluate(
            model,
            eval_data,
            collate,
            task=task,
            batch_size=spec.batch_size,
            precision=precision,
            world=world,
            num_labels=num_labels,
            should_abort=lambda: any_rank(world, should_stop())[0],
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
            trainable = {n for n, p in model.named_parameters() if p.requires_grad}
            full = all(p.requires_grad for p in model.parameters())
            weights = model.state_dict()
            if not full:  # adapters: the frozen base is reloaded from its source on resume
                weights = {k: v for k, v in weights.items() if k in trainable}
            path = checkpoints.save(
                state.step,
                {
                    "model": weights,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": precision.scaler.state_dict() if precision.scaler else None,
                    "rng": capture_rng(),
                    "train_state": train_state_to(state),
                },
                meta={"fingerprint": state.fingerprint, "totalSteps": total_steps},
            )
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
            # of the gradients less (0.5 GB for a 124M model in fp32)
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
        compiled=compiled,
        time=_now(),
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
            tokens = _real_tokens(batch)
            state.tokens_trained += tokens * world.size
            session_tokens += tokens * world.size
            batch = _to_device(batch, device)
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
                **_utilisation(
                    tokens_per_second / world.size, flops_per_token, peak_flops_per_device
                ),
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
        per_device = session_tokens / elapsed / world.size
        metrics.update(_utilisation(per_device, flops_per_token, peak_flops_per_device))
    return TrainResult(
        metrics=metrics,
        step=state.step,
        total_steps=total_steps,
        resumed_from_step=resumed_from,
        history=history,
    )


def _utilisation(
    tokens_per_second: float, flops_per_token: float | None, peak: float | None
) -> dict[str, float]:
    """``{"mfu": ...}`` for one device's throughput, or nothing when either figure is unknown."""
    if not (flops_per_token and peak):
        return {}
    return {"mfu": round(mfu(flops_per_token, tokens_per_second, peak), 4)}


def _load_weights(model: nn.Module, weights: dict[str, torch.Tensor], where: Any) -> None:
    """Load checkpoint weights; only frozen parameters (a LoRA base) may be absent."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    try:
        result = model.load_state_dict(weights, strict=False)
    except RuntimeError as exc:  # shape mismatch: the config changed under the checkpoint
        raise InvalidConfig(
            f"checkpoint {where} does not fit this model; delete the checkpoints to start "
            f"over ({str(exc).splitlines()[0]})"
        ) from None
    missing = sorted(set(result.missing_keys) & trainable)
    if missing or result.unexpected_keys:
        raise InvalidConfig(
            f"checkpoint {where} does not match this model (missing {missing[:3]}, unexpected "
            f"{result.unexpected_keys[:3]}); delete the checkpoints to start over"
        )


def _now() -> str:
    from .progress import now_iso

    return now_iso()
