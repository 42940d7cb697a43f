"""TCP link: two TCP connections (control, data) paired by a session token.

The receiver listens; the sender connects twice and starts each stream with
a link hello (see :mod:`recovery.protocol.pairing`). Used for an explicit
``HOST:PORT`` and, bound to one interface, by the thunderbolt-net link.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from recovery.errors import LinkError, UsageError
from recovery.link import nic
from recovery.link.base import Connection, FdChannel
from recovery.protocol.channels import CONTROL, DATA
from recovery.protocol.linkhello import LINK_HELLO, LinkHelloError, decode_link_hello, encode_link_hello

DEFAULT_PORT = 7554
HELLO_TIMEOUT = 10.0  # seconds a new stream has to say its link hello, whatever it trickles
PAIR_TIMEOUT = 30.0  # seconds between the two streams of one sender, whichever comes first
MAX_PENDING = 32  # streams waiting for their hello (or for the other stream of their sender) at once
CONNECT_TIMEOUT = 15.0  # seconds a connect may take when the caller gives none
SOCKET_BUFFER = 4 << 20


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    scope: str | None = None  # interface name for IPv6 link-local addresses

    def __str__(self) -> str:
        host = self.host + (f"%{self.scope}" if self.scope else "")
        return f"[{host}]:{self.port}" if ":" in self.host else f"{host}:{self.port}"


def parse_endpoint(text: str, *, default_host: str = "", default_port: int = DEFAULT_PORT) -> Endpoint:
    """``HOST:PORT``, ``[V6]:PORT``, ``[fe80::1%eth0]:PORT``, ``HOST``, ``:PORT``."""
    text = text.strip()
    host, port_text = text, ""
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise UsageError(f"bad address {text!r}: missing ']'")
        host, rest = text[1:close], text[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise UsageError(f"bad address {text!r}")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.count(":") > 1:
        host = text  # a bare IPv6 address
    scope = None
    if "%" in host:
        host, scope = host.split("%", 1)
    port = default_port
    if port_text:
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise UsageError(f"bad port in {text!r}")
        port = int(port_text)
    return Endpoint(host or default_host, port, scope)


def _tune(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        except OSError:
            pass


def _sockaddr(ep: Endpoint, family: int) -> tuple[Any, ...]:
    if family == socket.AF_INET6:
        scope_id = socket.if_nametoindex(ep.scope) if ep.scope else 0
        return (ep.host, ep.port, 0, scope_id)
    return (ep.host, ep.port)


def _family(host: str) -> int:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return socket.AF_UNSPEC


class AcceptTimeout(LinkError):
    """Nobody connected within the time given to :meth:`Listener.accept`."""


class Listener:
    """Accepts senders: each a control stream and a data stream with one token.

    Streams say their link hello in parallel (a stream that trickles bytes
    holds up nobody else), each within :data:`HELLO_TIMEOUT`; at most
    :data:`MAX_PENDING` wait at once (the oldest is dropped for a newer one),
    and a stream whose other half does not follow within :data:`PAIR_TIMEOUT`
    is dropped. Either stream's hello may arrive first: the sender sends the
    control stream's first, but a lost segment resent (or a relay) can let the
    data stream's overtake it. The two must come from one address (a stream
    planted with a token seen on the network does not complete another
    machine's pair; the pairing's PAKE would refuse it anyway). Streams still
    waiting when :meth:`accept` returns are kept for the next call.
    """

    def __init__(self, ep: Endpoint, *, device: str | None = None) -> None:
        family = _family(ep.host) if ep.host else socket.AF_INET6
        if family == socket.AF_UNSPEC:
            try:
                family, _, _, _, addr = socket.getaddrinfo(ep.host, ep.port, type=socket.SOCK_STREAM)[0]
            except socket.gaierror as e:
                raise UsageError(f"cannot resolve {ep.host!r}: {e.strerror}") from None
            ep = Endpoint(str(addr[0]), ep.port, ep.scope)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and not ep.host:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            if device:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
            sock.bind(_sockaddr(Endpoint(ep.host or "::", ep.port, ep.scope), family))
            sock.listen(64)
        except OSError as e:
            sock.close()
            raise LinkError(f"cannot listen on {ep}: {e.strerror}") from None
        sock.setblocking(False)
        self.sock = sock
        self.device = device
        host, port = sock.getsockname()[:2]
        self.endpoint = Endpoint(host, port, ep.scope)
        self._greeting: dict[socket.socket, _Greeting] = {}  # streams that have not said hello yet
        self._halves: dict[bytes, _Half] = {}  # token -> the stream of a sender whose other stream is not here yet
        self._wake_r, self._wake_w = os.pipe()
        self._closed = False
        self._accepting = False
        self._lock = threading.Lock()
        self._one_accept = threading.Lock()  # the greeting streams are this listener's: one reader at a time

    @property
    def port(self) -> int:
        return self.endpoint.port

    def close(self) -> None:
        """Stop listening and drop every waiting stream (from any thread: a blocked accept returns)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.write(self._wake_w, b"x")
            try:
                self.sock.shutdown(socket.SHUT_RDWR)  # stops listening now, even while a poll holds the socket
            except OSError:
                pass
            self.sock.close()
            if not self._accepting:
                self._drop_all()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _drop_all(self) -> None:
        for g in self._greeting.values():
            g.sock.close()
        for half in self._halves.values():
            half.sock.close()
        self._greeting.clear()
        self._halves.clear()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def accept(self, timeout: float | None = None, *, kind: str = "tcp") -> Connection:
        """Wait for a sender; streams that do not say a valid hello in time are dropped. One caller at a
        time (a kept listener may have a waiter ending while the next begins): others wait their turn."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._one_accept.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            raise AcceptTimeout(f"no sender connected to {self.endpoint} in time")
        try:
            return self._accept(deadline, kind)
        finally:
            self._one_accept.release()

    def _accept(self, deadline: float | None, kind: str) -> Connection:
        with self._lock:
            if self._closed:
                raise LinkError(f"stopped listening on {self.endpoint}")
            self._accepting = True
        try:
            while True:
                now = time.monotonic()
                wait = self._expire(now)
                if deadline is not None:
                    if now >= deadline:
                        raise AcceptTimeout(f"no sender connected to {self.endpoint} in time")
                    wait = min(wait, deadline - now)
                poller = select.poll()
                try:
                    poller.register(self.sock, select.POLLIN)
                    poller.register(self._wake_r, select.POLLIN)
                except (ValueError, OSError):  # closed from another thread meanwhile
                    raise LinkError(f"stopped listening on {self.endpoint}") from None
                for sock in self._greeting:
                    poller.register(sock, select.POLLIN)
                for fd, _ in poller.poll(max(0, int(wait * 1000)) + 1):
                    if fd == self._wake_r:
                        raise LinkError(f"stopped listening on {self.endpoint}")
                    if fd == self.sock.fileno():
                        self._take_new(now)
                        continue
                    conn = self._hear(fd, kind)
                    if conn is not None:
                        return conn
        finally:
            with self._lock:
                self._accepting = False
                if self._closed:
                    self._drop_all()

    def _take_new(self, now: float) -> None:
        try:
            sock, addr = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            if e.errno in (errno.ECONNABORTED, errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                time.sleep(0.05)  # nothing to take now (out of descriptors: try again shortly)
                return
            raise LinkError(f"stopped listening on {self.endpoint}: {e.strerror}") from None
        if len(self._greeting) >= MAX_PENDING:
            oldest = min(self._greeting.values(), key=lambda g: g.since)
            del self._greeting[oldest.sock]
            oldest.sock.close()
        sock.setblocking(False)
        self._greeting[sock] = _Greeting(sock, addr, now)

    def _expire(self, now: float) -> float:
        """Drop streams that took too long; the seconds until the next one expires."""
        wait = 1.0
        for sock, g in list(self._greeting.items()):
            left = g.since + HELLO_TIMEOUT - now
            if left <= 0:
                del self._greeting[sock]
                sock.close()
            else:
                wait = min(wait, left)
        for token, half in list(self._halves.items()):
            left = half.since + PAIR_TIMEOUT - now
            if left <= 0:
                del self._halves[token]
                half.sock.close()
            else:
                wait = min(wait, left)
        return wait

    def _hear(self, fd: int, kind: str) -> Connection | None:
        g = next((g for s, g in self._greeting.items() if s.fileno() == fd), None)
        if g is None:
            return None
        try:
            part = g.sock.recv(LINK_HELLO.size - len(g.data))
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            part = b""
        if not part:
            del self._greeting[g.sock]
            g.sock.close()
            return None
        g.data += part
        if len(g.data) < LINK_HELLO.size:
            return None
        del self._greeting[g.sock]
        try:
            channel, token = decode_link_hello(bytes(g.data))
        except LinkHelloError:
            g.sock.close()  # not one of ours: ignore it
            return None
        other = self._halves.pop(token, None)
        if other is not None and other.channel != channel and other.addr[0] == g.addr[0]:
            control, data = (other, g) if channel == DATA else (g, other)
            return _connection(control.sock, data.sock, kind=kind, peer=_describe(control.addr), token=token)
        if other is not None:
            other.sock.close()  # the same stream again, or one from another address: the newer one stands
        if len(self._halves) >= MAX_PENDING:
            oldest = min(self._halves, key=lambda t: self._halves[t].since)
            self._halves.pop(oldest).sock.close()
        self._halves[token] = _Half(g.sock, g.addr, g.since, channel)
        return None


@dataclass
class _Greeting:
    sock: socket.socket
    addr: tuple[Any, ...]
    since: float
    data: bytearray = field(default_factory=bytearray)


@dataclass
class _Half:
    """One stream of a sender, heard, waiting for the sender's other stream."""

    sock: socket.socket
    addr: tuple[Any, ...]
    since: float
    channel: int


