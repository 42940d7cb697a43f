"""Pairing and session keys (pure: bytes in, bytes out, no I/O).

Theory of operation
-------------------
The machine that *serves* (a receiver, an agent, a wizard showing its code)
knows a pairing code; the machine that *drives* (a sender, a wizard where the
user typed that code) learns it from a person. Both run SPAKE2 (the
``spake2`` package, as magic-wormhole does) with the code as the password:
the driver as side A, the server as side B. A wrong code gives the two sides
different keys and nothing else; a recorded exchange allows no guessing
offline, so every wrong guess costs an attacker one online try, which the
serving side counts.

The SPAKE2 key is bound to a **transcript**: both hellos exactly as they
crossed the wire, the link's binding (its session token or handshake nonces),
the attempt number and both SPAKE2 messages. Every key is derived from key
and transcript with BLAKE3's key-derivation mode, one context string per
purpose, so a key made for one purpose never serves another:

- two *confirmation* keys: each side proves it has the key (and saw the same
  transcript) before anything else is sent; the driver checks the server's
  proof first and only then sends its own, and the server serves nothing
  before it has checked the driver's;
- one *control* key per direction: every later control message is sealed with
  AES-256-GCM, its nonce a counter, so a message cannot be forged, replayed,
  dropped or reordered unnoticed;
- a *master* key from which each clone gets fresh data keys
  (:meth:`SessionKeys.data_keys`): a header key (keyed BLAKE3 over every frame
  header) and a payload key (AES-256-GCM, nonce = frame number), and from
  those, fresh ones for each epoch of a stream that went back to resend a
  damaged frame.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from spake2 import SPAKE2_A, SPAKE2_B
from spake2.ed25519_basic import NotOnCurve
from spake2.spake2 import SPAKEError

from recovery.errors import RemoteProtocolError

DRIVER, SERVER = "driver", "server"
_IDS = {"idA": b"usb4-recovery/2 driver", "idB": b"usb4-recovery/2 server"}
SPAKE_MESSAGE = 33  # bytes: one side byte and a group element
MAC_SIZE = 32
KEY_SIZE = 32
TAG_SIZE = 16  # AES-GCM's
_CONTEXT = "usb4-recovery 2026-12 "


class MalformedPairing(RemoteProtocolError):
    """The peer's part of the pairing is malformed (not merely a wrong code)."""


class SealError(RemoteProtocolError):
    """A sealed record does not open: forged, replayed, reordered or damaged."""


def derive(purpose: str, material: bytes, length: int = KEY_SIZE) -> bytes:
    """A key for one ``purpose`` from secret ``material`` (BLAKE3 derive_key mode)."""
    return blake3.blake3(material, derive_key_context=_CONTEXT + purpose).digest(length=length)


def _framed(*parts: bytes) -> bytes:
    """Parts with their lengths, so no two different lists give the same bytes."""
    return b"".join(struct.pack("!I", len(p)) + p for p in parts)


@dataclass(frozen=True, slots=True)
class DataKeys:
    """One clone's keys for the data channel."""

    header: bytes  # keyed BLAKE3 over each frame header
    payload: bytes  # AES-256-GCM over each payload when the plan says so

    def for_epoch(self, epoch: int) -> DataKeys:
        """The keys after ``epoch`` resends (0: these): a frame sent again is sealed under fresh keys,
        so no (key, nonce) pair ever covers two different payloads."""
        if epoch == 0:
            return self
        material = self.header + self.payload + _framed(str(epoch).encode())
        return DataKeys(header=derive("epoch header", material), payload=derive("epoch payload", material))


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """What a successful pairing leaves: control keys for each direction and a master key."""

    send: bytes  # seals what this side sends on the control channel
    receive: bytes  # opens what the peer sends
    master: bytes
    fingerprint: str  # short, for logs: the same on both sides, says nothing of the keys

    def rejoin_secret(self) -> bytes:
        """What the two machines of this pairing alone know: after a lost link, proving it (as the
        code of a pairing) shows the same peer is back (capability "rejoin")."""
        return derive("rejoin", self.master)

    def data_keys(self, clone: int, session: str) -> DataKeys:
        """Fresh keys for clone number ``clone`` (0, 1, ...) of this pairing."""
        material = self.master + _framed(str(clone).encode(), session.encode())
        return DataKeys(header=derive("data header", material), payload=derive("data payload", material))


