"""Used mode on every filesystem it maps, onto targets that held other filesystems.

Each source partition is cloned (two `recovery` processes over loopback TCP)
onto a target partition at the same place that held a *different*
filesystem, so anything the map leaves out shows as the old filesystem's
blocks. Afterwards, from the target itself: every filesystem's checker is
clean, `blkid -p` sees per partition exactly what it sees on the source, and
every file (and every Btrfs subvolume and snapshot) is identical.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from recovery.disks import signatures
from recovery.engine.clone import fscheck
from tests.fsdisks import Part, contents, make_disk, part_nodes
from tests.helpers import CODE, MIB, Recovery, loop_device, receiver, sh

pytestmark = pytest.mark.root

GPT_SOURCE = [
    Part("btrfs", 120),
    Part("xfs", 40),
    Part("ntfs", 32),
    Part("exfat", 24),
    Part("vfat", 24),
    Part("ext4", 32),
    Part("swap", 16),
]
# What the target's partitions held before: never the source's filesystem.
GPT_TARGET = [
    Part("ntfs", 120),
    Part("btrfs", 40),
    Part("btrfs", 32),
    Part("ntfs", 24),
    Part("btrfs", 24),
    Part("xfs", 32),
    Part("btrfs", 16),
]
MBR_SOURCE = [Part("ext4", 24), Part("vfat", 24, "c"), Part("swap", 16, "82"), Part("ntfs", 24, "7")]
MBR_TARGET = [Part("btrfs", 24), Part("ext4", 24), Part("btrfs", 16), Part("exfat", 24, "7")]


def clone_used(source: str, target: str) -> tuple[Recovery, Recovery]:
    rx, port = receiver(target, "--yes")
    tx = Recovery("send", "--code", CODE, "--source", source, "--to", f"127.0.0.1:{port}", "--mode", "used")
    assert tx.wait(300) == 0, tx.stderr
    assert rx.wait(300) == 0, rx.stderr
    return tx, rx


def blkid_of(node: str) -> tuple[str, ...]:
    size = int(sh("blockdev", "--getsize64", node).stdout)
    return signatures.blkid(node, 0, size)


def independent_check(node: str, fstype: str) -> None:
    """The filesystem's own checker, run by the test (not trusting the summary)."""
    argv = fscheck.CHECKERS.get(fstype)
    if argv:
        proc = sh(*argv, node, check=False)
        assert proc.returncode == 0, f"{argv} on {node}: {proc.stdout[-800:]} {proc.stderr[-400:]}"


def assert_faithful(
    source_img: Path, target_img: Path, layout: list[Part], label: str, tx: Recovery, rx: Recovery
) -> None:
    for side in (tx, rx):
        summary = side.event("summary")
        assert summary and summary["verified"] is True
        checks = summary["checks"]
        assert all(c["ok"] is True for c in checks), checks
        # blkid for every partition, and the checker wherever the filesystem has one.
        assert sum(c["check"] == "blkid -p" for c in checks) == len(layout)
        checked = {c["number"] for c in checks if c["check"] != "blkid -p"}
        assert len(checked) == sum(p.fstype != "swap" for p in layout)
    with loop_device(source_img) as src, loop_device(target_img) as dst:
        for a, b, p in zip(
            part_nodes(src, label, len(layout)), part_nodes(dst, label, len(layout)), layout, strict=True
        ):
            assert blkid_of(a) == blkid_of(b), p.fstype
            assert f"TYPE={p.fstype}" in blkid_of(b)
            independent_check(b, p.fstype)
            before, after = contents(a, p.fstype), contents(b, p.fstype)
            assert before == after, p.fstype
            assert p.fstype == "swap" or len(before) > 5


@pytest.fixture
def gpt_pair(tmp_path: Path) -> tuple[Path, Path]:
    src, dst = tmp_path / "source.img", tmp_path / "target.img"
    make_disk(src, GPT_SOURCE, name="src")
    make_disk(dst, GPT_TARGET, name="old", seed=9, files=False)
    return src, dst


def test_every_filesystem_onto_other_filesystems(gpt_pair: tuple[Path, Path]) -> None:
    src_img, dst_img = gpt_pair
    with loop_device(src_img) as src, loop_device(dst_img, partitions=False) as dst:
        tx, rx = clone_used(src, dst)
    plan = tx.event("plan")
    assert plan is not None
    by_fs = {p["fstype"]: p for p in plan["parts"]}
    assert all(p["method"] == "used" for p in plan["parts"]), plan["parts"]
    assert "allocated chunks" in by_fs["btrfs"]["note"]
    others = [p for p in plan["parts"] if p["fstype"] != "btrfs"]
    assert sum(p["bytes"] for p in others) < sum(p.mib for p in GPT_SOURCE[1:]) * MIB // 3
    assert "erased old signatures" in " ".join(e.get("message", "") for e in rx.events if e["event"] == "phase")
    assert_faithful(src_img, dst_img, GPT_SOURCE, "gpt", tx, rx)


def test_mbr_with_logical_partitions(tmp_path: Path) -> None:
    src_img, dst_img = tmp_path / "source.img", tmp_path / "target.img"
    make_disk(src_img, MBR_SOURCE, label="dos", name="src")
    make_disk(dst_img, MBR_TARGET, label="dos", name="old", seed=9, files=False)
    # The target keeps the kernel's nodes of its old table: same names, and
    # the checks must find the new partitions' places, not trust the names.
    with loop_device(src_img) as src, loop_device(dst_img) as dst:
        assert stat.S_ISBLK(os.stat(f"{dst}p5").st_mode)
        tx, rx = clone_used(src, dst)
    assert_faithful(src_img, dst_img, MBR_SOURCE, "dos", tx, rx)
