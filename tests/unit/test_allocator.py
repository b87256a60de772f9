"""The trainer's processes run on tcmalloc where the host has it, and say which malloc they use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from snowtrain.trainer import allocator
from snowtrain.trainer.allocator import (
    PRELOAD,
    active_allocator,
    preload_available,
    with_preloaded_allocator,
)

GLIBC_MAPS = "7f00-7f01 r-xp 00000000 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
TCMALLOC_MAPS = (
    GLIBC_MAPS
    + "7f02-7f03 r-xp 00000000 08:01 2 /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4\n"
)


@pytest.mark.parametrize(("maps", "expected"), [(GLIBC_MAPS, "glibc"), (TCMALLOC_MAPS, "tcmalloc")])
def test_allocator_is_read_from_the_mapped_libraries(
    tmp_path: Path, maps: str, expected: str
) -> None:
    path = tmp_path / "maps"
    path.write_text(maps)
    assert active_allocator(path) == expected


def test_allocator_is_unknown_without_proc(tmp_path: Path) -> None:
    assert active_allocator(tmp_path / "missing") == "unknown"


def test_users_own_preload_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "preload_available", lambda: True)
    env = with_preloaded_allocator({"LD_PRELOAD": "libjemalloc.so.2", "A": "1"})
    assert env == {"LD_PRELOAD": "libjemalloc.so.2", "A": "1"}


def test_nothing_is_preloaded_where_the_host_lacks_the_library(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Else the loader would print an error for every process started."""
    monkeypatch.setattr(allocator, "preload_available", lambda: False)
    assert with_preloaded_allocator({"A": "1"}) == {"A": "1"}


def test_preload_is_added_with_a_quiet_large_allocation_report(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(allocator, "preload_available", lambda: True)
    env = with_preloaded_allocator({"A": "1"})
    assert env["LD_PRELOAD"] == PRELOAD
    assert int(env["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"]) >= 1 << 40
    assert env["A"] == "1"


def run_preloaded(code: str) -> subprocess.CompletedProcess[str]:
    """``python -c code`` started as local mode starts the trainer: with the preload added."""
    base = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    return subprocess.run(
        [sys.executable, "-c", code],
        env=with_preloaded_allocator(base),
        capture_output=True,
        text=True,
        check=True,
    )


def test_a_child_started_with_the_preload_runs_on_tcmalloc() -> None:
    """What local mode does for the trainer: the child really maps tcmalloc (host permitting)."""
    out = run_preloaded(
        "from snowtrain.trainer.allocator import active_allocator; print(active_allocator())"
    )
    assert out.stdout.strip() == ("tcmalloc" if preload_available() else "glibc")
    assert "cannot be preloaded" not in out.stderr


RELEASE_PROBE = """
import sys
from snowtrain.trainer.allocator import active_allocator, release_freed_memory

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

blocks = [bytearray(1 << 20) for _ in range(300)]  # 300 MB in 1 MB buffers, pages touched
del blocks
freed = rss_mb()
release_freed_memory()
print(active_allocator(), freed, rss_mb())
"""


def test_memory_that_ingest_freed_goes_back_to_the_os() -> None:
    """tcmalloc keeps freed pages cached; the builders release them before training starts."""
    out = run_preloaded(RELEASE_PROBE)
    name, freed, released = out.stdout.split()
    if name == "tcmalloc":
        assert float(freed) - float(released) > 200, out.stdout  # was cached, now returned
    else:  # glibc returns large blocks at free: nothing left to release, and no error
        assert float(released) <= float(freed) + 5, out.stdout
