"""``training.compile``: torch.compile where it can work, eager mode with a reason where not.

Compiled code is built at run time: Triton (GPU) builds its kernel launchers with a C
compiler, Inductor's CPU backend needs a C++ compiler. The trainer image ships none (a
runtime-only base, no toolchain), and there the compile attempt would fail kernel by kernel,
each failure quietly falling back to eager after spending its compile time, and the job
would report nothing. So the trainer checks first, says plainly why it trains eagerly, and
records ``compiled`` in the start event.
"""

from __future__ import annotations

import logging
import os
import shutil

import torch
from torch import nn

log = logging.getLogger(__name__)

#: Compilers Triton (C, GPU kernels) and Inductor's CPU backend (C++) look for.
_C_COMPILERS = ("cc", "gcc", "clang")
_CXX_COMPILERS = ("c++", "g++", "clang++")


def missing_compiler(device: torch.device) -> str | None:
    """Why torch.compile cannot build kernels for ``device`` here, or None when it can."""
    if device.type == "cuda":
        if os.environ.get("CC") or any(shutil.which(c) for c in _C_COMPILERS):
            return None
        return "no C compiler (Triton needs one to launch compiled GPU kernels)"
    if os.environ.get("CXX") or any(shutil.which(c) for c in _CXX_COMPILERS):
        return None
    return "no C++ compiler (Inductor needs one to build CPU kernels)"


def maybe_compile(model: nn.Module, device: torch.device) -> tuple[nn.Module, bool]:
    """``torch.compile(model)`` when a compiler is at hand; else the model and a warning."""
    reason = missing_compiler(device)
    if reason is not None:
        log.warning(
            "training.compile is set but this image has %s: training runs in eager mode. "
            "Build the trainer image on a -devel base (or install gcc) to compile.",
            reason,
        )
        return model, False
    # A graph that still fails to compile (an unsupported op) runs eagerly, not the job.
    torch._dynamo.config.suppress_errors = True
    return torch.compile(model), True
