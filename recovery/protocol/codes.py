"""Pairing codes: making them, reading what a person typed (pure).

A generated code is eight digits shown as ``4821-0937``: easy to read aloud
and to type on any keyboard layout, 10^8 possibilities. A code given on the
command line (``--code``) may be any text of at least :data:`MIN_GIVEN`
characters. Whatever the user types is normalised the same way on both
machines before it feeds the key exchange, so case, spaces and dashes do
not matter.
"""

from __future__ import annotations

import re
import secrets
import unicodedata

from recovery.errors import UsageError

DIGITS = 8
MIN_GIVEN = 6
MAX_LEN = 128
_SEPARATORS = re.compile(r"[\s\-_.]+")


def generate() -> str:
    """A fresh random code, for people: ``NNNN-NNNN``."""
    number = f"{secrets.randbelow(10**DIGITS):0{DIGITS}d}"
    return f"{number[:4]}-{number[4:]}"


def normalise(text: str) -> str:
    """The canonical form both sides feed to the key exchange.

    Unicode NFKC with case folded, and runs of spaces, dashes, dots and
    underscores removed: ``" 4821 0937 "`` and ``"4821-0937"`` are one code.
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    return unicodedata.normalize("NFKC", _SEPARATORS.sub("", folded))


def check_given(text: str) -> str:
    """A code from ``--code`` or ``recovery.code=``: refuse one too short to be safe."""
    canonical = normalise(text)
    if len(canonical) < MIN_GIVEN:
        raise UsageError(
            f"a pairing code needs at least {MIN_GIVEN} letters or digits (spaces and dashes do not count)",
            hint="use a longer code, or leave --code out to get a random one",
        )
    if len(canonical) > MAX_LEN:
        raise UsageError(f"a pairing code may have at most {MAX_LEN} characters")
    return text.strip()


def secret(text: str) -> bytes:
    """The bytes the key exchange uses for a code."""
    return normalise(text).encode("utf-8")