class Attempt:
    """One side of one pairing attempt."""

    def __init__(
        self, role: str, secret: bytes, *, number: int, driver_hello: bytes, server_hello: bytes, binding: bytes
    ) -> None:
        if role not in (DRIVER, SERVER):
            raise ValueError(f"unknown pairing role {role!r}")
        self.role = role
        self.number = number
        self._spake = (SPAKE2_A if role == DRIVER else SPAKE2_B)(secret, **_IDS)
        self.message = self._spake.start()
        self._head = _framed(b"usb4-recovery/2 pairing", driver_hello, server_hello, binding, str(number).encode())
        self._key: bytes | None = None
        self._transcript = b""

    def finish(self, peer_message: bytes) -> None:
        """Take the peer's SPAKE2 message; raises :class:`MalformedPairing` if it is malformed."""
        if len(peer_message) != SPAKE_MESSAGE:
            raise MalformedPairing(f"pairing message of {len(peer_message)} bytes, expected {SPAKE_MESSAGE}")
        try:
            key = self._spake.finish(peer_message)
        except (SPAKEError, NotOnCurve, ValueError) as e:
            raise MalformedPairing(f"malformed pairing message ({e})") from None
        driver_msg, server_msg = (self.message, peer_message) if self.role == DRIVER else (peer_message, self.message)
        self._transcript = blake3.blake3(self._head + _framed(driver_msg, server_msg)).digest()
        self._key = key + self._transcript

    def _need_key(self) -> bytes:
        if self._key is None:
            raise RuntimeError("finish() the attempt first")
        return self._key

    def proof(self, role: str | None = None) -> bytes:
        """The confirmation MAC of ``role`` (default: ours)."""
        role = role or self.role
        return blake3.blake3(self._transcript, key=derive(f"confirm {role}", self._need_key())).digest()

    def check(self, mac: bytes) -> bool:
        """Is ``mac`` the peer's proof? (Constant time.)"""
        other = SERVER if self.role == DRIVER else DRIVER
        return hmac.compare_digest(mac, self.proof(other))

    def keys(self) -> SessionKeys:
        key = self._need_key()
        mine, theirs = (
            ("driver->server", "server->driver") if self.role == DRIVER else ("server->driver", "driver->server")
        )
        fingerprint = derive("fingerprint", key, 6).hex()
        return SessionKeys(
            send=derive(f"control {mine}", key),
            receive=derive(f"control {theirs}", key),
            master=derive("master", key),
            fingerprint=fingerprint,
        )


def _nonce(counter: int, high: int = 0) -> bytes:
    return struct.pack("!IQ", high, counter)


class Sealer:
    """Seals records in order with AES-256-GCM; the nonce is the record number."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self.count = 0

    def seal(self, body: bytes, aad: bytes = b"") -> bytes:
        sealed = self._aead.encrypt(_nonce(self.count), body, aad)
        self.count += 1
        return sealed


class Opener:
    """Opens records sealed by the peer's :class:`Sealer`, refusing any out of order."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self.count = 0

    def open(self, sealed: bytes, aad: bytes = b"") -> bytes:
        if len(sealed) < TAG_SIZE:
            raise SealError("a sealed control record is shorter than its tag")
        try:
            body = self._aead.decrypt(_nonce(self.count), sealed, aad)
        except InvalidTag:
            raise SealError("a control message failed its authentication (forged, replayed or damaged)") from None
        self.count += 1
        return body
