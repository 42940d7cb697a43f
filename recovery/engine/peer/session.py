"""A connection to a peer: the hellos, the pairing, and the paired link.

:func:`meet` exchanges hellos over a fresh connection and returns a
:class:`Contact`: a peer that is not paired yet, which may read nothing and
write nothing. The side that knows the other's code drives the pairing
(:meth:`Contact.drive`); the side that shows its code serves it
(:meth:`Contact.serve`), counting wrong tries with a
:class:`~recovery.engine.peer.guard.CodeGuard`. Either gives a :class:`PeerLink`,
over which one clone (or several, one after another) runs: see
:func:`recovery.engine.clone.send.run_send` and
:func:`recovery.engine.clone.receive.run_receive`. After the pairing the serving
side sends its :class:`~recovery.protocol.messages.Inventory`.

Over a stdio link (``--via``, ``--to -``/``--from -``) there is no code to
type: whatever carries the pipe (ssh) authenticates the peer, and both sides
pair with the fixed :data:`STDIO_CODE`, which still gives them fresh keys.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

import blake3

from recovery import SOFTWARE, events
from recovery.disks import identity, machinename
from recovery.engine.api import CAPABILITIES
from recovery.engine.clone.pipeline import Crew
from recovery.engine.peer.control import ATTEMPT_LIMIT, DEFAULT_TIMEOUT, ControlLink
from recovery.engine.peer.guard import CodeGuard
from recovery.errors import CancelledError, LinkError, PairingError, RecoveryError, RefusedError
from recovery.link.base import Connection
from recovery.protocol import codes
from recovery.protocol import messages as m
from recovery.protocol.state import Paired, PairingFailed, State

STDIO_CODE = "stdio link: authenticated by whatever carries it"
Offered = Callable[[], tuple[m.DiskInfo, ...]]  # the disks a serving side offers, read once paired
BYE_WAIT = 10.0  # seconds to wait for the peer's bye at the end of a session

# Why a driver's attempt failed, for people ({shown}: where the peer shows its code).
FAILED = {
    "wrong_code": "the pairing code does not match the one {shown}",
    "locked": "{peer} takes no pairing attempts for now: {message}",
    "stale": "{peer} changed its pairing code meanwhile",
    "timeout": "{peer} did not finish the pairing in time",
    "conflict": "both machines tried to drive the pairing at once",
    "no_code": "{peer} has no pairing code to offer: {message}",
    "malformed": "{peer} answered the pairing with something malformed",
}


def first_error(error: BaseException, crew: Crew) -> BaseException:
    """What stopped a clone first: a pipeline thread's own error (a full target, a failed write, a
    damaged chunk, a bug) rather than the lost link it caused (a failing pipeline aborts its
    channel, which the session then sees), else ``error``."""
    own = crew.error
    if own is None or not isinstance(error, LinkError) or isinstance(own, LinkError | CancelledError):
        return error
    return own


def uses_stdio_code(conn: Connection) -> bool:
    return conn.kind == "stdio"


@dataclass
class PeerLink:
    """A paired connection: the control link, both hellos, and the serving side's disks."""

    conn: Connection
    ctl: ControlLink
    ours: m.Hello
    theirs: m.Hello
    role: str  # ours in the pairing: "driver" or "server"
    encrypt: bool | None = None  # seal the payloads this side sends (None: as the link kind wants, see encrypts)
    inventory: tuple[m.DiskInfo, ...] = ()  # the server's disks (a driver's view)
    offered: tuple[m.DiskInfo, ...] = ()  # our disks as we sent them (a server's view)
    peer: m.HostInfo | None = None  # who the peer says it is, in full, once paired (its introduce)
    rejoined: bool = False  # paired by a lost pairing's rejoin secret, not a code
    peer_journal: str | None = None  # a sender's view: where the receiver journals the clone under way, if it does
    peer_wants_sealed: bool = False  # the peer takes only sealed data (its introduce says so)

    @property
    def fingerprint(self) -> str:
        keys = self.ctl.state.keys
        return keys.fingerprint if keys else ""

    @property
    def our_name(self) -> str:
        """This machine's name in this pairing, as both screens show it."""
        return told_apart(self.ours.host.hostname, self.theirs.host.hostname, self.fingerprint, self.role)

    @property
    def peer_name(self) -> str:
        """The peer's name in this pairing, as both screens show it."""
        theirs = "server" if self.role == "driver" else "driver"
        return told_apart(self.theirs.host.hostname, self.ours.host.hostname, self.fingerprint, theirs)

    def rejoin_after(self, error: BaseException | None) -> bytes | None:
        """The secret to let this peer pair again with, if ``error`` (how the session ended) is a lost
        link; None after a goodbye, a refusal, or any other end on purpose."""
        return self.rejoin_secret() if isinstance(error, LinkError) else None

    def rejoin_secret(self) -> bytes | None:
        """The secret with which this peer may pair again after a lost link (capability "rejoin";
        None without it, or over stdio, whose carrier authenticates instead)."""
        keys = self.ctl.state.keys
        if keys is None or "rejoin" not in self.ctl.state.shared_caps or uses_stdio_code(self.conn):
            return None
        return keys.rejoin_secret()

    @property
    def encrypts(self) -> bool:
        """Whether this side wants the chunk data sealed (what it sends, and what it takes): as its
        user asked, else on every link a network can reach, that is all but a direct USB4STREAM
        cable and loopback (sealing costs about 0.1 s of CPU per GB on each side, see
        docs/performance.md). Each side decides from what it sees: through a forwarder, a link one
        side sees as loopback crosses a network for the other."""
        return self.encrypt if self.encrypt is not None else not self.conn.private

    def seals_for_peer(self) -> bool:
        """Whether to seal what this side sends: as its user said, else where either side wants it."""
        return self.encrypt if self.encrypt is not None else self.encrypts or self.peer_wants_sealed

    @property
    def security(self) -> str:
        """The link's security state, for people, the same on both sides: how the peer was
        authenticated, and what the data gets on this link unless a clone's sender chose
        otherwise (its ``plan`` event says what it got)."""
        data = "encrypted" if not self.conn.private else "authenticated, not encrypted"
        who = "stdio link (its carrier, e.g. ssh, authenticates the peer)" if uses_stdio_code(self.conn) else "paired"
        return f"{who}; data {data} by default on this link"

    def peer_event(self) -> events.PeerFound:
        return events.PeerFound(
            hostname=self.peer_name,
            name=self.our_name,
            link=self.conn.kind,
            address=self.conn.peer,
            software=self.theirs.host.software,
            speed=self.conn.speed(),
            machine_id=self.peer.machine_id if self.peer else None,
            role=self.role,
            security=self.security,
            session=self.fingerprint,
            link_choice=self.conn.choice,
            link_rates=self.conn.rates,
        )

    @property
    def idle(self) -> bool:
        """Paired, and no clone under way: another may start."""
        return self.ctl.state.state is State.IDLE

    def abandon(self, error: BaseException, crew: Crew | None = None) -> BaseException:
        """Stop the pipeline's threads, tell the peer why we stop, unblock
        everything on the link, and return the error to raise: the peer's
        own reason if a lost link was only its echo.

        A refusal that left the session idle (the ``refuse`` crossed, nothing
        was written) ends nothing: the link stays for another try; so does one
        this side makes of the peer's request before it planned (a fit that
        cannot be made): it is the ``refuse`` the peer waits for."""
        if crew is None and isinstance(error, RefusedError):
            if self.ctl.state.answering:
                self.refuse(error.message, error.hint)
            if self.idle:
                return error
        if crew is not None:
            error = first_error(error, crew)
            crew.fail(CancelledError("stopped"))
            crew.join(2)
        reason = self.tell(error)
        self.conn.abort()
        return reason

    def refuse(self, message: str, hint: str | None = None, code: str = RefusedError.code) -> None:
        """Say no to what the peer waits for (its plan, its request), nothing written; ``code``: why, when
        the peer may act on it (``passphrase``: type the image's passphrase again)."""
        self.ctl.try_send(m.Refuse(code=code, message=message[:1000], hint=hint[:1000] if hint else None))

    def tell(self, error: BaseException) -> BaseException:
        """Tell the peer why this side stops (its first error), and give the words time to cross."""
        reason = self.ctl.explain(error)
        self.ctl.report(reason)
        self.ctl.last_words(0.5)
        return reason

    def say_goodbye(self, reason: str = "done", wait: float = BYE_WAIT) -> bool:
        """End the session on purpose: our bye, then the peer's (which proves it got all we sent)."""
        self.ctl.send(m.Bye(reason=reason[:500]))
        return self._peers_bye(wait)

    def await_goodbye(self, wait: float = BYE_WAIT) -> bool:
        """The peer ends the session: wait for its bye (so our last words reached it), answer it."""
        if not self._peers_bye(wait):
            return False
        self.ctl.try_send(m.Bye(reason="goodbye"))
        return True

    def _peers_bye(self, wait: float) -> bool:
        deadline = time.monotonic() + wait
        try:
            while (left := deadline - time.monotonic()) > 0:
                msg = self.ctl.poll(min(0.25, left))
                if isinstance(msg, m.Bye):
                    return True
        except RecoveryError:
            return False  # the link ended first: the bye did not come
        return False

    def close(self) -> None:
        self.ctl.close()


