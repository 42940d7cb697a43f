"""The file-level copy's two pure-ish parts: the comparison of two trees finds each kind of difference a
copy can make (and none where there is none), and mkfs.xfs is asked for the features xfs_info names."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from recovery.engine.fit import filecopy, fsattr, sametree

XFS_INFO = """\
meta-data=/dev/loop3p2           isize=512    agcount=4, agsize=44800 blks
         =                       sectsz=4096  attr=2, projid32bit=1
         =                       crc=1        finobt=1, sparse=1, rmapbt=0
         =                       reflink=1    bigtime=1 inobtcount=1 nrext64=0
data     =                       bsize=4096   blocks=179200, imaxpct=25
         =                       sunit=0      swidth=0 blks
naming   =version 2              bsize=8192   ascii-ci=1, ftype=1
log      =internal log           bsize=4096   blocks=16384, version=2
         =                       sectsz=512   sunit=0 blks, lazy-count=1
realtime =none                   extsz=4096   blocks=0, rtextents=0
"""


def test_mkfs_xfs_is_asked_for_the_features_xfs_info_names() -> None:
    options = filecopy.xfs_options(XFS_INFO)
    pairs = dict(zip(options[::2], options[1::2], strict=True))
    assert pairs["-m"] == "crc=1,finobt=1,rmapbt=0,reflink=1,bigtime=1,inobtcount=1"
    assert pairs["-i"] == "sparse=1,nrext64=0,size=512,projid32bit=1"
    assert pairs["-s"] == "size=4096"  # the data section's, not the log's
    assert pairs["-b"] == "size=4096" and pairs["-n"] == "version=ci,size=8192"
    assert "maxpct=40" in dict(zip(*[iter(filecopy.xfs_options(XFS_INFO, 40))] * 2, strict=True))["-i"]
    assert pairs["-l"] == "lazy-count=1"


def test_a_copy_of_many_small_files_may_give_its_inodes_more_room() -> None:
    assert filecopy.inode_share(XFS_INFO, 1000, 1 << 30) == 25  # the old one's
    assert filecopy.inode_share(XFS_INFO, 1_000_000, 1 << 30) == 96  # 2 x 1e6 x 512 bytes of 1 GiB
    assert filecopy.inode_share(XFS_INFO, 10**8, 1 << 30) == 100


def test_a_v4_xfs_keeps_its_directory_type_option() -> None:
    options = filecopy.xfs_options(XFS_INFO.replace("crc=1", "crc=0").replace("ascii-ci=1", "ascii-ci=0"))
    assert dict(zip(options[::2], options[1::2], strict=True))["-n"] == "ftype=1,size=8192"


@pytest.mark.skipif(shutil.which("mkfs.xfs") is None, reason="xfsprogs is not installed")
def test_mkfs_xfs_takes_the_options(tmp_path: Path) -> None:
    image = tmp_path / "x.img"
    with open(image, "wb") as f:
        f.truncate(400 << 20)
    info = XFS_INFO.replace("sectsz=4096", "sectsz=512").replace("ascii-ci=1", "ascii-ci=0")
    subprocess.run(["mkfs.xfs", "-q", "-N", *filecopy.xfs_options(info), str(image)], check=True)


def test_the_smallest_copy_has_room_over_what_is_used() -> None:
    assert filecopy.smallest(0, "xfs") == 300 << 20
    assert filecopy.smallest(4 << 30, "xfs") > (4 << 30) * 1.1


OLD = (10**18, 10**18)  # the times every entry is given


def tree(root: Path) -> Path:
    (root / "d").mkdir(parents=True)
    (root / "d" / "f").write_bytes(b"x" * 100_000)
    os.link(root / "d" / "f", root / "d" / "g")
    (root / "e").write_bytes(b"")
    os.symlink("d/f", root / "s")
    os.setxattr(root / "d" / "f", "user.k", b"v")
    for p in (root / "d" / "f", root / "e", root / "d", root):
        os.utime(p, ns=OLD)
    os.utime(root / "s", ns=OLD, follow_symlinks=False)
    return root


def copied(tmp_path: Path) -> tuple[Path, Path]:
    old = tree(tmp_path / "old")
    new = tmp_path / "new"
    subprocess.run(["cp", "-a", "--no-target-directory", f"{old}/.", str(new)], check=True)
    return old, new


def test_a_faithful_copy_is_the_same(tmp_path: Path) -> None:
    old, new = copied(tmp_path)
    assert sametree.compare(str(old), str(new)) == 6


def relink(new: Path) -> None:
    (new / "d" / "g").unlink()
    shutil.copy2(new / "d" / "f", new / "d" / "g")
    os.utime(new / "d", ns=OLD)


def rewrite_keeping_time(new: Path) -> None:
    fd = os.open(new / "d" / "f", os.O_WRONLY)
    os.pwrite(fd, b"y", 5)
    os.close(fd)
    os.utime(new / "d" / "f", ns=OLD)


def retarget(new: Path) -> None:
    os.unlink(new / "s")
    os.symlink("d/g", new / "s")
    os.utime(new / "s", ns=OLD, follow_symlinks=False)
    os.utime(new, ns=OLD)


def remove(new: Path) -> None:
    os.unlink(new / "e")
    os.utime(new, ns=OLD)


CHANGES: dict[str, tuple[Callable[[Path], object], str]] = {
    "content": (lambda n: (n / "d" / "f").write_bytes(b"y"), "d/f: its modification time differs"),
    "content only": (rewrite_keeping_time, "d/f: its contents differ"),
    "mode": (lambda n: os.chmod(n / "e", 0o600), "e: its kind or mode differs"),
    "owner": (lambda n: os.chown(n / "e", 42, 42), "e: its owner differs"),
    "xattr": (lambda n: os.removexattr(n / "d" / "f", "user.k"), "d/f: its extended attributes differ"),
    "link target": (retarget, "s: its link target differs"),
    "hard link": (relink, "d/f: its hard links differ"),
    "missing": (remove, "e: only in one of them"),
    "dir time": (lambda n: os.utime(n / "d", ns=(1, 1)), "d: its modification time differs"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_each_kind_of_difference_is_named(tmp_path: Path, change: str) -> None:
    old, new = copied(tmp_path)
    make, said = CHANGES[change]
    make(new)
    with pytest.raises(sametree.Difference, match=said):
        sametree.compare(str(old), str(new))


def test_a_cancel_is_honoured_between_files(tmp_path: Path) -> None:
    old, new = copied(tmp_path)

    def cancel() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sametree.compare(str(old), str(new), cancel)


def test_a_chattr_flag_the_copy_lost_is_named_and_carry_gives_it_back(tmp_path: Path) -> None:
    old, new = copied(tmp_path)
    flags = fsattr.get(os.fsencode(old / "e"))
    if flags is None:
        pytest.skip("this filesystem has no FS_IOC_FSGETXATTR")
    nodump_noatime = 0x80 | 0x40
    fsattr._set(os.fsencode(old / "e"), (nodump_noatime, 0))
    fsattr._set(os.fsencode(old / "d"), (0x08, 0))  # immutable: carried last, and cleared after the test
    try:
        with pytest.raises(sametree.Difference, match="d: its flags"):
            sametree.compare(str(old), str(new))
        fsattr.carry(os.fsencode(old), os.fsencode(new))
        assert fsattr.get(os.fsencode(new / "e")) == (nodump_noatime, 0)
        assert fsattr.get(os.fsencode(new / "d")) == (0x08, 0)
        sametree.compare(str(old), str(new))
    finally:
        for tree in (old, new):
            fsattr._set(os.fsencode(tree / "d"), (0, 0))


def test_holes_and_written_zeros_hash_alike_and_cost_only_their_data(tmp_path: Path) -> None:
    holes, zeros, other = tmp_path / "holes", tmp_path / "zeros", tmp_path / "other"
    with open(holes, "wb") as f:
        f.seek(64 << 20)
        f.write(b"end")
    zeros.write_bytes(bytes(64 << 20) + b"end")
    with open(other, "wb") as f:
        f.seek(64 << 20)
        f.write(b"End")
    assert sametree._digest(os.fsencode(holes)) == sametree._digest(os.fsencode(zeros))
    assert sametree._digest(os.fsencode(holes)) != sametree._digest(os.fsencode(other))
    assert sametree.allocated(str(tmp_path)) < 66 << 20  # the holes take nothing


def test_a_cancel_stops_a_running_tool() -> None:
    import threading
    import time

    from recovery import run
    from recovery.errors import CancelledError

    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(CancelledError, match="sleep"):
        run.run(["sleep", "30"], cancel=cancel)
    assert time.monotonic() - started < 5
