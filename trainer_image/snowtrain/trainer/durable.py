"""Directory writes that survive a crash: fsync every file, rename, fsync the parent.

A rename alone is atomic but not durable: after a node crash the renamed directory can hold
files whose data never reached the disk. Checkpoints and the exported model both write into
a temp directory, make it durable here, and only then give it its final name.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_tree(directory: Path) -> None:
    """Flush every file under ``directory`` and every directory entry to disk."""
    for root, _dirs, files in os.walk(directory, topdown=False):
        for name in files:
            with open(Path(root) / name, "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(Path(root))


def fsync_dir(directory: Path) -> None:
    """Flush a directory's entries (a rename into it, a new file) to disk."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
