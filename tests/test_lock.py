"""The lock files agree with pyproject.toml, and this environment runs what they lock.

`setup.sh` installs requirements/app.txt (or test.txt with --dev) with
`--require-hashes`; requirements/refresh.sh makes them from pyproject.toml's
ranges. A range narrowed or widened in pyproject.toml without a refresh, a
hand-edited pin outside its range, a pin without hashes, or a venv that drifted
from the lock fails here.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.helpers import REPO

LOCKS = REPO / "requirements"
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Pin:
    requirement: Requirement
    hashes: int

    @property
    def version(self) -> Version:
        [spec] = self.requirement.specifier
        return Version(spec.version)

    def applies(self) -> bool:
        marker = self.requirement.marker
        return marker is None or marker.evaluate(dict(default_environment()))


def read_lock(path: Path) -> dict[str, Pin]:
    """name -> its pin, from a hashed requirements file (a pin line, then its --hash lines)."""
    pins: dict[str, Pin] = {}
    current: Requirement | None = None
    hashes = 0
    for raw in [*path.read_text().splitlines(), ""]:
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("--hash") else raw.strip()
        line = line.removesuffix("\\").strip()
        if line.startswith("--hash"):
            assert HASH.match(line), f"{path.name}: {raw!r} is not a sha256 hash"
            hashes += 1
            continue
        if current is not None:
            pins[canonicalize_name(current.name)] = Pin(current, hashes)
            current, hashes = None, 0
        if line:
            current = Requirement(line)
            assert [s.operator for s in current.specifier] == ["=="], f"{path.name}: {raw!r} is not pinned"
    return pins


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def direct(*, test: bool) -> list[Requirement]:
    """What pyproject.toml asks for (and requirements/tools.in adds): the app's, or the app's and the tests'."""
    data = project()
    wanted = [*data["project"]["dependencies"], *data["build-system"]["requires"]]
    if test:
        wanted += data["project"]["optional-dependencies"]["test"]
    for raw in (LOCKS / "tools.in").read_text().splitlines():
        if raw.split("#", 1)[0].strip():
            wanted.append(raw.split("#", 1)[0].strip())
    return [Requirement(text) for text in wanted]


@pytest.mark.parametrize("name,test", [("app.txt", False), ("test.txt", True)])
def test_every_direct_requirement_is_locked_within_its_range(name: str, test: bool) -> None:
    pins = read_lock(LOCKS / name)
    for req in direct(test=test):
        pin = pins.get(canonicalize_name(req.name))
        assert pin is not None, (
            f"{req.name} is in pyproject.toml but not in requirements/{name}: run requirements/refresh.sh"
        )
        assert req.specifier.contains(pin.version, prereleases=True), (
            f"requirements/{name} locks {req.name}=={pin.version}, outside pyproject.toml's {req}: "
            "run requirements/refresh.sh"
        )


def test_every_pin_has_hashes_and_both_locks_agree() -> None:
    app, full = read_lock(LOCKS / "app.txt"), read_lock(LOCKS / "test.txt")
    for name, pin in [*app.items(), *full.items()]:
        assert pin.hashes, f"{name} is locked without a hash"
    assert set(app) <= set(full), f"in app.txt only: {sorted(set(app) - set(full))}"
    differ = {n: (str(app[n].version), str(full[n].version)) for n in app if app[n].version != full[n].version}
    assert not differ, f"app.txt and test.txt lock different versions: {differ}"


def test_the_lock_tool_is_locked() -> None:
    [wanted] = [
        Requirement(line)
        for line in (LOCKS / "uv.in").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    pins = read_lock(LOCKS / "uv.txt")
    assert wanted.specifier.contains(pins["uv"].version) and pins["uv"].hashes


def test_this_environment_runs_the_locked_versions() -> None:
    """The suite's results speak for the lock only if the lock is what runs."""
    drifted = []
    for name, pin in read_lock(LOCKS / "test.txt").items():
        if not pin.applies():
            continue
        try:
            have = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            drifted.append(f"{name} (not installed)")
            continue
        if have != pin.version:
            drifted.append(f"{name} {have} (locked {pin.version})")
    assert not drifted, f"not the locked versions: {', '.join(drifted)}; run ./setup.sh --dev"
