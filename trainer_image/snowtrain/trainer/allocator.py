"""The C heap allocator the trainer runs on: tcmalloc, preloaded by the image.

Why it matters. The fast tokenizer's Rust core allocates and frees several small buffers per
token (the normalized string and its alignments, the splits, every ``Encoding`` vector).
Under glibc's malloc that is about half of the tokenizing CPU (``perf``: ``_int_malloc``
alone 30% of samples). tcmalloc's per-thread caches halve the tokenizer's cost: 2.8 -> 1.4
CPU-s per 100k ~100-character rows, and ingesting 1e6 rows through the emulator takes
21.6-25.1 s instead of 30-32 s (bench_ingest, three runs each). Training speed does not
change on CPU (bench_train, within noise). tcmalloc (or jemalloc) is what PyTorch's CPU
performance guide recommends; here jemalloc gained less and mimalloc about the same.

Memory. tcmalloc caches freed pages for reuse where glibc returns large blocks to the OS,
so the builders call ``release_freed_memory`` when a split is written.

How. The dynamic loader reads ``LD_PRELOAD`` once, when a process starts, so a running
Python cannot switch allocators. The trainer image installs ``libtcmalloc-minimal4`` and sets
``PRELOAD_ENV``; local mode and the benchmark add it to the environment of the trainer and
model-server processes they start (``with_preloaded_allocator``) when the host has the
library. ``active_allocator`` reports what this process really runs on, for the trainer's
start-up log line. This module imports nothing heavy, so every process can use it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Mapping
from pathlib import Path

#: A bare soname: the loader finds it through ld.so.cache on any architecture.
PRELOAD = "libtcmalloc_minimal.so.4"

#: The environment that preloads tcmalloc. tcmalloc otherwise writes a line to stderr for
#: every allocation over 1 GiB (loading a large model), which is noise in pod logs.
PRELOAD_ENV: Mapping[str, str] = {
    "LD_PRELOAD": PRELOAD,
    "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 40),
}

_KNOWN = ("tcmalloc", "jemalloc", "mimalloc")


def active_allocator(maps: Path = Path("/proc/self/maps")) -> str:
    """The malloc this process runs on: tcmalloc, jemalloc, mimalloc or glibc.

    Read from the libraries mapped into the process, so it tells what was really loaded,
    not what the environment asked for. "unknown" where there is no /proc.
    """
    try:
        mapped = maps.read_text()
    except OSError:
        return "unknown"
    for name in _KNOWN:
        if f"/lib{name}" in mapped:
            return name
    return "glibc"


def preload_available() -> bool:
    """Whether the loader can find ``PRELOAD`` on this host (the ld.so cache)."""
    return ctypes.util.find_library("tcmalloc_minimal") is not None


def with_preloaded_allocator(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` plus ``PRELOAD_ENV``, for a trainer or model-server child process.

    Unchanged where the user already set ``LD_PRELOAD`` (their choice wins) or where the host
    lacks the library (the loader would print an error for every process it starts).
    """
    env = dict(environ)
    if env.get("LD_PRELOAD") or not preload_available():
        return env
    for key, value in PRELOAD_ENV.items():
        env.setdefault(key, value)
    return env


def release_freed_memory() -> None:
    """Hand the pages tcmalloc keeps cached back to the OS; a no-op on other allocators.

    tcmalloc keeps freed pages for reuse instead of returning them as glibc does for large
    blocks. Ingest's large short-lived buffers (a result set, its Arrow decode) would stay
    resident through training, so the builders call this when a split is written. Decommitting
    on every free instead (``tcmalloc.aggressive_memory_decommit``) kept ingest's peak RSS at
    glibc's level but cost 15% of ingest time and 30% of CPU training samples/s.
    """
    process = ctypes.CDLL(None)
    release = getattr(process, "MallocExtension_ReleaseFreeMemory", None)
    if release is not None:
        release()
