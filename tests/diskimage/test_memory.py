"""A 2 TB disk's image in bounded memory: saving, checking, describing and opening it never holds more
than :data:`LIMIT` (the issue's bound), whatever the disk's size. Each command runs as its own process
and its peak RSS is what the kernel counted for it."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.helpers import MIB, REPO, sh

pytestmark = [pytest.mark.slow, pytest.mark.root]

LIMIT = 256 * MIB
DISK = 2 << 40  # 2 TiB
SECTOR = 512

# An exact image of a 2 TiB disk as the writer makes it: one index entry per chunk (half a million).
EXACT_IMAGE = """
import os, sys
from recovery.diskimage.writer import ImageWriter, new_header
size, chunk = {size}, 4 << 20
header, sealer = new_header(size, chunk, 512, None)
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
writer = ImageWriter(fd, sys.argv[1], header, sealer)
writer.start({{"mode": "exact"}})
data = os.urandom(chunk)
for offset in range(0, size, chunk):
    if offset % (1 << 36) == 0:  # some data every 64 GiB, the rest zeros
        import blake3, zstandard
        from recovery.diskimage.writer import stored_form
        codec, stored = stored_form(zstandard.ZstdCompressor(level=1), header, sealer, offset, data)
        writer.put(offset, chunk, blake3.blake3(data).digest(), codec, stored)
    else:
        writer.zero(offset, chunk)
writer.finish({{"format": "usb4-recovery image", "mode": "exact", "size": size}})
"""


def peak(*argv: str) -> tuple[int, int, str]:
    """Run ``argv`` to its end: its exit code, its peak RSS in bytes, its stderr."""
    with tempfile.TemporaryFile() as err:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        return proc.returncode, usage.ru_maxrss * 1024, err.read().decode(errors="replace")


def recovery(*args: str) -> tuple[int, int, str]:
    return peak(sys.executable, "-m", "recovery", *args)


def bounded(what: str, result: tuple[int, int, str], code: int = 0) -> None:
    rc, rss, err = result
    assert rc == code, f"{what}: exit {rc}: {err}"
    assert rss <= LIMIT, f"{what} peaked at {rss // MIB} MiB"
    print(f"{what}: {rss // MIB} MiB")


def test_a_2_tb_disks_used_image_is_saved_checked_and_mounted_in_bounded_memory(tmp_path: Path) -> None:
    raw = tmp_path / "2tb.raw"
    with open(raw, "wb") as f:
        f.truncate(DISK)
    sectors = DISK // SECTOR - 2 * 2048  # 1 MiB free at each end
    sh("sfdisk", "--quiet", str(raw), input=f"label: gpt\nstart=2048, size={sectors}, type=linux\n")
    kib = sectors * SECTOR // 1024
    sh(
        "mkfs.ext4",
        "-q",
        "-F",
        "-N",
        "8192",
        "-O",
        "^has_journal",
        "-E",
        "offset=1048576,nodiscard",
        str(raw),
        f"{kib}k",
    )
    image = tmp_path / "2tb.img"
    bounded("save", recovery("image", "save", "--source", str(raw), "--output", str(image), "--yes", "--json"))
    raw.unlink()
    bounded("verify", recovery("image", "verify", str(image), "--json"))
    bounded("info", recovery("image", "info", str(image), "--json"))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mount = subprocess.Popen(
        [sys.executable, "-m", "recovery", "image", "mount", str(image), str(mnt), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        text=True,
    )
    try:
        assert mount.stdout is not None
        said = next((line for line in mount.stdout if '"image_mount"' in line), "")
        assert (mnt / "p1" / "lost+found").is_dir(), said
    finally:
        sh(sys.executable, "-m", "recovery", "image", "unmount", str(mnt), "--json", check=False, cwd=REPO)
        _, status, usage = os.wait4(mount.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert usage.ru_maxrss * 1024 <= LIMIT, f"mount peaked at {usage.ru_maxrss // 1024} MiB"
    print(f"mount: {usage.ru_maxrss // 1024} MiB")


def test_a_2_tb_disks_exact_index_is_written_and_read_in_bounded_memory(tmp_path: Path) -> None:
    """Half a million index entries: the writer keeps the index (32 MiB) but never a copy of it; the
    reader pages it in."""
    image = tmp_path / "exact.img"
    bounded("write", peak(sys.executable, "-c", EXACT_IMAGE.format(size=DISK), str(image)))
    bounded("verify", recovery("image", "verify", str(image), "--json"))
    bounded("info", recovery("image", "info", str(image), "--json"))
