"""`recovery image mount`: a saved GPT disk's ext4 looked at through FUSE, a loop device and a read-only
mount, with real processes; a damaged chunk is EIO on the file it holds; every way out leaves nothing
mounted or attached."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import signal
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery.diskimage import format as f
from recovery.diskimage.reader import ImageReader
from recovery.engine import imagemount
from recovery.errors import RefusedError, UsageError
from tests.diskimage.helpers import encrypted_sample
from tests.helpers import MIB, REPO, Recovery, loop_device, mounted, sh, tree_digests

pytestmark = pytest.mark.root

FIBMAP = 1  # ioctl: the filesystem block holding a file's block


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, gpt_image: Path) -> tuple[Path, dict[str, str], Path]:
    """The sample GPT disk saved to an image (1 MiB chunks); its ext4's file digests; the disk."""
    where = tmp_path_factory.mktemp("mount")
    disk = where / "source.raw"
    shutil.copyfile(gpt_image, disk)
    image = where / "source.img"
    save = Recovery("image", "save", "--source", str(disk), "--output", str(image), "--chunk-size", "1M")
    assert save.wait() == 0, save.stderr
    with loop_device(disk) as dev, mounted(f"{dev}p1", readonly=True) as mnt:
        digests = tree_digests(mnt)
    return image, digests, disk


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "look"
    d.mkdir()
    yield d
    imagemount.unmount(str(d))  # a failing test leaves nothing behind either


def leftovers(d: Path) -> list[str]:
    """What is still mounted under ``d`` or attached to its disk file."""
    mounts = [line for line in sh("findmnt", "-rn", "-o", "TARGET").stdout.splitlines() if line.startswith(str(d))]
    loops = [line for line in sh("losetup", "-a").stdout.splitlines() if str(d) in line]
    return mounts + loops + [str(p) for p in d.iterdir()]


def mount(image: Path, d: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[Recovery, dict[str, object]]:
    r = Recovery("image", "mount", str(image), str(d), *extra, env=env)
    return r, r.wait_event("image_mount")


DEBIAN_FUSEPY = Path("/usr/lib/python3/dist-packages/fusepy.py")


@pytest.mark.skipif(not DEBIAN_FUSEPY.exists(), reason="Debian's python3-fusepy is not installed")
def test_debians_fusepy_serves_the_disk_where_mfusepy_is_missing(
    saved: tuple[Path, dict[str, str], Path], directory: Path, tmp_path: Path
) -> None:
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "mfusepy.py").write_text("raise ImportError('not installed')\n")  # a Debian 12 python3 without the venv
    (shim / "fusepy.py").symlink_to(DEBIAN_FUSEPY)  # only that module: the venv's others stay first
    image, digests, _ = saved
    r, _ = mount(image, directory, env={"PYTHONPATH": f"{shim}{os.pathsep}{REPO}"})
    assert tree_digests(directory / "p1") == digests
    r.proc.send_signal(signal.SIGTERM)
    assert r.wait(30) == 0, r.stderr
    assert leftovers(directory) == []


def test_the_ext4_inside_reads_as_the_source_read_only_and_sigterm_takes_it_all_down(
    saved: tuple[Path, dict[str, str], Path], directory: Path
) -> None:
    image, digests, disk = saved
    r, event = mount(image, directory)
    parts = {p["number"]: p for p in event["parts"]}  # type: ignore[attr-defined]
    assert parts[1]["fstype"] == "ext4" and parts[1]["mountpoint"] == str(directory / "p1")
    assert parts[2]["fstype"] == "vfat" and parts[2]["mountpoint"] is None and "vfat" in parts[2]["why"]
    assert tree_digests(directory / "p1") == digests
    with open(directory / "disk", "rb") as a, open(disk, "rb") as b:
        assert a.read(MIB) == b.read(MIB)  # the partition table, as saved
    options = sh("findmnt", "-n", "-o", "OPTIONS", str(directory / "p1")).stdout
    assert "ro" in options.strip().split(",")
    with pytest.raises(OSError) as e:
        (directory / "p1" / "new.txt").write_text("no")
    assert e.value.errno == errno.EROFS
    with pytest.raises(OSError):
        open(directory / "disk", "r+b")

    r.proc.send_signal(signal.SIGTERM)
    assert r.wait(30) == 0, r.stderr
    assert r.event("phase") and r.events[-1]["name"] == "unmount"
    assert leftovers(directory) == []


