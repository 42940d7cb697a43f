"""The first error is the one both users see, on every link, and what the target holds is said.

Real processes: a thin target (a loop device over a sparse file on a small
tmpfs, as a thin-provisioned volume) that runs out of space mid-clone, over
`--via` and over TCP; an image file whose filesystem cannot take the clone,
refused before the first byte; resume hints only where a journal holds the
clone, naming it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery.errors import LinkError, RefusedError, TargetWriteError
from tests.e2e.relay import Relay
from tests.helpers import CODE, MIB, REPO, Recovery, fill_random, loop_device, receiver, sh

pytestmark = pytest.mark.root
RESUME_WORDS = "run the same commands again"


@contextlib.contextmanager
def small_tmpfs(path: Path, mib: int) -> Iterator[Path]:
    path.mkdir()
    sh("mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(path))
    try:
        yield path
    finally:
        sh("umount", "-l", str(path), check=False)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """48 MiB of data that neither compresses nor is zero: every byte must be stored."""
    path = tmp_path / "source.img"
    fill_random(path, 48 * MIB, seed=11)
    return path


@pytest.fixture
def thin_target(tmp_path: Path) -> Iterator[str]:
    """A 48 MiB disk whose storage holds only 16 MiB: writes past that fail with ENOSPC."""
    with small_tmpfs(tmp_path / "thin", 16) as room:
        backing = room / "thin.img"
        with open(backing, "wb") as f:
            f.truncate(48 * MIB)
        with loop_device(backing, partitions=False) as dev:
            yield dev


def no_resume_hint(*outputs: str) -> None:
    for text in outputs:
        assert RESUME_WORDS not in text, text


@pytest.mark.smoke
def test_a_target_that_fills_up_over_via_is_named_on_both_sides(source: Path, thin_target: str) -> None:
    """Over stdio the pipeline's error used to abort the whole pipe, and both sides said 'link closed'."""
    command = f"{sys.executable} -m recovery receive --target {thin_target} --from - --yes"
    tx = Recovery(
        "send",
        "--source",
        str(source),
        "--via",
        command,
        "--mode",
        "exact",
        "--level",
        "0",
        env={"PYTHONPATH": str(REPO)},
    )
    assert tx.wait() == TargetWriteError.exit_code, tx.stderr
    error = tx.event("error")
    assert error and error["code"] == "target_write" and error["peer"], error
    assert thin_target in error["message"] and "No space left on device" in error["message"], error
    # The receiver's own line reaches the same terminal (ssh passes its stderr on): the same cause.
    receiver_lines = [line for line in tx.stderr.splitlines() if line.startswith("error:")]
    assert any(thin_target in line and "No space left" in line for line in receiver_lines), tx.stderr
    assert "link" not in error["message"], error
    no_resume_hint(tx.stderr, error.get("hint") or "")


def test_a_target_that_fills_up_over_tcp_is_named_on_both_sides(source: Path, thin_target: str) -> None:
    rx, port = receiver(thin_target, "--yes")
    tx = Recovery(
        "send",
        "--code",
        CODE,
        "--source",
        str(source),
        "--to",
        f"127.0.0.1:{port}",
        "--mode",
        "exact",
        "--level",
        "0",
        "--encrypt",
    )
    assert (tx.wait(), rx.wait()) == (TargetWriteError.exit_code,) * 2, (tx.stderr, rx.stderr)
    mine, theirs = rx.event("error"), tx.event("error")
    assert mine and theirs and mine["code"] == theirs["code"] == "target_write"
    assert mine["message"] == theirs["message"] and mine["peer"] is None and theirs["peer"]
    assert "No space left on device" in mine["message"]
    assert tx.error_lines()[0].startswith(f"error: on {theirs['peer']}: cannot write {thin_target}")
    no_resume_hint(rx.stderr, tx.stderr)


def test_an_image_file_that_cannot_fit_is_refused_before_the_first_byte(source: Path, tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "small", 24) as room:
        target = room / "copy.img"
        rx, port = receiver(str(target))
        tx = Recovery("send", "--code", CODE, "--source", str(source), "--to", f"127.0.0.1:{port}", "--mode", "exact")
        assert (tx.wait(), rx.wait()) == (RefusedError.exit_code,) * 2, (tx.stderr, rx.stderr)
        error = rx.event("error")
        assert error and "cannot hold the clone" in error["message"] and "24.0 MiB free" in error["message"]
        assert f"({48 * MIB} bytes)" in error["message"] and "used mode" in (error["hint"] or "")
        assert "cannot hold the clone" in tx.error_lines()[0]
        assert not target.exists() and os.listdir(room) == []  # nothing was written, nothing is left
        assert not [e for e in tx.events + rx.events if e.get("event") == "phase" and e.get("name") == "transfer"]


@pytest.mark.parametrize("journal", [True, False], ids=["journal", "no-journal"])
def test_the_resume_hint_names_the_journal_and_only_when_there_is_one(
    source: Path, tmp_path: Path, log_dir: Path, journal: bool
) -> None:
    target = tmp_path / "target.img"
    with open(target, "wb") as f:
        f.truncate(48 * MIB)
    with loop_device(target, partitions=False) as dst:
        rx = Recovery(
            "receive",
            "--code",
            CODE,
            "--target",
            dst,
            "--listen",
            "127.0.0.1:0",
            "--yes",
            "--timeout",
            "5",
            *([] if journal else ["--no-journal"]),
        )
        relay = Relay(rx.wait_event("listening")["port"])
        relay.rate = 8e6
        tx = Recovery(
            "send",
            "--code",
            CODE,
            "--source",
            str(source),
            "--to",
            f"127.0.0.1:{relay.port}",
            "--mode",
            "exact",
            "--chunk-size",
            "1M",
            "--level",
            "0",
            "--timeout",
            "5",
        )
        deadline = time.monotonic() + 60
        while not any(e.get("durable") for e in tx.events if e.get("event") == "progress"):
            assert tx.proc.poll() is None and time.monotonic() < deadline, tx.stderr
            time.sleep(0.05)
        relay.cut()
        assert (tx.wait(30), rx.wait(30)) == (LinkError.exit_code,) * 2, (tx.stderr, rx.stderr)
        relay.close()
    journals = list(log_dir.glob("resume-*.journal"))
    if not journal:
        assert journals == []
        no_resume_hint(tx.stderr, rx.stderr)
        return
    [path] = journals
    for side in (tx, rx):
        assert RESUME_WORDS in side.stderr and str(path) in side.stderr, side.stderr
