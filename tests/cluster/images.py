"""OCI images without a Docker engine, imported into the node's containerd.

No registry is reachable and there is no Docker daemon, so images are made from a directory
tree (a "rootfs") with Debian's `umoci`, written as an OCI image-layout tarball, and imported
with `ctr -n k8s.io images import`. Pods then use a local tag with `imagePullPolicy: Never`
or `IfNotPresent`.

Building the real trainer image (owned by another helper) with this module, Debian-only and
without a Docker engine: make a rootfs with debootstrap, install Python packages *inside* it
(chroot, so the venv points at the rootfs's own python3.11), then package it::

    apt-get install -y debootstrap
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm /tmp/trainer-rootfs http://deb.debian.org/debian
    chroot /tmp/trainer-rootfs python3 -m venv /opt/venv
    cp -r . /tmp/trainer-rootfs/src          # the snowtrain checkout
    chroot /tmp/trainer-rootfs /opt/venv/bin/pip install torch==2.13.0 '/src[trainer]'
    rm -rf /tmp/trainer-rootfs/src /tmp/trainer-rootfs/var/cache/apt/archives/*.deb
    python -m tests.cluster image-build --rootfs /tmp/trainer-rootfs \
        --tag snowtrain/trainer:dev --entrypoint /opt/venv/bin/python \
        --entrypoint -m --entrypoint snowtrain.trainer --env HF_HUB_OFFLINE=1 \
        --env PATH=/opt/venv/bin:/usr/bin:/bin --user 1000 --workdir /workspace

(pin torch: an unpinned one pulls a multi-GB CUDA build; add a uid-1000 user to the rootfs's
/etc/passwd). Pods then use `image: snowtrain/trainer:dev` with `imagePullPolicy: IfNotPresent`.

`image-build` writes the tarball next to the cache and imports it when the cluster is up;
`image-import TARBALL` imports any OCI/Docker archive (e.g. from `docker save` elsewhere).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tests.cluster import debian, paths

#: The sandbox image (kubelet --pod-infra-container-image, containerd sandbox_image).
PAUSE_IMAGE = "localhost/snowtrain/pause:3.4.1"
BUSYBOX = Path("/bin/busybox")


def normalize(ref: str) -> str:
    """The fully qualified name the kubelet/CRI resolves `ref` to (docker.io/library/...)."""
    name, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "")
    tag = tag or "latest"
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif not ("." in first or ":" in first or first == "localhost"):
        name = f"docker.io/{name}"
    return f"{name}:{tag}"


def images_dir() -> Path:
    """Where built image tarballs are kept (reused across `down`/`up`)."""
    d = paths.cache_root() / "images"
    d.mkdir(parents=True, exist_ok=True)
    return d


def tarball_for(tag: str) -> Path:
    safe = normalize(tag).replace("/", "_").replace(":", "_")
    return images_dir() / f"{safe}.oci.tar"


def build_oci(
    rootfs: Path,
    tag: str,
    out: Path | None = None,
    *,
    entrypoint: Sequence[str] = (),
    cmd: Sequence[str] = (),
    env: Sequence[str] = (),
    user: str | None = None,
    workdir: str | None = None,
) -> Path:
    """Write an OCI image-layout tarball of `rootfs` (one layer) named `tag`; return its path."""
    umoci = debian.require("umoci")
    out = out or tarball_for(tag)
    full = normalize(tag)
    with tempfile.TemporaryDirectory(prefix="snowtrain-oci-") as tmp:
        layout = Path(tmp) / "layout"
        image = f"{layout}:image"
        subprocess.run([umoci, "init", "--layout", str(layout)], check=True)
        subprocess.run([umoci, "new", "--image", image], check=True)
        subprocess.run([umoci, "insert", "--image", image, str(rootfs), "/"], check=True)
        conf = [umoci, "config", "--image", image, "--os", "linux", "--architecture", "amd64"]
        # umoci appends to these lists; clear first so only the given values remain.
        if entrypoint:
            conf += ["--clear=config.entrypoint"]
            conf += [f"--config.entrypoint={a}" for a in entrypoint]
        if cmd:
            conf += ["--clear=config.cmd"]
            conf += [f"--config.cmd={a}" for a in cmd]
        conf += [f"--config.env={e}" for e in env]
        if user is not None:
            conf += [f"--config.user={user}"]
        if workdir is not None:
            conf += [f"--config.workingdir={workdir}"]
        subprocess.run(conf, check=True)
        subprocess.run([umoci, "gc", "--layout", str(layout)], check=True)
        _name_index(layout / "index.json", full)
        out.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(out, "w") as tar:
            for entry in sorted(layout.iterdir()):
                tar.add(entry, arcname=entry.name)
    return out


def _name_index(index_path: Path, full: str) -> None:
    """Annotate the manifest so `ctr import` names it `full` (not just the layout tag)."""
    index = json.loads(index_path.read_text())
    for m in index["manifests"]:
        ann = m.setdefault("annotations", {})
        ann["io.containerd.image.name"] = full
        ann["org.opencontainers.image.ref.name"] = full.rsplit(":", 1)[1]
    index_path.write_text(json.dumps(index))


def ctr_argv(address: Path) -> list[str]:
    return [debian.require("ctr"), "--address", str(address), "--namespace", "k8s.io"]


def import_tarball(tarball: Path, address: Path, attempts: int = 3) -> str:
    """Import an OCI/Docker archive into the node's containerd; returns ctr's output.

    Retried: an import can fail transiently while the kubelet's image GC or a concurrent pull
    holds containerd's content lease. The last failure is raised with ctr's stderr, which
    ``check=True`` alone would swallow.
    """
    argv = [*ctr_argv(address), "images", "import", "--snapshotter", "overlayfs", str(tarball)]
    for attempt in range(1, attempts + 1):
        res = subprocess.run(argv, capture_output=True, text=True)
        if res.returncode == 0:
            return res.stdout
        if attempt < attempts:
            time.sleep(2 * attempt)
    raise RuntimeError(
        f"ctr images import {tarball.name} failed {attempts} times (exit {res.returncode}): "
        f"{res.stderr.strip()[-2000:]}"
    )


def has_image(ref: str, address: Path) -> bool:
    res = subprocess.run(
        [*ctr_argv(address), "images", "ls", "-q"], check=True, capture_output=True, text=True
    )
    return normalize(ref) in res.stdout.split()


def busybox_rootfs(dest: Path) -> Path:
    """A minimal rootfs: static busybox with its applets, /etc/passwd with uid 1000, /tmp."""
    if dest.exists():
        shutil.rmtree(dest)
    bindir = dest / "bin"
    bindir.mkdir(parents=True)
    shutil.copy2(BUSYBOX, bindir / "busybox")
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (bindir / applet).symlink_to("busybox")
    (dest / "usr").mkdir()
    (dest / "usr/bin").symlink_to("../bin")
    (dest / "sbin").symlink_to("bin")
    etc = dest / "etc"
    etc.mkdir()
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\ntrainer:x:1000:1000:trainer:/home/trainer:/bin/sh\n"
    )
    (etc / "group").write_text("root:x:0:\ntrainer:x:1000:\n")
    for d in ("tmp", "root", "home/trainer", "proc", "sys", "dev", "workspace"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    (dest / "tmp").chmod(0o1777)
    shutil.chown(dest / "home/trainer", 1000, 1000)
    shutil.chown(dest / "workspace", 1000, 1000)
    return dest


def build_busybox(tag: str) -> Path:
    """A tiny test image (busybox-static) that operator tests use as a fake trainer."""
    with tempfile.TemporaryDirectory(prefix="snowtrain-busybox-") as tmp:
        rootfs = busybox_rootfs(Path(tmp) / "rootfs")
        return build_oci(
            rootfs,
            tag,
            cmd=["/bin/sh"],
            env=["PATH=/bin"],
            workdir="/",
        )


def build_pause() -> Path:
    """The sandbox image: upstream's pause.c, built by tests.cluster.build."""
    out = tarball_for(PAUSE_IMAGE)
    if out.exists():
        return out
    with tempfile.TemporaryDirectory(prefix="snowtrain-pause-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        rootfs.mkdir()
        shutil.copy2(paths.binary("pause"), rootfs / "pause")
        return build_oci(rootfs, PAUSE_IMAGE, out, entrypoint=["/pause"])
