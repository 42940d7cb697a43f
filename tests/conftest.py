from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Recovery, blank_disk, is_root, loop_device, make_gpt_disk


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if is_root():
        return
    skip = pytest.mark.skip(reason="needs root (loop devices, mounts, namespaces)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def gpt_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 128 MiB GPT disk image: ext4 with files + FAT with files, garbage in free space."""
    if not is_root():
        pytest.skip("needs root")
    path = tmp_path_factory.mktemp("disks") / "source.img"
    make_gpt_disk(path, 128)
    return path


@pytest.fixture
def source_loop(gpt_image: Path, tmp_path: Path) -> Iterator[str]:
    """The GPT sample disk on a loop device (a private copy per test)."""
    copy = tmp_path / "source.img"
    shutil.copyfile(gpt_image, copy)
    with loop_device(copy) as dev:
        yield dev


@pytest.fixture
def blank_loop(tmp_path: Path) -> Iterator[str]:
    """An empty (zero) 160 MiB loop device: a blank target disk."""
    with blank_disk(tmp_path / "blank.img", 160) as dev:
        yield dev


@pytest.fixture(autouse=True)
def _logs_in_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Job logs, resume journals and mapfiles of every test (and its processes) in a directory of its own."""
    logs = tmp_path_factory.mktemp("logs")
    monkeypatch.setenv("USB4_RECOVERY_LOG_DIR", str(logs))
    return logs


@pytest.fixture
def log_dir(_logs_in_tmp: Path) -> Path:
    return _logs_in_tmp


@pytest.fixture(autouse=True)
def _no_leaked_processes() -> Iterator[None]:
    yield
    # Recovery processes a failing test left behind.
    while Recovery.live:
        Recovery.live.pop().kill()


@pytest.fixture
def run_env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def pytest_report_header() -> str:
    tools = ["partclone.extfs", "mkfs.vfat", "mcopy", "b3sum", "sfdisk"]
    have = [t for t in tools if shutil.which(t, path=os.environ["PATH"] + ":/usr/sbin:/sbin")]
    kernel = subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip()
    return f"root: {is_root()}; kernel {kernel}; tools: {', '.join(have)}"
