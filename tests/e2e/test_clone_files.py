"""End to end with image files as source and target (no root needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recovery.demo import build_sample_disk
from recovery.engine.clone.compare import compare
from tests.helpers import CODE, MIB, Recovery, b3sum, receiver


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("files") / "sample.img"
    build_sample_disk(str(path), 96)
    return path


def test_image_to_new_sparse_image_exact(sample: Path, tmp_path: Path) -> None:
    target = tmp_path / "copy.img"
    rx, port = receiver(str(target))
    tx = Recovery("send", "--code", CODE, "--source", str(sample), "--to", f"127.0.0.1:{port}", "--mode", "exact")
    assert tx.wait() == 0, tx.stderr
    assert rx.wait() == 0, rx.stderr
    assert compare(str(sample), str(target)).identical
    summary = rx.event("summary")
    assert summary and summary["image_digest"] == b3sum(str(sample))
    # Zero chunks became holes: the copy takes less space than its size.
    st = os.stat(target)
    assert st.st_size == sample.stat().st_size
    assert st.st_blocks * 512 < st.st_size - 16 * MIB
    assert summary["zero_bytes"] > 16 * MIB


def test_stdio_link_through_a_real_pipe(sample: Path, tmp_path: Path) -> None:
    """`send --to - | receive --from -`, with the receiver's answers in a second pipe."""
    target = tmp_path / "piped.img"
    back_r, back_w = os.pipe()
    send = Recovery("send", "--source", str(sample), "--to", "-", stdin=back_r, stdio_link=True)
    recv = Recovery(
        "receive", "--target", str(target), "--from", "-", stdin=send.proc.stdout, stdout=back_w, stdio_link=True
    )
    os.close(back_r)
    os.close(back_w)
    assert send.proc.stdout is not None
    send.proc.stdout.close()
    assert send.wait() == 0, send.stderr
    assert recv.wait() == 0, recv.stderr
    for side in (send, recv):
        summary = side.event("summary")
        assert summary and summary["verified"] is True
    assert compare(str(sample), str(target)).identical
