"""Build snowtrain's images without Docker: debootstrap + venv + umoci, cached by inputs.

Three cached stages, each keyed by a hash of exactly what goes into it, so a warm build of
unchanged inputs does nothing and a source change rebuilds only the small top layer:

1. ``base``: Debian bookworm minbase + python3.11 + venv + user 1000 (debootstrap, ~minutes).
2. ``deps``: an OCI layout holding base + ``/opt/venv`` with the image's pinned requirements
   as one layer. Wheels come from the host's pip (``pip wheel``): its configuration points at
   this machine's local wheels (torch 2.13.0 CPU), which pip inside the chroot could not see;
   the chroot then installs them with ``--no-index``.
3. the image: the deps layout + one layer with the snowtrain wheel (``--no-deps``), tagged,
   written as an OCI tarball and imported into the cluster's containerd.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.cluster import images as oci
from tests.cluster import paths
from tests.images.spec import PYTHON, ROOT, UID, VENV, ImageSpec

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
APT_PACKAGES = (
    f"{PYTHON}",
    f"{PYTHON}-venv",
    # debootstrap does not resolve these dependencies of the venv package by itself.
    "python3-distutils",  # provides python3.11-distutils
    "python3-lib2to3",
    "python3-pip-whl",
    "python3-setuptools-whl",
    "ca-certificates",
    "tzdata",
    # The trainer image preloads it (snowtrain/trainer/allocator.py); ~0.3 MB.
    "libtcmalloc-minimal4",
)
#: Dropped from the base rootfs: not needed at run time, ~40% of a minbase.
PRUNE = (
    "var/cache/apt/archives",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
)


def cache_dir() -> Path:
    d = paths.cache_root() / "images"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _run(argv: Sequence[str | Path], **kwargs: object) -> None:
    subprocess.run([str(a) for a in argv], check=True, **kwargs)  # type: ignore[call-overload]


#: Environment of commands inside the chroot: none of the host's PIP_* settings (find-links,
#: index URLs) apply there; everything pip needs is passed on its command line.
CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}


def _chroot(rootfs: Path, *argv: str | Path) -> None:
    _run(["chroot", rootfs, *argv], env=CHROOT_ENV)


def _debootstrap() -> str:
    path = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not Path(path).exists():
        _run(["apt-get", "install", "-y", "-q", "debootstrap"])
    return path


# -- stage 1: base rootfs ----------------------------------------------------------------------


def base_rootfs() -> Path:
    """Debian bookworm + python3.11 with venv + user 1000, built once per package set."""
    key = _digest(SUITE, MIRROR, APT_PACKAGES, PRUNE, UID, 2)
    out = cache_dir() / f"base-{key}"
    if (out / ".complete").exists():
        return out / "rootfs"
    if out.exists():
        shutil.rmtree(out)
    rootfs = out / "rootfs"
    rootfs.parent.mkdir(parents=True)
    _run(
        [
            _debootstrap(),
            "--variant=minbase",
            f"--include={','.join(APT_PACKAGES)}",
            SUITE,
            rootfs,
            MIRROR,
        ],
        stdout=subprocess.DEVNULL,
    )
    for rel in PRUNE:
        target = rootfs / rel
        if target.exists():
            shutil.rmtree(target)
            target.mkdir()
    with (rootfs / "etc/passwd").open("a") as f:
        f.write(f"snowtrain:x:{UID}:{UID}:snowtrain:/home/snowtrain:/usr/sbin/nologin\n")
    with (rootfs / "etc/group").open("a") as f:
        f.write(f"snowtrain:x:{UID}:\n")
    for d in ("home/snowtrain", "workspace"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
        shutil.chown(rootfs / d, UID, UID)
    (out / ".complete").touch()
    return rootfs


# -- stage 2: dependencies ---------------------------------------------------------------------


def host_wheels(requirements: Sequence[str], dest: Path) -> None:
    """Wheels for ``requirements`` from the host's pip (local wheel dirs + PyPI)."""
    dest.mkdir(parents=True, exist_ok=True)
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", dest, *requirements],
        stdout=subprocess.DEVNULL,
    )


