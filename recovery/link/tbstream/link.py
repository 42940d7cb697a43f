"""The USB4STREAM link: two streams over the cable, set up from sysfs and ConfigFS.

One connection is a control stream and a data stream (:data:`CONTROL_NAME`,
:data:`DATA_NAME`) in the group named after the peer's ``stream`` service.
Steps, each resolved afresh from sysfs and ConfigFS:

1. find the peer offering the ``stream`` service, and this host's UUID;
2. create both streams; the host with the smaller UUID allocates the HopIDs,
   the other adopts the peer's (:mod:`.agree`);
3. open each ``/dev/tbstreamN`` once, retrying the non-blocking open while the
   peer is absent, until the deadline;
4. run the open handshake (:mod:`.handshake`) on the control stream, then on
   the data stream, before any session byte.

Whatever fails, and when the connection closes, the directories this run
made are removed and nothing else.
"""

from __future__ import annotations

import errno
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from recovery.errors import LinkError, MissingToolError, NoPeerError, UsageError
from recovery.link.base import Connection, FdChannel
from recovery.link.deadline import Deadline
from recovery.link.sysfs import STREAM_KEY, STREAM_MODULE, Peer, Service, Sysfs
from recovery.link.tbstream import handshake as hs
from recovery.link.tbstream.agree import StreamSession, allocates, release_quietly, sweep
from recovery.link.tbstream.configfs import StreamInfo, StreamTree
from recovery.link.tbstream.ledger import Ledger
from recovery.link.watch import watch

CONTROL_NAME = "rcvctl"
DATA_NAME = "rcvdata"
OPEN_RETRY = 0.2  # seconds between non-blocking opens while the peer is absent
SYNC_INTERVAL = 0.2  # seconds between SYNC records
RETRY_ERRNOS = {errno.ENXIO, errno.EINVAL, errno.ENOENT, errno.EAGAIN, errno.EBUSY}


@dataclass
class Host:
    """Where this host's sysfs, ConfigFS, /dev and ledger are (tests point them elsewhere)."""

    sysfs: Sysfs = field(default_factory=Sysfs)
    tree: StreamTree = field(default_factory=StreamTree)
    ledger: Ledger = field(default_factory=Ledger)


def check_ready(host: Host) -> None:
    """Fail with what is missing if this host cannot make streams."""
    if not host.sysfs.module_loaded(STREAM_MODULE):
        raise MissingToolError(f"the {STREAM_MODULE} kernel module is not loaded",
                               hint=f"modprobe {STREAM_MODULE}, or use --link tbnet / --to HOST:PORT")
    if not host.tree.available():
        raise MissingToolError(f"ConfigFS has no USB4STREAM tree at {host.tree.root}",
                               hint="mount ConfigFS (mount -t configfs none /sys/kernel/config)")


def stream_peers(sysfs: Sysfs) -> list[tuple[Peer, Service]]:
    found = []
    for peer in sysfs.peers():
        service = peer.service(STREAM_KEY)
        if service is not None:
            found.append((peer, service))
    return found


def pick_peer(sysfs: Sysfs, where: str | None) -> tuple[Peer, Service]:
    """The peer (and its stream service) to use; ``where`` names its XDomain or service."""
    found = stream_peers(sysfs)
    if where:
        found = [(p, s) for p, s in found if where in (p.name, s.name)]
    if not found:
        on = f" at {where}" if where else ""
        others = [p.label for p in sysfs.peers()]
        detail = (f"peer(s) {', '.join(others)} offer no stream service (older kernel, or thunderbolt_stream "
                  "not loaded there)" if others else "no peer is on the cable")
        raise NoPeerError(f"no USB4STREAM peer{on}: {detail}",
                          hint="check the cable and that the other machine runs recovery; or --link tbnet")
    if len(found) > 1:
        names = ", ".join(f"{p.label} [{p.name}]" for p, _ in found)
        raise UsageError(f"several peers offer USB4STREAM: {names}",
                         hint=f"choose one with --link tbstream:{found[0][0].name}")
    return found[0]


def open_device(host: Host, info: StreamInfo, deadline: Deadline) -> int:
    """Open ``/dev/tbstreamN`` once, retrying while the peer is absent."""
    while True:
        try:
            return host.tree.ops.open_device(info.device)
        except OSError as e:
            if e.errno not in RETRY_ERRNOS:
                raise LinkError(f"cannot open {info.device}: {e.strerror}") from None
            if deadline.expired():
                why = {errno.ENXIO: "the peer is not attached", errno.EINVAL: "HopIDs not set",
                       errno.ENOENT: "the device node did not appear"}.get(e.errno, e.strerror)
                raise NoPeerError(f"cannot open {info.device} in time: {why}",
                                  hint="start `recovery` on the other machine, or use --link tbnet") from None
        deadline.pause(OPEN_RETRY)