def _describe(addr: tuple[Any, ...]) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _connection(control: socket.socket, data: socket.socket, *, kind: str, peer: str, token: bytes) -> Connection:
    for s in (control, data):
        s.settimeout(None)
        _tune(s)
    return Connection(
        control=FdChannel(control.fileno(), name="control", owner=control),
        data=FdChannel(data.fileno(), name="data", owner=data),
        kind=kind,
        peer=peer,
        speed_probe=partial(nic.describe, control),
        binding=b"tcp " + token,
        private=_loopback(control),
        origin=_address(control),
        address=_peer_address(control),
    )


def _peer_address(sock: socket.socket) -> str:
    try:
        return str(sock.getpeername()[0])
    except OSError:
        return ""


def _address(sock: socket.socket) -> str:
    try:
        return origin_of(str(sock.getpeername()[0]))
    except OSError:
        return ""


def origin_of(address: str) -> str:
    """Whom a peer's pairing tries count against: its IPv4 address, or its IPv6 /64 (one host easily has
    a whole /64 to pick addresses from), with the interface for a link-local one."""
    host, _, scope = address.partition("%")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    if isinstance(ip, ipaddress.IPv6Address):
        net = ipaddress.IPv6Network((int(ip) >> 64 << 64, 64))
        return f"{net}%{scope}" if scope else str(net)
    return str(ip)


