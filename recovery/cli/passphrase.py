"""An image's passphrase: from a file, or typed on the terminal (never on the command line, where
other users see it in the process list)."""

from __future__ import annotations

import argparse
import getpass
import os

from recovery.diskimage.seal import MAX_PASSPHRASE, new_passphrase_problem
from recovery.errors import PassphraseError, UsageError


def add_passphrase(p: argparse.ArgumentParser, *, new: bool) -> None:
    if new:
        p.add_argument(
            "--passphrase",
            action="store_true",
            help="encrypt the image (AES-256-GCM per chunk): ask for a passphrase on the terminal",
        )
    p.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help="the image's passphrase: the first line of FILE" + (" (and encrypt the image)" if new else ""),
    )


def passphrase(args: argparse.Namespace, *, new: bool, needed: bool = False) -> bytes | None:
    """The passphrase given for an image: read from --passphrase-file, else asked on the terminal when
    ``new`` and --passphrase was given (twice), or when ``needed`` (an encrypted image is read)."""
    if args.passphrase_file:
        return _from_file(args.passphrase_file)
    if (new and args.passphrase) or needed:
        return _ask(confirm=new)
    return None


def _from_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            first = f.read(MAX_PASSPHRASE + 1).split(b"\n", 1)[0].rstrip(b"\r")
    except OSError as e:
        raise UsageError(f"cannot read the passphrase file {path}: {e.strerror}") from None
    if not first or len(first) > MAX_PASSPHRASE:
        raise PassphraseError(f"the passphrase file {path} holds no passphrase on its first line")
    return first


def _ask(*, confirm: bool) -> bytes:
    if not os.path.exists("/dev/tty"):
        raise PassphraseError("no passphrase: give --passphrase-file FILE (there is no terminal to ask on)")
    try:
        first = getpass.getpass("Image passphrase: ")
        problem = new_passphrase_problem(first, getpass.getpass("The same passphrase again: ")) if confirm else None
        if problem:
            raise PassphraseError(problem, hint="type it again")
    except (EOFError, OSError):
        raise PassphraseError("no passphrase was typed", hint="give --passphrase-file FILE") from None
    if not first:
        raise PassphraseError("an empty passphrase protects nothing")
    return first.encode()
