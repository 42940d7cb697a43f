"""The commands around the wizard: `recovery` alone, `tui`, `agent`, `demo --headless`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import recovery
from recovery.engine.clone.compare import compare
from recovery.engine.peer.clones import CloneSession
from recovery.engine.peer.jobs import CloneChoice, JobEnded, offered_disks
from recovery.engine.peer.session import handshake
from recovery.link import tcp

ROOT = Path(recovery.__file__).resolve().parent.parent


def recovery_cmd(
    *args: str, timeout: float = 120, stdin: int | None = subprocess.DEVNULL
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "recovery", *args], capture_output=True, text=True, timeout=timeout, env=env, stdin=stdin
    )


def test_recovery_alone_without_a_terminal_prints_help() -> None:
    r = recovery_cmd()
    assert r.returncode == 0 and "usage: recovery" in r.stdout and "tui" in r.stdout


def test_the_wizard_needs_a_terminal() -> None:
    r = recovery_cmd("tui")
    assert r.returncode == 2 and "the wizard needs a terminal" in r.stderr
    assert "recovery agent" in r.stderr


def test_the_agent_refuses_a_missing_disk(tmp_path: Path) -> None:
    r = recovery_cmd("agent", "--disk", str(tmp_path / "nothing.img"))
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_the_agent_serves_one_clone_then_exits(tmp_path: Path, source_image: Path, blank_image: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "recovery",
            "agent",
            "--listen",
            "127.0.0.1:0",
            "--disk",
            str(blank_image),
            "--name",
            "far",
            "--once",
            "--json",
            "--log-dir",
            str(tmp_path / "logs"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert agent.stdout is not None
        listening = json.loads(agent.stdout.readline())
        assert listening["event"] == "listening"
        pairing = json.loads(agent.stdout.readline())
        assert pairing["event"] == "pairing" and len(pairing["code"]) == 9  # NNNN-NNNN, made by the agent
        conn = tcp.connect(tcp.Endpoint("127.0.0.1", listening["port"]))
        link = handshake(conn, "wizard", code=pairing["code"], hostname="near")
        assert link.theirs.host.hostname == "far" and link.role == "driver"
        ended: list[JobEnded] = []
        session = CloneSession(
            link,
            candidates=lambda: [str(source_image)],
            log_dir=tmp_path / "near-logs",
            sink=lambda e: ended.append(e) if isinstance(e, JobEnded) else None,
        )
        thread = threading.Thread(target=session.serve, kwargs={"max_clones": 1}, daemon=True)
        thread.start()
        session.submit(CloneChoice(send=True, source=offered_disks([str(source_image)])[0], target=link.inventory[0]))
        thread.join(60)
        assert ended and ended[0].ok
        assert agent.wait(30) == 0
        out = [json.loads(line) for line in agent.stdout]
        kinds = [e["event"] for e in out]
        assert "job" in kinds and "summary" in kinds and kinds[-1] == "job_end"
        assert compare(str(source_image), str(blank_image)).identical
        assert list((tmp_path / "logs").glob("clone-*-receiver.jsonl"))
    finally:
        if agent.poll() is None:
            agent.terminate()
            agent.wait(10)


def test_the_headless_demo_still_works_without_a_terminal() -> None:
    started = time.monotonic()
    r = recovery_cmd("demo", "--size", "64")
    assert r.returncode == 0, r.stderr
    assert "Clone complete and verified." in r.stdout and "byte-identical" in r.stdout
    assert time.monotonic() - started < 60


def test_a_usage_error_never_shows_a_traceback_even_with_debug() -> None:
    for argv in (["send", "--debug", "--source", "/dev/null"], ["--debug", "send", "--bogus"], ["--debug", "tui"]):
        r = recovery_cmd(*argv)
        assert r.returncode == 2, (argv, r.stderr)
        assert "Traceback" not in r.stderr and r.stderr.startswith("error: "), (argv, r.stderr)
    r = recovery_cmd("send", "--debug", "--source", "/dev/null")
    assert "--debug goes before the command" in r.stderr


def test_a_failing_tool_is_exit_15_with_the_command_and_debug_shows_where(tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sfdisk").write_text("#!/bin/sh\necho 'sfdisk: cannot do that' >&2\nexit 4\n")
    (fake / "sfdisk").chmod(0o755)
    env = dict(os.environ, PYTHONPATH=str(ROOT), PATH=f"{fake}{os.pathsep}{os.environ['PATH']}")
    argv = [sys.executable, "-m", "recovery", "demo", "--headless", "--size", "64", "--dir", str(tmp_path / "d")]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert r.returncode == 15, r.stderr
    error = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "Traceback" not in r.stderr
    assert f"{fake}/sfdisk --quiet" in error[0] and error[0].endswith("failed with exit code 4: sfdisk: cannot do that")
    r = subprocess.run(
        [argv[0], *argv[1:3], "--debug", *argv[3:]],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 15 and "Traceback" in r.stderr and "CommandError" in r.stderr
