"""A clone's health: no sleep while it runs, and what the kernel complained about meanwhile.

Suspend stops and restarts the USB4STREAM rings without accounting for the
data in flight, so a clone holds a systemd sleep inhibitor (``systemd-inhibit
--what=sleep``, through logind); without logind it goes on with a warning.
The Thunderbolt drivers report trouble only in the kernel log: corrupt frames
(``RX CRC error``: the bytes still reach the link), thunderbolt-net losing
its receive HopID (``failed to allocate Rx HopID``), HopIDs released that
were never held (``ida_free called``). Those lines are counted from
``/dev/kmsg`` (or ``dmesg`` before and after), each change is an event in
the clone's log, and the summary carries the counts when any changed.

:func:`watched_clone` is the hook: it wraps a function that runs one clone
and takes an event ``sink``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import select
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from recovery import events, run
from recovery.errors import RecoveryError

KMSG = "/dev/kmsg"
SYSTEM_BUS = "/run/dbus/system_bus_socket"  # logind answers on the system bus; without it nobody does
COUNTED = {  # summary key -> what the kernel line contains
    "rx_crc_errors": "RX CRC error",
    "rx_hopid_failures": "failed to allocate Rx HopID",
    "ida_free_warnings": "ida_free called",
}
POLL_MS = 500
STOP_WAIT = 2.0

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class KernelLogNote(events.Event):
    """A counted kernel message appeared during the clone."""

    kind: ClassVar[str] = "kernel_log"
    counters: dict[str, int]  # totals since the clone started
    message: str  # the kernel's line


def count(line: str) -> str | None:
    """The counter a kernel message belongs to, if any."""
    return next((key for key, text in COUNTED.items() if text in line), None)


def kmsg_text(record: bytes) -> str:
    """The message of one /dev/kmsg record (``prio,seq,usec,flags;text``, continuation lines dropped)."""
    first = record.split(b"\n", 1)[0].decode(errors="replace")
    return first.split(";", 1)[1] if ";" in first else first


class KernelLog:
    """Counts the lines of :data:`COUNTED` the kernel logs from :meth:`start` on."""

    def __init__(self, path: str = KMSG, opener: Callable[[], int] | None = None) -> None:
        self.path = path
        self.opener = opener  # a descriptor with /dev/kmsg's records (tests); None: open ``path``
        self.counters = dict.fromkeys(COUNTED, 0)
        self.notes: list[KernelLogNote] = []
        self.problem: str | None = None  # why the log could not be watched
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._before: dict[str, int] | None = None  # dmesg's counts at the start, when kmsg cannot be read

    def start(self) -> None:
        try:
            fd = self.opener() if self.opener else self._open_kmsg()
        except OSError as e:
            self._before = self._dmesg_counts()
            if self._before is None:
                self.problem = f"cannot read the kernel log ({e.strerror})"
            return
        self._thread = threading.Thread(target=self._read, args=(fd,), name="kernel-log", daemon=True)
        self._thread.start()

    def _open_kmsg(self) -> int:
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        os.lseek(fd, 0, os.SEEK_END)  # only what comes from now on
        return fd

    def _read(self, fd: int) -> None:
        os.set_blocking(fd, False)
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        pending = b""
        try:
            while not self._stop.is_set():
                if not poller.poll(POLL_MS):
                    continue
                try:
                    data = os.read(fd, 8192)  # /dev/kmsg: one record per read
                except BlockingIOError:
                    continue
                except BrokenPipeError:
                    continue  # records were overwritten before we read them
                if not data:
                    return
                *records, pending = (pending + data).split(b"\n")
                for record in records:
                    if record and not record.startswith(b" "):
                        self._saw(kmsg_text(record))
        finally:
            os.close(fd)

    def _saw(self, line: str) -> None:
        key = count(line)
        if key is None:
            return
        with self._lock:
            self.counters[key] += 1
            self.notes.append(KernelLogNote(dict(self.counters), line.strip()))

    def take_notes(self) -> list[KernelLogNote]:
        with self._lock:
            notes, self.notes = self.notes, []
        return notes

    def stop(self) -> dict[str, int]:
        """The counts since :meth:`start`, only those that changed."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(STOP_WAIT)
        elif self._before is not None:
            after = self._dmesg_counts() or self._before
            with self._lock:
                for key in COUNTED:
                    self.counters[key] = max(0, after[key] - self._before[key])
        return {k: v for k, v in self.counters.items() if v}

    @staticmethod
    def _dmesg_counts() -> dict[str, int] | None:
        try:
            text = run.output(["dmesg"], timeout=10)
        except RecoveryError:
            return None
        counts = dict.fromkeys(COUNTED, 0)
        for line in text.splitlines():
            key = count(line)
            if key:
                counts[key] += 1
        return counts


