"""A real single-node Kubernetes 1.20.2 for snowtrain's tests, built from Debian packages only.

Why it exists: snowtrain is an operator, and its behaviour (owner references, Job status,
scheduling on `nvidia.com/gpu`, pod logs) can only be trusted when tested against a real API
server, controller manager, scheduler and kubelet. This machine has no Docker engine and no
registry access beyond Debian/PyPI/npm, so kind/k3s are out. Debian bookworm's `kubernetes`
source package carries the full v1.20.2 tree with vendor/: ``build`` says how it compiles
offline (three fixes), ``config`` and ``localkube`` how it runs on 127.0.0.1. Modules, one
job each:

- ``paths``: where binaries, build trees and cluster state live.
- ``debian``: the Debian packages and the deb-src entry the build needs.
- ``build``: fetch the source package, apply the three known fixes, compile, cache by version.
- ``pki``: the CA and certificates of the control plane (identities are cert subjects).
- ``config``: state-dir layout, kubeconfigs, containerd/CNI/kubelet configuration.
- ``procs``: start and stop daemons through PID files (stop only what we started).
- ``locks``: serialise builds and up/down across concurrent test sessions.
- ``kubeapi``: the few raw API calls bring-up needs (readiness, node status patch).
- ``localkube``: ``up`` / ``down`` / ``is_up`` / ``status`` of the cluster.
- ``images``: OCI images without a Docker engine (umoci) imported into the node's containerd.
- ``cli``: the ``python -m tests.cluster`` commands.

Python: ``from tests.cluster import localkube; c = localkube.up(crds_dir=...)`` returns a
``Cluster`` with ``.kubeconfig``; ``localkube.down()``; ``localkube.is_up()``.

Command line: ``python -m tests.cluster build|up|down|status|kubeconfig|image-build|...``.
"""
