"""The serving side's pairing code, and the count of wrong tries against it.

One :class:`CodeGuard` per serving machine (a receiver, an agent, a wizard),
shared by every connection that tries to pair with it. A try is counted when
the driver's proof is checked (:meth:`CodeGuard.judge`), atomically, so many
parallel connections get no more guesses than one, and an attempt that is
abandoned before its proof costs nothing (it learned nothing: the driver
proves first).

- From one origin (an IPv4 address, an IPv6 /64: see
  :func:`recovery.link.tcp.origin_of`), after :data:`MAX_TRIES` wrong codes in
  a row, each further try must wait twice as long as the one before (1, 2, 4
  ... s, at most :data:`MAX_LOCK`): a typo is forgiven, guessing is slowed
  (a /64 is one origin: a host has a whole /64 to guess from), and a
  stranger slows only itself.
- A connection that leaves without pairing (an attempt without its proof in
  time or left halfway, or no attempt at all within its limit) counts the
  same way, but against its own address alone (:meth:`CodeGuard.stalled`):
  it learned nothing of the code, so the code stays and its neighbours on
  the /64 are not locked out with it.
- When more than :data:`GLOBAL_PER_MINUTE` wrong codes came in the last
  minute from all origins together (many addresses are cheap to have), an
  origin gets no grace: its first wrong code already makes it wait, at least
  :data:`PRESSURE_LOCK` s and twice as long each time. A right proof is never
  turned away for what other origins did.
- A code this machine made (:func:`recovery.protocol.codes.generate`) is
  replaced by a new one after :data:`MAX_TRIES` wrong tries in all, and the
  new one is announced; a code given with ``--code`` stays.

A success starts that origin's count again.

After a link was lost, the machine can let the same peer pair again without a
code (:meth:`CodeGuard.allow_rejoin`): the attempt then proves the lost
pairing's rejoin secret (which only the two machines hold) instead of the
code. It is good for one pairing, for :data:`REJOIN_FOR` seconds; a wrong
proof counts like a wrong code (the secret cannot be guessed, so it is not
given up for one: a stranger cannot take the offer away), and a pairing by
the code ends the offer.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from recovery.protocol import codes

MAX_TRIES = 3
MAX_LOCK = 300.0
GLOBAL_PER_MINUTE = 20
PRESSURE_LOCK = 5.0  # seconds an origin waits after a wrong code while many come from everywhere
REJOIN_FOR = 1800.0  # seconds a lost pairing may come back without a code
NO_REJOIN = {  # why a machine takes no lost pairing back (the driver's screen shows it)
    "restarted": "{host} restarted: type the code it shows now",
    "ended": "{host} ended that pairing: type the code it shows now",
    "paired": "{host} has paired again since: type the code it shows now",
    "expired": "{host} waited {minutes} minutes for that pairing to come back: type the code it shows now",
}


@dataclass(frozen=True)
class Verdict:
    """What :meth:`CodeGuard.judge` decided about one proof."""

    outcome: str  # "paired", "wrong_code", "locked", "stale"
    message: str = ""
    tries_left: int | None = None  # a wrong code: what :meth:`CodeGuard.tries_left` says now
    new_code: bool = False  # a wrong code: it was the last try, a new code replaced the old one


@dataclass
class _Origin:
    failures: int = 0  # tries in a row that did not pair
    locked_until: float = 0.0
    last: float = 0.0  # when the last one was counted


MAX_TRACKED = 4096  # origins and addresses remembered; past this, those long quiet are forgotten


@dataclass
class Answer:
    """The code an attempt was answered with (a later judgment must find it still current)."""

    secret: bytes = field(repr=False)
    generation: int
    origin: str = field(default="")
    rejoin: bool = False  # the lost pairing's secret, not the code
    address: str = ""  # the peer's own address (its stalls are counted there)


@dataclass
class _Rejoin:
    secret: bytes = field(repr=False)
    until: float


class CodeGuard:
    def __init__(
        self,
        code: str | None = None,
        *,
        on_new_code: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.given = code is not None
        self.code = code if code is not None else codes.generate()
        self.on_new_code = on_new_code  # (code, why): called when a new code replaces the old one
        self.clock = clock
        self.generation = 0  # which code is current
        self.wrong_since_new = 0  # wrong tries against the current code, from anywhere
        self._origins: dict[str, _Origin] = {}  # wrong codes, per origin
        self._addresses: dict[str, _Origin] = {}  # connections that left without pairing, per address
        self._recent: deque[float] = deque()  # times of recent wrong tries, from anywhere
        self._rejoin: _Rejoin | None = None
        self._no_rejoin = "restarted"  # why none may come back (:data:`NO_REJOIN`): none was lost in this run
        self._lock = threading.Lock()

    # --- answering an attempt ---

    def waiting(self, origin: str, address: str = "") -> str | None:
        """Why a peer at ``address`` of ``origin`` may not try now (a message for it), or None."""
        with self._lock:
            return self._waiting(origin, address, self.clock())

    def _waiting(self, origin: str, address: str, now: float) -> str | None:
        for table, key in ((self._origins, origin), (self._addresses, address)):
            state = table.get(key) if key else None
            if state is not None and now < state.locked_until:
                return f"too many tries from {key or 'this link'}: wait {max(1, round(state.locked_until - now))} s"
        return None

    def _under_pressure(self, now: float) -> bool:
        """Many wrong codes from everywhere in the last minute."""
        while self._recent and now - self._recent[0] > 60.0:
            self._recent.popleft()
        return len(self._recent) >= GLOBAL_PER_MINUTE

    def _failed(self, table: dict[str, _Origin], key: str, now: float, *, grace: bool) -> None:
        """One more try from ``key`` that did not pair: make it wait once it has had its grace."""
        if len(self._origins) + len(self._addresses) > MAX_TRACKED:
            self._forget_quiet(now)
        state = table.setdefault(key, _Origin())
        state.failures += 1
        state.last = now
        if not grace:
            state.locked_until = now + min(MAX_LOCK, PRESSURE_LOCK * 2.0 ** (state.failures - 1))
        elif state.failures >= MAX_TRIES:
            state.locked_until = now + min(MAX_LOCK, 2.0 ** (state.failures - MAX_TRIES))

    def _forget_quiet(self, now: float) -> None:
        for table in (self._origins, self._addresses):
            for key in [k for k, s in table.items() if now - s.last > MAX_LOCK and now >= s.locked_until]:
                del table[key]

    def locked(self, origin: str, address: str = "") -> bool:
        """Must a peer at ``address`` of ``origin`` wait before it may try again?"""
        with self._lock:
            return self._waiting(origin, address, self.clock()) is not None

    def stalled(self, address: str) -> None:
        """A connection from ``address`` left without pairing (an attempt without its proof in time or
        left halfway, or no attempt within its limit): a try for that address only (the code stays, and
        nobody else on its network pays)."""
        if not address:
            return
        with self._lock:
            self._failed(self._addresses, address, self.clock(), grace=True)

    def answer(self, origin: str, *, rejoin: bool = False, address: str = "") -> Answer | None:
        """The current code's bytes to answer an attempt from ``origin`` with; for a ``rejoin``, the lost
        pairing's secret (None: no lost pairing may come back now)."""
        with self._lock:
            if not rejoin:
                return Answer(codes.secret(self.code), self.generation, origin, address=address)
            r = self._rejoin
            if r is not None and self.clock() > r.until:
                r, self._rejoin, self._no_rejoin = None, None, "expired"
            if r is None:
                return None
            return Answer(r.secret, self.generation, origin, rejoin=True, address=address)

    def allow_rejoin(self, secret: bytes) -> None:
        """The link to a paired peer was lost: let it pair again once with ``secret`` (no code; only
        that peer holds it, so no machine id needs checking)."""
        with self._lock:
            self._rejoin = _Rejoin(secret, self.clock() + REJOIN_FOR)

    def session_ended(self, rejoin: bytes | None) -> None:
        """A session ended: the peer may come back once with ``rejoin`` (a lost link), or (None) not."""
        if rejoin is None:
            self.forget_rejoin()
        else:
            self.allow_rejoin(rejoin)

    def forget_rejoin(self) -> None:
        with self._lock:
            self._rejoin, self._no_rejoin = None, "ended"

    def no_rejoin(self, host: str) -> str:
        """Why ``host`` (this machine) takes no lost pairing back now, for the peer that tried."""
        with self._lock:
            return NO_REJOIN[self._no_rejoin].format(host=host, minutes=f"{REJOIN_FOR / 60:.0f}")

    # --- judging a proof ---

    def judge(self, answered: Answer, holds: Callable[[], bool]) -> Verdict:
        """Check a proof (``holds()``) if the rules allow it now, and count the outcome."""
        announce: tuple[str, str] | None = None
        with self._lock:
            now = self.clock()
            if answered.rejoin:
                if self._rejoin is None or self._rejoin.secret != answered.secret:
                    return Verdict("stale", "this machine no longer waits for that pairing to come back")
            elif answered.generation != self.generation:
                return Verdict("stale", "the pairing code changed meanwhile: type the new one it shows")
            why = self._waiting(answered.origin, answered.address, now)
            if why is not None:
                return Verdict("locked", why)
            if holds():
                self._origins.pop(answered.origin, None)
                self._addresses.pop(answered.address, None)
                self._rejoin, self._no_rejoin = None, "paired"  # paired (by it, or by the code): that one is over
                return Verdict("paired")
            self._failed(self._origins, answered.origin, now, grace=not self._under_pressure(now))
            self._recent.append(now)
            self.wrong_since_new += 0 if answered.rejoin else 1
            if not self.given and self.wrong_since_new >= MAX_TRIES:
                why = f"{self.wrong_since_new} wrong codes: the old code no longer works"
                announce = (self._replace(), why)
            left = 0 if announce else self._tries_left(answered.origin)
        if announce is not None and self.on_new_code is not None:
            self.on_new_code(*announce)
        return Verdict("wrong_code", "it gave a wrong pairing code", tries_left=left, new_code=announce is not None)

    def _replace(self) -> str:
        self.code = codes.generate()
        self.generation += 1
        self.wrong_since_new = 0
        return self.code

    # --- for people ---

    def renew(self, why: str = "a new pairing") -> str:
        """A fresh code (for every new pairing of a wizard or agent); a given code stays."""
        with self._lock:
            if self.given:
                return self.code
            code = self._replace()
        if self.on_new_code is not None:
            self.on_new_code(code, why)
        return code

    def tries_left(self, origin: str) -> int:
        """Wrong tries ``origin`` has before it must wait, or (a made code) before the code changes."""
        with self._lock:
            return self._tries_left(origin)

    def _tries_left(self, origin: str) -> int:
        state = self._origins.get(origin, _Origin())
        own = max(0, MAX_TRIES - state.failures)
        return own if self.given else min(own, MAX_TRIES - self.wrong_since_new)
