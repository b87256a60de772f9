"""The Debian packages the local cluster needs, installed idempotently.

Only Debian's own archive is used: Go toolchain, etcd, containerd/runc, the CNI plugins,
Debian's reflect2 1.0.2 source (fix 3 in ``build``), umoci for images, busybox-static for test
images. `apt-get update` runs only when something is missing, so a warm machine does no I/O.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

PACKAGES = (
    "golang-go",
    "dpkg-dev",
    "golang-github-modern-go-reflect2-dev",
    "etcd-server",
    "containerd",
    "runc",
    "containernetworking-plugins",
    "iproute2",
    # kube-proxy (iptables mode) programs Service VIPs with these
    "iptables",
    "conntrack",
    "util-linux",
    "openssl",
    "umoci",
    "busybox-static",
    # upstream's pause.c, compiled static for the sandbox image
    "gcc",
    "libc6-dev",
)

SRC_LIST = Path("/etc/apt/sources.list.d/snowtrain-src.sources")
SRC_ENTRY = """\
# Added by snowtrain (tests/cluster): the kubernetes 1.20.2 source package (bookworm's).
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def _sudo() -> list[str]:
    return [] if os.geteuid() == 0 else ["sudo"]


def missing_packages(packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """Packages not installed (dpkg-query status other than 'install ok installed')."""
    missing = []
    for pkg in packages:
        res = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", pkg],
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0 or "install ok installed" not in res.stdout:
            missing.append(pkg)
    return missing


def has_deb_src() -> bool:
    """True when some apt source already offers bookworm deb-src entries."""
    if SRC_LIST.exists():
        return True
    for path in Path("/etc/apt").rglob("*"):
        if path.is_file() and path.suffix in {".list", ".sources"}:
            text = path.read_text(errors="replace")
            if "deb-src" in text and "bookworm" in text:
                return True
    return False


def ensure_deb_src() -> bool:
    """Add the bookworm deb-src entry if absent; returns True when it was added."""
    if has_deb_src():
        return False
    tmp = Path("/tmp/snowtrain-src.sources")
    tmp.write_text(SRC_ENTRY)
    subprocess.run([*_sudo(), "install", "-m", "0644", str(tmp), str(SRC_LIST)], check=True)
    return True


def apt_update() -> None:
    subprocess.run([*_sudo(), "apt-get", "update", "-qq"], check=True)


def ensure_packages(packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """Install whatever is missing (apt-get update first); returns what was installed."""
    added_src = ensure_deb_src()
    missing = missing_packages(packages)
    if added_src or missing:
        apt_update()
    if missing:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(
            [*_sudo(), "apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
            check=True,
            env=env,
        )
    return missing


def require(tool: str) -> str:
    """Path of an executable, or a clear error naming the package that provides it."""
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin")
    if not path:
        raise RuntimeError(f"{tool} not found; run `python -m tests.cluster build` first")
    return path
