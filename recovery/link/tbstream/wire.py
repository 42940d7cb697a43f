"""The open handshake on an open stream device: SYNC until the peer is heard, READY, HOPS rounds.

The records are :mod:`.handshake`'s (pure); this module moves them over a
:class:`~recovery.link.tbstream.device.Device` without blocking, under a
:class:`~recovery.link.deadline.Deadline`, and consumes exactly the peer's
records so the next byte on the device is the session's.
"""

from __future__ import annotations

import errno
import time

from recovery.errors import LinkError, NoPeerError
from recovery.link.deadline import Deadline
from recovery.link.tbstream import handshake as hs
from recovery.link.tbstream.device import POLLERR, POLLHUP, POLLIN, POLLOUT, Device

SYNC_INTERVAL = 0.2  # seconds between SYNC records until the peer is heard


def run_handshake(dev: Device, mine: hs.Record, deadline: Deadline, what: str) -> hs.Record:
    """Send SYNC (``mine``) until a record of the peer arrives, then READY; returns the peer's READY.

    Consumes exactly the peer's records up to its READY.
    """
    scanner = hs.Scanner()
    pending = b""
    next_sync = 0.0
    sent_ready = False
    heard: hs.Record | None = None
    ready: hs.Record | None = None
    while not (ready and sent_ready and not pending):
        deadline.check()
        now = time.monotonic()
        if deadline.expired():
            raise NoPeerError(
                f"the peer did not answer on the {what} stream (HopID {mine.hopid}) in time",
                hint="start `recovery` on the other machine too; if it runs, the machines may "
                "hold different HopIDs: compare `recovery stream list` on both",
            )
        if heard is not None and not sent_ready and not pending:
            pending = hs.encode(_with_type(mine, hs.READY))
            sent_ready = True
        elif heard is None and not pending and now >= next_sync:
            pending = hs.encode(mine)
            next_sync = now + SYNC_INTERVAL
        revents = dev.poll(POLLIN | (POLLOUT if pending else 0), int(deadline.left(SYNC_INTERVAL) * 1000) + 1)
        if revents & (POLLHUP | POLLERR):
            raise LinkError(f"link lost on the {what} stream during the handshake: the peer detached")
        if pending and revents & POLLOUT:
            pending = pending[_write(dev, pending, what) :]
        if revents & POLLIN and ready is None:
            record = scanner.feed(_read(dev, scanner.want(), what))
            if record is not None:
                heard = _check(record, mine, heard, what)
                if record.type == hs.READY:
                    ready = record
    assert ready is not None
    return ready


def exchange(dev: Device, mine: hs.Record, peer_nonce: bytes, deadline: Deadline) -> hs.Record:
    """One round on the open control stream: send ``mine`` (HOPS), read the peer's HOPS record."""
    data = hs.encode(mine)
    while data:
        deadline.check()
        if deadline.expired():
            raise NoPeerError("the peer did not answer during the HopID agreement")
        if dev.poll(POLLOUT, 200) & POLLOUT:
            data = data[_write(dev, data, "control") :]
    buf = b""
    while len(buf) < hs.RECORD.size:
        deadline.check()
        if deadline.expired():
            raise NoPeerError("the peer did not answer during the HopID agreement")
        revents = dev.poll(POLLIN, 200)
        if revents & (POLLHUP | POLLERR):
            raise LinkError("link lost on the control stream during the HopID agreement")
        if revents & POLLIN:
            buf += _read(dev, hs.RECORD.size - len(buf), "control")
    record = hs.decode(buf)
    if record is None or record.type != hs.HOPS or record.nonce != peer_nonce:
        raise LinkError("the peer sent something else than its HopID proposal on the control stream")
    return record


def _with_type(record: hs.Record, rtype: int) -> hs.Record:
    return hs.Record(rtype, record.channel, record.nonce, record.hopid, record.data_hopid, record.flags)


def _check(record: hs.Record, mine: hs.Record, heard: hs.Record | None, what: str) -> hs.Record:
    if record.channel != mine.channel or record.type == hs.HOPS:
        raise LinkError(
            f"the peer's {what} stream carries its other channel: the HopIDs are crossed",
            hint="remove the streams on both machines (`recovery stream list`) and try again",
        )
    if heard is not None and record.nonce != heard.nonce:
        raise LinkError(f"two different peers answered on the {what} stream")
    if record.hopid != mine.hopid:
        raise LinkError(
            f"the peer uses HopID {record.hopid} on the {what} stream, this side {mine.hopid}",
            hint="remove the streams on both machines and try again; if it persists, reload thunderbolt_stream on both",
        )
    return record


def _write(dev: Device, data: bytes, what: str) -> int:
    try:
        return dev.writev([memoryview(data)])
    except (BlockingIOError, InterruptedError):
        return 0
    except OSError as e:
        raise LinkError(f"link lost on the {what} stream during the handshake: {e.strerror}") from None


def _read(dev: Device, size: int, what: str) -> bytes:
    buf = bytearray(size)
    try:
        n = dev.readinto(memoryview(buf))
    except (BlockingIOError, InterruptedError):
        return b""
    except OSError as e:
        if e.errno == errno.EAGAIN:
            return b""
        raise LinkError(f"link lost on the {what} stream during the handshake: {e.strerror}") from None
    if not n:
        raise LinkError(f"the peer closed the {what} stream during the handshake")
    return bytes(buf[:n])
