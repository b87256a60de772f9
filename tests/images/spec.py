"""What each image contains: one place read by the local builder and by the Dockerfile test."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from snowtrain.trainer.allocator import PRELOAD_ENV

ROOT = Path(__file__).resolve().parents[2]
PYTHON = "python3.11"
VENV = "/opt/venv"
UID = 1000


@dataclass(frozen=True)
class ImageSpec:
    """One image: the project extra it installs, pins, and the container config."""

    name: str
    tag: str
    extra: str
    dockerfile: Path
    #: Installed before the project, pinned (torch: the CPU wheel on this machine's disk).
    pins: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    env: tuple[str, ...] = field(default_factory=tuple)
    #: Commands run as user 1000 inside the finished rootfs before it is packaged: an image
    #: that cannot start its own programs must fail the build, not the e2e test minutes later.
    smoke: tuple[tuple[str, ...], ...] = ()

    def requirements(self) -> list[str]:
        """The project's dependencies + this image's extra, as pip requirement strings."""
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        reqs = list(project["dependencies"])
        reqs += project["optional-dependencies"][self.extra]
        return [*self.pins, *reqs]


COMMON_ENV = (
    f"PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "PYTHONUNBUFFERED=1",
    "PYTHONDONTWRITEBYTECODE=1",
    "HOME=/home/snowtrain",
)

OPERATOR = ImageSpec(
    name="operator",
    tag="localhost/snowtrain/operator:dev",
    extra="operator",
    dockerfile=ROOT / "operator/Dockerfile",
    entrypoint=(f"{VENV}/bin/python", "-m", "snowtrain.operator"),
    env=COMMON_ENV,
    smoke=(
        (
            "python",
            "-c",
            "import pathlib, tempfile, snowtrain.operator.__main__, snowtrain.operator.handlers;"
            " from snowtrain.operator.webhook import write_certificate as cert;"
            " cert(['snowtrain-webhook.snowtrain-system.svc'], pathlib.Path(tempfile.mkdtemp()))",
        ),
    ),
)

TRAINER = ImageSpec(
    name="trainer",
    tag="localhost/snowtrain/trainer:dev",
    extra="trainer",
    dockerfile=ROOT / "trainer_image/Dockerfile",
    pins=("torch==2.13.0",),
    entrypoint=(f"{VENV}/bin/python", "-m", "snowtrain.trainer"),
    env=(
        *COMMON_ENV,
        "HF_HOME=/home/snowtrain/.cache/huggingface",
        "HF_HUB_OFFLINE=1",
        "TOKENIZERS_PARALLELISM=false",
        *(f"{k}={v}" for k, v in PRELOAD_ENV.items()),
    ),
    smoke=(
        ("python", "-m", "snowtrain.trainer", "--help"),
        ("python", "-m", "snowtrain.serve", "--help"),
        ("python", "-m", "snowtrain.predict", "--help"),
        ("python", "-m", "snowtrain.probe", "--help"),
        ("python", "-m", "snowtrain.bridge", "--help"),
        # The preload must really load: a missing library is only a warning to the loader.
        (
            "python",
            "-c",
            "from snowtrain.trainer.allocator import active_allocator as a;"
            " assert a() == 'tcmalloc', a()",
        ),
    ),
)

IMAGES = {s.name: s for s in (OPERATOR, TRAINER)}
