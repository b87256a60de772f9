"""How the trainer's DDP ranks are started: ``python -m torch.distributed.run`` arguments,
decided once for the operator's multi-node pods and the trainer's own one-node fan-out.

``python -m torch.distributed.run`` rather than a ``torchrun`` script: the script on PATH may
belong to another Python (a base image's), one without snowtrain installed.

Several pods (``spec.resources.nodes``) meet through torchrun's elastic ``c10d`` rendezvous
on a small store pod of their attempt, reached at its Service's ClusterIP: no cluster DNS, no
Indexed Job, so the same path runs on every Kubernetes version. Each pod names its own pod IP
(``--local-addr``) so the rank-0 address the others dial is an IP too. The operator passes
the rendezvous to the trainer's launcher in the environment variables below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: How long torchrun lets its ranks finish after SIGTERM before it kills them. The pod's
#: terminationGracePeriodSeconds is the real limit (the kubelet kills everything then); this
#: only has to be longer, so torchrun's 30 s default never cuts a checkpoint short.
SHUTDOWN_TIMEOUT_SECONDS = 3600
#: The rendezvous store's port (torchrun's documented default for c10d endpoints).
RENDEZVOUS_PORT = 29400
#: How long the pods of an attempt wait for each other: longer than torchrun's 600 s default,
#: because a pod may wait for a GPU node to scale up while the others already run.
JOIN_TIMEOUT_SECONDS = 1800
#: Store requests: a store pod that starts a little after the trainer pods is waited for.
READ_TIMEOUT_SECONDS = 300

NODES_ENV = "SNOWTRAIN_NODES"
ENDPOINT_ENV = "SNOWTRAIN_RENDEZVOUS_ENDPOINT"
RUN_ID_ENV = "SNOWTRAIN_RENDEZVOUS_ID"
POD_IP_ENV = "SNOWTRAIN_POD_IP"
MAX_RESTARTS_ENV = "SNOWTRAIN_MAX_RESTARTS"


@dataclass(frozen=True)
class Rendezvous:
    """Where the pods of one multi-node attempt meet, and how often they may regroup."""

    nodes: int
    endpoint: str
    """``host:port`` of the attempt's store (its Service's ClusterIP)."""
    run_id: str
    local_addr: str
    """This pod's IP: the address other pods dial when this pod holds rank 0."""
    max_restarts: int = 0
    """Times the pods regroup after losing one (a replacement pod joins; all resume from the
    last checkpoint) before the attempt fails."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Rendezvous | None:
        """The rendezvous the operator set; None for a one-node run. Raises ValueError
        naming the variable that is missing or malformed."""
        raw_nodes = env.get(NODES_ENV, "").strip()
        if not raw_nodes or raw_nodes == "1":
            return None
        values = {}
        for name in (ENDPOINT_ENV, RUN_ID_ENV, POD_IP_ENV):
            values[name] = env.get(name, "").strip()
            if not values[name]:
                raise ValueError(f"{name} must be set when {NODES_ENV}={raw_nodes}")
        try:
            nodes = int(raw_nodes)
            restarts = int(env.get(MAX_RESTARTS_ENV, "0") or 0)
        except ValueError:
            raise ValueError(f"{NODES_ENV} and {MAX_RESTARTS_ENV} must be integers") from None
        if nodes < 1 or restarts < 0:
            raise ValueError(f"{NODES_ENV} must be >= 1 and {MAX_RESTARTS_ENV} >= 0")
        return cls(nodes, values[ENDPOINT_ENV], values[RUN_ID_ENV], values[POD_IP_ENV], restarts)

    def arguments(self) -> list[str]:
        """torchrun's rendezvous arguments for this pod."""
        conf = (
            f"is_host=false,join_timeout={JOIN_TIMEOUT_SECONDS},read_timeout={READ_TIMEOUT_SECONDS}"
        )
        return [
            f"--nnodes={self.nodes}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={self.endpoint}",
            f"--rdzv-id={self.run_id}",
            f"--rdzv-conf={conf}",
            f"--local-addr={self.local_addr}",
            f"--max-restarts={self.max_restarts}",
        ]


def rendezvous_env(nodes: int, endpoint: str, run_id: str, max_restarts: int) -> dict[str, str]:
    """What the operator sets on a multi-node pod (plus its IP, from the downward API), read
    back by :meth:`Rendezvous.from_env` in the pod."""
    return {
        NODES_ENV: str(nodes),
        ENDPOINT_ENV: endpoint,
        RUN_ID_ENV: run_id,
        MAX_RESTARTS_ENV: str(max_restarts),
    }


def torchrun_command(python: str, processes: int, *rendezvous: str) -> list[str]:
    """``python -m torch.distributed.run`` with ``processes`` ranks on this machine, the
    rendezvous arguments given (``--standalone``, or :meth:`Rendezvous.arguments`), and the
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
