"""Issue 24: a clone fitted to a smaller or larger disk (`--fit shrink|grow`). Real processes over loopback
TCP, loop devices, real filesystems (FAT ESP + ext4 + NTFS on GPT), qemu-storage-daemon's copy-on-write
view: the target's table is valid (`sgdisk -v`), its filesystems clean, with the source's files, UUIDs and
labels; the source's bytes never change; what cannot fit is refused before anything is written."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import blake3
import pytest

from recovery.engine.fit import fat, fsattr
from tests.fsdisks import BASIC_DATA, ESP, MTOOLS, Part, contents, fill, make_disk, make_fs, mounted_fs
from tests.helpers import CODE, MIB, Recovery, b3sum, fit_mounts, loop_device, receiver, sh

pytestmark = pytest.mark.root
LAYOUT = [Part("vfat", 32, gpt_type=ESP), Part("ext4", 200), Part("ntfs", 100), Part("swap", 96)]
SOURCE = (32 + 200 + 100 + 96 + 2) * MIB


@pytest.fixture(scope="module")
def disk_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    image = tmp_path_factory.mktemp("fit") / "source.img"
    make_disk(image, LAYOUT, name="fit", seed=11)
    return image


def private_copy(image: Path, tmp_path: Path) -> Iterator[str]:
    """A copy of a module's disk image on a loop device (with its partition nodes), for one test."""
    copy = tmp_path / f"copy-{image.parent.name}.img"
    shutil.copyfile(image, copy)
    with loop_device(copy) as dev:
        yield dev


@pytest.fixture
def source(disk_image: Path, tmp_path: Path) -> Iterator[str]:
    yield from private_copy(disk_image, tmp_path)


