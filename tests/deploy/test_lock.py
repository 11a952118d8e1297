"""The lock in requirements/ against pyproject.toml (no network, no install).

`make`, CI and the image install only from these files with ``--require-hashes``; a dependency
added to pyproject.toml without `make lock` would otherwise surface only as an import error in
production. These checks catch that, and a lock that a machine's local index leaked into.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCK_DIR = REPO_ROOT / "requirements"
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


@dataclass(frozen=True)
class Pin:
    version: str
    marker: str
    hashes: tuple[str, ...]


def read_lock(name: str) -> dict[str, Pin]:
    """``name==version [; marker]`` entries with their ``--hash`` continuation lines."""
    text = (LOCK_DIR / name).read_text()
    # Join continuation lines; comments ("# via ...") stand on lines of their own.
    logical = re.sub(r"\\\n\s*", " ", text)
    pins: dict[str, Pin] = {}
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert not line.startswith("-"), f"{name}: option line in the lock: {line}"
        requirement, _, hash_part = line.partition(" --hash=")
        spec, _, marker = requirement.partition(";")
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)", spec.strip())
        assert match, f"{name}: not an exact pin: {line}"
        hashes = tuple(
            word.removeprefix("--hash=") for word in ("--hash=" + hash_part).split() if hash_part
        )
        pins[canonicalize_name(match[1])] = Pin(match[2], marker.strip(), hashes)
    return pins


LOCKS = {name: read_lock(name) for name in ("build.txt", "runtime.txt", "dev.txt")}


@pytest.mark.parametrize("name", sorted(LOCKS))
def test_every_pin_has_hashes(name: str) -> None:
    assert LOCKS[name], f"{name} is empty"
    for package, pin in LOCKS[name].items():
        assert pin.hashes, f"{name}: {package} has no hash"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in pin.hashes), package


@pytest.mark.parametrize("name", sorted(LOCKS))
def test_lock_names_no_index(name: str) -> None:
    """An index or find-links line would tie installs to one machine's mirror."""
    text = (LOCK_DIR / name).read_text()
    assert not re.search(r"^\s*--?(index-url|extra-index-url|find-links|[if])\b", text, re.M)
    assert "make lock" in text.splitlines()[1], f"{name} was not written by `make lock`"


def check_covered(requirements: list[str], lock: dict[str, Pin], where: str) -> None:
    for raw in requirements:
        requirement = Requirement(raw)
        pin = lock.get(canonicalize_name(requirement.name))
        assert pin is not None, f"{requirement.name} ({where}) is not in the lock: run `make lock`"
        assert requirement.specifier.contains(pin.version, prereleases=True), (
            f"{requirement.name}=={pin.version} does not satisfy {raw!r} ({where}): run `make lock`"
        )


def test_runtime_lock_covers_the_dependencies() -> None:
    check_covered(PYPROJECT["project"]["dependencies"], LOCKS["runtime.txt"], "dependencies")


def test_dev_lock_covers_everything() -> None:
    project = PYPROJECT["project"]
    check_covered(project["dependencies"], LOCKS["dev.txt"], "dependencies")
    check_covered(project["optional-dependencies"]["dev"], LOCKS["dev.txt"], "dev extra")
    check_covered(PYPROJECT["build-system"]["requires"], LOCKS["dev.txt"], "build-system")


def test_build_lock_covers_the_build_backend() -> None:
    check_covered(PYPROJECT["build-system"]["requires"], LOCKS["build.txt"], "build-system")
    assert "pip" in LOCKS["build.txt"], "the installer itself is locked too"


@pytest.mark.parametrize("name", ["build.txt", "runtime.txt"])
def test_locks_agree_with_the_dev_lock(name: str) -> None:
    """A venv gets build + runtime, or dev: the same release of a package either way."""
    dev = LOCKS["dev.txt"]
    for package, pin in LOCKS[name].items():
        assert package in dev, f"{package} ({name}) is missing from dev.txt"
        assert dev[package].version == pin.version, f"{package}: {name} and dev.txt differ"
        assert dev[package].hashes == pin.hashes, f"{package}: {name} and dev.txt hashes differ"
