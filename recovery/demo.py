"""What both demos share: the sample disk, the tools it needs, starting the other process and reading its events.

The sample disk is a GPT image with real ext4 and FAT filesystems, built
without root and without mounting anything: sfdisk writes the table,
``mkfs.ext4 -d`` fills the ext4 from a directory (with an ``os-release``,
so it reads as a Linux system), ``mkfs.vfat --offset`` and mtools' ``mcopy``
make and fill the FAT. The content is generated from a fixed seed, so every
run clones the same bytes.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import recovery
from recovery import run
from recovery.errors import LinkError, MissingToolError
from recovery.events import parse_line

MIB = 1 << 20
# The tools the sample disk needs, with their Debian packages.
NEEDED = {"sfdisk": "fdisk", "mkfs.ext4": "e2fsprogs", "mkfs.vfat": "dosfstools", "mcopy": "mtools"}
DEMO_RATE = 12 * MIB  # bytes per second each way on the wizard demo's link: a slow cable, so there is time to look
OS_RELEASE = 'PRETTY_NAME="Demo Linux 1.0 (sample disk)"\nNAME="Demo Linux"\nID=demo\n'
SAMPLE_HOSTNAME = "demo-laptop"  # the sample system's /etc/hostname


def check_tools() -> None:
    """Say at once (one line) which tools the demo lacks and how to install them."""
    missing = [tool for tool in NEEDED if run.find_tool(tool) is None]
    if missing:
        packages = " ".join(sorted({NEEDED[t] for t in missing}))
        raise MissingToolError(
            f"the demo needs {', '.join(f'{t} ({NEEDED[t]})' for t in missing)}",
            hint=f"install them: apt install {packages}",
        )


def start_recovery(
    args: Sequence[str], *, stderr: run.Redirect = subprocess.DEVNULL, new_session: bool = False
) -> subprocess.Popen[bytes]:
    """Start ``python -m recovery ARGS`` from this same copy of the program (the demo's other process),
    its stdout a pipe for :class:`EventLines`, its stdin a pipe (see :func:`run.start`)."""
    root = str(Path(recovery.__file__).resolve().parent.parent)
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    return run.start(
        [sys.executable, "-m", "recovery", *args],
        env={"PYTHONPATH": path},
        stdout=subprocess.PIPE,
        stderr=stderr,
        new_session=new_session,
    )


class EventLines:
    """The ``--json`` events of a child process, collected by a thread (and copied to ``copy``)."""

    def __init__(self, proc: subprocess.Popen[bytes], name: str, copy: BinaryIO | None = None) -> None:
        self.proc, self.name, self.copy = proc, name, copy
        self.events: list[dict[str, Any]] = []
        self.ended = False
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, name=f"events-{name}", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            if self.copy is not None:
                self.copy.write(raw)
                self.copy.flush()
            event = parse_line(raw)
            if event is not None:
                with self.cond:
                    self.events.append(event)
                    self.cond.notify_all()
        with self.cond:
            self.ended = True
            self.cond.notify_all()

    def find(self, kind: str) -> dict[str, Any] | None:
        with self.cond:
            return next((e for e in self.events if e["event"] == kind), None)

    def last(self, kind: str) -> dict[str, Any] | None:
        """The latest event named ``kind`` so far."""
        with self.cond:
            return next((e for e in reversed(self.events) if e["event"] == kind), None)

    def wait_for(self, kind: str, timeout: float) -> dict[str, Any]:
        """The first event named ``kind``; :class:`LinkError` if the process ends or time runs out first."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = next((e for e in self.events if e["event"] == kind), None)
                if found:
                    return found
                if self.ended or time.monotonic() > deadline:
                    err = next((e for e in self.events if e["event"] == "error"), None)
                    raise LinkError(f"{self.name} did not say {kind!r}" + (f": {err['message']}" if err else ""))
                self.cond.wait(0.2)


WORDS = (
    "disk backup restore cable sector block chunk verify digest stream partition "
    "filesystem journal inode superblock cluster volume mirror rescue boot kernel "
    "thunderbolt recovery clone image zero hash compress write read flush link"
).split()


def _text(rng: random.Random, size: int) -> bytes:
    out = []
    total = 0
    while total < size:
        line = " ".join(rng.choice(WORDS) for _ in range(12)) + ".\n"
        out.append(line)
        total += len(line)
    return "".join(out).encode()[:size]


def _populate(root: Path, rng: random.Random, text_mib: int, random_mib: int) -> None:
    (root / "documents").mkdir(parents=True)
    (root / "media").mkdir()
    (root / "README.txt").write_text("A sample disk made by `recovery demo`.\n")
    for i in range(text_mib):
        (root / "documents" / f"report-{i:03d}.txt").write_bytes(_text(rng, MIB))
    for i in range(random_mib // 2):
        (root / "media" / f"photo-{i:03d}.jpg").write_bytes(rng.randbytes(2 * MIB))


def build_sample_disk(path: str, size_mib: int = 256) -> None:
    """Write a sample disk image at ``path`` (about half of it in use)."""
    if size_mib < 64:
        raise ValueError("the sample disk needs at least 64 MiB")
    sector = 512
    ext_start = MIB // sector
    ext_sectors = (size_mib * 5 // 8) * MIB // sector
    fat_start = ext_start + ext_sectors
    fat_sectors = (size_mib * MIB - 2 * MIB) // sector - ext_sectors
    with open(path, "wb") as f:
        f.truncate(size_mib * MIB)
    script = (
        "label: gpt\n"
        f'start={ext_start}, size={ext_sectors}, type=linux, name="demo-root"\n'
        f'start={fat_start}, size={fat_sectors}, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name="demo-data"\n'
    )
    run.run(["sfdisk", "--quiet", path], input=script.encode())
    rng = random.Random(20261125)
    with tempfile.TemporaryDirectory(prefix="recovery-sample-") as tmp:
        root = Path(tmp) / "root"
        _populate(root, rng, text_mib=size_mib // 8, random_mib=size_mib // 16)
        (root / "etc").mkdir()
        (root / "etc" / "os-release").write_text(OS_RELEASE)
        (root / "etc" / "hostname").write_text(f"{SAMPLE_HOSTNAME}\n")
        run.run(
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-b",
                "4096",
                "-L",
                "demo-root",
                "-d",
                str(root),
                "-E",
                f"offset={ext_start * sector}",
                path,
                f"{ext_sectors * sector // 1024}k",
            ]
        )
        fat_bits = "32" if fat_sectors * sector >= 256 * MIB else "16"  # mkfs.vfat's own pick can fail
        run.run(
            [
                "mkfs.vfat",
                "-F",
                fat_bits,
                "--offset",
                str(fat_start),
                "-n",
                "DEMO-DATA",
                path,
                str(fat_sectors * sector // 1024),
            ]
        )
        data = Path(tmp) / "data"
        _populate(data, rng, text_mib=size_mib // 32, random_mib=size_mib // 32)
        image = f"{path}@@{fat_start * sector}"
        env = {"MTOOLS_SKIP_CHECK": "1"}
        run.run(["mcopy", "-s", "-i", image, *[str(p) for p in sorted(data.iterdir())], "::/"], env=env)
    os.sync()
