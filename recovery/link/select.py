"""Choosing and opening a link from the command line's ``--link``/``--to``/``--listen``.

``LINK`` is one of ``auto`` (the default), ``tcp:HOST:PORT``, ``stdio``,
``tbstream[:PEER]`` and ``tbnet[:IFACE]``. ``--to HOST:PORT`` and ``--to -``
(and the receiver's ``--listen``/``--from -``) are shorthands for tcp and
stdio. ``auto`` picks a link over the cable: the one both machines offer, or
when they offer USB4STREAM and thunderbolt-net, the faster of the two as
measured at the start (:mod:`recovery.link.auto`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from recovery.errors import NoPeerError, UsageError
from recovery.link import tcp
from recovery.link.base import Connection
from recovery.link.stdio import mux_connection

KINDS = ("auto", "tcp", "stdio", "tbstream", "tbnet")


@dataclass(frozen=True)
class LinkSpec:
    kind: str
    endpoint: tcp.Endpoint | None = None
    interface: str | None = None  # tbnet: the interface; tbstream: the peer's XDomain (e.g. 0-1)

    def __str__(self) -> str:
        if self.kind == "tcp" and self.endpoint:
            return f"tcp:{self.endpoint}"
        if self.interface:
            return f"{self.kind}:{self.interface}"
        return self.kind


def parse_link(text: str) -> LinkSpec:
    kind, _, rest = text.partition(":")
    if kind not in KINDS:
        raise UsageError(
            f"unknown link {text!r}: use one of auto, tcp:HOST:PORT, stdio, tbstream[:PEER], tbnet[:IFACE]")
    if kind == "tcp":
        if not rest:
            raise UsageError("--link tcp needs an address: tcp:HOST:PORT")
        return LinkSpec("tcp", tcp.parse_endpoint(rest))
    if kind in ("tbnet", "tbstream"):
        return LinkSpec(kind, interface=rest or None)
    if rest:
        raise UsageError(f"--link {kind} takes no argument")
    return LinkSpec(kind)


def sender_spec(link: str | None, to: str | None) -> LinkSpec:
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
    until stopped (the wizard, see :func:`recovery.tui.cable.attempt_timeout`).
    """
    if spec.kind == "stdio":
        return mux_connection(0, 1)
    if spec.kind == "tcp":
        assert spec.endpoint is not None
        return tcp.connect(spec.endpoint, timeout=timeout if timeout is not None else tcp.CONNECT_TIMEOUT)
    return _cable(spec, "send", timeout=timeout, on_listening=None, stop=stop)


def accept_receiver(
    spec: LinkSpec, *, timeout: float | None, on_listening: Callable[[str, int, str], None],
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


def _cable(spec: LinkSpec, role: str, *, timeout: float | None,
           on_listening: Callable[[str, int, str], None] | None, stop: threading.Event | None) -> Connection:
    if spec.kind == "auto":
        from recovery.link.auto import open_auto

        return open_auto(role, timeout=timeout, on_listening=on_listening, stop=stop)
    opener = _cable_links().get(spec.kind)
    if opener is None:
        hint = ("give the peer's address: --to HOST:PORT on the sender, --listen on the receiver"
                if role == "send" else "listen for a sender over TCP: --listen [ADDR]:PORT")
        raise NoPeerError(f"no {spec.kind} link is available in this build", hint=hint)
    conn = opener(spec, role, timeout=timeout, on_listening=on_listening, stop=stop)
    conn.choice = f"{spec.kind}: chosen with --link"
    return conn
