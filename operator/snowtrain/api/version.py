"""The installed snowtrain version (lineage records, the model server's metadata)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def snowtrain_version() -> str:
    """The package's version; ``0+unknown`` when run from a tree that was never installed."""
    try:
        return version("snowtrain")
    except PackageNotFoundError:
        return "0+unknown"