@dataclass
class Contact:
    """A peer after the hellos, not paired: it may pair, and nothing else."""

    conn: Connection
    ctl: ControlLink
    ours: m.Hello
    theirs: m.Hello
    sink: events.EventSink = events.ignore
    encrypt: bool | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return f"{self.theirs.host.hostname} ({self.conn.peer})"

    def drive(self, code: str, *, limit: float = ATTEMPT_LIMIT) -> PeerLink:
        """Pair with the code the user typed (the other machine's); raise :class:`PairingError` if it fails
        (the sink heard why)."""
        try:
            outcome = self.ctl.drive(codes.secret(code), limit)
        except PairingError as e:  # it left halfway, or did not answer in time
            self.sink(self._attempt_failed(e.code, e.message, drove=True))
            raise
        if isinstance(outcome, Paired):
            return self._driven()
        self.sink(self._failed(outcome))
        peer = self.theirs.host.hostname
        hint = {
            "wrong_code": f"check the code {self._shown()} and type it again (after 3 wrong codes it shows a new one)",
            "stale": f"type the code {peer} shows now",
            "conflict": "type the code on one machine only",
        }.get(outcome.reason)
        raise PairingError(self._failure(outcome), hint=hint)

    def serve(
        self,
        guard: CodeGuard,
        *,
        offered: Offered = lambda: (),
        limit: float | None = None,
        stop: threading.Event | None = None,
    ) -> PeerLink:
        """Wait for the peer to prove it knows ``guard``'s code; attempts may repeat.

        ``limit``: seconds for the whole wait (None: until the link ends or
        ``stop`` is set). After the pairing, the ``offered()`` disks are sent.
        """
        return self.await_pairing(guard, offered=offered, limit=limit, stop=stop)

    def await_pairing(
        self,
        guard: CodeGuard | None,
        *,
        offered: Offered = lambda: (),
        wants_drive: Callable[[], str | bytes | None] | None = None,
        drove: Callable[[bool], None] = lambda ok: None,
        limit: float | None = None,
        stop: threading.Event | None = None,
    ) -> PeerLink:
        """Serve the peer's attempts with ``guard``'s code, and drive with any code
        ``wants_drive()`` hands over (a person typed it here); whichever pairs first.

        ``drove(ok)`` hears how each attempt driven from here ended. The disks
        ``offered()`` are read only once a peer has proved the code. ``wants_drive()``
        may hand over bytes: a lost pairing's rejoin secret (:meth:`PeerLink.rejoin_secret`).
        """
        deadline = None if limit is None else time.monotonic() + limit
        while True:
            if stop is not None and stop.is_set():
                raise CancelledError("stopped while waiting for the pairing")
            left = 0.25 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise PairingError(f"{self.name} did not pair within {limit:.0f} s")
            code = wants_drive() if wants_drive is not None else None
            if code is not None:
                if isinstance(code, bytes):
                    driven = self.ctl.drive(code, rejoin=True)
                else:
                    driven = self.ctl.drive(codes.secret(code))
                if isinstance(driven, Paired):
                    drove(True)
                    link = self._driven()
                    link.rejoined = isinstance(code, bytes)
                    return link
                if isinstance(code, bytes) and driven.reason == "stale":  # it holds no such pairing: it never will
                    self.sink(events.RejoinRefused(peer=self.theirs.host.hostname, message=driven.message))
                else:
                    self.sink(self._failed(driven))
                drove(False)
                continue
            request = self.ctl.wait_pairing_request(min(0.25, left))
            if request is None:
                continue
            outcome = self._answer(guard, rejoin=request.rejoin)
            if isinstance(outcome, Paired):
                self.sink(events.PairingAttempt(peer=self.name, ok=True))
                link = self._paired("server")
                link.rejoined = request.rejoin
                link.offered = offered()
                link.ctl.send(m.Inventory(disks=link.offered))
                return link
            tries = outcome.tries_left
            if tries is None and guard is not None:
                tries = guard.tries_left(self.conn.origin)
            self.sink(
                self._attempt_failed(outcome.reason, outcome.message, tries_left=tries, new_code=outcome.new_code)
            )

    def _answer(self, guard: CodeGuard | None, *, rejoin: bool = False) -> Paired | PairingFailed:
        """One attempt the peer drives: answer with the code (or, ``rejoin``, the lost pairing's secret),
        wait for its proof, let the guard judge it."""
        origin = self.conn.origin
        if guard is None:
            return self.ctl.refuse("no_code", f"{self.ours.host.hostname} drives; it shows no code to type")
        address = self.conn.address or origin
        why = guard.waiting(origin, address)
        if why is not None:
            return self.ctl.refuse("locked", why)
        answered = guard.answer(origin, rejoin=rejoin, address=address)
        if answered is None:
            return self.ctl.refuse("stale", guard.no_rejoin(self.ours.host.hostname))
        try:
            proof = self.ctl.answer(answered.secret)
        except PairingError:
            guard.stalled(address)  # no proof in time, or it left halfway: a try for its address
            raise
        if isinstance(proof, PairingFailed):
            guard.stalled(address)  # it gave up (or its message was malformed) before proving anything
            return proof
        verdict = guard.judge(answered, self.ctl.proof_holds)
        return self.ctl.conclude(verdict)

    def _driven(self) -> PeerLink:
        """Paired as the driver: the server's disks come first."""
        self.sink(events.PairingAttempt(peer=self.name, ok=True))
        link = self._paired("driver")
        inventory = self.ctl.expect(m.Inventory)
        assert isinstance(inventory, m.Inventory)
        link.inventory = inventory.disks
        return link

    def _shown(self) -> str:
        """Where the peer shows its code: a screen, or (an agent, a receiver) the output it prints."""
        peer = self.theirs.host.hostname
        if self.theirs.role == "wizard":
            return f"shown on the screen of {peer}"
        command = {"agent": "recovery agent", "receiver": "recovery receive"}.get(self.theirs.role, "recovery")
        return f"`{command}` printed on {peer}"

    def _failure(self, outcome: PairingFailed) -> str:
        return FAILED.get(outcome.reason, "{peer} refused to pair: {message}").format(
            peer=self.theirs.host.hostname, message=outcome.message, shown=self._shown()
        )

    def _failed(self, outcome: PairingFailed) -> events.PairingAttempt:
        """An attempt driven from here failed: the event that says why, with what the peer told."""
        return self._attempt_failed(
            outcome.reason,
            self._failure(outcome),
            drove=True,
            tries_left=outcome.tries_left,
            new_code=outcome.new_code,
        )

    def _attempt_failed(
        self, reason: str, message: str, *, drove: bool = False, tries_left: int | None = None, new_code: bool = False
    ) -> events.PairingAttempt:
        return events.PairingAttempt(
            peer=self.name,
            ok=False,
            reason=reason,
            message=message,
            tries_left=tries_left,
            new_code=new_code,
            drove=drove,
            host=self.theirs.host.hostname,
        )

    def _paired(self, role: str) -> PeerLink:
        """Both sides introduce themselves in full, now that only the peer can read it."""
        link = PeerLink(self.conn, self.ctl, self.ours, self.theirs, role, encrypt=self.encrypt)
        host = identity.host_info(SOFTWARE)
        self.ctl.send(
            m.Introduce(host=dataclasses.replace(host, hostname=self.ours.host.hostname), sealed=link.encrypts)
        )
        introduced = self.ctl.expect(m.Introduce)
        assert isinstance(introduced, m.Introduce)
        link.peer = introduced.host
        link.peer_wants_sealed = introduced.sealed
        self.sink(link.peer_event())
        return link

    def close(self, reason: str = "") -> None:
        """Give up on this peer: tell it why, and end the connection."""
        why = f"{self.ours.host.hostname} closed the connection" + (f": {reason}" if reason else "")
        self.ctl.try_send(m.Cancel(reason=why[:1000]))
        self.ctl.last_words()
        self.ctl.close()
        self.conn.abort()
        self.conn.close()


