"""Locations of the cached binaries and of the running cluster's state.

Binaries are keyed by Kubernetes version so a warm cache costs nothing and a version bump
rebuilds; cluster state is separate so `down` can wipe it without touching the ~360 MB cache.
"""

from __future__ import annotations

import os
from pathlib import Path

KUBE_VERSION = "v1.20.2"
DEBIAN_SOURCE_VERSION = "1.20.5+really1.20.2-1.1+deb12u1"
ORIG_TARBALL = "kubernetes_1.20.5+really1.20.2.orig.tar.gz"
ORIG_SHA256 = "b83c0780efb182d928dc63d46488a847f161f04e40a94b96bf5247dd671ecdfc"

#: Binaries compiled from the Kubernetes tree.
KUBE_BINARIES = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
)


def cache_root() -> Path:
    """The user's cache dir for snowtrain (XDG_CACHE_HOME honoured)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "snowtrain"


def kube_cache() -> Path:
    """Everything built for one Kubernetes version."""
    return cache_root() / f"kube-{KUBE_VERSION}"


def bin_dir() -> Path:
    return kube_cache() / "bin"


def binary(name: str) -> Path:
    return bin_dir() / name


def cluster_dir() -> Path:
    """State of the running cluster (PID files, certs, kubeconfig, etcd data, logs)."""
    env = os.environ.get("SNOWTRAIN_CLUSTER_DIR")
    return Path(env) if env else cache_root() / "cluster"


def kubeconfig_path() -> Path:
    return cluster_dir() / "kubeconfig"
