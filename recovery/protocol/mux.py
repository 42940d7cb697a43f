"""Two channels over one byte stream (pure), for the stdin/stdout link.

Each piece of a channel's bytes travels as a mux record: a 5-byte header
(channel number, length) and up to :data:`MAX_RECORD` bytes. The writer
keeps records small so a control message never waits behind a whole chunk.
"""

from __future__ import annotations

import struct

from recovery.errors import RemoteProtocolError
from recovery.protocol.channels import CONTROL, DATA
from recovery.protocol.records import RecordReader

MUX_HEADER = struct.Struct(
    "!"
    "B"  # channel: 0 control, 1 data
    "I"  # length of the bytes that follow
)
MAX_RECORD = 1 << 20


class MuxError(RemoteProtocolError):
    """The multiplexed stream is malformed."""


def encode_record_header(channel: int, length: int) -> bytes:
    if channel not in (CONTROL, DATA) or not 0 < length <= MAX_RECORD:
        raise ValueError(f"bad mux record: channel {channel}, length {length}")
    return MUX_HEADER.pack(channel, length)


class MuxDecoder:
    """Feed bytes from the shared stream; take (channel, bytes) records."""

    def __init__(self) -> None:
        self._records = RecordReader(MUX_HEADER, MAX_RECORD, MuxError, "mux record", check=_check_header)

    def receive_data(self, data: bytes) -> None:
        self._records.receive_data(data)

    def next_record(self) -> tuple[int, bytes] | None:
        record = self._records.next_record()
        if record is None:
            return None
        (channel,), data = record
        return channel, data

    @property
    def buffered(self) -> int:
        return self._records.buffered


def _check_header(fields: tuple[int, ...], length: int) -> None:
    (channel,) = fields
    if channel not in (CONTROL, DATA):
        raise MuxError(f"mux record for unknown channel {channel}")
    if not length:
        raise MuxError("mux record of 0 bytes")
