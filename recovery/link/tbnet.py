"""The thunderbolt-net link: TCP over IPv6 link-local on the cable's interface, found by a beacon.

No address configuration: the interface is brought up (and, if it is a
thunderbolt interface, its MTU raised to the maximum, which triples its
throughput), its IPv6 link-local address comes up by itself, the receiver
listens on that address only and answers beacon queries (:mod:`.beacon`),
and the sender connects to whoever answered. Every socket is bound to the
one interface. The two TCP streams are paired as in :mod:`.tcp`.

Which interface: ``--link tbnet:IFACE`` names it (any name, e.g. a VM's
``eth0``). Otherwise the interfaces whose sysfs device is a thunderbolt
service; if there are none, an interface named ``thunderbolt*`` with no
XDomain behind it (a veth pair in tests); exactly one must qualify.
"""

from __future__ import annotations

import errno
import json
import math
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from recovery.errors import CancelledError, LinkError, MissingToolError, NoPeerError, RecoveryError, UsageError
from recovery.link import beacon, tcp
from recovery.link.base import Connection, GivesBack
from recovery.link.deadline import Deadline
from recovery.link.sysfs import NET_MODULE, Interface, Sysfs
from recovery.link.watch import watch
from recovery.run import output, run

QUERY_INTERVAL = 0.5  # seconds between beacon queries
ADDRESS_TIMEOUT = 20.0  # seconds for the link-local address to pass duplicate detection
CARRIER_GRACE = 4  # watchdog polls (0.5 s each) a carrier may be down before the link counts as lost
ALL_NODES = "ff02::1"
IF_INET6 = Path("/proc/net/if_inet6")
SCOPE_LINK = 0x20
IFA_F_TENTATIVE, IFA_F_DADFAILED = 0x40, 0x08


def choose_interface(sysfs: Sysfs, explicit: str | None) -> Interface:
    if explicit:
        iface = sysfs.interface(explicit) if _exists(explicit) else None
        if iface is None:
            raise UsageError(f"there is no network interface {explicit}")
        return iface
    found = sysfs.interfaces()
    pool = [i for i in found if i.peer is not None] or found
    if not pool:
        if not sysfs.module_loaded(NET_MODULE) and sysfs.thunderbolt_present():
            raise MissingToolError(
                f"the {NET_MODULE} kernel module is not loaded", hint=f"modprobe {NET_MODULE}, or give --to HOST:PORT"
            )
        raise NoPeerError(
            "no thunderbolt network interface: no peer offers networking on the cable",
            hint="check the cable; or name an interface with --link tbnet:IFACE, or --to HOST:PORT",
        )
    if len(pool) > 1:
        names = ", ".join(i.name + (f" (peer {i.peer})" if i.peer else "") for i in pool)
        raise UsageError(
            f"several thunderbolt interfaces: {names}", hint=f"choose one with --link tbnet:{pool[0].name}"
        )
    return pool[0]


def _exists(ifname: str) -> bool:
    try:
        socket.if_nametoindex(ifname)
    except OSError:
        return False
    return True


def is_thunderbolt(iface: Interface) -> bool:
    return iface.peer is not None or iface.name.startswith("thunderbolt")


# --- getting the interface ready ---


def bring_up(iface: Interface) -> None:
    """Admin-up the interface; for a thunderbolt one, raise the MTU to its maximum."""
    try:
        info = json.loads(output(["ip", "-d", "-j", "link", "show", "dev", iface.name]))[0]
        if "UP" not in info.get("flags", []):
            run(["ip", "link", "set", "dev", iface.name, "up"])
        max_mtu, mtu = int(info.get("max_mtu") or 0), int(info.get("mtu") or 0)
        if is_thunderbolt(iface) and max_mtu > mtu:
            run(["ip", "link", "set", "dev", iface.name, "mtu", str(max_mtu)])
    except MissingToolError:
        raise
    except RecoveryError as e:
        raise LinkError(
            f"cannot bring up {iface.name}: {e.message}", hint="run as root" if os.geteuid() else None
        ) from None
    except (ValueError, LookupError, TypeError) as e:
        raise LinkError(f"cannot read the state of {iface.name}: {e}") from None


def link_local(ifname: str, table: Path = IF_INET6) -> tuple[str | None, int]:
    """The interface's IPv6 link-local address and its flags (None if it has none)."""
    try:
        lines = table.read_text().splitlines()
    except OSError:
        return None, 0
    found = []
    for line in lines:
        parts = line.split()
        if len(parts) == 6 and parts[5] == ifname and int(parts[3], 16) == SCOPE_LINK:
            flags = int(parts[4], 16)
            found.append(
                (
                    bool(flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED)),
                    socket.inet_ntop(socket.AF_INET6, bytes.fromhex(parts[0])),
                    flags,
                )
            )
    if not found:
        return None, 0
    _, addr, flags = min(found)  # a usable one first
    return addr, flags


def ready_address(ifname: str) -> str | None:
    """The interface's link-local address once it has passed duplicate address detection."""
    addr, flags = link_local(ifname)
    return addr if addr and not flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED) else None