@contextmanager
def _chroot_mounts(rootfs: Path) -> Iterator[None]:
    """/dev and /proc for pip inside the chroot; always unmounted again."""
    mounted: list[Path] = []
    try:
        for src, fstype in (("/dev", None), ("/proc", "proc")):
            target = rootfs / src.lstrip("/")
            target.mkdir(exist_ok=True)
            if fstype:
                _run(["mount", "-t", fstype, fstype, target])
            else:
                _run(["mount", "--bind", src, target])
            mounted.append(target)
        yield
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", "-l", str(target)], check=False)


def _copy_tree(src: Path, dest: Path) -> None:
    """A copy of a rootfs that shares file data (hard links: same filesystem, instant)."""
    _run(["cp", "-al", src, dest])


def deps_layout(spec: ImageSpec) -> Path:
    """An OCI layout: base rootfs + /opt/venv with the pinned requirements, one layer."""
    base = base_rootfs()
    reqs = spec.requirements()
    key = _digest(base.parent.name, reqs, UID, 2)
    out = cache_dir() / f"deps-{spec.name}-{key}"
    if (out / ".complete").exists():
        return out / "layout"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    # The rootfs stays cached: the app stage copies it (hard links) to install the wheel.
    rootfs = out / "rootfs"
    _copy_tree(base, rootfs)
    wheels = rootfs / "tmp/wheels"
    host_wheels(reqs, wheels)
    with _chroot_mounts(rootfs):
        _chroot(rootfs, f"/usr/bin/{PYTHON}", "-m", "venv", VENV)
        _chroot(
            rootfs,
            f"{VENV}/bin/pip",
            "install",
            "-q",
            "--no-cache-dir",
            "--no-compile",
            "--disable-pip-version-check",
            "--no-index",
            "--find-links",
            "/tmp/wheels",
            *reqs,
        )
    shutil.rmtree(wheels)
    layout = out / "layout"
    image = f"{layout}:image"
    umoci = "umoci"
    _run([umoci, "init", "--layout", layout])
    _run([umoci, "new", "--image", image])
    _run([umoci, "insert", "--image", image, rootfs, "/"])
    (out / ".complete").touch()
    for stale in cache_dir().glob(f"deps-{spec.name}-*"):
        if stale != out:  # an older dependency set: ~1.5 GB each for the trainer
            shutil.rmtree(stale, ignore_errors=True)
    return layout


# -- stage 3: the image ------------------------------------------------------------------------


def project_wheel(dest: Path) -> Path:
    """The snowtrain wheel built from the working tree (pure Python, seconds)."""
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", dest, ROOT],
        stdout=subprocess.DEVNULL,
    )
    (wheel,) = dest.glob("snowtrain-*.whl")
    return wheel


