"""An encrypted image's keys and seals (pure: bytes in, bytes out).

A random 256-bit data key seals every chunk, index page and the manifest with AES-256-GCM, each under
a random 96-bit nonce stored before it. The associated data binds what the sealed bytes are and where
they belong: the image's id, the format's major version, and the chunk's offset, length and codec (an
index page's number and the entry count; the manifest's name), so a chunk cannot be moved, swapped,
replayed from another image or cut off unnoticed. The data key is kept in the header wrapped (AES-GCM)
under a key scrypt derives from the passphrase; the wrap binds the header's fields. A wrong passphrase
fails that one unwrap, after one scrypt (about 0.1 s here), before anything else is read.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from recovery.diskimage.format import MAJOR, Codec, KeyBlock
from recovery.errors import ImageError, PassphraseError

NONCE_SIZE = 12
TAG_SIZE = 16
OVERHEAD = NONCE_SIZE + TAG_SIZE
KEY_SIZE = 32
# scrypt's cost: 2**15 * 8 * 128 bytes = 32 MiB of memory, about 0.1 s on this machine's cores
LOG2_N, R, P = 15, 8, 1
MAX_PASSPHRASE = 4096  # bytes of any passphrase (a passphrase file's first line)
MIN_NEW_PASSPHRASE = 8  # characters of a typed passphrase that encrypts a new image


def new_passphrase_problem(first: str, again: str) -> str | None:
    """Why a passphrase typed twice for a new image is refused (None: it is taken)."""
    if first != again:
        return "the two passphrases differ: type the same one twice"
    if len(first) < MIN_NEW_PASSPHRASE:
        return f"a passphrase of at least {MIN_NEW_PASSPHRASE} characters, please (this one has {len(first)})"
    if len(first.encode()) > MAX_PASSPHRASE:
        return f"a passphrase of at most {MAX_PASSPHRASE} bytes, please"
    return None


def passphrase_key(passphrase: bytes, keys: KeyBlock) -> bytes:
    return Scrypt(salt=keys.salt, length=KEY_SIZE, n=1 << keys.log2_n, r=keys.r, p=keys.p).derive(passphrase)


def new_keys(passphrase: bytes, aad: bytes) -> tuple[bytes, KeyBlock]:
    """A fresh data key, and the key block that holds it wrapped under ``passphrase``."""
    if not passphrase:
        raise PassphraseError("an empty passphrase protects nothing")
    data_key = AESGCM.generate_key(bit_length=256)
    salt, nonce = os.urandom(16), os.urandom(NONCE_SIZE)
    unwrapped = KeyBlock(LOG2_N, R, P, salt, nonce, b"")
    wrapped = AESGCM(passphrase_key(passphrase, unwrapped)).encrypt(nonce, data_key, aad)
    return data_key, KeyBlock(LOG2_N, R, P, salt, nonce, wrapped)


def unwrap(passphrase: bytes, keys: KeyBlock, aad: bytes) -> bytes:
    """The data key, or PassphraseError (a wrong passphrase, or a header that was changed)."""
    try:
        return AESGCM(passphrase_key(passphrase, keys)).decrypt(keys.nonce, keys.wrapped, aad)
    except InvalidTag:
        raise PassphraseError(
            "wrong passphrase for this image (or its header was changed)", hint="type the passphrase again"
        ) from None


def chunk_aad(image_id: bytes, offset: int, length: int, codec: Codec) -> bytes:
    return b"chunk" + image_id + struct.pack("<HQQB", MAJOR, offset, length, codec)


def page_aad(image_id: bytes, page: int, entries: int) -> bytes:
    return b"index" + image_id + struct.pack("<HQQ", MAJOR, page, entries)


def manifest_aad(image_id: bytes) -> bytes:
    return b"manifest" + image_id + struct.pack("<H", MAJOR)


def meta_aad(image_id: bytes) -> bytes:
    return b"meta" + image_id + struct.pack("<H", MAJOR)


class Sealer:
    """Seals and opens with one image's data key (one AESGCM object; it is safe across threads)."""

    def __init__(self, data_key: bytes) -> None:
        self.aead = AESGCM(data_key)

    def seal(self, plain: bytes | bytearray | memoryview, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self.aead.encrypt(nonce, bytes(plain), aad)

    def open(self, sealed: bytes | memoryview, aad: bytes, what: str) -> bytes:
        """The plain bytes, or ImageError naming ``what`` was damaged or changed."""
        if len(sealed) < OVERHEAD:
            raise ImageError(f"{what} is cut short")
        try:
            return self.aead.decrypt(bytes(sealed[:NONCE_SIZE]), bytes(sealed[NONCE_SIZE:]), aad)
        except InvalidTag:
            raise ImageError(f"{what} failed its authentication: it was damaged, changed or moved") from None
