"""Two network namespaces joined by a veth pair: a stand-in for two hosts on a thunderbolt-net cable."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=check, text=True, capture_output=True)


@contextlib.contextmanager
def cable(ifname: str = "thunderbolt0") -> Iterator[tuple[str, str]]:
    """Namespaces ``(a, b)`` whose veth ends are both called ``ifname``, down, as a fresh cable's are."""
    a, b = f"u4r-{os.getpid()}-a", f"u4r-{os.getpid()}-b"
    try:
        sh("ip", "netns", "add", a)
        sh("ip", "netns", "add", b)
        sh("ip", "link", "add", ifname, "netns", a, "type", "veth", "peer", "name", ifname, "netns", b)
        yield a, b
    finally:
        sh("ip", "netns", "del", a, check=False)  # takes the veth pair with it
        sh("ip", "netns", "del", b, check=False)


def link_info(ns: str, ifname: str) -> dict[str, Any]:
    return json.loads(sh("ip", "-n", ns, "-d", "-j", "link", "show", "dev", ifname).stdout)[0]  # type: ignore[no-any-return]


class Proc:
    """``python -m recovery ... --json`` inside a namespace, its events collected."""

    def __init__(self, ns: str, *args: str) -> None:
        argv = ["ip", "netns", "exec", ns, sys.executable, "-m", "recovery", *args, "--json"]
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.events: list[dict[str, Any]] = []
        self.stderr = ""
        self.started = time.monotonic()
        self._cond = threading.Condition()
        self._threads = [threading.Thread(target=self._out, daemon=True),
                         threading.Thread(target=self._err, daemon=True)]
        for t in self._threads:
            t.start()

    def _out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                event["_at"] = time.monotonic() - self.started
                self.events.append(event)
                self._cond.notify_all()

    def _err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.stderr += line.decode(errors="replace")

    def wait_event(self, kind: str, timeout: float = 30, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for e in self.events:
                    if e.get("event") == kind and all(e.get(k) == v for k, v in match.items()):
                        return e
                if time.monotonic() > deadline or (self.proc.poll() is not None and not self._threads[0].is_alive()):
                    raise AssertionError(f"no {kind} event; last events {self.events[-3:]}; stderr: {self.stderr}")
                self._cond.wait(0.1)

    def event(self, kind: str) -> dict[str, Any] | None:
        return next((e for e in self.events if e.get("event") == kind), None)

    def wait(self, timeout: float = 60) -> int:
        try:
            code = self.proc.wait(timeout)
        finally:
            self.kill()
        for t in self._threads:
            t.join(5)
        return code

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