class SleepInhibitor:
    """``systemd-inhibit --what=sleep`` around a command that lives until we close its stdin."""

    def __init__(self, why: str = "a disk is being cloned") -> None:
        self.why = why
        self.proc: subprocess.Popen[bytes] | None = None
        self.problem: str | None = None
        self.stopped = False

    def start(self) -> None:
        if run.find_tool("systemd-inhibit") is None:
            self.problem = "systemd-inhibit is not installed"
            return
        if not os.path.exists(SYSTEM_BUS):
            self.problem = "logind is not running: there is no system D-Bus"
            return
        try:
            self.proc = run.start(
                [
                    "systemd-inhibit",
                    "--what=sleep:idle",
                    "--who=usb4-recovery",
                    f"--why={self.why}",
                    "--mode=block",
                    "cat",
                ]
            )
        except (OSError, RecoveryError) as e:
            self.problem = str(e)

    def check(self) -> str | None:
        """Why the inhibitor is not held (logind refused, or is not there), once it is known."""
        if self.problem is None and not self.stopped and self.proc is not None and self.proc.poll() is not None:
            err = self.proc.stderr.read().decode(errors="replace").strip() if self.proc.stderr else ""
            self.problem = err.splitlines()[-1] if err else f"systemd-inhibit exited with {self.proc.returncode}"
        return self.problem

    def stop(self) -> None:
        if self.proc is None or self.stopped:
            return
        self.stopped = True
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()  # cat ends, and with it the inhibitor
            except OSError:
                pass
        try:
            self.proc.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()


class Health:
    """Everything :func:`watched_clone` does around one clone; its :meth:`sink` wraps the clone's."""

    def __init__(
        self, sink: events.EventSink, log: KernelLog | None = None, inhibitor: SleepInhibitor | None = None
    ) -> None:
        self.outer = sink
        self.log = log or KernelLog()
        self.inhibitor = inhibitor or SleepInhibitor()
        self.warned = False
        self.counters: dict[str, int] = {}

    def __enter__(self) -> Health:
        self.inhibitor.start()
        self.log.start()
        if self.log.problem:
            self.outer(events.Warning(f"kernel log not watched: {self.log.problem}"))
        return self

    def __exit__(self, *exc: object) -> None:
        self.counters = self.log.stop()
        self._flush()
        self.inhibitor.stop()

    def _flush(self) -> None:
        problem = self.inhibitor.check()
        if problem and not self.warned:
            self.warned = True
            self.outer(
                events.Warning(f"no sleep inhibitor held ({problem}): do not let this machine suspend during the clone")
            )
        for note in self.log.take_notes():
            self.outer(note)

    def sink(self, event: events.Event) -> None:
        self._flush()
        self.outer(self.amend(event))

    def amend(self, event: Any) -> Any:
        """A summary with the kernel-log counts so far (when any changed); anything else unchanged."""
        if isinstance(event, events.Summary):
            counts = {k: v for k, v in self.log.counters.items() if v} or self.counters
            if counts:
                return dataclasses.replace(event, kernel_log=dict(counts))
        return event


HEALTH: Callable[[events.EventSink], Health] = Health  # tests point it at an emulated kernel log


def watched_clone(fn: F) -> F:
    """Run ``fn`` (one clone; it takes ``sink``) with a sleep inhibitor and the kernel log watched."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        health = HEALTH(bound.arguments["sink"])
        bound.arguments["sink"] = health.sink
        with health:
            result = fn(*bound.args, **bound.kwargs)
        return health.amend(result)

    return wrapper  # type: ignore[return-value]
