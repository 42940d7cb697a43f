"""Shared test helpers: loop devices, sample disks, and `recovery` processes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

MIB = 1 << 20
CODE = "test-pairing-code"  # given to both sides with --code, as a script would
REPO = Path(__file__).resolve().parent.parent


def sh(*argv: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=check, text=True, capture_output=True, **kw)


def is_root() -> bool:
    return os.geteuid() == 0


def wait_until(condition: Callable[[], object], timeout: float = 10.0, what: str = "", every: float = 0.01) -> None:
    """Poll ``condition()`` until it holds; AssertionError naming ``what`` once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or condition}")
        time.sleep(every)


@contextlib.contextmanager
def loop_device(image: str | Path, *, partitions: bool = True, sector_size: int = 512) -> Iterator[str]:
    """Attach ``image`` to a loop device (with partition nodes) of ``sector_size``-byte logical sectors;
    always detach."""
    dev = sh("losetup", "--find", "--show", "--sector-size", str(sector_size), str(image)).stdout.strip()
    try:
        if partitions:
            sh("partx", "--add", dev, check=False)  # the test kernel has no partition parsers
        yield dev
    finally:
        sh("partx", "--delete", dev, check=False)
        sh("losetup", "--detach", dev, check=False)


@contextlib.contextmanager
def blank_disk(path: Path, size_mib: int) -> Iterator[str]:
    """A zero file of ``size_mib`` MiB at ``path`` on a loop device (no partition nodes): a blank disk."""
    with open(path, "wb") as f:
        f.truncate(size_mib * MIB)
    with loop_device(path, partitions=False) as dev:
        yield dev


@contextlib.contextmanager
def mounted(dev: str, *, readonly: bool = False) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="recovery-mnt-") as mnt:
        sh("mount", *(["-o", "ro"] if readonly else []), dev, mnt)
        try:
            yield Path(mnt)
        finally:
            sh("umount", mnt, check=False)


def fill_random(path: str | Path, size: int, seed: int = 1) -> None:
    """Garbage, as on an old disk without TRIM."""
    rng = random.Random(seed)
    with open(path, "r+b" if os.path.exists(path) else "wb") as f:
        done = 0
        while done < size:
            n = min(4 * MIB, size - done)
            f.write(rng.randbytes(n))
            done += n