def wait_link_local(sysfs: Sysfs, ifname: str, deadline: Deadline) -> str:
    """Wait until the link-local address has passed duplicate address detection."""
    limit = time.monotonic() + ADDRESS_TIMEOUT
    while True:
        addr, flags = link_local(ifname)
        if addr and flags & IFA_F_DADFAILED:
            raise LinkError(f"the link-local address {addr} on {ifname} is a duplicate")
        if addr and not flags & IFA_F_TENTATIVE:
            return addr
        if not _exists(ifname):
            raise LinkError(f"{ifname} went away (cable unplugged?)")
        now = time.monotonic()
        carrier = sysfs.carrier(ifname)
        if carrier is False and deadline.expired():
            raise NoPeerError(
                f"nobody is on {ifname} (no carrier: the other side's interface is down)",
                hint="start `recovery receive` on the other machine first, or give --to HOST:PORT",
            )
        if carrier is not False and (now >= limit or deadline.expired()):
            raise LinkError(
                f"{ifname} has no usable IPv6 link-local address",
                hint=f"is IPv6 disabled on it? sysctl net.ipv6.conf.{ifname}.disable_ipv6",
            )
        deadline.pause(0.1)


# --- the beacon on the wire ---


def _udp(ifname: str, ifindex: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
    except OSError:
        sock.close()
        raise
    return sock


class Responder:
    """The receiver's side of the beacon: answers queries on one interface."""

    def __init__(self, ifname: str, port: int, name: str) -> None:
        self.ifindex = socket.if_nametoindex(ifname)
        self.offer = (port, name)
        self.sock = _udp(ifname, self.ifindex)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            group = socket.inet_pton(socket.AF_INET6, ALL_NODES) + struct.pack("@I", self.ifindex)
            try:
                self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, group)
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    raise
            self.sock.bind((ALL_NODES, beacon.BEACON_PORT, 0, self.ifindex))
        except OSError as e:
            self.sock.close()
            raise LinkError(
                f"cannot answer beacons on {ifname} (UDP port {beacon.BEACON_PORT}): {e.strerror}",
                hint="is another `recovery receive` running on this interface?",
            ) from None
        self.answered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="beacon-responder", daemon=True)

    def __enter__(self) -> Responder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(250):
                continue
            try:
                data, src = self.sock.recvfrom(beacon.MAX_DATAGRAM + 1)
                query = beacon.decode(data)
            except (OSError, beacon.BeaconError):
                continue
            if query.type != beacon.QUERY:
                continue
            port, name = self.offer
            reply = beacon.encode(beacon.Beacon(beacon.OFFER, query.nonce, port, name))
            try:
                self.sock.sendto(reply, (_host(src[0]), src[1], 0, self.ifindex))
                self.answered += 1
            except OSError:
                continue


def find_receiver(ifname: str, address: str, deadline: Deadline) -> tuple[str, beacon.Beacon]:
    """Query until a receiver on ``ifname`` offers a port; its address and offer."""
    ifindex = socket.if_nametoindex(ifname)
    sock = _udp(ifname, ifindex)
    nonce = os.urandom(16)
    query = beacon.encode(beacon.Beacon(beacon.QUERY, nonce, 0, socket.gethostname()))
    mismatch: beacon.VersionMismatch | None = None
    try:
        sock.bind((address, 0, 0, ifindex))
        next_query = 0.0
        while True:
            deadline.check()
            now = time.monotonic()
            if deadline.expired():
                detail = f"; {mismatch.message}" if mismatch else ""
                raise NoPeerError(
                    f"no receiver answered on {ifname}{detail}",
                    hint="start `recovery receive` on the other machine first, or give --to HOST:PORT",
                )
            if now >= next_query:
                try:
                    sock.sendto(query, (ALL_NODES, beacon.BEACON_PORT, 0, ifindex))
                except OSError:
                    pass  # the link may not carry traffic yet: ask again shortly
                next_query = now + QUERY_INTERVAL
            sock.settimeout(max(0.01, deadline.left(next_query - time.monotonic())))
            try:
                data, src = sock.recvfrom(beacon.MAX_DATAGRAM + 1)
                offer = beacon.decode(data)
            except (TimeoutError, OSError):
                continue
            except beacon.VersionMismatch as e:
                mismatch = e
                continue
            except beacon.BeaconError:
                continue
            if offer.type == beacon.OFFER and offer.nonce == nonce:
                return _host(src[0]), offer
    finally:
        sock.close()


def _host(text: str) -> str:
    return text.split("%", 1)[0]


# --- the link ---


@dataclass
class Ready:
    iface: Interface
    address: str  # our link-local address on it


def prepare(sysfs: Sysfs, explicit: str | None, deadline: Deadline) -> Ready:
    iface = choose_interface(sysfs, explicit)
    bring_up(iface)
    return Ready(iface, wait_link_local(sysfs, iface.name, deadline))


