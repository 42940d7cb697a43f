"""Choosing and opening a link from the command line's ``--link``/``--to``/``--listen``/``--via``.

``LINK`` is one of ``auto`` (the default), ``tcp:HOST:PORT``, ``stdio``,
``tbstream[:PEER]`` and ``tbnet[:IFACE]``. ``--to HOST:PORT`` and ``--to -``
(and the receiver's ``--listen``/``--from -``) are shorthands for tcp and
stdio; ``--via COMMAND`` runs COMMAND (e.g. ``ssh host recovery receive ...
--from -``) and speaks the stdio link over its stdin and stdout. ``auto``
picks a link over the cable: the one both machines offer, or when they offer
USB4STREAM and thunderbolt-net, the faster of the two as measured at the
start (:mod:`recovery.link.auto`).

A sender opens one connection (:func:`connect_sender`); a receiver gets a
:class:`Source` from :func:`listen` and takes connections from it one after
another, until one of them pairs.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import Protocol

from recovery.errors import LinkError, NoPeerError, UsageError
from recovery.link import tcp
from recovery.link.base import Connection, GivesBack
from recovery.link.spec import LinkSpec, parse_link
from recovery.link.stdio import mux_connection
from recovery.run import start


def sender_spec(link: str | None, to: str | None, via: str | None = None) -> LinkSpec:
    if via is not None:
        if to is not None or link not in (None, "auto"):
            raise UsageError("--via goes alone: not with --to or --link")
        try:
            argv = tuple(shlex.split(via))
        except ValueError as e:
            raise UsageError(f"cannot read the --via command: {e}") from None
        if not argv:
            raise UsageError("--via needs a command, e.g. --via 'ssh HOST recovery receive --target DEV --from -'")
        return LinkSpec("stdio", command=argv)
    if to is not None:
        if link not in (None, "auto"):
            raise UsageError("give either --to or --link, not both")
        return LinkSpec("stdio") if to == "-" else LinkSpec("tcp", tcp.parse_endpoint(to))
    return parse_link(link or "auto")


def receiver_spec(link: str | None, listen: str | None, from_: str | None) -> LinkSpec:
    if from_ is not None:
        if from_ != "-":
            raise UsageError("--from takes only '-' (stdin/stdout); the receiver listens for senders")
        if listen is not None or link not in (None, "auto"):
            raise UsageError("--from - cannot be combined with --listen or --link")
        return LinkSpec("stdio")
    if listen is not None:
        if link not in (None, "auto", "tcp"):
            raise UsageError("--listen goes with the tcp link only")
        return LinkSpec("tcp", tcp.parse_endpoint(listen, default_host=""))
    return parse_link(link or "auto")


def _cable_links() -> dict[str, Callable[..., Connection]]:
    """Links over the USB4/Thunderbolt cable: ``(spec, role, *, timeout, on_listening, stop) -> Connection``."""
    from recovery.link import tbnet, tbstream  # only when the cable is used: they cost start-up time

    return {"tbstream": tbstream.open_link, "tbnet": tbnet.open_link}


def connect_sender(spec: LinkSpec, *, timeout: float | None, stop: threading.Event | None = None) -> Connection:
    """The sender's side of a link: connect to (or find) the receiver.

    Setting ``stop`` (from another thread) ends a wait for the peer on the
    cable with :class:`CancelledError`. ``timeout`` None waits on the cable
    until stopped (the wizard, see :func:`recovery.engine.peer.cable.attempt_timeout`).
    """
    if spec.kind == "stdio":
        return _via(spec.command) if spec.command else mux_connection(0, 1)
    if spec.kind == "tcp":
        assert spec.endpoint is not None
        return tcp.connect(spec.endpoint, timeout=timeout if timeout is not None else tcp.CONNECT_TIMEOUT)
    return _cable(spec, "send", timeout=timeout, on_listening=None, stop=stop)


def _via(argv: tuple[str, ...]) -> Connection:
    """Run ``argv`` and speak the stdio link over its stdin and stdout; closing ends it."""
    child = start(argv, stdout=subprocess.PIPE, stderr=None)
    assert child.stdin is not None and child.stdout is not None
    conn = mux_connection(child.stdout.fileno(), child.stdin.fileno(), peer=f"`{shlex.join(argv)}`")

    def end() -> None:
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                pipe.close()
        try:
            child.wait(10)  # the other end exits once its summary is out and its input ends
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    conn.on_close.append(end)
    return conn


class Source(Protocol):
    """Where a receiver's connections come from, one after another."""

    def accept(self, timeout: float | None) -> Connection:
        """The next connection; :class:`~recovery.link.tcp.AcceptTimeout` if none came in ``timeout``."""

    def close(self) -> None: ...

    def give_back(self, conn: Connection) -> None:
        """A connection taken by a waiter that had just finished: the next :meth:`accept` returns it."""


