"""The serving side's pairing code, and the count of wrong tries against it.

One :class:`CodeGuard` per serving machine (a receiver, an agent, a wizard),
shared by every connection that tries to pair with it:

- one attempt at a time: a second peer trying meanwhile is told "busy", so
  many parallel connections give an attacker no more guesses than one;
- a code this machine made (:func:`recovery.protocol.codes.generate`) is
  replaced by a new one after :data:`MAX_TRIES` wrong tries, so a typo is
  forgiven but guessing gets nowhere; the new code is announced;
- after :data:`MAX_TRIES` wrong tries in a row (whatever the code), each
  further try must wait twice as long as the one before, up to
  :data:`MAX_LOCK` seconds: a code given with ``--code`` stays, so it is
  rate-limited instead.

A success starts the count again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from recovery.protocol import codes

MAX_TRIES = 3
MAX_LOCK = 300.0


@dataclass(frozen=True)
class Admission:
    """What :meth:`CodeGuard.admit` decided for one attempt."""

    secret: bytes | None  # the code's bytes to answer with; None: refuse
    reason: str = ""  # "busy" or "locked" when refused
    message: str = ""


class CodeGuard:
    def __init__(self, code: str | None = None, *, on_new_code: Callable[[str, str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.given = code is not None
        self.code = code if code is not None else codes.generate()
        self.on_new_code = on_new_code  # (code, why): called when a new code replaces the old one
        self.clock = clock
        self.failures = 0  # wrong tries in a row
        self.locked_until = 0.0
        self._busy = False
        self._lock = threading.Lock()

    def admit(self) -> Admission:
        """May an attempt run now? Call :meth:`done` once it ends, whatever happened."""
        with self._lock:
            now = self.clock()
            if self._busy:
                return Admission(None, "busy", "another machine is pairing right now; try again in a moment")
            if now < self.locked_until:
                wait = self.locked_until - now
                return Admission(None, "locked", f"too many wrong codes: try again in {wait:.0f} s")
            self._busy = True
            return Admission(codes.secret(self.code))

    def done(self, paired: bool) -> None:
        """The admitted attempt ended: paired, or not (a wrong code, or the peer gave up)."""
        announce: tuple[str, str] | None = None
        with self._lock:
            self._busy = False
            if paired:
                self.failures = 0
                self.locked_until = 0.0
                return
            self.failures += 1
            if self.failures >= MAX_TRIES:
                self.locked_until = self.clock() + min(MAX_LOCK, 2.0 ** (self.failures - MAX_TRIES))
                if not self.given and self.failures % MAX_TRIES == 0:
                    self.code = codes.generate()
                    announce = (self.code, f"{self.failures} wrong codes in a row: the old code no longer works")
        if announce and self.on_new_code is not None:
            self.on_new_code(*announce)

    def renew(self, why: str = "a new pairing") -> str:
        """A fresh code (for every new pairing of a wizard or agent); a given code stays."""
        with self._lock:
            if not self.given:
                self.code = codes.generate()
            code = self.code
        if self.on_new_code is not None and not self.given:
            self.on_new_code(code, why)
        return code

    @property
    def tries_left(self) -> int:
        """Wrong tries left before the code changes (or, for a given code, tries must wait)."""
        if self.given:
            return max(0, MAX_TRIES - self.failures)
        return MAX_TRIES - self.failures % MAX_TRIES