def random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def populate(root: Path, seed: int, mib: int) -> None:
    """Real files: text, binary and a few directories."""
    (root / "docs").mkdir(parents=True, exist_ok=True)
    (root / "bin").mkdir(exist_ok=True)
    words = b"alpha beta gamma delta sector block chunk disk cable verify "
    for i in range(mib):
        (root / "docs" / f"note-{i}.txt").write_bytes((words * (MIB // len(words) + 1))[: MIB - i])
        (root / "bin" / f"blob-{i}.bin").write_bytes(random_bytes(MIB // 2 + 4096 * i, seed + i))
    (root / "empty.txt").write_bytes(b"")
    (root / "nested" / "deeper").mkdir(parents=True, exist_ok=True)
    (root / "nested" / "deeper" / "hello.txt").write_text("hello from the source disk\n")


def tree_digests(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_file() and not p.is_symlink():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            out[rel + "/"] = "dir"
    out.pop("lost+found/", None)
    return out


def make_gpt_disk(image: Path, size_mib: int = 128, *, garbage: bool = True) -> None:
    """A GPT disk image with an ext4 (real files) and a FAT partition (needs root).

    The partitions start out full of garbage (``garbage``); the last eighth
    of the disk is unpartitioned and zero.
    """
    ext_mib = size_mib // 2
    fat_mib = size_mib * 3 // 8 - 1
    with open(image, "wb") as f:
        f.truncate(size_mib * MIB)
    if garbage:
        fill_random(image, (1 + ext_mib + fat_mib) * MIB)
    sh(
        "sfdisk",
        "--quiet",
        str(image),
        input=(
            "label: gpt\n"
            f'start=2048, size={ext_mib * 2048}, type=linux, name="root"\n'
            f'size={fat_mib * 2048}, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name="data"\n'
        ),
    )
    with loop_device(image) as dev:
        sh("mkfs.ext4", "-q", "-F", "-E", "nodiscard,lazy_itable_init=0", "-L", "srcroot", f"{dev}p1")
        with mounted(f"{dev}p1") as mnt:
            populate(mnt, seed=7, mib=max(2, ext_mib // 12))
        sh("mkfs.vfat", "-n", "SRCDATA", f"{dev}p2")
        with tempfile.TemporaryDirectory() as tmp:
            populate(Path(tmp), seed=11, mib=2)
            sh(
                "mcopy",
                "-s",
                "-i",
                f"{dev}p2",
                *[str(p) for p in Path(tmp).iterdir()],
                "::/",
                env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
            )


def fat_digests(dev: str) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        sh("mcopy", "-s", "-n", "-i", dev, "::/", tmp, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
        return tree_digests(Path(tmp))


class Recovery:
    """A `python -m recovery ... --json` process whose events are collected."""

    live: ClassVar[list[Recovery]] = []  # killed after each test (see conftest)

    def __init__(
        self,
        *args: str,
        stdin: Any = None,
        stdout: Any = subprocess.PIPE,
        json_mode: bool = True,
        stdio_link: bool = False,
        env: dict[str, str] | None = None,
        prefix: tuple[str, ...] = (),
        module: str = "recovery",
    ) -> None:
        """``stdio_link``: stdout carries the link, so events are read from stderr.
        ``prefix``: run under another command (``ip netns exec NS``); ``module``: what ``python -m`` runs."""
        argv = [*prefix, sys.executable, "-m", module, *args] + (["--json"] if json_mode else [])
        self.proc = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.started = time.monotonic()
        Recovery.live.append(self)
        self.events: list[dict[str, Any]] = []
        self.stderr = ""
        self._cond = threading.Condition()
        self._threads = [threading.Thread(target=self._read_err, daemon=True)]
        self._events_on_stderr = stdio_link
        if not self._events_on_stderr:
            self._threads.append(threading.Thread(target=self._read_out, daemon=True))
        for t in self._threads:
            t.start()

    def _take(self, line: bytes) -> bool:
        try:
            event = json.loads(line)
        except ValueError:
            return False
        if not isinstance(event, dict):
            return False
        event["_at"] = time.monotonic() - self.started  # seconds after the start
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()
        return True

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._take(line)

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if self._events_on_stderr and self._take(line):
                continue
            with self._cond:
                self.stderr += line.decode(errors="replace")

    def wait_event(self, kind: str, timeout: float = 30, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for e in self.events:
                    if e.get("event") == kind and all(e.get(k) == v for k, v in match.items()):
                        return e
                if time.monotonic() > deadline or (self.proc.poll() is not None and not self._pending()):
                    raise AssertionError(f"no {kind} event; events: {self.events[-5:]}; stderr: {self.stderr}")
                self._cond.wait(0.1)

    def _pending(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def wait(self, timeout: float = 120) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            hung = True
        else:
            hung = False
        finally:
            self.kill()  # on a timeout, do not leave it running
        for t in self._threads:
            t.join(5)
        if hung:  # say what it was doing: a hang in CI must be diagnosable from the log alone
            raise AssertionError(
                f"{' '.join(self.proc.args[2:6])} still ran after {timeout:.0f} s; last events: "
                f"{self.events[-5:]}; stderr: {self.stderr[-2000:]}"
            )
        return code

    def wait_durable(self, at_least: int, timeout: float = 60) -> int:
        """Poll this sender's progress until the receiver has flushed ``at_least`` bytes; how many it has."""
        durable = 0

        def enough() -> bool:
            nonlocal durable
            assert self.proc.poll() is None, self.stderr
            durable = max((e.get("durable", 0) for e in self.events if e.get("event") == "progress"), default=0)
            return durable >= at_least

        wait_until(enough, timeout, f"{at_least} bytes durable on the receiver", every=0.05)
        return durable

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]

    def event(self, kind: str) -> dict[str, Any] | None:
        return next((e for e in self.events if e.get("event") == kind), None)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def receiver(target: str, *extra: str) -> tuple[Recovery, int]:
    r = Recovery("receive", "--code", CODE, "--target", target, "--listen", "127.0.0.1:0", *extra)
    port = r.wait_event("listening")["port"]
    return r, int(port)


def same_bytes(a: str | Path, b: str | Path) -> bool:
    """Do two disks or files hold the same bytes (read 4 MiB at a time)?"""
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(4 * MIB), fb.read(4 * MIB)
            if x != y:
                return False
            if not x:
                return True


def b3sum(path: str) -> str:
    return sh("b3sum", "--no-names", path).stdout.strip()


def fit_mounts() -> set[str]:
    """The mount points of fitted clones' views and copies (``recovery-fit-`` folders) now: a test compares
    them with those before it (another run on the machine may have its own)."""
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return {line.split()[4] for line in lines if "recovery-fit-" in line}
