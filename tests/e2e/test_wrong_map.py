"""A used-block map that is wrong is caught from the target: exit 5, never "verified".

Read-back only re-reads what was sent, so it cannot see a block the map left
out; the filesystem check on the target must. The map comes from a test
double of partclone (tests/e2e/fake_partclone.py) that drops group 0's
inode table.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from recovery.errors import VerificationError
from tests.helpers import CODE, REPO, Recovery, receiver

pytestmark = pytest.mark.root


def fake_partclone(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "partclone.extfs"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {REPO / "tests/e2e/fake_partclone.py"} "$@"\n')
    wrapper.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_a_map_missing_metadata_fails_verification(source_loop: str, blank_loop: str, tmp_path: Path) -> None:
    rx, port = receiver(blank_loop, "--yes")
    tx = Recovery(
        "send",
        "--code",
        CODE,
        "--source",
        source_loop,
        "--to",
        f"127.0.0.1:{port}",
        "--mode",
        "used",
        env=fake_partclone(tmp_path),
    )
    assert tx.wait() == VerificationError.exit_code, tx.stderr
    assert rx.wait() == VerificationError.exit_code, rx.stderr
    for side in (tx, rx):
        summary, error = side.event("summary"), side.event("error")
        assert summary and summary["verified"] is False
        assert summary["mismatches"] == []  # the read-back alone found nothing wrong
        failed = [(c["number"], c["check"]) for c in summary["checks"] if c["ok"] is False]
        assert failed == [(1, "e2fsck -fn")]
        assert error and error["code"] == "verify_failed"
        assert "not a faithful filesystem" in error["message"] and "e2fsck -fn FAILED" in error["message"]


def test_an_image_file_that_fails_verification_is_kept_under_a_name_that_says_so(
    source_loop: str, tmp_path: Path
) -> None:
    """The summary names what differs in it: the file stays for a look, never under the good copy's name."""
    target = tmp_path / "copy.img"
    rx, port = receiver(str(target))
    tx = Recovery(
        "send",
        "--code",
        CODE,
        "--source",
        source_loop,
        "--to",
        f"127.0.0.1:{port}",
        "--mode",
        "used",
        env=fake_partclone(tmp_path),
    )
    assert (tx.wait(), rx.wait()) == (VerificationError.exit_code,) * 2, (tx.stderr, rx.stderr)
    aside = Path(f"{target}.unverified")
    assert not target.exists() and aside.stat().st_size > 0
    for side in (tx, rx):
        error = side.event("error")
        assert error and f"the image file is kept as {aside}, NOT a verified copy" in error["message"]