class _TcpSource(GivesBack):
    def __init__(self, listener: tcp.Listener) -> None:
        super().__init__()
        self.listener = listener

    def accept(self, timeout: float | None) -> Connection:
        return self._take_returned() or self.listener.accept(timeout)

    def close(self) -> None:
        self.listener.close()


class OneAtATime(GivesBack):
    """Connections from an opener that makes one at a time (stdio, USB4STREAM): the
    next is opened only after the previous one is closed."""

    def __init__(
        self, open_one: Callable[[float | None], Connection], *, once: bool = False, stop: threading.Event | None = None
    ) -> None:
        super().__init__()
        self.open_one = open_one
        self.once = once
        self.opened = 0
        self._free = threading.Event()
        self._free.set()
        self._closed = stop or threading.Event()  # set by close(); an opener may wait on it

    def accept(self, timeout: float | None) -> Connection:
        returned = self._take_returned()
        if returned is not None:
            return returned
        if self.once and self.opened:
            if self._closed.wait(timeout if timeout is not None else None):
                raise LinkError("stopped listening")
            raise tcp.AcceptTimeout("the link carries one connection only")
        if not self._free.wait(timeout):
            raise tcp.AcceptTimeout("the previous connection is still open")
        if self._closed.is_set():
            raise LinkError("stopped listening")
        conn = self.open_one(timeout)
        self.opened += 1
        self._free.clear()
        conn.on_close.append(self._free.set)
        return conn

    @property
    def stop(self) -> threading.Event:
        """Set once the source is closed: an opener's waits end on it."""
        return self._closed

    def close(self) -> None:
        self._closed.set()
        self._free.set()


def listen(
    spec: LinkSpec, *, on_listening: Callable[[str, int, str], None], stop: threading.Event | None = None
) -> Source:
    """The receiver's side of a link: a :class:`Source` of connections (close it when done).

    ``stop`` ends thunderbolt-net's preparation; closing the source ends every wait."""
    if spec.kind == "stdio":
        return OneAtATime(lambda _timeout: mux_connection(0, 1), once=True)
    if spec.kind == "tcp":
        ep = spec.endpoint or tcp.Endpoint("", tcp.DEFAULT_PORT)
        listener = tcp.Listener(ep)
        on_listening(str(listener.endpoint.host or "*"), listener.port, "tcp")
        return _TcpSource(listener)
    if spec.kind == "tbnet":
        from recovery.link import tbnet

        return tbnet.listen(spec, on_listening=on_listening, stop=stop)
    announced: list[bool] = []

    def opened(address: str, port: int, link: str) -> None:
        if not announced:
            announced.append(True)
            on_listening(address, port, link)

    def open_cable(_slice: float | None) -> Connection:  # auto (measured) or tbstream: one at a time
        # As long as it takes, for the peer: closing the source ends the wait.
        return _cable(spec, "receive", timeout=None, on_listening=opened, stop=source.stop)

    source = OneAtATime(open_cable)  # closing it (the lobby is done, or the user stopped) ends a wait
    return source


def accept_receiver(
    spec: LinkSpec,
    *,
    timeout: float | None,
    on_listening: Callable[[str, int, str], None],
    stop: threading.Event | None = None,
) -> Connection:
    """The receiver's side: listen (or wait on the cable) for one sender; ``stop`` as for the sender."""
    if spec.kind == "stdio":
        return mux_connection(0, 1)
    if spec.kind == "tcp":
        ep = spec.endpoint or tcp.Endpoint("", tcp.DEFAULT_PORT)
        with tcp.Listener(ep) as listener:
            on_listening(str(listener.endpoint.host or "*"), listener.port, "tcp")
            return listener.accept(timeout)
    return _cable(spec, "receive", timeout=timeout, on_listening=on_listening, stop=stop)


def _cable(
    spec: LinkSpec,
    role: str,
    *,
    timeout: float | None,
    on_listening: Callable[[str, int, str], None] | None,
    stop: threading.Event | None,
) -> Connection:
    if spec.kind == "auto":
        from recovery.link.auto import open_auto

        return open_auto(role, timeout=timeout, on_listening=on_listening, stop=stop)
    opener = _cable_links().get(spec.kind)
    if opener is None:
        hint = (
            "give the peer's address: --to HOST:PORT on the sender, --listen on the receiver"
            if role == "send"
            else "listen for a sender over TCP: --listen [ADDR]:PORT"
        )
        raise NoPeerError(f"no {spec.kind} link is available in this build", hint=hint)
    conn = opener(spec, role, timeout=timeout, on_listening=on_listening, stop=stop)
    conn.choice = f"{spec.kind}: chosen with --link"
    return conn
