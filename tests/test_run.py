"""recovery/run.py: a program that fails, runs out of time or cannot start is a ToolError, in one line."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest

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

