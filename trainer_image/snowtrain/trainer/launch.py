"""Use every GPU the process can see: one DDP rank per GPU under ``torch.distributed.run``.

``python -m snowtrain.trainer`` started on its own (not by torchrun) on a machine with several
visible GPUs starts itself again under ``python -m torch.distributed.run --standalone`` with
one process per GPU, and waits. In a pod that is the GPUs the device plugin allocated
(``spec.resources.gpusPerNode``); on a workstation, every GPU in ``CUDA_VISIBLE_DEVICES``.

Why a parent process rather than ``exec``: torchrun's own exit code is 1 whatever its ranks
ended with, and its shutdown waits only 30 s after SIGTERM before killing the ranks. The
parent hands SIGTERM/SIGINT on, lets the ranks take as long as the pod's grace period allows
to save their checkpoint, and exits with the code rank 0 wrote into the termination message
(75 Preempted, 65 DataError, ...), exactly as a single-process run does.

A pod of a multi-node attempt (the operator sets the rendezvous in the environment,
:class:`snowtrain.api.torchrun.Rendezvous`) goes through the same parent, even with one rank:
its ranks meet the other pods' through torchrun's elastic rendezvous, which regroups when a
lost pod's replacement joins, and the first rank on each pod writes the pod's termination
message when it fails, so every pod exits with the code that says why.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from types import FrameType

from snowtrain.api.events import parse_summary
from snowtrain.api.torchrun import Rendezvous
from snowtrain.api.torchrun import torchrun_command as _torchrun

#: Ranks per machine regardless of visible GPUs: ``1`` keeps one process on a multi-GPU
#: machine; ``2`` on a CPU-only one runs two gloo ranks (how the tests exercise DDP).
PROCESSES_ENV = "SNOWTRAIN_PROCESSES_PER_NODE"


def processes_per_node(env: Mapping[str, str], visible_gpus: int) -> int:
    """Ranks to start on this machine: the override, else one per visible GPU (at least 1)."""
    override = env.get(PROCESSES_ENV, "").strip()
    if override:
        try:
            count = int(override)
        except ValueError:
            count = 0
        if count < 1:
            raise ValueError(f"{PROCESSES_ENV} must be a positive integer, not {override!r}")
        return count
    return max(visible_gpus, 1)


def launched_by_torchrun(env: Mapping[str, str]) -> bool:
    """Already a rank: torchrun sets LOCAL_RANK (here, or in the operator's multi-node pods)."""
    return "LOCAL_RANK" in env


def torchrun_command(
    argv: Sequence[str], processes: int, rendezvous: Rendezvous | None = None
) -> list[str]:
    """The command that runs ``processes`` ranks of the trainer on this machine: alone
    (``--standalone``), or as one pod of a multi-node attempt."""
    meet = rendezvous.arguments() if rendezvous else ["--standalone"]
    return [*_torchrun(sys.executable, processes, *meet), *argv]


def exit_code_from_summary(text: str | None, launcher_code: int) -> int:
    """Rank 0's exit code from its termination message; the launcher's when there is none."""
    if launcher_code == 0:
        return 0
    summary = parse_summary(text)
    code = summary.exit_code if summary else 0
    return code if code != 0 else launcher_code


def run_ranks(argv: Sequence[str], processes: int, rendezvous: Rendezvous | None = None) -> int:
    """Run the trainer as ``processes`` DDP ranks (of every node's, with a ``rendezvous``);
    return the exit code this node's first rank wrote (rank 0's, alone)."""
    from .progress import termination_path

    path = termination_path()
    if path is not None:  # a summary left by an earlier run must not pass for this one
        try:
            path.write_text("")
        except OSError:
            path = None
    where = f" as one of {rendezvous.nodes} pods" if rendezvous else ""
    print(f"starting {processes} training processes{where}", file=sys.stderr, flush=True)
    # Each rendezvous round publishes its rank 0's address afresh: torchrun's shared store
    # would keep the first round's, which is wrong once a replacement pod holds rank 0.
    env = {**os.environ, "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    proc = subprocess.Popen(torchrun_command(argv, processes, rendezvous), env=env)

    def forward(signum: int, frame: FrameType | None) -> None:
        proc.send_signal(signum)  # torchrun hands it to every rank; they checkpoint and stop

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = proc.wait()
    text = None
    if path is not None:
        with contextlib.suppress(OSError):
            text = path.read_text()
    return exit_code_from_summary(text, code)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m snowtrain.trainer``: fan out over the GPUs, or train here."""
    from .errors import InvalidConfig
    from .main import main as train_main

    argv = list(sys.argv[1:] if argv is None else argv)
    if not launched_by_torchrun(os.environ):
        import torch

        try:
            processes = processes_per_node(os.environ, torch.cuda.device_count())
            rendezvous = Rendezvous.from_env(os.environ)
        except ValueError as exc:
            print(exc, file=sys.stderr)
            return InvalidConfig.exit_code
        if processes > 1 or rendezvous:
            return run_ranks(argv, processes, rendezvous)
    return train_main(argv)