def _named(hello: m.Hello) -> m.Hello:
    """The peer's hello with its name as this side shows it: one short printable line, in Unicode's
    compatibility form (a name of full-width or styled letters reads as the plain one)."""
    name = machinename.clean(unicodedata.normalize("NFKC", hello.host.hostname)) or "unnamed machine"
    return dataclasses.replace(hello, host=dataclasses.replace(hello.host, hostname=name))


def _skeleton(name: str) -> str:
    """What two names look like once case, spaces and invisible characters are set aside."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    return "".join(ch for ch in folded if not ch.isspace() and unicodedata.category(ch) != "Cf")


def told_apart(name: str, other: str, session: str, role: str) -> str:
    """``name``, with a short tag of this pairing and the machine's part in it when ``other`` looks the
    same (two identical laptops): both machines compute the same tags for each other."""
    if _skeleton(name) != _skeleton(other):
        return name
    return f"{name} ·{blake3.blake3(f'{session}/{role}'.encode()).hexdigest()[:4].upper()}"


def make_hello(role: str, hostname: str | None = None) -> m.Hello:
    """Our hello: the machine's name and software only (its ids wait for the pairing)."""
    host = identity.host_info(SOFTWARE)
    host = m.HostInfo(hostname=hostname or host.hostname, host_id="", software=host.software, uuid=host.uuid)
    return m.Hello(host=host, role=role, nonce=os.urandom(16).hex(), caps=CAPABILITIES)  # type: ignore[arg-type]


