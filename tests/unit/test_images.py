"""The Dockerfiles (users' builds) and the Docker-less local build install the same things.

The local build (tests/images) is what the e2e tests run, so an extra or pin added to one and
not the other would make the tested image differ from the shipped one.
"""

from __future__ import annotations

import json
import re

import pytest

from snowtrain.trainer.allocator import PRELOAD
from tests.images.spec import IMAGES, UID, ImageSpec


def dockerfile(spec: ImageSpec) -> str:
    if not spec.dockerfile.exists():
        pytest.skip(f"{spec.dockerfile} not written yet")
    # Join continuation lines so each instruction is one line.
    return re.sub(r"\\\n\s*", " ", spec.dockerfile.read_text())


@pytest.fixture(params=sorted(IMAGES))
def spec(request: pytest.FixtureRequest) -> ImageSpec:
    return IMAGES[request.param]


def test_same_project_extra(spec: ImageSpec) -> None:
    extras = set(re.findall(r"""["']?\.\[([a-z,]+)\]["']?""", dockerfile(spec)))
    assert extras == {spec.extra}


def test_same_pins(spec: ImageSpec) -> None:
    text = dockerfile(spec)
    for pin in spec.pins:
        name, version = pin.split("==")
        assert re.search(rf"\b{name}==({re.escape(version)})\b", text), pin


def test_same_entrypoint_module(spec: ImageSpec) -> None:
    (line,) = re.findall(r"^ENTRYPOINT (.+)$", dockerfile(spec), re.M)
    entry = json.loads(line)
    module = spec.entrypoint[spec.entrypoint.index("-m") + 1]
    assert entry[entry.index("-m") + 1] == module


def test_runs_as_the_same_non_root_user(spec: ImageSpec) -> None:
    users = re.findall(r"^USER (\S+)$", dockerfile(spec), re.M)
    assert users, "no USER: the image would run as root"
    assert users[-1].split(":")[0] in {str(UID), "snowtrain", "trainer"}
    assert f"--uid {UID}" in dockerfile(spec) or f"-u {UID}" in dockerfile(spec)


def test_operator_image_has_no_torch() -> None:
    reqs = " ".join(IMAGES["operator"].requirements())
    assert "torch" not in reqs
    assert "transformers" not in reqs
    assert "kopf" in reqs


def test_same_environment(spec: ImageSpec) -> None:
    """Same env in both builds (PATH aside: the Dockerfile extends the base image's)."""
    text = dockerfile(spec)
    env_lines = " ".join(re.findall(r"^ENV (.+)$", text, re.M))
    docker_env = dict(re.findall(r"(\w+)=(\S+)", env_lines))
    for entry in spec.env:
        name, value = entry.split("=", 1)
        if name != "PATH":
            assert docker_env.get(name) == value, name


def test_trainer_image_installs_the_allocator_it_preloads() -> None:
    """LD_PRELOAD naming a missing library is only a loader warning: both builds install it."""
    from tests.images.build import APT_PACKAGES

    spec = IMAGES["trainer"]
    assert f"LD_PRELOAD={PRELOAD}" in spec.env
    assert "libtcmalloc-minimal4" in APT_PACKAGES
    assert "apt-cache pkgnames libtcmalloc-minimal4" in dockerfile(spec)
