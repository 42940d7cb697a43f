"""The smoke set against the newest releases pyproject.toml's ranges allow, in a venv of its own.

The rest of the suite runs the locked versions (requirements/test.txt). This
test makes a second venv with whatever the ranges let pip pick today and
runs the tests marked ``smoke`` there (the frame codecs, encrypted clones
over TCP between two hosts, over `--via` and over thunderbolt-net, and a
pipeline's error over `--via`), so an upstream release that breaks us fails
CI, not a user. When it fails: fix the code, or narrow the range in
pyproject.toml and refresh the lock (requirements/refresh.sh); never skip it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.test_lock import LOCKS, direct, read_lock

pytestmark = pytest.mark.slow


def test_the_smoke_set_passes_with_the_newest_releases_the_ranges_allow(tmp_path: Path) -> None:
    venv = tmp_path / "newest"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    wanted = [str(req) for req in direct(test=True)]
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--upgrade", *wanted],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    freeze = subprocess.run([python, "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
    locked = read_lock(LOCKS / "test.txt")
    newer = [
        line
        for line in freeze.splitlines()
        if "==" in line
        and (name := line.split("==")[0].lower().replace("_", "-")) in locked
        and line.split("==")[1] != str(locked[name].version)
    ]
    print("\nnewer than the lock:", ", ".join(newer) or "nothing")
    run = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "smoke", "tests"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
        env={"PATH": f"{venv / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(REPO)},
    )
    assert run.returncode == 0, (
        f"with {', '.join(newer) or 'the locked versions'}:\n{run.stdout[-6000:]}{run.stderr[-2000:]}"
    )
    assert " passed" in run.stdout and " failed" not in run.stdout
