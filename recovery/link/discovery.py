"""Peers on the cable: a snapshot from sysfs, live events from udev, and the ``auto`` link choice.

:class:`CableMonitor` is a thin adapter over a pyudev monitor on the
``thunderbolt`` and ``net`` subsystems (filtered in the kernel). It has
``fileno()`` and ``poll(timeout)`` like pyudev's, so the CLI can loop on it and
the TUI can watch its descriptor; pyudev devices are converted to the frozen
events below at this boundary and nowhere else.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

from recovery.errors import MissingToolError, NoPeerError
from recovery.events import Event
from recovery.link.deadline import Deadline
from recovery.link.sysfs import (
    CORE_MODULE,
    NET_MODULE,
    NETWORK_KEY,
    SERVICE,
    STREAM_KEY,
    STREAM_MODULE,
    XDOMAIN,
    Interface,
    Peer,
    Sysfs,
    peer_label,
)
from recovery.sysattr import as_int


@dataclass(frozen=True)
class PeerAppeared(Event):
    kind: ClassVar[str] = "cable_peer"
    name: str  # XDomain device, e.g. "0-1"
    unique_id: str  # the peer's host UUID
    device_name: str = ""
    vendor_name: str = ""
    services: tuple[str, ...] = ()  # service keys: "stream", "network", ...
    rx_speed: str | None = None
    rx_lanes: int | None = None
    tx_speed: str | None = None
    tx_lanes: int | None = None
    interfaces: tuple[str, ...] = ()  # thunderbolt-net interfaces to this peer

    @property
    def label(self) -> str:
        return peer_label(self.name, self.vendor_name, self.device_name)


@dataclass(frozen=True)
class PeerGone(Event):
    kind: ClassVar[str] = "cable_peer_gone"
    name: str


@dataclass(frozen=True)
class ServiceAppeared(Event):
    kind: ClassVar[str] = "cable_service"
    name: str  # e.g. "0-1.0"
    peer: str
    key: str
    prtcid: int | None = None
    prtcvers: int | None = None


@dataclass(frozen=True)
class ServiceGone(Event):
    kind: ClassVar[str] = "cable_service_gone"
    name: str
    peer: str


@dataclass(frozen=True)
class InterfaceAppeared(Event):
    kind: ClassVar[str] = "cable_interface"
    name: str
    peer: str | None  # XDomain behind it, if sysfs shows one


@dataclass(frozen=True)
class InterfaceGone(Event):
    kind: ClassVar[str] = "cable_interface_gone"
    name: str


CableEvent = PeerAppeared | PeerGone | ServiceAppeared | ServiceGone | InterfaceAppeared | InterfaceGone


def peer_event(peer: Peer, interfaces: list[Interface]) -> PeerAppeared:
    return PeerAppeared(
        name=peer.name,
        unique_id=peer.unique_id,
        device_name=peer.device_name,
        vendor_name=peer.vendor_name,
        services=tuple(s.key for s in peer.services),
        rx_speed=peer.rx_speed,
        rx_lanes=peer.rx_lanes,
        tx_speed=peer.tx_speed,
        tx_lanes=peer.tx_lanes,
        interfaces=tuple(i.name for i in interfaces if i.peer == peer.name),
    )


def snapshot(sysfs: Sysfs) -> list[PeerAppeared]:
    """The peers on the cable now, as if each had just appeared."""
    interfaces = sysfs.interfaces()
    return [peer_event(p, interfaces) for p in sysfs.peers()]


# --- the auto link ---


def available_links(sysfs: Sysfs) -> tuple[str, ...]:
    """The links over the cable that both hosts can use now: ``tbstream``, ``tbnet``, both, or none.

    Symmetric: USB4STREAM needs the module on both hosts (the peer offers the
    ``stream`` service only when it has it), and a thunderbolt-net interface
    appears only when both hosts have ``thunderbolt_net``; so both sides see
    the same set (give or take the moment an interface appears, which the
    USB4STREAM handshake settles, see :mod:`recovery.link.auto`).
    """
    found = []
    if any(p.service(STREAM_KEY) for p in sysfs.peers()) and sysfs.module_loaded(STREAM_MODULE):
        found.append("tbstream")
    if sysfs.interfaces():
        found.append("tbnet")
    return tuple(found)


def choose_link(sysfs: Sysfs) -> str:
    """The first of :func:`available_links` (USB4STREAM before thunderbolt-net), or an error saying what is missing."""
    links = available_links(sysfs)
    if links:
        return links[0]
    peers = sysfs.peers()
    offering = [p for p in peers if p.service(STREAM_KEY)]
    missing_here = []
    if not sysfs.thunderbolt_present():
        raise MissingToolError(
            f"no Thunderbolt/USB4 support here (the {CORE_MODULE} module is not loaded)",
            hint=f"modprobe {CORE_MODULE}; or give the peer's address: {_ADDRESS_HINT}",
        )
    if not peers:
        raise NoPeerError(
            "no peer on the cable (is it plugged in, and the other machine booted into recovery?)",
            hint=f"check the cable, or give the peer's address: {_ADDRESS_HINT}",
        )
    reasons = []
    names = ", ".join(p.label for p in peers)
    if offering:
        missing_here.append(STREAM_MODULE)
        reasons.append(f"the peer offers USB4STREAM but {STREAM_MODULE} is not loaded here")
    else:
        reasons.append(f"{names} offers no USB4STREAM service (it runs an older kernel or lacks {STREAM_MODULE})")
    if not sysfs.module_loaded(NET_MODULE):
        missing_here.append(NET_MODULE)
        reasons.append(f"{NET_MODULE} is not loaded here")
    elif not any(p.service(NETWORK_KEY) for p in peers):
        reasons.append(f"{names} offers no network service ({NET_MODULE} not loaded there)")
    else:
        reasons.append("no thunderbolt network interface has appeared")
    message = "no link over the cable: " + "; ".join(reasons)
    if missing_here:
        raise MissingToolError(message, hint=f"modprobe {' '.join(missing_here)}; or {_ADDRESS_HINT}")
    raise NoPeerError(message, hint=f"give the peer's address: {_ADDRESS_HINT}")


_ADDRESS_HINT = "--to HOST:PORT on the sender, --listen on the receiver"


# --- live events ---


class DeviceSource(Protocol):
    """What we use of a ``pyudev.Monitor``."""

    def fileno(self) -> int: ...
    def poll(self, timeout: float | None = None) -> Any: ...


def udev_monitor(subsystems: tuple[str, ...] = ("thunderbolt", "net")) -> DeviceSource:
    """A started pyudev monitor on ``subsystems`` (the thunderbolt bus and network interfaces)."""
    try:
        import pyudev
    except ImportError:
        raise MissingToolError("pyudev is not installed", hint="install the Debian package python3-pyudev") from None
    context = pyudev.Context()
    # udevd re-broadcasts events with its properties; without it, listen to the kernel itself.
    source = "udev" if os.path.exists("/run/udev/control") else "kernel"
    try:
        monitor = pyudev.Monitor.from_netlink(context, source=source)
        for subsystem in subsystems:
            monitor.filter_by(subsystem)
        monitor.start()
    except OSError as e:
        raise MissingToolError(f"cannot listen to device events: {e.strerror}", hint="run as root") from None
    return monitor  # type: ignore[no-any-return]


T = TypeVar("T")
RECHECK = 1.0  # seconds between looks at sysfs when no event came (one may have come before the monitor)
STOP_SLICE = 0.25  # seconds a wait on events runs before it looks at the stop switch


class DeviceWatch:
    """Waits that wake on the kernel's uevents (thunderbolt bus, misc devices) instead of polling.

    The thunderbolt core sends ``add``/``bind`` when a peer's service appears
    and its driver binds, ``change`` on the service device whenever the peer's
    properties are read again (it published or withdrew a stream), ``remove``
    when it goes; ``/dev/tbstreamN`` comes with a ``misc`` ``add``. A wait
    re-checks its condition on each event, and every :data:`RECHECK` seconds
    in case the event came before the monitor was listening. Without pyudev
    or the right to listen, it falls back to looking twice a second.
    """

    def __init__(self, source: DeviceSource | None) -> None:
        self.source = source

    @classmethod
    def start(cls) -> DeviceWatch:
        try:
            return cls(udev_monitor(("thunderbolt", "misc")))
        except MissingToolError:
            return cls(None)

    def wait(self, ready: Callable[[], T | None], deadline: Deadline) -> T | None:
        """``ready()``'s first true value, or None when the deadline passes (a stop raises)."""
        while True:
            value = ready()
            if value:
                return value
            deadline.check()
            if deadline.expired():
                return None
            if self.source is None:
                deadline.pause(0.5)
                continue
            until = time.monotonic() + RECHECK
            while True:
                left = min(STOP_SLICE, until - time.monotonic(), deadline.left(STOP_SLICE))
                if left <= 0 or self.source.poll(left) is not None:
                    break
                deadline.check()

    def close(self) -> None:
        stop = getattr(self.source, "stop", None)
        if callable(stop):
            stop()


