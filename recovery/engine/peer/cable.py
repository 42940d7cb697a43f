"""The cable, for programs that wait for a peer: what the bus shows, and a link both ends open alike.

A wizard and an agent (or two wizards) are equals, but thunderbolt-net needs
one side to listen and the other to connect, and measuring two links needs
one side to send: the host with the smaller UUID listens and the other
connects (and measures), so both choose without talking. USB4STREAM alone
needs no roles. With ``--link auto`` which link is used is
:mod:`recovery.link.auto`'s choice (both measured when both are up), made
alike on both. :func:`cable_source` hands the cable's connections to a
:class:`~recovery.engine.peer.lobby.Lobby`, one at a time; :func:`watch` turns what
the bus reports into status lines.
"""

from __future__ import annotations

import select
import threading
from collections.abc import Callable
from typing import Any, Protocol

from recovery.errors import CancelledError, MissingToolError, NoPeerError, RecoveryError
from recovery.link import discovery
from recovery.link.base import Connection
from recovery.link.opening import OneAtATime, accept_receiver, connect_sender
from recovery.link.spec import LinkSpec
from recovery.link.sysfs import Peer, Sysfs, uuid_key
from recovery.link.tcp import AcceptTimeout

ATTEMPT = 10.0  # seconds one attempt waits for the other side before trying again
RETRY = 2.0  # seconds between attempts when something is missing (no peer, a module)

Status = Callable[[str, str], None]  # (source, text)
Opener = Callable[[threading.Event], Connection]


def describe(peer: Peer) -> str:
    rate = peer.speed
    return peer.label + (f", {rate}" if rate else "")


def describe_event(event: object, *, details: bool = False) -> str:
    """A discovery event in one line, as a status line; with ``details`` (``recovery peers``) a peer's
    host UUID, services, link and network interfaces follow on indented lines."""
    if isinstance(event, discovery.PeerAppeared):
        line = f"{event.label} is on the cable"
        return "\n".join([line, *_peer_details(event)]) if details else line
    if isinstance(event, discovery.PeerGone):
        return f"{event.name} left the cable"
    if isinstance(event, discovery.ServiceAppeared):
        return f"{event.peer} offers service {event.name} ({event.key})"
    if isinstance(event, discovery.ServiceGone):
        return f"{event.peer} withdrew service {event.name}"
    if isinstance(event, discovery.InterfaceAppeared):
        return f"network interface {event.name} appeared" + (f" (to {event.peer})" if event.peer else "")
    if isinstance(event, discovery.InterfaceGone):
        return f"network interface {event.name} went away"
    return str(getattr(event, "name", event))


def _peer_details(e: discovery.PeerAppeared) -> list[str]:
    lines = [f"    host {e.unique_id or '?'}", f"    services: {', '.join(e.services) if e.services else 'none yet'}"]
    speeds = [
        f"{label} {speed}" + (f" x {lanes} lanes" if lanes else "")
        for label, speed, lanes in (("rx", e.rx_speed, e.rx_lanes), ("tx", e.tx_speed, e.tx_lanes))
        if speed
    ]
    if speeds:
        lines.append(f"    link: {', '.join(speeds)}")
    if e.interfaces:
        lines.append(f"    network interface: {', '.join(e.interfaces)}")
    return lines


def role(sysfs: Sysfs, kinds: tuple[str, ...]) -> str:
    """``receive`` (listen) or ``send`` (connect, and measure) for this host, alike on both ends."""
    if "tbnet" not in kinds:
        return "receive"
    peers = sysfs.peers()
    if len(peers) != 1:
        raise NoPeerError(
            f"{len(peers)} hosts on the cable: one of them must be the other machine",
            hint="unplug the others, or connect by address",
        )
    peer = peers[0]
    local = sysfs.local_uuid(peer.domain)
    if not local:
        raise NoPeerError(f"cannot read this host's UUID on Thunderbolt domain {peer.domain}")
    if uuid_key(local) == uuid_key(peer.unique_id):
        raise NoPeerError(f"this host and the peer have the same UUID {local}")
    return "receive" if uuid_key(local) < uuid_key(peer.unique_id) else "send"


def attempt_timeout(kinds: tuple[str, ...], timeout: float) -> float | None:
    """How long one attempt waits: with USB4STREAM until the stop switch (None).

    Its devices are opened once per attempt, and opening and closing them
    again and again against a peer that is not ready has wedged router paths;
    so an attempt keeps them open and waits for the peer's handshake instead
    of giving up every few seconds.
    """
    return None if "tbstream" in kinds else timeout


def open_cable(
    stop: threading.Event, sysfs: Sysfs | None = None, timeout: float = ATTEMPT, spec: LinkSpec | None = None
) -> Connection:
    """One attempt at a link over the cable; raises when there is none (yet), at once when ``stop`` is set.

    ``spec``: ``auto`` (the default), or ``tbnet[:IFACE]``/``tbstream`` given with ``--link``.
    """
    sysfs = sysfs or Sysfs()
    spec = spec or LinkSpec("auto")
    if spec.kind == "auto":
        kinds = discovery.available_links(sysfs) or (discovery.choose_link(sysfs),)  # the latter raises
    else:
        kinds = (spec.kind,)
    wait = attempt_timeout(kinds, timeout)
    if role(sysfs, kinds) == "send":
        return connect_sender(spec, timeout=wait, stop=stop)
    return accept_receiver(spec, timeout=wait, on_listening=lambda *_: None, stop=stop)


def cable_source(status: Status, opener: Opener = open_cable) -> OneAtATime:
    """The cable's connections, one at a time, for a lobby.

    Each accept makes one attempt with ``opener`` (by default :func:`open_cable`),
    after the previous cable connection has closed; what is missing (no peer, a
    module) becomes a status line and a short wait.
    """
    stop = threading.Event()

    def attempt(_timeout: float | None) -> Connection:
        try:
            conn = opener(stop)
        except CancelledError:
            raise
        except (NoPeerError, MissingToolError) as e:
            status("cable", e.message)  # says what is missing: a peer, a module
            stop.wait(RETRY)
            raise AcceptTimeout(e.message) from None
        except RecoveryError:  # the other side was not ready within one attempt
            status("cable", "waiting for the other machine on the cable...")
            stop.wait(0.5)
            raise AcceptTimeout("nobody answered on the cable") from None
        status("cable", f"connected over {conn.kind}")
        return conn

    return OneAtATime(attempt, stop=stop)


class Monitor(Protocol):
    """What a discovery monitor offers (pyudev's shape): a pollable fd and events."""

    def fileno(self) -> int: ...
    def poll(self, timeout: float | None = ...) -> Any: ...


def watch(
    monitor: Monitor, status: Status, stop: threading.Event, describe: Callable[[Any], str] = describe_event
) -> None:
    """Report a discovery monitor's events as status lines until ``stop`` is set."""
    poller = select.poll()
    poller.register(monitor.fileno(), select.POLLIN)
    while not stop.is_set():
        if not poller.poll(500):
            continue
        event = monitor.poll(0)
        if event is not None:
            status("cable", describe(event))
