"""Length-prefixed records in a byte stream (pure): bytes in, whole records out.

The control channel's messages (a 4-byte length, then the body) and the stdio link's mux records
(a channel byte and a 4-byte length, then the bytes) are both read by a :class:`RecordReader`: a
fixed header whose last field is the body's length, checked against a limit before anything of
the body is buffered.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from recovery.errors import RemoteProtocolError

HeaderCheck = Callable[[tuple[int, ...], int], None]  # (fields but the length, length): raise if wrong


class RecordReader:
    """Feed bytes; take ``(header fields, body)`` records. ``limit`` caps a body before it is buffered
    (it may be changed between records: the control channel lowers it before the pairing)."""

    def __init__(
        self,
        header: struct.Struct,
        limit: int,
        error: type[RemoteProtocolError],
        what: str,
        check: HeaderCheck = lambda fields, length: None,
    ) -> None:
        self.header = header
        self.check = check  # a header's other rules, as soon as it is here
        self.limit = limit
        self.error = error  # raised for a record whose length is over the limit
        self.what = what  # names the records in that error ("control message", "mux record")
        self._buf = bytearray()

    def receive_data(self, data: bytes) -> None:
        self._buf += data

    def take(self, size: int) -> bytes | None:
        """The next ``size`` bytes as they are (a preamble before the records), or None when fewer came."""
        if len(self._buf) < size:
            return None
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    def next_record(self) -> tuple[tuple[int, ...], bytes] | None:
        """The next record's header fields (all but its length) and body, or None when more bytes are needed."""
        if len(self._buf) < self.header.size:
            return None
        *fields, length = self.header.unpack_from(self._buf)
        if length > self.limit:
            raise self.error(f"{self.what} of {length} bytes exceeds {self.limit}")
        self.check(tuple(fields), length)
        end = self.header.size + length
        if len(self._buf) < end:
            return None
        body = bytes(self._buf[self.header.size : end])
        del self._buf[:end]
        return tuple(fields), body

    @property
    def buffered(self) -> int:
        return len(self._buf)