def meet(
    conn: Connection,
    role: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    sink: events.EventSink = events.ignore,
    cancel: threading.Event | None = None,
    hostname: str | None = None,
    encrypt: bool | None = None,
) -> Contact:
    """Exchange hellos on a fresh connection; on failure the link is closed.

    Setting ``cancel`` later stops whatever runs over the link and tells the peer.
    ``hostname`` replaces this machine's name in our hello (the demo's
    simulated peer calls itself something else than the wizard's host).
    """
    sink(events.Phase("handshake", f"connected to {conn.peer} over {conn.kind}"))
    ctl = ControlLink(conn, timeout, cancel)
    ours = make_hello(role, hostname)
    try:
        theirs = _named(ctl.start(ours))
    except BaseException as e:
        ctl.report(e)
        ctl.close()
        conn.abort()
        conn.close()
        raise
    return Contact(conn, ctl, ours, theirs, sink=sink, encrypt=encrypt)


def handshake(
    conn: Connection,
    role: str,
    *,
    code: str | None = None,
    guard: CodeGuard | None = None,
    offered: Offered = lambda: (),
    timeout: float = DEFAULT_TIMEOUT,
    pair_limit: float | None = None,
    sink: events.EventSink = events.ignore,
    cancel: threading.Event | None = None,
    hostname: str | None = None,
    encrypt: bool | None = None,
) -> PeerLink:
    """Hellos and pairing on one connection: drive with ``code``, or serve ``guard``'s code.

    On a stdio link both sides use :data:`STDIO_CODE` instead. On failure the
    peer is told and the link closed.
    """
    contact = meet(conn, role, timeout=timeout, sink=sink, cancel=cancel, hostname=hostname, encrypt=encrypt)
    try:
        if uses_stdio_code(conn):
            if guard is not None:
                guard = CodeGuard(STDIO_CODE)
            else:
                code = STDIO_CODE
        if guard is not None:
            return contact.serve(guard, offered=offered, limit=pair_limit, stop=cancel)
        if code is None:
            raise PairingError("no pairing code to drive the pairing with")
        return contact.drive(code)
    except BaseException as e:
        if isinstance(e, RecoveryError | KeyboardInterrupt) and not isinstance(e, PairingError):
            contact.ctl.report(e)  # a failed pairing the peer saw for itself
        contact.ctl.close()
        conn.abort()
        conn.close()
        raise
