"""Start daemons detached and stop exactly those, through PID files.

Each PID file records the pid and the process's kernel start time, so a recycled pid is
never mistaken for our daemon and `down` cannot kill anything it did not start.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; it ends at the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return fields[19]


def start(
    name: str,
    argv: Sequence[str],
    run_dir: Path,
    log_dir: Path,
    env: dict[str, str] | None = None,
) -> int:
    """Launch `argv` in its own session with output to log_dir/NAME.log; write run_dir/NAME.pid."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            close_fds=True,
        )
    write_pidfile(run_dir / f"{name}.pid", proc.pid)
    return proc.pid


def write_pidfile(path: Path, pid: int) -> None:
    """Record pid with its start time (so a recycled pid is never taken for it)."""
    path.write_text(f"{pid} {_start_time(pid)}\n")


def pid_of(name: str, run_dir: Path, suffix: str = ".pid") -> int | None:
    """The live pid recorded in run_dir/NAME.pid, or None (no file, dead, or pid reused)."""
    path = run_dir / f"{name}{suffix}"
    try:
        pid_s, started = path.read_text().split()
    except (OSError, ValueError):
        return None
    pid = int(pid_s)
    return pid if _start_time(pid) == started else None


def alive(pid: int) -> bool:
    return _start_time(pid) is not None


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds."""
    started = _start_time(pid)
    if started is None:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _start_time(pid) != started:
            _reap(pid)
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while _start_time(pid) == started:
        time.sleep(0.05)
    _reap(pid)


def _reap(pid: int) -> None:
    """Collect the zombie if the daemon is our own child (started in this process)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop(name: str, run_dir: Path, timeout: float = 10.0) -> bool:
    """Stop the daemon recorded as NAME; True if it was running. Removes the PID file."""
    pid = pid_of(name, run_dir)
    if pid is not None:
        stop_pid(pid, timeout)
    (run_dir / f"{name}.pid").unlink(missing_ok=True)
    return pid is not None


def shim_pids(containerd_address: str) -> list[int]:
    """containerd shims serving the containerd listening on `containerd_address`.

    Shims re-parent to init and outlive containerd; their argv carries
    `-address <socket>` of the containerd that started them, which identifies ours exactly.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0].endswith(b"containerd-shim-runc-v2"):
            continue
        for flag, value in itertools.pairwise(argv):
            if flag == b"-address" and value == containerd_address.encode():
                found.append(int(entry.name))
                break
    return found


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (0 if gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
