"""An encrypted image's passphrase in a wizard's session (capability "image-passphrase").

The driving user types it; it reaches the machine that holds the image only inside a sealed control
message (``plan.passphrase`` for a save, ``request.passphrase`` for a restore), and that machine checks
it before anything is written. It is never put in an event, a log or a journal.
"""

from __future__ import annotations

from recovery.diskimage.reader import ImageReader
from recovery.errors import PassphraseError, UsageError
from recovery.protocol.state import ControlConnection

CAPABILITY = "image-passphrase"


def secret(text: str | None) -> bytes | None:
    """The passphrase as the image's key derivation takes it (UTF-8), or None."""
    return None if text is None else text.encode()


def for_peer(state: ControlConnection, text: str | None, peer: str) -> str | None:
    """``text``, to send to ``peer`` in a control message: only when both sides list the capability and
    the control channel is sealed (it is after every pairing, on every link; checked, not assumed)."""
    if text is None:
        return None
    if CAPABILITY not in state.shared_caps:
        raise UsageError(
            f"{peer} runs a usb4-recovery that cannot encrypt an image or open an encrypted one",
            hint=f"upgrade it on {peer}, or keep the image on this machine",
        )
    if not state.paired:  # paired: every record it sends is sealed with the session's keys
        raise UsageError("the control channel is not sealed: the passphrase is not sent", hint="pair again")
    return text


def check(path: str, text: str | None) -> None:
    """Open the image ``path`` with ``text``: PassphraseError when it is encrypted and that is not its
    passphrase (one key derivation: well under a second)."""
    try:
        ImageReader(path, secret(text)).close()
    except PassphraseError as e:
        raise PassphraseError(e.message, hint="type the image's passphrase again") from None
