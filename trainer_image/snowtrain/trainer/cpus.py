"""The CPUs a trainer pod may use, and how the Rust tokenizer gets them during ingest.

A container sees every core of its node: ``os.cpu_count()`` says 64 on a 64-core node whatever
the pod's CPU limit. ``usable_cpus`` is the affinity mask capped by the cgroup CPU quota.
This module imports nothing heavy (no torch), so the model server can use it too.

Tokenizer threads. A fast tokenizer's batch encode runs on rayon's global thread pool when
``TOKENIZERS_PARALLELISM`` is true -- the Rust side reads the variable on every call -- and
the pool's size is fixed at its first use: ``RAYON_NUM_THREADS``, else the Rust runtime's CPU
count. Recent builds read the affinity mask and a cgroup v2/v1 quota there, older ones (and
hosts where the cgroup files are hidden) count the node's cores -- 64 threads thrashing
against a limit of 4 -- and none knows that torchrun's ranks on the pod share its CPUs. So:

- The image sets ``TOKENIZERS_PARALLELISM=false`` for every process in it (server, CLI,
  tests, a user's shell): serial tokenization is the safe default, and no process builds a
  node-sized pool by accident. The Makefile, the test harness and local mode say the same.
- The trainer opts in for ingest only. ``cap_tokenizer_threads`` runs first thing in the
  trainer and writes ``RAYON_NUM_THREADS`` (usable CPUs shared among the ranks on this pod)
  unless the user set it -- ``RAYON_NUM_THREADS=1`` is the way to keep ingest serial.
  ``parallel_tokenization`` turns parallelism on around the token-dataset build.
- After ingest the variable is ``false`` again, not unset: a forked child has none of the
  pool's threads and would deadlock on its first parallel encode, and the bindings' fork hook
  only switches parallelism off in a child when the variable is unset. The trainer does not
  fork today (no DataLoader workers; torchrun starts the ranks before they run), but
  training-time code that does (DataLoader workers, compile workers) stays safe.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
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


def cap_tokenizer_threads(
    environ: MutableMapping[str, str] = os.environ, cgroup_root: Path = CGROUP_ROOT
) -> int:
    """Size rayon's pool (``RAYON_NUM_THREADS``) to this rank's share of the pod's CPUs.

    A valid ``RAYON_NUM_THREADS`` the user set wins. Call before the first parallel encode
    in the process: rayon reads the variable once, when the pool starts.
    """
    user = environ.get("RAYON_NUM_THREADS")
    chosen = _positive_int(user)
    if chosen is not None:
        return chosen
    if user is not None:
        # rayon would read 0 or garbage as "one thread per node core".
        log.warning("ignoring RAYON_NUM_THREADS=%r: not a positive integer", user)
    # torchrun's ranks on this pod tokenize at the same time.
    ranks = _positive_int(environ.get("LOCAL_WORLD_SIZE")) or 1
    threads = max(1, usable_cpus(cgroup_root) // ranks)
    environ["RAYON_NUM_THREADS"] = str(threads)
    return threads


@contextmanager
def parallel_tokenization(environ: MutableMapping[str, str] = os.environ) -> Iterator[None]:
    """Fast tokenizers encode on rayon's pool inside the block; serially (fork-safe) after."""
    environ["TOKENIZERS_PARALLELISM"] = "true"
    try:
        yield
    finally:
        environ["TOKENIZERS_PARALLELISM"] = "false"