def _app_layer(spec: ImageSpec, deps: Path, wheel: Path, dest: Path) -> None:
    """Files the snowtrain wheel adds to the venv, laid out as a rootfs fragment in ``dest``.

    The wheel is installed in a hard-linked copy of the deps rootfs; its dist-info RECORD
    lists exactly the files it added, which become the top layer.
    """
    with tempfile.TemporaryDirectory(prefix="snowtrain-app-", dir=cache_dir()) as tmp:
        rootfs = Path(tmp) / "rootfs"
        _copy_tree(deps.parent / "rootfs", rootfs)
        shutil.copy2(wheel, rootfs / "tmp" / wheel.name)
        with _chroot_mounts(rootfs):
            _chroot(
                rootfs,
                f"{VENV}/bin/pip",
                "install",
                "-q",
                "--no-deps",
                "--no-index",
                "--no-compile",
                "--disable-pip-version-check",
                f"/tmp/{wheel.name}",
            )
            for argv in spec.smoke:
                # The image's environment is set inside the chroot: LD_PRELOAD must name the
                # rootfs's library, not apply to the host's chroot binary.
                user = f"--userspec={UID}:{UID}"
                _run(
                    ["chroot", user, rootfs, "/usr/bin/env", "-i", *spec.env, *argv],
                    env=CHROOT_ENV,
                    stdout=subprocess.DEVNULL,
                )
        site = next((rootfs / VENV.lstrip("/") / "lib").glob("python3*/site-packages"))
        (record,) = site.glob("snowtrain-*.dist-info/RECORD")
        for line in record.read_text().splitlines():
            rel = line.split(",", 1)[0]
            src = (site / rel).resolve()
            if not src.is_file():
                continue
            target = dest / src.relative_to(rootfs)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def source_digest() -> str:
    """Hash of what the snowtrain wheel is built from (wheels themselves carry timestamps)."""
    h = hashlib.sha256()
    files = [ROOT / "pyproject.toml", ROOT / "README.md"]
    for top in ("operator/snowtrain", "trainer_image/snowtrain"):
        files += sorted(
            p for p in (ROOT / top).rglob("*") if p.is_file() and "__pycache__" not in p.parts
        )
    for path in files:
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def inputs_key(spec: ImageSpec, deps: Path) -> str:
    return _digest(deps.parent.name, spec.tag, spec.env, spec.entrypoint, source_digest())


def build(spec: ImageSpec) -> tuple[Path, bool]:
    """Build ``spec``; returns (OCI tarball, whether anything was built)."""
    deps = deps_layout(spec)
    out = oci.tarball_for(spec.tag)
    stamp = out.with_suffix(".inputs")
    key = inputs_key(spec, deps)
    if out.exists() and stamp.exists() and stamp.read_text() == key:
        return out, False
    with tempfile.TemporaryDirectory(prefix="snowtrain-wheel-") as tmp:
        wheel = project_wheel(Path(tmp))
        work = Path(tmp) / "work"
        layout = work / "layout"
        work.mkdir()
        _copy_tree(deps, layout)  # blobs are content-addressed: sharing them is safe
        app = work / "app"
        app.mkdir()
        _app_layer(spec, deps, wheel, app)
        image = f"{layout}:image"
        _run(["umoci", "insert", "--image", image, app, "/"])
        # The container config lives here, not in the deps stage: changing an env var or the
        # entrypoint must not reinstall torch.
        conf = ["umoci", "config", "--image", image, "--os", "linux", "--architecture", "amd64"]
        conf += ["--clear=config.entrypoint", "--clear=config.cmd", "--clear=config.env"]
        conf += [f"--config.entrypoint={a}" for a in spec.entrypoint]
        conf += [f"--config.env={e}" for e in spec.env]
        conf += [f"--config.user={UID}:{UID}", "--config.workingdir=/workspace"]
        _run(conf)
        _run(["umoci", "gc", "--layout", layout])
        oci._name_index(layout / "index.json", oci.normalize(spec.tag))
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = out.with_suffix(".partial")
        _run(["tar", "-C", layout, "-cf", tmp_out, "."])
        tmp_out.replace(out)
        stamp.write_text(key)
    return out, True


def _du(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], check=True, capture_output=True, text=True)
    return int(out.stdout.split()[0])


def image_size(tarball: Path, deps: Path) -> dict[str, int]:
    """Bytes: the OCI tarball (gzip layers, what a registry would store) and the unpacked
    root filesystem of the deps stage (what the node's disk holds, minus the small app)."""
    return {"tarballBytes": tarball.stat().st_size, "rootfsBytes": _du(deps.parent / "rootfs")}


def build_and_time(spec: ImageSpec) -> dict[str, object]:
    start = time.monotonic()
    tarball, built = build(spec)
    return {
        "image": spec.tag,
        "tarball": str(tarball),
        "built": built,
        "seconds": round(time.monotonic() - start, 1),
        **image_size(tarball, deps_layout(spec)),
    }