def _loopback(sock: socket.socket) -> bool:
    """Both ends on this host (127.0.0.1, ::1): no network carries the bytes."""
    try:
        return ipaddress.ip_address(sock.getpeername()[0].split("%")[0]).is_loopback
    except (OSError, ValueError):
        return False


def connect(
    ep: Endpoint,
    *,
    timeout: float = CONNECT_TIMEOUT,
    device: str | None = None,
    kind: str = "tcp",
    source: str | None = None,
) -> Connection:
    """Open the control and the data stream to a listening receiver (from the local address ``source``,
    on a machine with several)."""
    token = os.urandom(16)
    socks: list[socket.socket] = []
    try:
        for channel in (CONTROL, DATA):
            sock = _open(ep, timeout, device, source)
            socks.append(sock)
            sock.sendall(encode_link_hello(channel, token))
        return _connection(socks[0], socks[1], kind=kind, peer=str(ep), token=token)
    except BaseException:
        for s in socks:
            s.close()
        raise


def _open(ep: Endpoint, timeout: float, device: str | None, source: str | None = None) -> socket.socket:
    family = _family(ep.host)
    if family == socket.AF_UNSPEC:
        try:
            infos = socket.getaddrinfo(ep.host, ep.port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise LinkError(
                f"cannot resolve {ep.host!r}: {e.strerror}", hint="check the receiver's name or give its address"
            ) from None
        family, addr = infos[0][0], infos[0][4]
    else:
        addr = _sockaddr(ep, family)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if device:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
        if source:
            sock.bind((source, 0))
        sock.settimeout(timeout)
        sock.connect(addr)
    except OSError as e:
        sock.close()
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise LinkError(
            f"cannot connect to {ep}: {reason}",
            hint="start `recovery receive` on the other machine first and check the address",
        ) from None
    return sock
