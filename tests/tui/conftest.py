"""Fixtures for the wizard's tests: sample images and peers in this process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery.demo import MIB, build_sample_disk
from recovery.engine import joblog
from recovery.run import find_tool
from tests.tui.helpers import SAMPLE_MIB, Peer

TOOLS = ("sfdisk", "mkfs.ext4", "mkfs.vfat", "mcopy")


@pytest.fixture(autouse=True)
def private_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Clone logs of a test never land in /var/log or the home directory."""
    monkeypatch.setattr(joblog, "SYSTEM_DIR", tmp_path / "var-log")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


@pytest.fixture(scope="session")
def sample_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64 MiB GPT image with ext4 and FAT holding files (built once per run)."""
    missing = [t for t in TOOLS if find_tool(t) is None]
    if missing:
        pytest.skip(f"the sample disk needs {', '.join(missing)}")
    path = tmp_path_factory.mktemp("sample") / "sample.img"
    build_sample_disk(str(path), SAMPLE_MIB)
    return path


@pytest.fixture
def source_image(sample_image: Path, tmp_path: Path) -> Path:
    """A private copy of the sample, so a test may change it."""
    path = tmp_path / "source.img"
    path.write_bytes(sample_image.read_bytes())
    return path


@pytest.fixture
def blank_image(tmp_path: Path) -> Path:
    path = tmp_path / "blank.img"
    with open(path, "wb") as f:
        f.truncate(SAMPLE_MIB * MIB)
    return path


@pytest.fixture
def make_peer(tmp_path: Path) -> Iterator[type[Peer]]:
    made: list[Peer] = []

    def factory(*args: object, **kwargs: object) -> Peer:
        peer = Peer(*args, tmp_path, **kwargs)  # type: ignore[misc, arg-type]
        made.append(peer)
        return peer

    yield factory  # type: ignore[misc]
    for peer in made:
        peer.close()
