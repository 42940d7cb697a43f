"""recovery/run.py: a program that fails, runs out of time or cannot start is a ToolError, in one line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import recovery
from recovery import run
from recovery.errors import ERRORS_BY_CODE, RecoveryError, ToolError, error_from_code


def test_a_tool_error_has_its_own_code_and_exit_code() -> None:
    codes = [cls.exit_code for cls in set(ERRORS_BY_CODE.values())]
    assert ToolError.code == "tool" and ToolError.exit_code == 15 and codes.count(15) == 1
    assert ToolError.code != RecoveryError.code
    assert type(error_from_code("tool", "`x` failed", "peer")) is ToolError  # the peer's, rebuilt alike


def test_a_failing_program_names_the_command_its_exit_code_and_last_line() -> None:
    with pytest.raises(run.CommandError) as caught:
        run.run([sys.executable, "-c", "import sys; print('first', file=sys.stderr); sys.exit('last words')"])
    e = caught.value
    assert isinstance(e, ToolError) and e.code == "tool" and e.exit_code == 15
    assert e.returncode == 1 and "\n" not in e.message
    assert e.message.startswith(f"`{sys.executable} -c ") and e.message.endswith("failed with exit code 1: last words")


def test_a_program_killed_by_a_signal_says_which() -> None:
    with pytest.raises(run.CommandError, match=r"was killed by SIGKILL$"):
        run.run([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])


def test_a_program_out_of_time_is_stopped_and_named() -> None:
    started = time.monotonic()
    with pytest.raises(ToolError) as caught:
        run.run([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    assert time.monotonic() - started < 10
    assert not isinstance(caught.value, run.CommandError) and caught.value.exit_code == 15
    assert caught.value.message.endswith("did not finish within 0.5 s (stopped)")
    assert caught.value.message.startswith(f"`{sys.executable} -c ")


def test_a_program_that_cannot_start_is_a_tool_error(tmp_path: Path) -> None:
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    for call in (run.run, run.foreground, run.start):
        with pytest.raises(ToolError, match=f"^{re.escape(f'cannot start `{script}`: Permission denied')}$"):
            call([str(script)])


def test_a_failure_with_check_off_is_the_callers_to_judge() -> None:
    assert run.run([sys.executable, "-c", "raise SystemExit(3)"], check=False).returncode == 3


def test_stop_ends_a_started_child_that_ignores_its_stdin() -> None:
    proc = run.start([sys.executable, "-c", "import time; time.sleep(30)"], stderr=subprocess.DEVNULL)
    started = time.monotonic()
    run.stop(proc)
    assert proc.returncode is not None and time.monotonic() - started < 5
    run.stop(proc)  # ended already: nothing to do


def test_start_can_write_stderr_to_a_file_and_give_the_child_its_own_session(tmp_path: Path) -> None:
    with open(tmp_path / "err", "wb") as err:
        proc = run.start(
            [sys.executable, "-c", "import sys; print('said', file=sys.stderr); sys.stdin.read()"],
            stderr=err,
            new_session=True,
        )
    try:
        assert os.getsid(proc.pid) == proc.pid  # a Ctrl-C on our terminal does not reach it
        assert proc.stdin is not None
        proc.stdin.close()  # its stdin is our pipe: closing it ends a child that reads it
        assert proc.wait(10) == 0
    finally:
        run.stop(proc)
    assert (tmp_path / "err").read_text() == "said\n"


# Every way Python has of starting a program; only run.py may use them.
STARTS = re.compile(
    r"\bsubprocess\.(Popen|run|call|check_call|check_output|getoutput|getstatusoutput)\("
    r"|\bos\.(system|popen|fork|spawn\w*|posix_spawn\w*)\(|\bpty\.spawn\(|create_subprocess_\w+\("
)


def test_run_py_is_the_one_way_programs_are_started() -> None:
    package = Path(recovery.__file__).parent
    elsewhere = [
        f"{path.relative_to(package)}:{n}: {line.strip()}"
        for path in sorted(package.rglob("*.py"))
        if path != package / "run.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if STARTS.search(line)
    ]
    assert elsewhere == []


def test_a_program_that_prints_without_end_costs_only_the_tail_kept() -> None:
    """A checker reading a crafted filesystem may print a line per bad inode: 64 MB of it here."""
    printer = "import sys\nfor _ in range(1 << 16): sys.stdout.write('x' * 1023 + '\\n')\nprint('the end')"
    proc = run.run([sys.executable, "-c", printer], keep=4096)
    assert len(proc.stdout) <= 4096 and proc.stdout.endswith(b"the end\n")


@pytest.mark.root
def test_a_confined_program_has_no_privilege_no_network_no_other_process_and_a_memory_bound() -> None:
    probe = (
        "import os, socket\n"
        "status = dict(line.split(':', 1) for line in open('/proc/self/status'))\n"
        "print(os.getuid(), os.getgid(), os.getgroups(), int(status['CapEff'], 16), int(status['NoNewPrivs']))\n"
        "print(sorted(name for _, name in socket.if_nameindex()))\n"
        "import resource; print(resource.getrlimit(resource.RLIMIT_DATA)[0])\n"
        "print('pid', os.getpid())\n"
    )
    python = "/usr/bin/python3"  # the system's: this venv may lie where the unprivileged user cannot go
    out = run.output(run.confined([python, "-c", probe], memory=512 << 20)).splitlines()
    assert out[0] == f"{run.UNPRIVILEGED} {run.UNPRIVILEGED} [] 0 1"
    assert out[1] == "['lo']"  # a network namespace of its own: no interface but its loopback
    assert out[2] == str(512 << 20)
    assert out[3] == "pid 1"  # a PID namespace of its own: it is its first process, and sees no other


@pytest.mark.root
def test_a_confined_program_past_its_time_is_killed_not_left_running() -> None:
    """A checker stuck on a crafted filesystem: the timeout ends it, not only the unshare in front of it."""
    marker = f"{time.time_ns() % 10**9}.5"  # an argument no other sleep has
    with pytest.raises(RecoveryError):
        run.run(run.confined(["/bin/sleep", marker], memory=64 << 20), timeout=1)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _running("sleep", marker):
        time.sleep(0.1)
    assert not _running("sleep", marker)


def _running(name: str, arg: str) -> bool:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) > 1 and argv[0].endswith(name.encode()) and argv[1] == arg.encode():
            return True
    return False
