"""Device, dtype, attention kernel and CPU thread choices for inference.

On CUDA the model runs in bf16 (fp16 on GPUs without bf16) with PyTorch's SDPA attention,
which halves memory and uses fused kernels. On CPU it stays fp32 and uses exactly as many
intra-op threads as the pod may use: a container sees every core of the node, so without
this torch would spawn one thread per node core and thrash against its CPU limit.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    dtype: torch.dtype
    threads: int | None  # CPU intra-op threads; None on CUDA


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2/v1 CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota: float | None = None
    try:
        raw = (cgroup_root / "cpu.max").read_text().split()
        if raw and raw[0] != "max":
            quota = int(raw[0]) / int(raw[1])
    except (OSError, ValueError, IndexError):
        try:
            q = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text())
            p = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text())
            if q > 0 and p > 0:
                quota = q / p
        except (OSError, ValueError):
            pass
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def choose_runtime(device: str = "auto", threads: int | None = None) -> Runtime:
    """Pick device and dtype and configure torch threads; call once before loading a model."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        torch.backends.cuda.matmul.allow_tf32 = True
        return Runtime(dev, dtype, None)
    n = threads or usable_cpus()
    torch.set_num_threads(n)
    # Batches already give parallelism across inputs; extra inter-op threads only contend.
    # RuntimeError: already set (a second server in the same process, e.g. tests).
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    log.info("CPU inference with %d threads", n)
    return Runtime(dev, torch.float32, n)
