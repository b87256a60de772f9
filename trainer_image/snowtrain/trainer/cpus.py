"""The CPUs a trainer pod may use, and how many threads tokenize during ingest.

A container sees every core of its node: ``os.cpu_count()`` says 64 on a 64-core node whatever
the pod's CPU limit. ``usable_cpus`` is the affinity mask capped by the cgroup CPU quota.
This module imports nothing heavy (no torch), so the model server can use it too.

Tokenizer threads. Ingest encodes batches on ``ingest_threads`` Python threads, each running
the Rust tokenizer serially on its own batch (``encode_batch_fast`` releases the GIL), rather
than one batch at a time on rayon's pool (``TOKENIZERS_PARALLELISM=true``). Speed is the
same on 2 cores (205k ~100-char rows, median of 6 interleaved runs: 4.55 s on two threads,
4.73 s on rayon) -- a thread's Python-side work (the text list, flattening ids) overlaps
another's encoding, where rayon's pool idles through it -- and rayon stays out of the
process altogether: its pool is sized once, from the node's core count on older builds (64
threads against a limit of 4), and a forked child inherits none of its threads and
deadlocks on its next parallel encode. So ``TOKENIZERS_PARALLELISM=false`` holds everywhere
-- the image, the Makefile, the test harness and local mode set it -- and
``serial_tokenizers`` makes the trainer sure of it.

``ingest_threads`` is the usable CPUs shared among the torchrun ranks on the pod (they
ingest at the same time); ``SNOWTRAIN_INGEST_THREADS`` overrides it, 1 keeps ingest serial.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
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


def _positive_int(value: str | None) -> int | None:
    try:
        n = int(value or "")
    except ValueError:
        return None
    return n if n > 0 else None


INGEST_THREADS_ENV = "SNOWTRAIN_INGEST_THREADS"


def ingest_threads(environ: Mapping[str, str] = os.environ, cgroup_root: Path = CGROUP_ROOT) -> int:
    """Threads that tokenize at once: this rank's share of the pod's CPUs, or the override."""
    user = environ.get(INGEST_THREADS_ENV)
    chosen = _positive_int(user)
    if chosen is not None:
        return chosen
    if user is not None:
        log.warning("ignoring %s=%r: not a positive integer", INGEST_THREADS_ENV, user)
    # torchrun's ranks on this pod tokenize at the same time.
    ranks = _positive_int(environ.get("LOCAL_WORLD_SIZE")) or 1
    return max(1, usable_cpus(cgroup_root) // ranks)


def serial_tokenizers(environ: MutableMapping[str, str] = os.environ) -> None:
    """Keep fast tokenizers off rayon's pool for this process (see the module docstring)."""
    if environ.get("TOKENIZERS_PARALLELISM", "").lower() in ("1", "true"):
        log.info("TOKENIZERS_PARALLELISM=false: ingest runs its own tokenizer threads")
    environ["TOKENIZERS_PARALLELISM"] = "false"