def run_handshake(fd: int, channel: int, nonce: bytes, deadline: Deadline, what: str) -> bytes:
    """SYNC until the peer is heard, then READY; returns the peer's nonce.

    Consumes exactly the peer's records up to its READY: the next byte on
    ``fd`` is the session's first.
    """
    scanner = hs.Scanner()
    pending = b""
    next_sync = 0.0
    sent_ready = False
    peer_nonce: bytes | None = None
    peer_ready = False
    poller = select.poll()
    while not (peer_ready and sent_ready and not pending):
        deadline.check()
        now = time.monotonic()
        if deadline.expired():
            raise NoPeerError(f"the peer did not answer on the {what} stream in time",
                              hint="start `recovery` on the other machine too")
        if peer_nonce is not None and not sent_ready:
            pending += hs.encode(hs.Record(hs.READY, channel, nonce))
            sent_ready = True
        elif not sent_ready and not pending and now >= next_sync:
            pending = hs.encode(hs.Record(hs.SYNC, channel, nonce))
            next_sync = now + SYNC_INTERVAL
        poller.register(fd, select.POLLIN | (select.POLLOUT if pending else 0))
        ready = dict(poller.poll(int(deadline.left(SYNC_INTERVAL) * 1000) + 1))
        revents = ready.get(fd, 0)
        if pending and revents & select.POLLOUT:
            pending = pending[_write(fd, pending, what):]
        if revents & (select.POLLIN | select.POLLHUP | select.POLLERR) and not peer_ready:
            data = _read(fd, scanner.want(), what)
            record = scanner.feed(data)
            if record is not None:
                if record.channel != channel:
                    raise LinkError(f"the peer's {what} stream carries its other channel: the HopIDs are crossed",
                                    hint="remove the streams on both machines and try again")
                if peer_nonce is not None and record.nonce != peer_nonce:
                    raise LinkError(f"two different peers answered on the {what} stream")
                peer_nonce = record.nonce
                peer_ready = record.type == hs.READY
    assert peer_nonce is not None
    return peer_nonce


def _write(fd: int, data: bytes, what: str) -> int:
    try:
        return os.write(fd, data)
    except (BlockingIOError, InterruptedError):
        return 0
    except OSError as e:
        if e.errno == errno.ENXIO:
            return 0  # the peer has not opened its end yet: the SYNC is lost, the next one may land
        raise LinkError(f"link lost on the {what} stream during the handshake: {e.strerror}") from None


def _read(fd: int, size: int, what: str) -> bytes:
    try:
        data = os.read(fd, size)
    except (BlockingIOError, InterruptedError):
        return b""
    except OSError as e:
        raise LinkError(f"link lost on the {what} stream during the handshake: {e.strerror}") from None
    if not data:
        raise LinkError(f"the peer closed the {what} stream during the handshake")
    return data


def open_link(spec: object, role: str, *, timeout: float | None,
              on_listening: Callable[[str, int, str], None] | None, stop: threading.Event | None = None,
              host: Host | None = None) -> Connection:
    """The link opener for ``--link tbstream[:PEER]`` (see :mod:`recovery.link.select`)."""
    host = host or Host()
    check_ready(host)
    peer, service = pick_peer(host.sysfs, getattr(spec, "interface", None))
    local = host.sysfs.local_uuid(peer.domain)
    if not local:
        raise LinkError(f"cannot read this host's UUID on domain {peer.domain}")
    allocate = allocates(local, peer.unique_id)
    deadline = Deadline(timeout, stop)
    if on_listening is not None:
        on_listening(service.name, 0, "tbstream")
    sweep(host.tree, host.ledger)
    session = StreamSession(host.tree, host.ledger, service.name, owner="link")
    fds: list[int] = []
    try:
        infos = [session.set_up(name, allocate=allocate, deadline=deadline) for name in (CONTROL_NAME, DATA_NAME)]
        for info in infos:
            fds.append(open_device(host, info, deadline))
        nonce = os.urandom(16)
        theirs = run_handshake(fds[0], hs.CONTROL, nonce, deadline, "control")
        if run_handshake(fds[1], hs.DATA, nonce, deadline, "data") != theirs:
            raise LinkError("the control and data streams reach different peers")
        control = FdChannel(fds[0], name="control")
        data = FdChannel(fds[1], name="data")
    except BaseException:
        for fd in fds:
            os.close(fd)
        release_quietly(session)
        raise
    desc = f"{peer.label} over {', '.join(str(i.device) for i in infos)}"
    conn = Connection(control=control, data=data, kind="tbstream", peer=desc,
                      on_close=[lambda: release_quietly(session)], speed_probe=lambda: peer.speed,
                      binding=b"tbstream " + b"".join(sorted((nonce, theirs))))

    def cause() -> str | None:
        if host.sysfs.peer(peer.name) is None:
            return f"link lost: the peer {peer.label} left the cable (unplugged?)"
        if host.sysfs.service(service.name) is None:
            return f"link lost: the peer {peer.label} withdrew its stream service"
        return None

    return watch(conn, cause)
