"""Inter-process locks: several test sessions share one machine and one cluster.

Two concurrent builds would delete each other's source tree, and two concurrent `up`s would
start two etcds; an exclusive flock on a file in the cache serialises them (the second waits,
then finds the work done).
"""

from __future__ import annotations

import fcntl
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `path` for the block; say so if we have to wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"[tests.cluster] waiting for another process's {what}...", file=sys.stderr)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
