"""Checkpoints: periodic, atomic, pruned, and found again by the next run on its own.

A checkpoint is a directory ``step-00000123/`` holding ``state.pt`` (model, optimizer,
scheduler, grad scaler, RNG states and the loop's position in the data) and ``meta.json``.
It is written under a temporary name and renamed into place, so a run killed mid-write leaves
either the previous checkpoint or the new one, never a torn one. The newest ``keep`` survive.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .durable import fsync_dir, fsync_tree

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
    extra: dict[str, Any] = field(default_factory=dict)


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

    def save(self, step: int, payload: dict[str, Any], meta: dict[str, Any] | None = None) -> Path:
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

    def _remove_partial(self) -> None:
        """Temp dirs of writers that died mid-save."""
        for p in self.directory.glob(".tmp-step-*"):
            shutil.rmtree(p, ignore_errors=True)


def train_state_from(payload: dict[str, Any]) -> TrainState:
    return TrainState(**payload["train_state"])


def train_state_to(state: TrainState) -> dict[str, Any]:
    return asdict(state)