def _probe(sysfs: Sysfs, ifname: str, *, grace: int) -> Callable[[], str | None]:
    down = 0

    def probe() -> str | None:
        nonlocal down
        if not _exists(ifname):
            return f"link lost: {ifname} went away (cable unplugged?)"
        state = sysfs.operstate(ifname)
        down = down + 1 if state in ("down", "lowerlayerdown", "notpresent") else 0
        if down > grace:
            return f"link lost: {ifname} has no carrier (cable unplugged, or the peer's side is down)"
        return None

    return probe


def open_link(
    spec: object,
    role: str,
    *,
    timeout: float | None,
    on_listening: Callable[[str, int, str], None] | None,
    stop: threading.Event | None = None,
    sysfs: Sysfs | None = None,
) -> Connection:
    """The link opener for ``--link tbnet[:IFACE]`` (see :mod:`recovery.link.opening`)."""
    sysfs = sysfs or Sysfs()
    deadline = Deadline(timeout, stop)
    ready = prepare(sysfs, getattr(spec, "interface", None), deadline)
    ifname = ready.iface.name
    if role == "send":
        assert not deadline.endless, "the sender always has a deadline"
        host, offer = find_receiver(ifname, ready.address, deadline)
        ep = tcp.Endpoint(host, offer.port, scope=ifname)
        conn = tcp.connect(ep, timeout=max(1.0, deadline.left(math.inf)), device=ifname, kind="tbnet")
    else:
        listening = Listening(ready, deadline.stop, on_listening, sysfs)
        try:
            return listening.accept(None if deadline.endless else deadline.left(math.inf))
        finally:
            listening.close()
    return watched(conn, sysfs, ifname, ready.iface.peer)


class Listening(GivesBack):
    """The receiver's side, kept for as many connections as it takes: the TCP
    listener on the link-local address, the beacon responder, and a watcher that
    ends a wait when the interface goes or ``stop`` is set."""

    def __init__(
        self, ready: Ready, stop: threading.Event, on_listening: Callable[[str, int, str], None] | None, sysfs: Sysfs
    ) -> None:
        super().__init__()
        ifname = self.ifname = ready.iface.name
        self.ready, self.sysfs = ready, sysfs
        try:
            self.listener = tcp.Listener(tcp.Endpoint(ready.address, tcp.DEFAULT_PORT, scope=ifname), device=ifname)
        except LinkError:  # the usual port is taken: any port will do, the beacon tells it
            self.listener = tcp.Listener(tcp.Endpoint(ready.address, 0, scope=ifname), device=ifname)
        self.stop = stop
        self.gone = threading.Event()
        self._done = threading.Event()
        try:
            self.responder = Responder(ifname, self.listener.port, socket.gethostname()).__enter__()
        except BaseException:
            self.listener.close()
            raise
        self._watcher = threading.Thread(target=self._watch, name="tbnet-accept-watch", daemon=True)
        self._watcher.start()
        if on_listening is not None:
            on_listening(f"{ready.address}%{ifname}", self.listener.port, "tbnet")

    def _watch(self) -> None:  # neither a vanished interface nor a stop wakes accept() by itself
        while not self._done.wait(0.1):
            if self.stop.is_set() or not _exists(self.ifname):
                self.gone.set()
                self.listener.close()
                return

    def accept(self, timeout: float | None) -> Connection:
        returned = self._take_returned()
        if returned is not None:
            return returned
        try:
            conn = self.listener.accept(timeout, kind="tbnet")
            return watched(conn, self.sysfs, self.ifname, self.ready.iface.peer)
        except tcp.AcceptTimeout:
            raise
        except (OSError, LinkError):
            if self.stop.is_set():
                raise CancelledError("stopped while waiting for a sender") from None
            if self.gone.is_set():
                raise LinkError(f"{self.ifname} went away while waiting for a sender (cable unplugged?)") from None
            raise

    def close(self) -> None:
        self._done.set()
        self._watcher.join()
        self.responder.__exit__()
        self.listener.close()


def listen(
    spec: object,
    *,
    on_listening: Callable[[str, int, str], None] | None,
    stop: threading.Event | None = None,
    sysfs: Sysfs | None = None,
    timeout: float | None = None,
) -> Listening:
    """The receiver's side of ``--link tbnet[:IFACE]``, for several connections in turn."""
    sysfs = sysfs or Sysfs()
    deadline = Deadline(timeout, stop)
    return Listening(prepare(sysfs, getattr(spec, "interface", None), deadline), deadline.stop, on_listening, sysfs)


def watched(conn: Connection, sysfs: Sysfs, ifname: str, peer: str | None) -> Connection:
    """The connection with the cable's speed and a watchdog on the interface."""
    card_speed = conn.speed_probe  # TCP's: the network card's

    def speed() -> str | None:  # the bus's word for the cable, where an XDomain is behind the interface
        found = sysfs.peer(peer) if peer else None
        return (found.speed if found else None) or (card_speed() if card_speed else None)

    conn.speed_probe = speed
    return watch(conn, _probe(sysfs, ifname, grace=0), poll=_probe(sysfs, ifname, grace=CARRIER_GRACE))
