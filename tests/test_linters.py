"""Linters as tests, so CI keeps them true."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPO


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), cwd=REPO, capture_output=True, text=True)


def test_ruff() -> None:
    r = run(sys.executable, "-m", "ruff", "check", "recovery", "tests")
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_format() -> None:
    r = run(sys.executable, "-m", "ruff", "format", "--check", "recovery", "tests")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy() -> None:
    r = run(sys.executable, "-m", "mypy")
    assert r.returncode == 0, r.stdout + r.stderr


def test_shellcheck() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (./setup.sh --dev installs it)")
    scripts = [str(p) for p in REPO.rglob("*.sh") if ".venv" not in p.parts] + [str(REPO / ".ci" / "run")]
    r = run("shellcheck", *scripts)
    assert r.returncode == 0, r.stdout + r.stderr
