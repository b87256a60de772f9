"""Which number format the forward pass runs in, chosen from the spec and the device."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)


@dataclass
class Precision:
    """An autocast dtype and, for fp16, the loss scaler that keeps small gradients alive."""

    dtype: torch.dtype | None
    """Autocast dtype, or None for plain fp32."""
    scaler: torch.amp.GradScaler | None

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
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
