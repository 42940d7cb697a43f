"""The one error taxonomy: every failure a user can meet, with its exit code.

Each class carries a stable ``code`` (used in JSON events and on the wire)
and an ``exit_code`` (documented in docs/cli.md). The CLI's single handler
turns any of them into one line on stderr and that exit code; a traceback
appears only with ``--debug``.

This module imports nothing from the project, so every layer may use it.
"""

from __future__ import annotations


class RecoveryError(Exception):
    """Base of every error this program reports to a user."""

    code = "internal"
    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None, peer: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.peer = peer  # the other machine's name when it happened there (it told us), else None

    def __str__(self) -> str:
        return self.message

    @property
    def where(self) -> str:
        """The message as a person reads it: with the machine it happened on, if not this one."""
        return f"on {self.peer}: {self.message}" if self.peer else self.message


class UsageError(RecoveryError):
    """The command line asks for something impossible."""

    code = "usage"
    exit_code = 2


class RefusedError(RecoveryError):
    """A safety check refused a source or target (here or on the peer)."""

    code = "refused"
    exit_code = 3


class LinkError(RecoveryError):
    """The link could not be set up, or was lost mid-transfer."""

    code = "link_lost"
    exit_code = 4


class VerificationError(RecoveryError):
    """Reading the target back did not give what was sent, or could not be done."""

    code = "verify_failed"
    exit_code = 5

    def __init__(
        self,
        message: str,
        *,
        ranges: list[tuple[int, int]] | None = None,
        hint: str | None = None,
        peer: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint, peer=peer)
        self.ranges = ranges or []

    def kept(self, kept_as: str | None) -> VerificationError:
        """Say where an image file that failed is kept (under a name that says so), if it is."""
        if kept_as:
            self.message += f"; the image file is kept as {kept_as}, NOT a verified copy"
        return self


class SourceReadError(RecoveryError):
    """The source device could not be read."""

    code = "source_read"
    exit_code = 6


class TargetWriteError(RecoveryError):
    """The target device could not be written or flushed."""

    code = "target_write"
    exit_code = 7


class ProtocolError(RecoveryError):
    """The wire protocol was broken; subclasses say by whom."""

    code = "protocol"
    exit_code = 8


class LocalProtocolError(ProtocolError):
    """This side tried to do something the protocol does not allow (a bug)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""


class IntegrityError(RecoveryError):
    """A chunk arrived whose BLAKE3 digest does not match its contents."""

    code = "integrity"
    exit_code = 9


class CancelledError(RecoveryError):
    """The user (here or on the peer) cancelled the clone."""

    code = "cancelled"
    exit_code = 10


class PeerLeftError(CancelledError):
    """The peer ended the session on purpose (its user quit, or ended the pairing)."""


class Interrupted(CancelledError):
    """The user here stopped the run (Ctrl-C, the wizard's abort)."""

    exit_code = 130


class MissingToolError(RecoveryError):
    """A program or kernel feature this run needs is not available."""

    code = "missing"
    exit_code = 11


class NoPeerError(LinkError):
    """No peer could be found on any link."""

    code = "no_peer"
    exit_code = 12


class PairingError(RecoveryError):
    """The two machines did not pair: a wrong or missing code, or the peer refused."""

    code = "pairing"
    exit_code = 13


class UnreadableSourceError(RecoveryError):
    """The clone completed, but some bytes of the source could not be read (rescue mode).

    Everything that was read is on the target and verified; the unreadable
    sectors hold zeros (or the fill pattern) there, and the mapfile and the
    summary list them. Never a success (exit 0), never plain "verified".
    """

    code = "unreadable"
    exit_code = 14

    def __init__(
        self,
        message: str,
        *,
        unreadable: int = 0,
        ranges: list[tuple[int, int]] | None = None,
        hint: str | None = None,
        peer: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint, peer=peer)
        self.unreadable = unreadable
        self.ranges = ranges or []


class ToolError(RecoveryError):
    """A program this one runs could not start, failed, or did not finish in time."""

    code = "tool"
    exit_code = 15


class ImageError(RecoveryError):
    """An image file that cannot be read as one: not an image, of a newer format, incomplete or damaged."""

    code = "image"
    exit_code = 16


class PassphraseError(RecoveryError):
    """An encrypted image's passphrase is wrong or missing."""

    code = "passphrase"
    exit_code = 17


class PassphraseRefusedError(RefusedError):
    """The machine that holds an encrypted image refused its passphrase (wrong or missing) before anything
    was written: the link stays, and the user may type it again."""

    code = PassphraseError.code
    exit_code = PassphraseError.exit_code


INTERRUPTED_EXIT_CODE = 130

ERRORS_BY_CODE: dict[str, type[RecoveryError]] = {
    cls.code: cls
    for cls in (
        RecoveryError,
        UsageError,
        RefusedError,
        LinkError,
        VerificationError,
        SourceReadError,
        TargetWriteError,
        ProtocolError,
        IntegrityError,
        CancelledError,
        MissingToolError,
        NoPeerError,
        PairingError,
        UnreadableSourceError,
        ToolError,
        ImageError,
        PassphraseError,
    )
}


def error_from_code(code: str, message: str, peer: str, hint: str | None = None) -> RecoveryError:
    """Rebuild an error the peer (the machine named ``peer``) reported, so both sides exit alike."""
    cls = ERRORS_BY_CODE.get(code, RecoveryError)
    if cls is ProtocolError:
        cls = RemoteProtocolError
    return cls(message, peer=peer, hint=hint)
