"""What each image contains: one place read by the local builder and by the Dockerfile test."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

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
)

TRAINER = ImageSpec(
    name="trainer",
    tag="localhost/snowtrain/trainer:dev",
    extra="trainer",
    dockerfile=ROOT / "trainer_image/Dockerfile",
    pins=("torch==2.13.0",),
    entrypoint=(f"{VENV}/bin/python", "-m", "snowtrain.trainer"),
    env=(*COMMON_ENV, "HF_HUB_OFFLINE=1", "TOKENIZERS_PARALLELISM=false"),
)

IMAGES = {s.name: s for s in (OPERATOR, TRAINER)}