class CableMonitor:
    """Plugs and unplugs on the cable, as :data:`CableEvent` values."""

    def __init__(self, source: DeviceSource | None = None) -> None:
        self.source = source if source is not None else udev_monitor()
        self._ready: collections.deque[CableEvent] = collections.deque()
        self._ifaces: set[str] = set()  # interfaces we announced, so their removal is reported

    def fileno(self) -> int:
        return self.source.fileno()

    def poll(self, timeout: float | None = None) -> CableEvent | None:
        """The next event, waiting up to ``timeout`` seconds (None: forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            device = self.source.poll(left)
            if device is None:
                return None
            self._ready.extend(self.convert(device))
        return self._ready.popleft()

    def convert(self, device: Any) -> list[CableEvent]:
        """The events one pyudev device event means (often none)."""
        action = device.action
        name = str(device.sys_name)
        if device.subsystem == "net":
            return self._net(device, action, name)
        if device.subsystem != "thunderbolt":
            return []
        devtype = device.device_type
        if devtype == XDOMAIN:
            if action == "add":
                return [
                    PeerAppeared(
                        name=name,
                        unique_id=_attr(device, "unique_id") or "",
                        device_name=_attr(device, "device_name") or "",
                        vendor_name=_attr(device, "vendor_name") or "",
                        rx_speed=_attr(device, "rx_speed"),
                        rx_lanes=as_int(_attr(device, "rx_lanes")),
                        tx_speed=_attr(device, "tx_speed"),
                        tx_lanes=as_int(_attr(device, "tx_lanes")),
                    )
                ]
            if action == "remove":
                return [PeerGone(name)]
        if devtype == SERVICE:
            peer = name.rsplit(".", 1)[0]
            if action == "add":
                return [
                    ServiceAppeared(
                        name=name,
                        peer=peer,
                        key=_attr(device, "key") or "",
                        prtcid=as_int(_attr(device, "prtcid")),
                        prtcvers=as_int(_attr(device, "prtcvers")),
                    )
                ]
            if action == "remove":
                return [ServiceGone(name, peer)]
        return []

    def _net(self, device: Any, action: str, name: str) -> list[CableEvent]:
        if action == "add":
            parent = device.parent
            peer = None
            if parent is not None and parent.subsystem == "thunderbolt" and parent.device_type == SERVICE:
                peer = str(parent.sys_name).rsplit(".", 1)[0]
            if peer is None and not name.startswith("thunderbolt"):
                return []
            self._ifaces.add(name)
            return [InterfaceAppeared(name, peer)]
        if action == "remove" and (name in self._ifaces or name.startswith("thunderbolt")):
            self._ifaces.discard(name)
            return [InterfaceGone(name)]
        return []


def _attr(device: Any, name: str) -> str | None:
    value = device.attributes.get(name)
    if value is None:
        return None
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return text.strip()
