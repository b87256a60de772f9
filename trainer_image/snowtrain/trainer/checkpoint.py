"""Checkpoints: periodic, atomic, pruned, and found again by the next run on its own.

A checkpoint is a directory ``step-00000123/`` holding ``state.pt`` (a ``Payload``: model,
optimizer, scheduler, grad scaler, RNG states and the loop's ``TrainState``) and
``meta.json``. It is written under a temporary name and renamed into place, so a run killed
mid-write leaves either the previous checkpoint or the new one, never a torn one. The newest
``keep`` survive. What goes into a checkpoint and how it is put back is decided here alone
(``save_training`` / ``resume``), so the loop never spells a key.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
from torch import nn

from .durable import fsync_dir, fsync_tree
from .errors import InvalidConfig

_NAME = re.compile(r"^step-(\d+)$")
STATE_FILE = "state.pt"
META_FILE = "meta.json"


@dataclass
class TrainState:
    """Where the loop is; everything needed besides the tensors to continue exactly."""

    step: int = 0
    """Optimizer steps done."""
    epoch: int = 0
    """Current pass over the data (selects the seeded permutation)."""
    position: int = 0
    """Next micro-batch index within this rank's shard of the epoch's permutation."""
    tokens_trained: int = 0
    samples_trained: int = 0
    train_seconds: float = 0.0
    loss_sum: float = 0.0
    """Sum of per-step training losses, so the final mean covers resumed runs too."""
    fingerprint: str | None = None
    """Data fingerprint of the run that wrote the checkpoint (a change is reported)."""

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> TrainState:
        """The state as ``asdict`` saved it; checkpoints written before ``extra`` was dropped
        carry it (always empty), and they must still resume."""
        return cls(**{k: v for k, v in saved.items() if k != "extra"})


@dataclass
class Trainables:
    """The objects whose state a checkpoint holds besides the ``TrainState``."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    """fp16's loss scaler; None in bf16 and fp32."""


class Payload(TypedDict):
    """What ``state.pt`` holds (plain containers and tensors: loadable with weights_only)."""

    model: dict[str, torch.Tensor]
    """The trainable weights; all of them unless adapters train on a frozen base."""
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any] | None
    rng: dict[str, Any]
    """Rank 0's generators (``capture_rng``)."""
    train_state: dict[str, Any]


def capture_rng() -> dict[str, Any]:
    """Python, numpy, torch and CUDA generator states, in a weights_only-loadable form."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    random.setstate(_as_tuple(state["python"]))
    npst = state["numpy"]
    np.random.set_state(
        (
            npst["kind"],
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    """random.setstate wants tuples all the way down; serialisation may give lists."""
    if isinstance(value, list | tuple):
        return tuple(_as_tuple(v) for v in value)
    return value


class CheckpointManager:
    """Decides when to checkpoint, writes atomically, prunes, and finds the latest."""

    def __init__(
        self,
        directory: str | Path,
        *,
        keep: int = 2,
        every_steps: int | None = None,
        every_minutes: float | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        self.directory = Path(directory)
        self.keep = keep
        self.every_steps = every_steps
        self.every_minutes = every_minutes
        self._clock = clock
        self._last_save = clock()

    def due(self, step: int) -> bool:
        """Time for a checkpoint after ``step`` optimizer steps?"""
        if self.every_steps and step % self.every_steps == 0:
            return True
        return bool(
            self.every_minutes and self._clock() - self._last_save >= self.every_minutes * 60
        )

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [
            (int(m.group(1)), p)
            for p in self.directory.iterdir()
            if (m := _NAME.match(p.name)) and (p / META_FILE).is_file()
        ]
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def save(
        self, step: int, payload: Mapping[str, Any], meta: dict[str, Any] | None = None
    ) -> Path:
        """Write ``payload`` as checkpoint ``step`` atomically, then prune old ones."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._remove_partial()
        final = self.directory / f"step-{step:08d}"
        tmp = self.directory / f".tmp-{final.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        torch.save(payload, tmp / STATE_FILE)
        # meta.json is written last: its presence marks a complete checkpoint.
        (tmp / META_FILE).write_text(json.dumps({"step": step, **(meta or {})}))
        fsync_tree(tmp)
        if final.exists():  # the same step saved again (e.g. SIGTERM right after a save)
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(self.directory)
        self._last_save = self._clock()
        for old in self.checkpoints()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def load(self, path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """Read a checkpoint's payload (weights_only: a checkpoint cannot run code)."""
        return torch.load(Path(path) / STATE_FILE, map_location=map_location, weights_only=True)

    def save_training(self, state: TrainState, parts: Trainables, *, total_steps: int) -> Path:
        """Checkpoint the run at ``state.step`` (rank 0 alone calls this)."""
        payload: Payload = {
            "model": _trainable_weights(parts.model),
            "optimizer": parts.optimizer.state_dict(),
            "scheduler": parts.scheduler.state_dict(),
            "scaler": parts.scaler.state_dict() if parts.scaler else None,
            "rng": capture_rng(),
            "train_state": asdict(state),
        }
        meta = {"fingerprint": state.fingerprint, "totalSteps": total_steps}
        return self.save(state.step, payload, meta=meta)

    def resume(self, parts: Trainables, *, restore_generators: bool) -> TrainState | None:
        """Load the newest checkpoint into ``parts``; its ``TrainState``, or None when none.

        ``restore_generators`` puts back the saved RNG states. Under DDP they are rank 0's, so
        the caller reseeds each rank instead.
        """
        latest = self.latest()
        if latest is None:
            return None
        payload: Payload = self.load(latest)  # type: ignore[assignment]
        _load_weights(parts.model, payload["model"], latest)
        parts.optimizer.load_state_dict(payload["optimizer"])
        parts.scheduler.load_state_dict(payload["scheduler"])
        if parts.scaler is not None and payload.get("scaler"):
            parts.scaler.load_state_dict(payload["scaler"])  # type: ignore[arg-type]
        state = TrainState.from_dict(payload["train_state"])
        if restore_generators:
            restore_rng(payload["rng"])
        return state

    def _remove_partial(self) -> None:
        """Temp dirs of writers that died mid-save."""
        for p in self.directory.glob(".tmp-step-*"):
            shutil.rmtree(p, ignore_errors=True)


def _trainable_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights, less a frozen base: adapters resume on a base reloaded from its
    source, so saving it again would only cost disk and time."""
    weights = model.state_dict()
    if all(p.requires_grad for p in model.parameters()):
        return weights
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v for k, v in weights.items() if k in trainable}


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