@pytest.mark.parametrize("how", ["sigint", "unmount", "sigkill then unmount"])
def test_every_way_out_leaves_nothing_mounted_or_attached(
    saved: tuple[Path, dict[str, str], Path], directory: Path, how: str
) -> None:
    image, _, _ = saved
    r, _ = mount(image, directory)
    assert (directory / "p1" / "nested" / "deeper" / "hello.txt").read_text() == "hello from the source disk\n"
    if how == "sigint":
        r.proc.send_signal(signal.SIGINT)
    elif how == "sigkill then unmount":
        r.proc.kill()
        r.proc.wait()
    if how != "sigint":
        u = Recovery("image", "unmount", str(directory))
        assert u.wait(60) == 0, u.stderr
        assert u.event("phase")["message"] == f"unmounted {directory}"  # type: ignore[index]
    assert r.wait(30) in (0, -signal.SIGKILL), r.stderr
    assert leftovers(directory) == []


def test_a_damaged_chunk_is_eio_on_the_file_it_holds_never_wrong_bytes(
    saved: tuple[Path, dict[str, str], Path], directory: Path, tmp_path: Path
) -> None:
    image, digests, disk = saved
    victim = max((p for p in digests if p.startswith("bin/blob-")), key=lambda p: int(p.split("-")[1].split(".")[0]))
    with loop_device(disk) as dev, mounted(f"{dev}p1", readonly=True) as mnt:
        block = os.statvfs(mnt).f_bsize
        with open(mnt / victim, "rb") as fd:
            first = struct.unpack("I", fcntl.ioctl(fd, FIBMAP, struct.pack("I", 0)))[0]
    at = MIB + first * block  # the partition starts at 1 MiB
    damaged = tmp_path / "damaged.img"
    shutil.copyfile(image, damaged)
    with ImageReader(str(damaged)) as reader:
        entry = reader.find(at)
    assert entry is not None and entry.codec is not f.Codec.ZERO
    with open(damaged, "r+b") as fd:
        fd.seek(entry.position + f.RECORD_SIZE + entry.stored // 2)
        byte = fd.read(1)
        fd.seek(-1, os.SEEK_CUR)
        fd.write(bytes([byte[0] ^ 0xFF]))

    r, _ = mount(damaged, directory)
    with pytest.raises(OSError) as e:
        (directory / "p1" / victim).read_bytes()
    assert e.value.errno == errno.EIO
    note = directory / "p1" / "docs" / "note-0.txt"  # written first: far from the damaged chunk
    assert hashlib.sha256(note.read_bytes()).hexdigest() == digests["docs/note-0.txt"]
    warning = r.wait_event("warning")
    assert f"the chunk at byte {entry.offset}" in warning["message"] and "damaged" in warning["message"]
    r.proc.send_signal(signal.SIGTERM)
    assert r.wait(30) == 0, r.stderr
    assert leftovers(directory) == []


def test_bad_input_is_one_line_and_a_documented_exit_code(
    saved: tuple[Path, dict[str, str], Path], tmp_path: Path
) -> None:
    image, _, _ = saved
    empty = tmp_path / "empty"
    empty.mkdir()
    full = tmp_path / "full"
    full.mkdir()
    (full / "something").write_text("x")
    not_image = tmp_path / "notes.txt"
    not_image.write_text("not an image at all\n" * 100)
    cases = [
        ((str(not_image), str(empty)), 16),
        ((str(image), str(full)), 3),
        ((str(image), str(tmp_path / "missing")), 2),
        ((str(image), str(not_image)), 2),
        ((str(tmp_path / "no.img"), str(empty)), 2),
    ]
    for argv, code in cases:
        r = Recovery("image", "mount", *argv)
        assert r.wait(30) == code, (argv, r.stderr)
        assert "Traceback" not in r.stderr and len(r.error_lines()) == 1, r.stderr
    assert list(empty.iterdir()) == []


def test_a_wrong_passphrase_is_refused_before_anything_is_mounted(tmp_path: Path) -> None:
    image, secret, wrong = encrypted_sample(tmp_path)
    d = tmp_path / "look"
    d.mkdir()
    r = Recovery("image", "mount", str(image), str(d), "--passphrase-file", str(wrong))
    assert r.wait(30) == 17
    assert "wrong passphrase" in r.event("error")["message"]  # type: ignore[index]
    assert leftovers(d) == []

    r, event = mount(image, d, "--passphrase-file", str(secret))
    assert any(p["mountpoint"] for p in event["parts"])  # type: ignore[attr-defined]
    r.proc.send_signal(signal.SIGTERM)
    assert r.wait(30) == 0, r.stderr
    assert leftovers(d) == []


def test_not_root_or_not_a_directory_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError):
        imagemount.check_directory(str(tmp_path / "missing"))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(RefusedError, match="needs root"):
        imagemount.check_directory(str(tmp_path))


def test_nothing_mounted_is_said_so(tmp_path: Path) -> None:
    u = Recovery("image", "unmount", str(tmp_path))
    assert u.wait(30) == 0, u.stderr
    assert "nothing" in u.event("phase")["message"]  # type: ignore[index]
