"""Stdin/stdout link: the control and data channels multiplexed on one pipe pair.

``recovery send --to - | ssh host recovery receive --from -`` and the
reverse direction both work: each side reads mux records from its input and
writes records to its output. A reader thread sorts incoming records into
two bounded buffers; writers take turns record by record, so a control
message never waits behind a whole chunk. Aborting the data channel (a
pipeline's error) leaves the control channel working, so the reason still
reaches the peer: its records are dropped from then on, in both directions.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence

from recovery.errors import LinkError
from recovery.link.base import Buffer, Channel, Connection, FdChannel
from recovery.protocol.channels import CONTROL, DATA
from recovery.protocol.mux import MAX_RECORD, MuxDecoder, encode_record_header

BUFFER_LIMIT = 16 << 20  # bytes buffered per channel before the reader waits


class _Inbox:
    def __init__(self) -> None:
        self.chunks: deque[memoryview] = deque()
        self.size = 0
        self.eof = False
        self.error: LinkError | None = None


class Mux:
    """Owns the two physical fds and the reader thread."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.io = FdChannel(read_fd, write_fd, name="stdio", close_fds=False)
        self.cond = threading.Condition()
        self.inboxes = {CONTROL: _Inbox(), DATA: _Inbox()}
        self.decoder = MuxDecoder()
        self.aborted = False
        self.closed_channels: set[int] = set()  # aborted alone: their records are dropped
        self.thread = threading.Thread(target=self._read_loop, name="stdio-mux", daemon=True)
        self.thread.start()

    def _read_loop(self) -> None:
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        try:
            while True:
                n = self.io.recv_into(view)
                if n == 0:
                    break
                self.decoder.receive_data(bytes(view[:n]))
                while (record := self.decoder.next_record()) is not None:
                    channel, data = record
                    with self.cond:
                        if channel in self.closed_channels:
                            continue
                        box = self.inboxes[channel]
                        while box.size > BUFFER_LIMIT and not self.aborted and channel not in self.closed_channels:
                            self.cond.wait(0.5)
                        box.chunks.append(memoryview(data))
                        box.size += len(data)
                        self.cond.notify_all()
            with self.cond:
                for box in self.inboxes.values():
                    box.eof = True
                self.cond.notify_all()
        except Exception as e:  # noqa: BLE001 - handed to the readers as a link error
            err = e if isinstance(e, LinkError) else LinkError(f"stdio link broken: {e}")
            with self.cond:
                for box in self.inboxes.values():
                    box.error = err
                self.cond.notify_all()

    def recv_into(self, channel: int, view: memoryview) -> int:
        with self.cond:
            box = self.inboxes[channel]
            while not box.chunks:
                if box.error is not None:
                    raise box.error
                if box.eof:
                    return 0
                if self.aborted or channel in self.closed_channels:
                    raise LinkError("the stdio link was closed")
                self.cond.wait(0.5)
            head = box.chunks[0]
            n = min(len(head), len(view))
            view[:n] = head[:n]
            if n == len(head):
                box.chunks.popleft()
            else:
                box.chunks[0] = head[n:]
            box.size -= n
            self.cond.notify_all()
            return n

    def send(self, channel: int, parts: Sequence[Buffer]) -> None:
        for part in parts:
            view = memoryview(part).cast("B")
            for start in range(0, len(view), MAX_RECORD):
                if channel in self.closed_channels:
                    raise LinkError("the stdio link's data channel was closed")
                piece = view[start : start + MAX_RECORD]
                self.io.send_parts((encode_record_header(channel, len(piece)), piece))

    def abort_channel(self, channel: int) -> None:
        """Stop one channel: its calls fail, what it buffered and what still arrives for it is
        dropped (so the other channel keeps flowing); a record being written is finished first."""
        with self.cond:
            self.closed_channels.add(channel)
            box = self.inboxes[channel]
            box.chunks.clear()
            box.size = 0
            self.cond.notify_all()

    def abort(self) -> None:
        with self.cond:
            self.aborted = True
            self.cond.notify_all()
        self.io.abort()


class MuxChannel(Channel):
    def __init__(self, mux: Mux, channel: int, name: str) -> None:
        super().__init__()
        self.mux = mux
        self.channel = channel
        self.name = name

    def recv_into(self, view: memoryview) -> int:
        n = self.mux.recv_into(self.channel, view)
        if n:
            self.last_activity = time.monotonic()
            self.bytes_in += n
        return n

    def send_parts(self, parts: Sequence[Buffer]) -> None:
        start = time.monotonic()
        try:
            self.mux.send(self.channel, parts)
        finally:
            self.send_seconds += time.monotonic() - start
        self.bytes_out += sum(len(p) for p in parts)

    def abort(self) -> None:
        """The data channel alone (a pipeline's error): the control channel still carries why.
        The control channel: the whole link."""
        if self.channel == DATA:
            self.mux.abort_channel(DATA)
        else:
            self.mux.abort()

    def close(self) -> None:
        self.mux.abort()


def mux_connection(read_fd: int, write_fd: int, *, peer: str = "stdio") -> Connection:
    """A connection multiplexed over ``read_fd``/``write_fd`` (e.g. 0 and 1)."""
    mux = Mux(read_fd, write_fd)
    return Connection(
        control=MuxChannel(mux, CONTROL, "control"),
        data=MuxChannel(mux, DATA, "data"),
        kind="stdio",
        peer=peer,
        binding=b"stdio",
    )
