"""TCP link: two TCP connections (control, data) paired by a session token.

The receiver listens; the sender connects twice and starts each stream with
a link hello (see :mod:`recovery.protocol.pairing`). Used for an explicit
``HOST:PORT`` and, bound to one interface, by the thunderbolt-net link.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from dataclasses import dataclass
from functools import partial

from recovery.errors import LinkError, UsageError
from recovery.link import nic
from recovery.link.base import Connection, FdChannel
from recovery.protocol.pairing import (
    CONTROL,
    DATA,
    LINK_HELLO,
    LinkHelloError,
    decode_link_hello,
    encode_link_hello,
)

DEFAULT_PORT = 7554
HELLO_TIMEOUT = 10.0  # seconds a new stream has to say hello
PAIR_TIMEOUT = 30.0  # seconds between a control stream and its data stream
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


def _sockaddr(ep: Endpoint, family: int) -> tuple:
    if family == socket.AF_INET6:
        scope_id = socket.if_nametoindex(ep.scope) if ep.scope else 0
        return (ep.host, ep.port, 0, scope_id)
    return (ep.host, ep.port)


def _family(host: str) -> int:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return socket.AF_UNSPEC


class Listener:
    """Accepts one sender: a control stream and a data stream with one token."""

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
            sock.listen(8)
        except OSError as e:
            sock.close()
            raise LinkError(f"cannot listen on {ep}: {e.strerror}") from None
        self.sock = sock
        self.device = device
        host, port = sock.getsockname()[:2]
        self.endpoint = Endpoint(host, port, ep.scope)

    @property
    def port(self) -> int:
        return self.endpoint.port

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def accept(self, timeout: float | None = None, *, kind: str = "tcp") -> Connection:
        """Wait for a sender; streams that do not say a valid hello are dropped."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pending: dict[bytes, tuple[socket.socket, float]] = {}  # token -> control stream
        try:
            while True:
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                for token, (_, since) in list(pending.items()):
                    left = since + PAIR_TIMEOUT - time.monotonic()
                    if left <= 0:
                        pending.pop(token)[0].close()
                    else:
                        wait = left if wait is None else min(wait, left)
                self.sock.settimeout(wait)
                try:
                    conn, addr = self.sock.accept()
                except TimeoutError:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise LinkError(f"no sender connected to {self.endpoint} in time") from None
                    continue
                try:
                    channel, token = _read_link_hello(conn)
                except (LinkHelloError, OSError):
                    conn.close()  # not one of ours, or too slow: ignore it
                    continue
                if channel == CONTROL:
                    old = pending.pop(token, None)
                    if old:
                        old[0].close()
                    pending[token] = (conn, time.monotonic())
                    continue
                control = pending.pop(token, None)
                if control is None:
                    conn.close()  # a data stream without its control stream
                    continue
                peer = _describe(addr)
                return _connection(control[0], conn, kind=kind, peer=peer)
        finally:
            for sock, _ in pending.values():
                sock.close()


def _describe(addr: tuple) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _read_link_hello(conn: socket.socket) -> tuple[int, bytes]:
    conn.settimeout(HELLO_TIMEOUT)
    data = b""
    while len(data) < LINK_HELLO.size:
        part = conn.recv(LINK_HELLO.size - len(data))
        if not part:
            raise LinkHelloError("stream closed before its link hello")
        data += part
    return decode_link_hello(data)


def _connection(control: socket.socket, data: socket.socket, *, kind: str, peer: str) -> Connection:
    for s in (control, data):
        s.settimeout(None)
        _tune(s)
    return Connection(
        control=FdChannel(control.fileno(), name="control", owner=control),
        data=FdChannel(data.fileno(), name="data", owner=data),
        kind=kind,
        peer=peer,
        speed_probe=partial(nic.describe, control),
    )


def connect(ep: Endpoint, *, timeout: float = CONNECT_TIMEOUT, device: str | None = None,
            kind: str = "tcp") -> Connection:
    """Open the control and the data stream to a listening receiver."""
    token = os.urandom(16)
    socks: list[socket.socket] = []
    try:
        for channel in (CONTROL, DATA):
            sock = _open(ep, timeout, device)
            socks.append(sock)
            sock.sendall(encode_link_hello(channel, token))
        return _connection(socks[0], socks[1], kind=kind, peer=str(ep))
    except BaseException:
        for s in socks:
            s.close()
        raise


def _open(ep: Endpoint, timeout: float, device: str | None) -> socket.socket:
    family = _family(ep.host)
    if family == socket.AF_UNSPEC:
        try:
            infos = socket.getaddrinfo(ep.host, ep.port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise LinkError(f"cannot resolve {ep.host!r}: {e.strerror}",
                            hint="check the receiver's name or give its address") from None
        family, addr = infos[0][0], infos[0][4]
    else:
        addr = _sockaddr(ep, family)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if device:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
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
