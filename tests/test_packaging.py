"""The Docker image installs what the tested environment has: the same pins, the same steps.

No Docker engine runs in CI; the test environment (.venv, made by `make`) is built with the same
constraints file and the same pip steps as the Dockerfile, so checking both against it tests the
image's install steps in a venv with the same pins.
"""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]


def pins() -> dict[str, str]:
    out = {}
    for line in (REPO / "requirements/pins.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{line}: pins must be exact"
            out[req.name] = spec.version
    return out


def test_this_environment_has_exactly_the_pinned_versions() -> None:
    wrong = {
        name: (want, version(name)) for name, want in pins().items() if version(name).split("+")[0] != want
    }
    assert not wrong, f"installed versions differ from requirements/pins.txt: {wrong}"


def test_every_runtime_dependency_is_pinned() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {Requirement(r).name.lower() for r in project["dependencies"]}
    pinned = {n.lower() for n in pins()}
    assert names - pinned == set(), f"runtime dependencies without a pin: {names - pinned}"


def test_dockerfile_and_makefile_install_the_same_way() -> None:
    docker = (REPO / "Dockerfile").read_text()
    make = (REPO / "Makefile").read_text()
    steps = [
        r"pip install -c (?:requirements/pins\.txt|\$\(PINS\)) torch torchvision",
        r"pip install -c (?:requirements/pins\.txt|\$\(PINS\)) -e '\.\[dev\]'",
    ]
    for step in steps:
        assert re.search(step, docker), f"Dockerfile lacks: {step}"
        assert re.search(step, make), f"Makefile lacks: {step}"
    assert "PINS ?= requirements/pins.txt" in make
    assert re.search(r"^FROM nvidia/cuda:13\.", docker, re.M), (
        "the image must be a CUDA 13 base (DALI cuda130)"
    )
    assert "nvidia-dali-cuda130" in pins() and pins()["torch"].startswith("2.")


def test_docker_copies_every_package_the_project_installs() -> None:
    docker = (REPO / "Dockerfile").read_text()
    for package in ("core", "tcc", "cycletime", "train", "bench", "configs", "launch"):
        assert re.search(rf"^COPY {package} {package}$", docker, re.M), f"Dockerfile does not copy {package}/"
