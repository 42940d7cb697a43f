"""`recovery verify`, and Ctrl-C on one side cancelling the other cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from recovery.errors import INTERRUPTED_EXIT_CODE, CancelledError, VerificationError
from tests.helpers import CODE, MIB, REPO, Recovery, b3sum, random_bytes, receiver


def verify(a: Path, b: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recovery", "verify", str(a), str(b), "--chunk-size", "1M", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )


def test_verify_names_the_ranges_that_differ(tmp_path: Path) -> None:
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    data = random_bytes(8 * MIB, 5)
    a.write_bytes(data)
    b.write_bytes(data)
    same = verify(a, b)
    assert same.returncode == 0
    body = json.loads(same.stdout)
    assert body["identical"] and body["source_digest"] == body["target_digest"] == b3sum(str(a))
    damaged = bytearray(data)
    damaged[3 * MIB + 5] ^= 1
    damaged[3 * MIB + 2 * MIB // 3] ^= 1
    damaged[6 * MIB] ^= 1
    b.write_bytes(bytes(damaged))
    diff = verify(a, b)
    assert diff.returncode == VerificationError.exit_code
    assert json.loads(diff.stdout.splitlines()[0])["differences"] == [[3 * MIB, MIB], [6 * MIB, MIB]]
    assert "differs" in diff.stderr and "Traceback" not in diff.stderr


@pytest.mark.root
def test_ctrl_c_on_the_sender_cancels_the_receiver(source_loop: str, blank_loop: str) -> None:
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
        "exact",
        "--chunk-size",
        "256K",
    )
    tx.wait_event("phase", name="transfer")
    rx.proc.send_signal(signal.SIGSTOP)  # hold the transfer so the interrupt lands mid-stream
    tx.proc.send_signal(signal.SIGINT)
    rx.proc.send_signal(signal.SIGCONT)
    assert tx.wait() == INTERRUPTED_EXIT_CODE
    assert rx.wait() == CancelledError.exit_code
    err = rx.event("error")
    assert err and "the peer cancelled: interrupted by the user" in err["message"]
    assert rx.event("summary") is None
    assert "Traceback" not in tx.stderr + rx.stderr


@pytest.mark.parametrize(
    "args, words",
    [
        (("--source", "/nonexistent"), "does not exist"),
        (("--source", "/etc"), "neither a block device nor a regular file"),
        (("--source", "/etc/hostname", "--chunk-size", "5000"), "multiple of 4 KiB"),
    ],
)
def test_bad_sender_input_fails_before_connecting(args: tuple[str, ...], words: str) -> None:
    # Port 9 on loopback has no listener: reaching the link would say "cannot connect".
    r = Recovery("send", "--code", CODE, *args, "--to", "127.0.0.1:9")
    assert r.wait(30) == 2
    error = r.event("error")
    assert error and words in error["message"]
    assert r.event("phase") is None and "Traceback" not in r.stderr
