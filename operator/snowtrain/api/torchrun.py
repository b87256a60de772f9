"""How the trainer's DDP ranks are started: ``python -m torch.distributed.run`` arguments,
decided once for the operator's multi-node pods and the trainer's own one-node fan-out.

``python -m torch.distributed.run`` rather than a ``torchrun`` script: the script on PATH may
belong to another Python (a base image's), one without snowtrain installed.
"""

from __future__ import annotations

#: How long torchrun lets its ranks finish after SIGTERM before it kills them. The pod's
#: terminationGracePeriodSeconds is the real limit (the kubelet kills everything then); this
#: only has to be longer, so torchrun's 30 s default never cuts a checkpoint short.
SHUTDOWN_TIMEOUT_SECONDS = 3600


def torchrun_command(python: str, processes: int, *rendezvous: str) -> list[str]:
    """``python -m torch.distributed.run`` with ``processes`` ranks on this machine, the
    rendezvous arguments given (``--standalone``, or the nodes, rank and master), and the
    trainer module after them."""
    return [
        python,
        "-m",
        "torch.distributed.run",
        *rendezvous,
        f"--nproc-per-node={max(processes, 1)}",
        f"--shutdown-timeout={SHUTDOWN_TIMEOUT_SECONDS}",
        "-m",
        "snowtrain.trainer",
    ]
