"""Fixtures of the image tier: the built appliance image and VM scratch space.

The image is out/usb4-recovery.img (or $USB4_RECOVERY_IMAGE).  When it is
missing and this runs as root with mmdebstrap installed, it is built first
(./build-image.sh, a few minutes when the download cache is warm).  Where the
image cannot be had the VM tests are skipped, except under CI (CI=true),
where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .vm import missing_host_tools

REPO = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 30 * 60


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def built(path: Path, argv: list[str], what: str) -> Path:
    """``path``, made by ``argv`` (as root, with mmdebstrap) when missing; skipped (failed under CI) where it
    cannot be had or QEMU cannot boot it; a failed build leaves nothing behind and fails with its output."""
    if not path.exists():
        if os.geteuid() != 0 or not shutil.which("mmdebstrap"):
            _unavailable(f"{path} is missing; make it with {what} (as root)")
        path.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False)
        if proc.returncode != 0:
            path.unlink(missing_ok=True)
            pytest.fail(f"{what} failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
    missing = missing_host_tools()
    if missing:
        _unavailable(f"cannot boot {path.name} here, missing: {', '.join(missing)}")
    return path


@pytest.fixture(scope="session")
def image() -> Path:
    path = Path(os.environ.get("USB4_RECOVERY_IMAGE", REPO / "out" / "usb4-recovery.img"))
    return built(path, [str(REPO / "build-image.sh"), "--output", str(path)], "./build-image.sh")


def require_secure_boot() -> None:
    """Skip (fail under CI) where VMs cannot boot with Secure Boot."""
    missing = missing_host_tools(secure_boot=True)
    if missing:
        _unavailable(f"cannot boot with Secure Boot here, missing: {', '.join(missing)}")


@pytest.fixture
def vm_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Scratch space for VM disks and logs, removed afterwards (kept on failure
    only as far as the logs printed in the failure message go)."""
    path = tmp_path_factory.mktemp("vm")
    yield path
    shutil.rmtree(path, ignore_errors=True)
