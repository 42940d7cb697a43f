"""A man in the middle between two TCP ends, over real sockets: it passes every byte, and can change some.

It stands for a cable that corrupts data (USB4STREAM hands CRC-flagged frames to
read() as if they were good) or for an attacker on the network. It changes a
byte at a position of a stream, or, reading the frames as they pass (their
headers are not changed, only read), a byte of the payload of one data frame
each time that frame passes.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

from recovery.protocol.frames import HEADER_SIZE, Kind
from recovery.protocol.linkhello import LINK_HELLO
from tests.helpers import CODE, Recovery

FRAME_FIELDS = struct.Struct("!4sBBBBQQII")  # magic .. payload_len, the start of a frame header


class Relay:
    def __init__(self, upstream: int, *, host: str = "127.0.0.1") -> None:
        self.upstream = upstream
        self.host = host  # where the upstream listens
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.flip_data_at: int | None = None  # flip one byte this far into the data stream
        self.flip_control_after: int | None = None  # flip one byte of the Nth record after this many bytes
        self.flip_frame: int | None = None  # flip a payload byte of the first data frame from this one on,
        self.flipped_seq: int | None = None  # ... which is this one, every time it passes
        self.flip_times: int | None = None  # ... or only this many times
        self.flips = 0
        self.rate: float | None = None  # bytes per second on the data streams (a slow cable)
        self.passed = 0  # bytes passed on the data streams, from the sender
        self.streams = 0
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            index = self.streams
            self.streams += 1
            up = socket.create_connection((self.host, self.upstream))
            self._socks += [client, up]
            if index % 2 == 1 and self.flip_frame is not None:
                threading.Thread(target=self._frames, args=(client, up), daemon=True).start()
            else:
                flip = self.flip_control_after if index % 2 == 0 else self.flip_data_at
                threading.Thread(target=self._pipe, args=(client, up, flip, index % 2 == 1), daemon=True).start()
            threading.Thread(target=self._pipe, args=(up, client, None), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, flip: int | None, data_stream: bool = False) -> None:
        seen = 0
        started = time.monotonic()
        try:
            while data := src.recv(65536):
                if data_stream:
                    self.passed += len(data)
                    if self.rate:
                        time.sleep(max(0.0, self.passed / self.rate - (time.monotonic() - started)))
                if flip is not None and seen <= flip < seen + len(data):
                    changed = bytearray(data)
                    changed[flip - seen] ^= 0x40
                    data = bytes(changed)
                    self.flips += 1
                seen += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _shut(src, dst)

    def _frames(self, src: socket.socket, dst: socket.socket) -> None:
        """The data stream, frame by frame: the link hello, then headers and payloads."""
        buf = bytearray()
        state, need, flip = "hello", LINK_HELLO.size, False
        try:
            while data := src.recv(65536):
                buf += data
                out = bytearray()
                while len(buf) >= need:
                    piece, buf = buf[:need], buf[need:]
                    if state == "header":
                        _, _, kind, _, _, seq, _, _, payload_len = FRAME_FIELDS.unpack_from(piece)
                        if self.flipped_seq is None and kind == Kind.DATA and seq >= (self.flip_frame or 0):
                            self.flipped_seq = seq
                        flip = (
                            kind == Kind.DATA and seq == self.flipped_seq and self.flips < (self.flip_times or 1 << 62)
                        )
                        state, need = ("payload", payload_len) if payload_len else ("header", HEADER_SIZE)
                    elif state == "payload":
                        if flip:
                            piece[min(100, len(piece) - 1)] ^= 0x40
                            self.flips += 1
                        state, need = "header", HEADER_SIZE
                    else:
                        state, need = "header", HEADER_SIZE
                    out += piece
                dst.sendall(out)
        except OSError:
            pass
        finally:
            _shut(src, dst)

    def cut(self) -> None:
        """Pull the cable: every connection through the relay ends at once, mid-stream."""
        for s in self._socks:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # a reset, not a FIN
                s.close()
            except OSError:
                pass
        self._socks.clear()

    def close(self) -> None:
        self.cut()
        self.server.close()


def _shut(*socks: socket.socket) -> None:
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class RelayedClone:
    """One run: a receiver writing to ``target`` (its ``--target`` or ``--image`` words), a relay in
    front of it, and a sender of ``src`` in exact mode with 1 MiB chunks, as an interrupted run needs."""

    def __init__(
        self,
        src: str,
        target: tuple[str, ...],
        *extra_send: str,
        rate: float | None = None,
        extra_receive: tuple[str, ...] = (),
    ) -> None:
        self.rx = Recovery(
            "receive", "--code", CODE, *target, "--listen", "127.0.0.1:0", "--timeout", "15", *extra_receive
        )
        self.relay = Relay(self.rx.wait_event("listening")["port"])
        self.relay.rate = rate
        self.tx = Recovery(
            "send",
            *("--code", CODE, "--source", src, "--to", f"127.0.0.1:{self.relay.port}"),
            *("--mode", "exact", "--chunk-size", "1M", "--level", "0", "--timeout", "15"),
            *extra_send,
        )

    def durable(self, at_least: int, timeout: float = 60) -> int:
        """Wait until the sender heard that ``at_least`` bytes are durable on the target."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = max((e.get("durable", 0) for e in self.tx.events if e.get("event") == "progress"), default=0)
            if seen >= at_least:
                return int(seen)
            assert self.tx.proc.poll() is None, (self.tx.stderr, self.rx.stderr)
            time.sleep(0.05)
        raise AssertionError(f"nothing durable after {timeout} s: {self.tx.events[-3:]}")