def blank(tmp_path: Path, mib: int) -> Iterator[str]:
    """A blank disk of ``mib`` MiB (0: half a MiB smaller than the source)."""
    image = tmp_path / f"target-{mib}.img"
    with open(image, "wb") as f:
        f.truncate(mib * MIB or SOURCE - MIB // 2)
    with loop_device(image, partitions=False) as dev:
        yield dev


@pytest.fixture
def small(tmp_path: Path) -> Iterator[str]:
    yield from blank(tmp_path, 160)


@pytest.fixture
def large(tmp_path: Path) -> Iterator[str]:
    yield from blank(tmp_path, 600)


def clone(source: str, target: str, *extra: str, env: dict[str, str] | None = None) -> tuple[Recovery, Recovery]:
    rx, port = receiver(target, "--yes")
    tx = Recovery("send", "--code", CODE, "--source", source, "--to", f"127.0.0.1:{port}", *extra, env=env)
    tx.wait()
    rx.wait()
    return tx, rx


def clone_fitted(src: str, target: str, fit: str) -> list[dict[str, object]]:
    """A fitted clone both sides finished and verified, the source unchanged: the layout's parts."""
    before = b3sum(src)
    tx, rx = clone(src, target, "--fit", fit)
    assert [side.proc.returncode for side in (tx, rx)] == [0, 0], (tx.stderr, rx.stderr)
    assert [side.event("summary")["verified"] for side in (tx, rx)] == [True, True]  # type: ignore[index]
    assert b3sum(src) == before
    return tx.event("fit_planned")["parts"]  # type: ignore[index,no-any-return]


def table(dev: str) -> list[dict[str, object]]:
    return json.loads(sh("sfdisk", "--json", dev).stdout)["partitiontable"]["partitions"]  # type: ignore[no-any-return]


def blkid(dev: str) -> dict[str, str]:
    out = sh("blkid", "-p", "-o", "export", dev).stdout
    found = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return {k: found[k] for k in ("TYPE", "UUID", "LABEL") if k in found}


def check_fitted(source: str, target: str, tx: Recovery, rx: Recovery) -> list[dict[str, object]]:
    """The target's table, filesystems, files and ids against the source's; the new layout's parts."""
    assert [side.proc.returncode for side in (tx, rx)] == [0, 0], (tx.stderr, rx.stderr)
    assert [side.event("summary")["verified"] for side in (tx, rx)] == [True, True]  # type: ignore[index]
    verdict = sh("sgdisk", "-v", target).stdout
    assert "No problems found" in verdict, verdict
    old, new = table(source), table(target)
    keys = ("type", "uuid", "name")
    assert [{k: p.get(k) for k in keys} for p in new] == [{k: p.get(k) for k in keys} for p in old]
    sh("partx", "--add", target, check=False)
    try:
        for i, part in enumerate(LAYOUT, start=1):
            a, b = f"{source}p{i}", f"{target}p{i}"
            assert blkid(b) == blkid(a)
            if part.fstype == "ext4":
                sh("e2fsck", "-f", "-n", b)
            if part.fstype == "ntfs":
                sh("ntfsfix", "--no-action", b)
            assert contents(b, part.fstype) == contents(a, part.fstype), part
    finally:
        sh("partx", "--delete", target, check=False)
    planned = tx.event("fit_planned")
    assert planned is not None
    return planned["parts"]  # type: ignore[no-any-return]


def left_behind(scratch: Path) -> list[str]:
    """What a fitted clone left: files in its scratch folder, its daemon, loop devices over its view."""
    files = [str(p) for p in scratch.rglob("*")]
    daemons = sh("pgrep", "-f", f"qemu-storage-daemon.*{scratch}", check=False).stdout.split()
    loops = [line for line in sh("losetup", "--list", "--noheadings").stdout.splitlines() if str(scratch) in line]
    return files + daemons + loops


def test_shrink_onto_a_smaller_disk(source: str, small: str, tmp_path: Path) -> None:
    before = b3sum(source)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    tx, rx = clone(source, small, "--fit", "shrink", "--scratch", str(scratch))
    parts = check_fitted(source, small, tx, rx)
    assert b3sum(source) == before
    assert left_behind(scratch) == []
    esp, root, data, swap = parts
    assert esp["method"] == "keep" and esp["new_size"] == esp["size"]
    assert root["method"] == "resize" and root["new_size"] < root["size"]
    assert data["new_start"] < data["start"]  # moved down after the shrunk ext4
    assert swap["method"] == "resize" and 64 * MIB <= swap["new_size"] < swap["size"]  # made again, smaller
    new = table(small)
    assert new[-1]["start"] * 512 + new[-1]["size"] * 512 <= 160 * MIB - 33 * 512  # type: ignore[operator]
    fitted = tx.event("fitted")
    assert fitted is not None and 0 < fitted["overlay_bytes"] < SOURCE // 2


def test_grow_onto_a_larger_disk(source: str, large: str) -> None:
    before = b3sum(source)
    tx, rx = clone(source, large, "--fit", "grow", "--mode", "exact")
    parts = check_fitted(source, large, tx, rx)
    assert b3sum(source) == before
    esp, root, data, swap = parts
    assert esp["new_size"] == esp["size"] and swap["new_size"] == swap["size"]  # swap keeps its size
    assert root["new_size"] > root["size"] and data["new_size"] > data["size"]
    sh("partx", "--add", large, check=False)
    try:
        dump = sh("dumpe2fs", "-h", f"{large}p2").stdout
        fields = dict(line.split(":", 1) for line in dump.splitlines() if ":" in line)
        grown = int(fields["Block count"]) * int(fields["Block size"])
        assert grown == root["new_size"]
    finally:
        sh("partx", "--delete", large, check=False)


def test_keep_refuses_a_smaller_disk_and_names_the_fit(source: str, small: str) -> None:
    tx, rx = clone(source, small)
    assert tx.proc.returncode == 3 and rx.proc.returncode == 3
    assert "--fit shrink" in tx.stderr
    assert sh("blkid", "-p", small, check=False).stdout == ""  # nothing written


def test_a_target_too_small_even_shrunk_is_refused_saying_by_how_much(source: str, tmp_path: Path) -> None:
    before = b3sum(source)
    for tiny in blank(tmp_path, 48):
        tx, _ = clone(source, tiny, "--fit", "shrink")
        assert tx.proc.returncode == 3, tx.stderr
        assert "too small even with every filesystem shrunk" in tx.stderr
        assert sh("blkid", "-p", tiny, check=False).stdout == ""
    assert b3sum(source) == before


def test_a_dirty_filesystem_is_refused_never_repaired(source: str, small: str) -> None:
    sh("debugfs", "-w", "-R", "set_inode_field <2> links_count 7", f"{source}p2")  # the root: wrong count
    before = b3sum(source)
    tx, rx = clone(source, small, "--fit", "shrink")
    assert tx.proc.returncode == rx.proc.returncode == 3, (tx.stderr, rx.stderr)
    assert "partition 2 (ext4) is not clean" in tx.stderr
    assert "partition 2 (ext4) is not clean" in rx.stderr  # the first error is the one both see
    assert b3sum(source) == before
    assert sh("blkid", "-p", small, check=False).stdout == ""


def shim(tmp_path: Path, body: str) -> dict[str, str]:
    """An environment whose resize2fs runs ``body`` (sh; the real one is $REAL, the device $DEV) except for
    -P, which measures as the real one does."""
    shims = tmp_path / "shims"
    shims.mkdir()
    tool = shims / "resize2fs"
    tool.write_text(
        f"#!/bin/sh\nREAL={shutil.which('resize2fs')}\n"
        'case " $* " in *" -P "*) exec $REAL "$@";; esac\n'
        'DEV=$(echo "$@" | cut -d" " -f2)\n' + body
    )
    tool.chmod(0o755)
    return {"PATH": f"{shims}:{os.environ['PATH']}"}


def test_a_resize_tool_that_fails_half_way_writes_nothing_and_leaves_nothing(
    source: str, small: str, tmp_path: Path
) -> None:
    """resize2fs writes part of the shrink into the overlay, then fails: its words reach the user, the
    overlay is thrown away, the target is untouched and the source unchanged."""
    env = shim(
        tmp_path,
        'dd if=/dev/urandom of="$DEV" bs=64k count=4 conv=notrunc 2>/dev/null\n'
        'echo "resize2fs: Input/output error while trying to resize (made up)" >&2\nexit 1\n',
    )
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    before = b3sum(source)
    tx, rx = clone(source, small, "--fit", "shrink", "--scratch", str(scratch), env=env)
    assert tx.proc.returncode == rx.proc.returncode == 15  # a tool failed
    assert "made up" in tx.stderr and "nothing was written to the target" in tx.stderr
    assert "made up" in rx.stderr
    assert b3sum(source) == before
    assert sh("blkid", "-p", small, check=False).stdout == ""
    assert left_behind(scratch) == []


def test_an_image_restored_locally_onto_a_smaller_disk_is_shrunk(source: str, small: str, tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    save = Recovery("image", "save", "--source", source, "--output", str(image))
    assert save.wait() == 0, save.stderr
    restore = Recovery("image", "restore", str(image), "--target", small, "--yes", "--fit", "shrink")
    assert restore.wait() == 0, restore.stderr
    assert restore.event("fit_planned") is not None and restore.event("fitted") is not None
    assert restore.event("summary")["verified"] is True  # type: ignore[index]
    assert "No problems found" in sh("sgdisk", "-v", small).stdout
    sh("partx", "--add", small, check=False)
    try:
        for i, part in enumerate(LAYOUT, start=1):
            assert blkid(f"{small}p{i}") == blkid(f"{source}p{i}")
            assert contents(f"{small}p{i}", part.fstype) == contents(f"{source}p{i}", part.fstype)
    finally:
        sh("partx", "--delete", small, check=False)


IMMUTABLE, NODUMP, PROJINHERIT = 0x08, 0x80, 0x200  # chattr's flags as FS_IOC_FSGETXATTR names them
XFS_LAYOUT = [Part("ext4", 64), Part("xfs", 300)]


@pytest.fixture(scope="module")
def xfs_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    image = tmp_path_factory.mktemp("fit-xfs") / "source.img"
    make_disk(image, XFS_LAYOUT, name="xfit", seed=5)
    return image


@pytest.fixture
def xfs_source(xfs_image: Path, tmp_path: Path) -> Iterator[str]:
    yield from private_copy(xfs_image, tmp_path)


def test_xfs_grows_on_the_view_and_cannot_shrink(xfs_source: str, tmp_path: Path) -> None:
    """XFS grows only mounted: mounted on the sender's view (never the source, never the target); asked to
    shrink, it is refused by name."""
    before = b3sum(xfs_source)
    for large in blank(tmp_path, 600):
        tx, rx = clone(xfs_source, large, "--fit", "grow")
        assert [side.proc.returncode for side in (tx, rx)] == [0, 0], tx.stderr
        assert b3sum(xfs_source) == before  # (the kernel writes an XFS it mounts read-only: checked first)
        ext4, xfs = tx.event("fit_planned")["parts"]  # type: ignore[index]
        assert xfs["method"] == "resize" and xfs["new_size"] > xfs["size"] and ext4["new_size"] > ext4["size"]
        sh("partx", "--add", large, check=False)
        try:
            sh("xfs_repair", "-n", f"{large}p2")
            info = sh("xfs_db", "-r", "-c", "sb 0", "-c", "p dblocks blocksize", f"{large}p2").stdout
            fields = dict(line.split(" = ") for line in info.splitlines())
            assert int(fields["dblocks"]) * int(fields["blocksize"]) > xfs["size"]
            assert blkid(f"{large}p2") == blkid(f"{xfs_source}p2")
            assert contents(f"{large}p2", "xfs") == contents(f"{xfs_source}p2", "xfs")
        finally:
            sh("partx", "--delete", large, check=False)
    before = b3sum(xfs_source)
    for small in blank(tmp_path, 200):  # no XFS is made under 300 MiB: this one cannot shrink
        tx, _ = clone(xfs_source, small, "--fit", "shrink")
        assert tx.proc.returncode == 3 and "too small even with every filesystem shrunk" in tx.stderr, tx.stderr
    assert b3sum(xfs_source) == before


@pytest.fixture(scope="module")
def big_xfs_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ext4 and a 700 MiB XFS whose files have what a file-level copy can lose: extended attributes (a
    SELinux label, a POSIX ACL, a capability), hard links, symbolic links, a device node, a FIFO, a sparse
    file, a name that is not UTF-8, old times and other owners."""
    image = tmp_path_factory.mktemp("fit-bigxfs") / "source.img"
    make_disk(image, [Part("ext4", 64), Part("xfs", 700)], name="bxfit", seed=9, garbage=False)
    with loop_device(image) as dev, mounted_fs(f"{dev}p2", "xfs") as mnt:
        odd = mnt / "odd"
        odd.mkdir()
        (odd / "f").write_bytes(os.urandom(3 * MIB))
        os.setxattr(odd / "f", "security.selinux", b"system_u:object_r:etc_t:s0\0")
        os.setxattr(odd / "f", "security.capability", bytes([1, 0, 0, 2, 0, 0x20]) + bytes(14))
        os.setxattr(odd / "f", "user.note", b"kept")
        os.link(odd / "f", odd / "hard")
        os.symlink("f", odd / "sym")
        os.mkfifo(odd / "fifo")
        os.mknod(odd / "null", 0o20644, os.makedev(1, 3))
        with open(odd / "sparse", "wb") as f:
            f.seek(64 * MIB)
            f.write(b"end")
        os.close(os.open(os.path.join(os.fsencode(odd), b"caf\xe9"), os.O_CREAT | os.O_WRONLY, 0o600))
        os.chown(odd / "sym", 1234, 5678, follow_symlinks=False)
        (odd / "frozen").write_bytes(b"chattr +i")
        fsattr._set(os.fsencode(odd / "frozen"), (IMMUTABLE | NODUMP, 0))
        fsattr._set(os.fsencode(odd), (PROJINHERIT, 42))  # an XFS project quota's folder
        os.utime(odd / "hard", ns=(10**18, 10**18))
        os.utime(odd, ns=(10**17, 10**17))
    return image


def xfs_features(dev: str) -> dict[str, str]:
    """What xfs_info says of an XFS that does not follow from its size (its first value of each word)."""
    said = re.findall(r"([a-z0-9-]+)=(\d+)", sh("xfs_info", dev).stdout)
    found: dict[str, str] = {}
    for word, value in said:
        found.setdefault(word, value)
    for size_bound in ("agcount", "agsize", "blocks", "imaxpct", "rtextents"):
        found.pop(size_bound, None)
    assert {"crc", "finobt", "reflink", "isize", "bsize", "ftype"} <= set(found), found
    return found


def test_xfs_shrinks_by_a_file_level_copy(big_xfs_image: Path, tmp_path: Path) -> None:
    """XFS cannot shrink in place: a new, smaller XFS with its UUID, label and features is made on the view
    and filled file by file from the source (mounted read-only); every file compared there, then cloned and
    checked on the target like any other."""
    for src in private_copy(big_xfs_image, tmp_path):
        before = b3sum(src)
        for small in blank(tmp_path, 480):
            tx, rx = clone(src, small, "--fit", "shrink")
            assert [side.proc.returncode for side in (tx, rx)] == [0, 0], (tx.stderr, rx.stderr)
            assert [side.event("summary")["verified"] for side in (tx, rx)] == [True, True]  # type: ignore[index]
            assert b3sum(src) == before
            _, xfs = tx.event("fit_planned")["parts"]  # type: ignore[index]
            assert xfs["method"] == "copy" and 300 * MIB <= xfs["new_size"] < xfs["size"], xfs
            assert "No problems found" in sh("sgdisk", "-v", small).stdout
            sh("partx", "--add", small, check=False)
            try:
                new = f"{small}p2"
                sh("xfs_repair", "-n", new)
                assert blkid(new) == blkid(f"{src}p2")
                assert xfs_features(new) == xfs_features(f"{src}p2")
                assert contents(new, "xfs") == contents(f"{src}p2", "xfs")
                with mounted_fs(new, "xfs", readonly=True, options="nouuid") as mnt:
                    odd = mnt / "odd"
                    assert os.getxattr(odd / "f", "security.selinux") == b"system_u:object_r:etc_t:s0\0"
                    assert os.getxattr(odd / "f", "user.note") == b"kept"
                    assert os.stat(odd / "f").st_ino == os.stat(odd / "hard").st_ino
                    assert os.stat(odd / "hard").st_mtime_ns == 10**18 and os.stat(odd).st_mtime_ns == 10**17
                    assert os.readlink(odd / "sym") == "f" and os.lstat(odd / "sym").st_uid == 1234
                    assert os.stat(odd / "null", follow_symlinks=False).st_rdev == os.makedev(1, 3)
                    assert os.stat(odd / "sparse").st_blocks * 512 < MIB  # holes stay holes
                    assert os.path.exists(os.path.join(os.fsencode(odd), b"caf\xe9"))
                    assert fsattr.get(os.fsencode(odd / "frozen")) == (IMMUTABLE | NODUMP, 0)
                    assert fsattr.get(os.fsencode(odd)) == (PROJINHERIT, 42)
            finally:
                sh("partx", "--delete", small, check=False)


def test_shrink_onto_a_disk_that_holds_the_partitions_rewrites_only_the_table(source: str, tmp_path: Path) -> None:
    """The source's last MiB is free: a target half a MiB smaller holds every partition where it is. Nothing
    is measured or resized; the table is written for the smaller disk (its GPT's backup at its end)."""
    for target in blank(tmp_path, 0):
        tx, rx = clone(source, target, "--fit", "shrink")
        assert [side.proc.returncode for side in (tx, rx)] == [0, 0], tx.stderr
        assert not [e for e in tx.events if e["event"] == "phase" and "measuring" in e["message"]]
        assert all(p["method"] == "keep" for p in tx.event("fit_planned")["parts"])  # type: ignore[index]
        assert "No problems found" in sh("sgdisk", "-v", target).stdout
        assert [(p["start"], p["size"]) for p in table(target)] == [(p["start"], p["size"]) for p in table(source)]


def test_a_resize_that_breaks_the_filesystem_is_caught_before_anything_is_sent(
    source: str, small: str, tmp_path: Path
) -> None:
    """resize2fs says it succeeded but left a broken filesystem (a tool's bug, or the view's): the fitted
    copy is checked before anything is sent, and the clone fails saying so, nothing written."""
    env = shim(
        tmp_path, '$REAL "$@" || exit\ndd if=/dev/zero of="$DEV" bs=1k seek=1 count=1 conv=notrunc 2>/dev/null\n'
    )
    tx, _ = clone(source, small, "--fit", "shrink", env=env)
    assert tx.proc.returncode == 15, tx.stderr
    assert "partition 2 (ext4) fails e2fsck -fn once fitted" in tx.stderr
    assert sh("blkid", "-p", small, check=False).stdout == ""


def test_an_images_xfs_is_never_mounted_to_grow_it(xfs_source: str, tmp_path: Path) -> None:
    """An image file's bytes came from elsewhere: its XFS is not handed to the kernel to mount (the only
    way it grows); it keeps its size while the ext4 beside it grows."""
    image = tmp_path / "disk.img"
    save = Recovery("image", "save", "--source", xfs_source, "--output", str(image))
    assert save.wait() == 0, save.stderr
    mounts = sh("cat", "/proc/self/mountinfo").stdout.count("xfs")
    for large in blank(tmp_path, 600):
        restore = Recovery("image", "restore", str(image), "--target", large, "--yes", "--fit", "grow")
        assert restore.wait() == 0, restore.stderr
        ext4, xfs = restore.event("fit_planned")["parts"]  # type: ignore[index]
        assert ext4["method"] == "resize" and xfs["new_size"] == xfs["size"], xfs  # kept its size (and moved up)
        assert "mount" in xfs["note"]
    assert sh("cat", "/proc/self/mountinfo").stdout.count("xfs") == mounts


def test_a_file_level_copy_that_differs_is_caught_before_anything_is_sent(big_xfs_image: Path, tmp_path: Path) -> None:
    """cp says it succeeded but one file lost an extended attribute: the comparison of every file names
    it, nothing is written to the target, the copy's mounts and devices are gone, the source unchanged."""
    spoil = 'python3 -c "import os, sys; os.removexattr(sys.argv[1], \'user.note\')" "$to/odd/f"\n'
    copy_differs(big_xfs_image, tmp_path, 480, spoil, "odd/f: its extended attributes differ")


def copy_differs(image: Path, tmp_path: Path, mib: int, spoil: str, said: str) -> None:
    """A fitted clone of a copy of ``image`` onto ``mib`` MiB whose cp, once it succeeded, runs ``spoil``
    (sh; the copy's top folder is $to, the source's $from): it stops, the comparison ``said``, nothing is
    written to the target, the source unchanged, no mount of the fit left behind."""
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "cp").write_text(
        f'#!/bin/sh\n{shutil.which("cp")} "$@" || exit\nfor last in "$@"; do from=$to; to=$last; done\n{spoil}'
    )
    (shims / "cp").chmod(0o755)
    for src in private_copy(image, tmp_path):
        before = b3sum(src)
        mounts = fit_mounts()
        for small in blank(tmp_path, mib):
            tx, rx = clone(src, small, "--fit", "shrink", env={"PATH": f"{shims}:{os.environ['PATH']}"})
            assert tx.proc.returncode == rx.proc.returncode == 15, tx.stderr
            assert said in tx.stderr, tx.stderr
            assert "nothing was written to the target" in tx.stderr
            assert sh("blkid", "-p", small, check=False).stdout == ""
        assert b3sum(src) == before
        assert fit_mounts() == mounts


@pytest.fixture(scope="module")
def btrfs_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ext4 and a 700 MiB Btrfs with subvolumes, read-only and writable snapshots, zstd-compressed files."""
    image = tmp_path_factory.mktemp("fit-btrfs") / "source.img"
    make_disk(image, [Part("ext4", 64), Part("btrfs", 700)], name="bfit", seed=4, garbage=False)
    return image


def subvolumes(dev: str) -> list[str]:
    """Each subvolume and snapshot: its path, UUID and whether it is read-only; checked to be ``dev``'s (the
    source and the target hold one Btrfs UUID: the kernel must have mounted the device asked for)."""
    sh("btrfs", "device", "scan", "--forget", check=False)
    with mounted_fs(dev, "btrfs", readonly=True) as mnt:
        fsid = sh("findmnt", "-n", "-o", "UUID", str(mnt)).stdout.strip()
        assert os.listdir(f"/sys/fs/btrfs/{fsid}/devices") == [os.path.basename(dev)]
        listed = sh("btrfs", "subvolume", "list", "-r", "-u", str(mnt)).stdout.splitlines()
        listed += ["rw: " + line for line in sh("btrfs", "subvolume", "list", "-u", str(mnt)).stdout.splitlines()]
    return sorted(line.split(" ", 2)[2] for line in listed)  # without the generation: a resize moves it on


def test_btrfs_shrinks_and_grows_in_place_with_its_subvolumes_and_snapshots(btrfs_image: Path, tmp_path: Path) -> None:
    """Btrfs is resized where it lies, mounted on the view (never the source: the kernel is made to forget
    the source's device first, and the mount is checked to be the view's): its subvolumes, snapshots and
    compressed extents are the source's, its UUID too."""
    for src in private_copy(btrfs_image, tmp_path):
        before = b3sum(src)
        for mib, fit in ((400, "shrink"), (1500, "grow")):
            for target in blank(tmp_path, mib):
                tx, rx = clone(src, target, "--fit", fit)
                assert [side.proc.returncode for side in (tx, rx)] == [0, 0], (tx.stderr, rx.stderr)
                assert [side.event("summary")["verified"] for side in (tx, rx)] == [True, True]  # type: ignore[index]
                _, btrfs = tx.event("fit_planned")["parts"]  # type: ignore[index]
                assert btrfs["method"] == "resize", btrfs
                assert (btrfs["new_size"] < btrfs["size"]) == (fit == "shrink"), btrfs
                sh("partx", "--add", target, check=False)
                try:
                    new, old = f"{target}p2", f"{src}p2"
                    sh("btrfs", "check", "--readonly", new)
                    assert blkid(new) == blkid(old)
                    assert subvolumes(new) == subvolumes(old)
                    assert contents(new, "btrfs") == contents(old, "btrfs")
                    size = sh("btrfs", "inspect-internal", "dump-super", new).stdout
                    assert f"dev_item.total_bytes\t{btrfs['new_size']}" in size
                finally:
                    sh("partx", "--delete", target, check=False)
        assert b3sum(src) == before


MBR_LAYOUT = [Part("ext4", 200), Part("swap", 96), Part("ext4", 200)]  # 1 primary; 5 and 6 logical


@pytest.fixture(scope="module")
def mbr_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MBR disk as older Linux installers left them: the root primary, then an extended partition with
    the swap and a data partition as logical ones."""
    image = tmp_path_factory.mktemp("fit-mbr") / "source.img"
    make_disk(image, MBR_LAYOUT, label="dos", name="mfit", seed=6)
    return image


@pytest.mark.parametrize(("mib", "fit"), [(300, "shrink"), (900, "grow")])
def test_logical_partitions_are_fitted_inside_a_new_extended_partition(
    mbr_image: Path, tmp_path: Path, mib: int, fit: str
) -> None:
    """The logical partitions shrink or grow and move like primary ones; sfdisk writes the extended
    partition around them and their EBRs in the gaps before them, numbered as on the source."""
    for src in private_copy(mbr_image, tmp_path):
        for target in blank(tmp_path, mib):
            root, swap, data = clone_fitted(src, target, fit)
            assert (root["number"], swap["number"], data["number"]) == (1, 5, 6)
            assert (data["new_size"] < data["size"]) == (fit == "shrink") and data["new_start"] != data["start"]
            assert "No errors detected" in sh("sfdisk", "--verify", target).stdout
            new = {p["node"][-1]: p for p in table(target)}
            assert new["2"]["type"] == "5" and set(new) == {"1", "2", "5", "6"}
            assert new["2"]["start"] < new["5"]["start"] and new["6"]["start"] + new["6"]["size"] <= (  # type: ignore[operator]
                new["2"]["start"] + new["2"]["size"]  # type: ignore[operator]
            )
            sh("partx", "--add", target, check=False)
            try:
                for number, part in zip((1, 5, 6), MBR_LAYOUT, strict=True):
                    a, b = f"{src}p{number}", f"{target}p{number}"
                    assert blkid(b) == blkid(a)
                    if part.fstype == "ext4":
                        sh("e2fsck", "-f", "-n", b)
                    assert contents(b, part.fstype) == contents(a, part.fstype), part
            finally:
                sh("partx", "--delete", target, check=False)


def test_a_partition_sized_by_the_user_gets_that_size(source: str, small: str) -> None:
    """--size 2=N: the ext4 gets exactly N, the NTFS and swap share what is left; a size below what the
    filesystem can become is refused before anything is written; --size needs --fit."""
    refused, _ = clone(source, small, "--fit", "shrink", "--size", "2=1M")
    assert refused.proc.returncode == 3 and "partition 2 (ext4) can be at least" in refused.stderr
    least = int(refused.stderr.split("can be at least ")[1].split(".")[0])  # MiB, as human_size says it
    tx, rx = clone(source, small, "--fit", "shrink", "--size", f"2={least + 3}M")
    parts = check_fitted(source, small, tx, rx)
    assert parts[1]["new_size"] == (least + 3) * MIB and parts[1]["method"] == "resize", parts[1]
    assert refused.stderr.count("\n") <= 2, refused.stderr  # one line, and its hint
    usage = Recovery("send", "--code", CODE, "--source", source, "--to", "127.0.0.1:9", "--size", "2=60M")
    assert usage.wait() == 2 and "add --fit shrink or --fit grow" in usage.stderr
    bad = Recovery("send", "--code", CODE, "--source", source, "--to", "127.0.0.1:9", "--size", "two=60M")
    assert bad.wait() == 2 and "give a partition number and a size" in bad.stderr


def test_a_partition_sized_smaller_onto_a_larger_disk_lets_the_next_ones_move_down_and_grow(
    source: str, large: str
) -> None:
    """--fit grow --size 2=N below the ext4's size: the ext4 shrinks to N, the NTFS and swap after it move
    down into its room, and the NTFS grows into the rest (once left where it was, past the target's end)."""
    refused, _ = clone(source, large, "--fit", "grow", "--size", "2=1M")
    assert refused.proc.returncode == 3 and "partition 2 (ext4) can be at least" in refused.stderr
    least = int(refused.stderr.split("can be at least ")[1].split(".")[0])
    tx, rx = clone(source, large, "--fit", "grow", "--size", f"2={least + 3}M")
    _, root, ntfs, swap = check_fitted(source, large, tx, rx)
    assert root["new_size"] == (least + 3) * MIB and root["method"] == "resize", root
    assert ntfs["new_start"] < ntfs["start"] and ntfs["new_size"] > ntfs["size"]  # type: ignore[operator]
    assert swap["new_start"] != swap["start"] and swap["new_size"] == swap["size"]


def test_a_4kn_disk_is_fitted_in_4096_byte_sectors(tmp_path: Path) -> None:
    """A disk of 4 KiB logical sectors (as some NVMe drives are formatted): its GPT is read and written in
    4096-byte sectors, the view's devices show them too, and the ext4 and NTFS on it shrink onto a smaller
    4Kn disk; the target's table is valid for its sector size."""
    image = tmp_path / "4kn.img"
    with open(image, "wb") as f:
        f.truncate(520 * MIB)
    before = ""
    with loop_device(image, partitions=False, sector_size=4096) as src:
        sh("sfdisk", "--quiet", src, input=f"label: gpt\nsize=300MiB, type=linux\nsize=200MiB, type={BASIC_DATA}\n")
        sh("partx", "--add", src, check=False)
        try:
            make_fs(f"{src}p1", "ext4", "k4root")
            fill(f"{src}p1", "ext4", 21)
            sh("mkntfs", "-q", "-F", "-f", "-s", "4096", "-L", "k4data", f"{src}p2")
            fill(f"{src}p2", "ntfs", 22)
        finally:
            sh("partx", "--delete", src, check=False)
        before = b3sum(src)
        target_image = tmp_path / "4kn-target.img"
        with open(target_image, "wb") as f:
            f.truncate(300 * MIB)
        with loop_device(target_image, partitions=False, sector_size=4096) as target:
            tx, rx = clone(src, target, "--fit", "shrink")
            assert [side.proc.returncode for side in (tx, rx)] == [0, 0], (tx.stderr, rx.stderr)
            assert [side.event("summary")["verified"] for side in (tx, rx)] == [True, True]  # type: ignore[index]
            assert b3sum(src) == before
            assert "No problems found" in sh("sgdisk", "-v", target).stdout
            assert json.loads(sh("sfdisk", "--json", target).stdout)["partitiontable"]["sectorsize"] == 4096
            sh("partx", "--add", src, check=False)
            sh("partx", "--add", target, check=False)
            try:
                for number, fstype in ((1, "ext4"), (2, "ntfs")):
                    a, b = f"{src}p{number}", f"{target}p{number}"
                    assert blkid(b) == blkid(a)
                    assert contents(b, fstype) == contents(a, fstype), fstype
                sh("e2fsck", "-f", "-n", f"{target}p1")
                sh("ntfsfix", "--no-action", f"{target}p2")
            finally:
                sh("partx", "--delete", src, check=False)
                sh("partx", "--delete", target, check=False)


FAT_LAYOUT = [Part("ext4", 100), Part("vfat", 400, options=("-F", "32", "-s", "8"))]  # 4 KiB clusters
FAT_BIG = 60  # MiB of one file on the FAT besides the usual files


@pytest.fixture(scope="module")
def fat_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ext4, then a 400 MiB FAT32 data partition (not an ESP: it may be resized) holding 60 MiB more."""
    folder = tmp_path_factory.mktemp("fit-fat")
    image = folder / "source.img"
    make_disk(image, FAT_LAYOUT, name="ffit", seed=8, garbage=False)
    (folder / "big.bin").write_bytes(os.urandom(FAT_BIG * MIB))
    with loop_device(image) as dev:
        sh("mcopy", "-i", f"{dev}p2", str(folder / "big.bin"), "::/big.bin", env=MTOOLS)
    return image


def fat_facts(dev: str) -> tuple[int, int, bytes]:
    """The FAT's bits by its cluster count (32: FAT32), its first-sector field and its boot sector's ids."""
    with open(dev, "rb") as f:
        boot = f.read(512)
    bpb = fat.parse_bpb(boot)
    return bpb.bits, int.from_bytes(boot[0x1C:0x20], "little"), boot[0x43:0x52]


@pytest.mark.parametrize(("mib", "fit"), [(360, "shrink"), (900, "grow")])
def test_a_fat32_shrinks_and_grows_keeping_its_type_ids_and_files(
    fat_image: Path, tmp_path: Path, mib: int, fit: str
) -> None:
    """fatresize on the view: the FAT32 stays a FAT32 (never made a FAT16), clean, with its UUID, label and
    every file; moved down after the shrunk ext4, its boot sector names its new first sector."""
    for src in private_copy(fat_image, tmp_path):
        for target in blank(tmp_path, mib):
            ext4, vfat = clone_fitted(src, target, fit)
            assert ext4["method"] == vfat["method"] == "resize", (ext4, vfat)
            assert (vfat["new_size"] < vfat["size"]) == (fit == "shrink"), vfat
            assert "No problems found" in sh("sgdisk", "-v", target).stdout
            sh("partx", "--add", target, check=False)
            try:
                new, old = f"{target}p2", f"{src}p2"
                sh("fsck.vfat", "-n", new)
                assert blkid(new) == blkid(old) and blkid(new)["TYPE"] == "vfat"
                bits, first, boot_ids = fat_facts(new)
                assert bits == 32 and boot_ids == fat_facts(old)[2]
                assert first == vfat["new_start"] // 512
                assert contents(new, "vfat") == contents(old, "vfat")
                sh("e2fsck", "-f", "-n", f"{target}p1")
            finally:
                sh("partx", "--delete", target, check=False)


def test_a_fat_that_cannot_shrink_enough_is_refused_in_one_line(fat_image: Path, tmp_path: Path) -> None:
    """A FAT32 of 4 KiB clusters holds at least 65525 of them (about 260 MiB): a smaller one would be a FAT16,
    so onto a disk that would need that, the clone is refused before anything is written."""
    for src in private_copy(fat_image, tmp_path):
        before = b3sum(src)
        for tiny in blank(tmp_path, 250):
            tx, _ = clone(src, tiny, "--fit", "shrink")
            assert tx.proc.returncode == 3, tx.stderr
            assert "too small even with every filesystem shrunk" in tx.stderr, tx.stderr
            assert tx.stderr.count("\n") <= 2, tx.stderr  # one line, and its hint
            assert sh("blkid", "-p", tiny, check=False).stdout == ""
        assert b3sum(src) == before


EXFAT_LAYOUT = [Part("ext4", 64), Part("exfat", 400)]
MANY = 300  # small files in one folder


@pytest.fixture(scope="module")
def exfat_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ext4 and a 400 MiB exFAT (written through exfat-fuse) holding nested folders with names that are not
    ASCII, an empty file, a 40 MiB file, many small files, and old modification times (odd seconds too)."""
    image = tmp_path_factory.mktemp("fit-exfat") / "source.img"
    make_disk(image, EXFAT_LAYOUT, name="efit", seed=12, garbage=False)
    with loop_device(image) as dev, mounted_fs(f"{dev}p2", "exfat") as mnt:
        deep = mnt / "Fotos" / "Été 2019" / "日本語"
        deep.mkdir(parents=True)
        (deep / "café ☃.txt").write_text("crème brûlée\n")
        (deep / "leer").write_bytes(b"")
        (mnt / "Fotos" / "large.bin").write_bytes(os.urandom(40 * MIB))
        many = mnt / "many"
        many.mkdir()
        for i in range(MANY):
            (many / f"n{i:03}.txt").write_bytes(os.urandom(i * 37))
            os.utime(many / f"n{i:03}.txt", (1_000_000_001 + i, 1_000_000_001 + i))
        for path, when in ((deep / "café ☃.txt", 946_684_801), (deep, 1_234_567_891), (mnt / "Fotos", 1_500_000_000)):
            os.utime(path, (when, when))
    return image


def exfat_tree(dev: str) -> dict[str, tuple[str, int, int, str]]:
    """Each file and folder of the exFAT on ``dev`` (read-only, through exfat-fuse): kind, size, modification
    time and BLAKE3 of its contents."""
    found = {}
    with mounted_fs(dev, "exfat", readonly=True) as mnt:
        for path in sorted(mnt.rglob("*")):
            st = path.stat()
            kind = "dir" if path.is_dir() else "file"
            digest = "" if path.is_dir() else blake3.blake3(path.read_bytes()).hexdigest()
            found[str(path.relative_to(mnt))] = (kind, 0 if path.is_dir() else st.st_size, st.st_mtime_ns, digest)
    return found


def exfat_fuse_left() -> list[str]:
    """exfat-fuse processes that serve one of this tool's mounts."""
    return sh("pgrep", "-f", "exfat-fuse.*recovery-fit-", check=False).stdout.split()


@pytest.mark.parametrize(("mib", "fit"), [(250, "shrink"), (900, "grow")])
def test_exfat_shrinks_and_grows_by_a_file_level_copy(exfat_image: Path, tmp_path: Path, mib: int, fit: str) -> None:
    """exFAT cannot be resized in place: a new, targeter or larger exFAT with its UUID (volume serial), label
    and cluster size is made on the view and filled file by file from the source (mounted read-only); on the
    target it is clean, with every file, size and modification time of the source."""
    for src in private_copy(exfat_image, tmp_path):
        old = exfat_tree(f"{src}p2")
        assert len(old) > MANY + 10 and old["Fotos/Été 2019/日本語/café ☃.txt"][2] == 946_684_801 * 10**9
        mounts = fit_mounts()
        for target in blank(tmp_path, mib):
            _, exfat = clone_fitted(src, target, fit)
            assert exfat["method"] == "copy" and (exfat["new_size"] < exfat["size"]) == (fit == "shrink"), exfat
            assert exfat["new_size"] != exfat["size"]
            assert "No problems found" in sh("sgdisk", "-v", target).stdout
            sh("partx", "--add", target, check=False)
            try:
                new = f"{target}p2"
                assert "clean" in sh("fsck.exfat", "-n", new).stdout
                assert blkid(new) == blkid(f"{src}p2") and blkid(new)["TYPE"] == "exfat"
                assert exfat_tree(new) == old
                assert contents(f"{target}p1", "ext4") == contents(f"{src}p1", "ext4")
            finally:
                sh("partx", "--delete", target, check=False)
        assert fit_mounts() == mounts
        assert exfat_fuse_left() == []


def test_an_exfat_copy_that_differs_is_caught_before_anything_is_sent(exfat_image: Path, tmp_path: Path) -> None:
    """cp says it succeeded but one byte of the large file differs on the copy (its time kept): the BLAKE3
    comparison names it, nothing is written to the target, every mount and exfat-fuse process is gone."""
    spoil = (
        'printf Z | dd of="$to/Fotos/large.bin" bs=1 seek=12345 conv=notrunc 2>/dev/null\n'
        'touch -r "$from/Fotos/large.bin" "$to/Fotos/large.bin"\n'
    )
    copy_differs(exfat_image, tmp_path, 250, spoil, "Fotos/large.bin: its contents differ")
    assert exfat_fuse_left() == []


def test_a_dirty_exfat_is_refused_never_repaired(exfat_image: Path, tmp_path: Path) -> None:
    """An exFAT whose volume-dirty flag is set (its machine stopped while it was mounted) keeps its size,
    never checked or repaired on the source: onto a disk it would have to shrink for, refused saying why."""
    for src in private_copy(exfat_image, tmp_path):
        with open(f"{src}p2", "r+b") as f:
            f.seek(106)  # VolumeFlags (not in the boot sector's checksum)
            f.write(b"\x02")
        before = b3sum(src)
        for small in blank(tmp_path, 250):
            tx, rx = clone(src, small, "--fit", "shrink")
            assert tx.proc.returncode == rx.proc.returncode == 3, tx.stderr
            assert "partition 2 (exfat" in tx.stderr and "volume-dirty flag is set" in tx.stderr, tx.stderr
            assert sh("blkid", "-p", small, check=False).stdout == ""
        assert b3sum(src) == before


def test_an_images_exfat_is_never_mounted_and_keeps_its_size(exfat_image: Path, tmp_path: Path) -> None:
    """An image file's bytes came from elsewhere: its exFAT is not mounted to be copied (the stick's kernel
    would mount it), so it keeps its size, and a target it would have to shrink for is refused saying so."""
    for src in private_copy(exfat_image, tmp_path):
        image = tmp_path / "disk.img"
        save = Recovery("image", "save", "--source", src, "--output", str(image))
        assert save.wait() == 0, save.stderr
        for small in blank(tmp_path, 250):
            restore = Recovery("image", "restore", str(image), "--target", small, "--yes", "--fit", "shrink")
            assert restore.wait() == 3, restore.stderr
            assert "an image's exfat is not mounted here" in restore.stderr, restore.stderr
            assert sh("blkid", "-p", small, check=False).stdout == ""
        assert exfat_fuse_left() == []
