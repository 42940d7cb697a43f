"""Pairing two byte streams into one connection (pure).

On links that open the control and the data channel as two separate
streams (TCP, thunderbolt-net), each stream starts with a link hello: magic,
version, which channel it is, and a random session token chosen by the
connecting side. The listening side pairs the two streams with the same
token and drops anything else.
"""

from __future__ import annotations

import struct

from recovery.errors import RemoteProtocolError
from recovery.protocol.channels import CONTROL, DATA

LINK_MAGIC = b"U4RL"
LINK_VERSION = 1
LINK_HELLO = struct.Struct(
    "!"
    "4s"  # magic, b"U4RL"
    "B"  # link hello version (1)
    "B"  # channel: 0 control, 1 data
    "16s"  # session token
)


class LinkHelloError(RemoteProtocolError):
    """A stream did not start with a valid link hello."""


def encode_link_hello(channel: int, token: bytes) -> bytes:
    if channel not in (CONTROL, DATA) or len(token) != 16:
        raise ValueError("bad link hello")
    return LINK_HELLO.pack(LINK_MAGIC, LINK_VERSION, channel, token)


def decode_link_hello(data: bytes) -> tuple[int, bytes]:
    """(channel, token) from the first bytes of a stream."""
    if len(data) != LINK_HELLO.size:
        raise LinkHelloError(f"link hello is {len(data)} bytes, expected {LINK_HELLO.size}")
    magic, version, channel, token = LINK_HELLO.unpack(data)
    if magic != LINK_MAGIC:
        raise LinkHelloError("not a usb4-recovery peer (bad link magic)")
    if version != LINK_VERSION:
        raise LinkHelloError(f"link hello version {version}, expected {LINK_VERSION}")
    if channel not in (CONTROL, DATA):
        raise LinkHelloError(f"link hello names unknown channel {channel}")
    return channel, token
