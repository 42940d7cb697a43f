"""End to end: two `recovery` processes over loopback TCP, loop devices holding
a GPT disk with real ext4 and FAT filesystems."""

from __future__ import annotations

import pytest

from recovery.engine.clone.compare import compare
from tests.helpers import CODE, Recovery, b3sum, fat_digests, loop_device, mounted, receiver, sh, tree_digests

pytestmark = pytest.mark.root


def clone(
    source: str, target: str, *send_args: str, recv_args: tuple[str, ...] = ("--yes",)
) -> tuple[Recovery, Recovery]:
    rx, port = receiver(target, *recv_args)
    tx = Recovery("send", "--code", CODE, "--source", source, "--to", f"127.0.0.1:{port}", *send_args)
    assert tx.wait() == 0, tx.stderr
    assert rx.wait() == 0, rx.stderr
    return tx, rx


def test_exact_clone_is_byte_identical_and_both_sides_print_the_b3sum(source_loop: str, blank_loop: str) -> None:
    tx, rx = clone(source_loop, blank_loop, "--mode", "exact")
    sent, got = tx.event("summary"), rx.event("summary")
    assert sent and got
    assert got["verified"] is True and sent["verified"] is True
    assert sent["list_digest"] == got["list_digest"]
    expected = b3sum(source_loop)
    assert sent["image_digest"] == got["image_digest"] == expected
    size = int(sh("blockdev", "--getsize64", source_loop).stdout)
    result = compare(source_loop, blank_loop)
    # The larger target's GPT has its backup at the target's end (tests/e2e/test_larger_target.py).
    assert result.differences == [] and result.compared == size and result.gpt_moved
    # Zero chunks never travel as data: the garbage-filled disk has none, but
    # the zero areas mkfs wrote (inode tables) do.
    assert sent["zero_bytes"] > 0
    assert sent["bytes_sent"] < size
    # Each side names the link's speed: here the loopback interface.
    assert [p.event("peer")["speed"] for p in (tx, rx)] == ["loopback (no network card in between)"] * 2  # type: ignore[index]


def test_used_clone_gives_clean_filesystems_with_the_same_files(source_loop: str, blank_loop: str) -> None:
    tx, _rx = clone(source_loop, blank_loop, "--mode", "used")
    sent = tx.event("summary")
    assert sent and sent["verified"] is True
    plan = tx.event("plan")
    assert plan and [p["method"] for p in plan["parts"]] == ["used", "used"]
    assert plan["to_send"] < plan["size"] // 2  # the garbage in free space is not copied
    with loop_device(blank_loop) as target:
        sh("e2fsck", "-f", "-n", f"{target}p1")
        sh("fsck.fat", "-n", f"{target}p2")
        with mounted(f"{source_loop}p1", readonly=True) as a, mounted(f"{target}p1", readonly=True) as b:
            ta, tb = tree_digests(a), tree_digests(b)
            assert ta == tb and len(ta) > 10
        assert fat_digests(f"{source_loop}p2") == fat_digests(f"{target}p2")
