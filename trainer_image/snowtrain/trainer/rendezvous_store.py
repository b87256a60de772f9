"""``python -m snowtrain.trainer.rendezvous_store``: the key-value store a multi-node
attempt's pods meet on (torchrun's ``c10d`` rendezvous backend).

It runs in a pod of its own, behind a ClusterIP Service, rather than inside one of the trainer
pods: the trainer pods of an attempt are alike (one Job, no index before Kubernetes 1.24), so
none of them could know it should host the store, and a trainer pod dialling a Service that
leads back to itself needs hairpin NAT, which not every network plugin does. The store holds
only the rendezvous state (a few keys per round); training traffic goes pod to pod.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from snowtrain.api.torchrun import RENDEZVOUS_PORT


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the store until SIGTERM (the operator deletes it when the attempt ends)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=RENDEZVOUS_PORT)
    args = parser.parse_args(argv)
    # Block the signals before the store's threads start, so they reach sigwait below.
    stop = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    from torch.distributed import TCPStore

    store = TCPStore(  # noqa: F841 (serves while referenced)
        "0.0.0.0", args.port, is_master=True, wait_for_workers=False, multi_tenant=True
    )
    print(f"rendezvous store listening on port {args.port}", file=sys.stderr, flush=True)
    received = signal.sigwait(stop)
    print(f"{signal.Signals(received).name}: stopping", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
