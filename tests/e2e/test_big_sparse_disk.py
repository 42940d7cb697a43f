"""Used mode on a 64 GiB disk with one small partition, onto a thin target.

Only the partition's used blocks and the partition tables are read and sent;
the unpartitioned 63 GiB (old data included) is neither sent nor written, and
zeros cost no storage: the target, a loop device over a sparse file, ends up
allocating at most 1.5 times the bytes the filesystem uses. (Time and
allocation are recorded in docs/performance.md by tests/bench/compare.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench import bigdisk
from tests.helpers import CODE, Recovery, loop_device, receiver, sh

pytestmark = pytest.mark.root


def test_sparse_64g_used_clone(tmp_path: Path) -> None:
    source, backing = tmp_path / "big.img", tmp_path / "thin.img"
    bigdisk.make(source)
    with open(backing, "wb") as f:
        f.truncate(bigdisk.SIZE)
    with loop_device(source) as src, loop_device(backing, partitions=False) as dst:
        used = bigdisk.used_bytes(f"{src}p1")
        rx, port = receiver(dst, "--yes")
        tx = Recovery("send", "--code", CODE, "--source", src, "--to", f"127.0.0.1:{port}", "--mode", "used")
        assert tx.wait(300) == 0, tx.stderr
        assert rx.wait(300) == 0, rx.stderr
        sent = tx.event("summary")
        plan = tx.event("plan")
        assert sent and plan and sent["verified"] is True
        assert sent["bytes_read"] < 2 * used  # the old data outside the partition was not read
        assert plan["skipped"] > 62 * bigdisk.GIB
        assert bigdisk.allocated(backing) <= 1.5 * used, (bigdisk.allocated(backing), used)
        with loop_device(backing) as check:
            sh("e2fsck", "-f", "-n", f"{check}p1")
