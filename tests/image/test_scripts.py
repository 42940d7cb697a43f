"""Fast checks of the appliance's build scripts: shellcheck, --help, and the
driver build's refusals (no kernel, no root, no network needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DRIVER = REPO / "driver"
SHELL_SCRIPTS = sorted(
    [
        REPO / "build-image.sh",
        REPO / "check-signatures.sh",
        REPO / "debian-mirror.sh",
        *DRIVER.glob("*.sh"),
        *(REPO / "initramfs").rglob("*.sh"),
        *(REPO / "tests" / "image").glob("*.sh"),
    ]
)


def test_shellcheck_is_clean() -> None:
    if not shutil.which("shellcheck"):
        if os.environ.get("CI"):
            pytest.fail("shellcheck is not installed")
        pytest.skip("shellcheck is not installed")
    proc = subprocess.run(
        ["shellcheck", "--severity=style", *map(str, SHELL_SCRIPTS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_build_image_help() -> None:
    proc = subprocess.run(
        ["bash", str(REPO / "build-image.sh"), "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for option in (
        "--output",
        "--extra-packages",
        "--kernel-version",
        "SOURCE_DATE_EPOCH",
        # which packages give the signed boot chain, and how it is checked
        "shim-signed",
        "systemd-boot-efi-amd64-signed",
        "shim-helpers-amd64-signed",
        "linux-binary-KVER",
        "mokutil --import",
        "check-signatures.sh",
    ):
        assert option in proc.stdout


def test_check_signatures_refuses_what_is_not_an_image(tmp_path: Path) -> None:
    """A clear one-line error and exit code 2 (could not check), not 1."""
    script = str(REPO / "check-signatures.sh")
    assert subprocess.run(["bash", script, "--help"], capture_output=True, timeout=30).returncode == 0
    not_an_image = tmp_path / "zeros.img"
    not_an_image.write_bytes(bytes(1 << 16))
    for argv, needle in (([], "Usage"), ([str(tmp_path / "nope")], "does not exist"), ([str(not_an_image)], "no GPT")):
        proc = subprocess.run(["bash", script, *argv], capture_output=True, text=True, timeout=30, check=False)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert needle in proc.stderr


def test_build_image_rejects_unknown_options() -> None:
    proc = subprocess.run(
        ["bash", str(REPO / "build-image.sh"), "--frobnicate"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode != 0
    assert "unknown option '--frobnicate'" in proc.stderr


def _kdir(tmp_path: Path, config: str) -> Path:
    kdir = tmp_path / "build"
    (kdir / "include" / "config").mkdir(parents=True)
    (kdir / "include" / "config" / "auto.conf").write_text(config)
    return kdir


def _check_kernel(kdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(DRIVER / "check-kernel.sh"), "7.2.13+deb14-amd64", str(kdir)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_driver_accepts_a_kernel_with_configfs_and_no_stream(tmp_path: Path) -> None:
    kdir = _kdir(tmp_path, "CONFIG_USB4=m\nCONFIG_USB4_CONFIGFS=m\nCONFIG_USB4_NET=m\n")
    proc = _check_kernel(kdir)
    assert proc.returncode == 0, proc.stderr


def test_driver_refuses_a_kernel_that_has_the_module(tmp_path: Path) -> None:
    kdir = _kdir(tmp_path, "CONFIG_USB4=m\nCONFIG_USB4_CONFIGFS=m\nCONFIG_USB4_STREAM=m\n")
    proc = _check_kernel(kdir)
    assert proc.returncode != 0
    assert "already provides thunderbolt_stream" in proc.stderr


def test_driver_refuses_a_kernel_without_configfs(tmp_path: Path) -> None:
    kdir = _kdir(tmp_path, "CONFIG_USB4=m\n# CONFIG_USB4_CONFIGFS is not set\n")
    proc = _check_kernel(kdir)
    assert proc.returncode != 0
    assert "without CONFIG_USB4_CONFIGFS" in proc.stderr


def test_driver_refuses_without_headers(tmp_path: Path) -> None:
    proc = _check_kernel(tmp_path / "nothing")
    assert proc.returncode != 0
    assert "linux-headers-7.2.13+deb14-amd64" in proc.stderr


def test_fetch_source_takes_stream_c_from_the_tarball(tmp_path: Path) -> None:
    tree = tmp_path / "linux-source-7.2" / "drivers" / "thunderbolt"
    tree.mkdir(parents=True)
    (tree / "stream.c").write_text("/* stand-in */\n")
    (tree / "tb.c").write_text("/* other */\n")
    tarball = tmp_path / "linux-source-7.2.tar.xz"
    with tarfile.open(tarball, "w:xz") as tar:
        tar.add(tmp_path / "linux-source-7.2", arcname="linux-source-7.2")
    dest = tmp_path / "out" / "stream.c"
    dest.parent.mkdir()
    proc = subprocess.run(
        [
            "sh",
            str(DRIVER / "fetch-source.sh"),
            "7.2.13+deb14-amd64",
            str(dest),
            str(tarball),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert dest.read_text() == "/* stand-in */\n"


def test_fetch_source_explains_a_missing_source(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["sh", str(DRIVER / "fetch-source.sh"), "9.9.1-amd64", str(tmp_path / "s.c")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode != 0
    assert "linux-source-9.9" in proc.stderr
