"""What an error screen says: a title, what happened, what state the disks are in, what to do.

In the wizard's words and keys: a hint the engine wrote for the command line ("run the same command
again with --rescue") is cut where that advice begins, and "retry" names what this screen offers
(its r key, or, on the serving machine, the driving one)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from recovery.events import PairingAttempt

SOURCE_SAFE = "The source was only read, never changed."


@dataclass(frozen=True)
class Advice:
    title: str
    message: str
    steps: tuple[str, ...]
    waiting: bool = False  # the link is gone: the wizard waits for the peer to return
    code: str = ""


def _steps(code: str, peer: str, retry: str, serving: bool) -> tuple[str, tuple[str, ...], bool]:
    """The title, the steps and whether the link is gone; ``retry`` says how to retry from this screen."""
    again = retry[0].upper() + retry[1:]
    if code in ("link_lost", "no_peer"):
        on = (
            f"To go on, type the code this machine shows now on {peer}, and retry the clone there:"
            if serving
            else f"To go on, pair with {peer} once more (it shows a new code), then {retry}:"
        )
        return (
            f"The link to {peer} was lost",
            (
                f"Check that the cable is plugged in firmly at both ends, and that usb4-recovery still runs on {peer}.",
                f"{on} the clone resumes where the target's safely written part ends.",
            ),
            True,
        )
    if code == "refused":
        return (
            "The clone was refused",
            ("Choose another target, or free this one (unmount it, stop what uses it).",),
            False,
        )
    if code == "passphrase":
        return (
            "The image's passphrase was refused",
            (
                f"Nothing was written: the passphrase is typed again on {peer}."
                if serving
                else "Nothing was written: type the image's passphrase again.",
            ),
            False,
        )
    if code == "source_read":
        return (
            "The source disk cannot be read",
            (
                f"{again}: a loose cable or a disk that went to sleep can fail once.",
                "If it fails again at the same place the disk has bad sectors: continue in rescue mode "
                f"(the wizard{f' on {peer}' if serving else ''} asks), which copies everything that can still "
                "be read and lists what cannot.",
            ),
            False,
        )
    if code == "target_write":
        return (
            "The target disk cannot be written",
            (f"Check how the target is connected, then {retry}.", "If it fails again, use another target disk."),
            False,
        )
    if code == "verify_failed":
        return (
            "The copy could not be verified",
            (
                "The target did not read back what was written, or could not be read back at all (it may be "
                "failing), or a filesystem on it failed its check: the message says which.",
                f"{again}, or use another target disk; if a filesystem check failed, clone in exact mode.",
            ),
            False,
        )
    if code == "integrity":
        return "Data arrived damaged", (f"Check the cable, then {retry}.",), False
    if code == "cancelled":
        return "The clone was cancelled", (f"{again} whenever you are ready.",), False
    if code == "protocol":
        return (
            "The two machines do not understand each other",
            ("Run the same version of usb4-recovery on both machines.",),
            False,
        )
    if code == "missing":
        return "Something this machine needs is missing", (), False
    if code == "tool":
        return (
            "A program usb4-recovery runs failed",
            (f"The message names the program and why. {again}; if it fails again, keep the log and report it.",),
            False,
        )
    if code == "usage":
        return "That cannot be done", (), False
    return (
        "Something went wrong inside usb4-recovery",
        (f"{again}. If it happens again, keep the log and report it.",),
        False,
    )


# Advice written for the command line: its options, its commands, "run the same commands again".
COMMAND_LINE = re.compile(
    r"(^|[\s(`])--[a-z]|`recovery |\brecovery (send|receive|agent|tui|disks|stream)\b|\brun the same commands?\b",
    re.IGNORECASE,
)


def wizard_hint(hint: str | None) -> str | None:
    """What of an engine's hint a wizard user acts on: it ends where command-line advice begins (an
    option, a command to run again); the wizard's own steps say what to do, with its keys."""
    kept: list[str] = []
    for clause in re.split(r"; |: |, or ", hint or ""):
        if COMMAND_LINE.search(clause):
            break
        kept.append(clause)
    text = "; ".join(c for c in kept if c.strip())
    return text or None


def retry_words(*, serving: bool, peer: str, keyed: bool = True) -> str:
    """How a failed clone is retried from this screen: its r key, the driving machine, or from the start."""
    if serving:
        return f"retry from {peer}"
    return "press r to retry" if keyed else "start the clone again"


def advise(
    code: str,
    message: str,
    hint: str | None = None,
    *,
    peer: str = "the other machine",
    reported_by: str | None = None,
    serving: bool = False,
    keyed: bool = True,
) -> Advice:
    """The error screen for an error ``code`` (see :mod:`recovery.errors`); ``reported_by``: the
    machine it happened on, when not this one; ``serving``: this machine serves ``peer`` (which drives
    and retries); ``keyed``: this screen offers r to retry."""
    title, steps, waiting = _steps(code, peer, retry_words(serving=serving, peer=peer, keyed=keyed), serving)
    if reported_by:
        message = f"{message} (reported by {reported_by})"
    if code == "cancelled" and "the peer cancelled" in message:
        title = f"The clone was cancelled on {peer}"
    hint = wizard_hint(hint)
    if hint:
        steps = (hint[0].upper() + hint[1:], *steps)
    return Advice(
        title=title,
        message=message[0].upper() + message[1:] if message else "",
        steps=steps,
        waiting=waiting,
        code=code,
    )


def peer_left(peer: str, reason: str) -> Advice:
    """The other machine ended the pairing on purpose (its user quit, or chose to end it)."""
    return Advice(
        title=f"{peer} ended the pairing",
        message=f"It said: {reason}" if reason else "",
        steps=(
            "Nothing runs on this machine now.",
            f"To work with {peer} again, pair once more: one machine types the other's code.",
        ),
        waiting=True,
        code="peer_left",
    )


def _tries(n: int) -> str:
    return f"{n} {'try' if n == 1 else 'tries'} left"


def pairing_notice(attempt: PairingAttempt, code: str) -> str | None:
    """What the first screen says, until dismissed, after a pairing attempt with a code failed (None: a
    failure of another kind). ``code``: this machine's code as it is now."""
    host = attempt.host or attempt.peer
    if attempt.drove:  # typed here: the other machine's code
        if attempt.reason == "wrong_code":
            if attempt.new_code:
                return (
                    f"Wrong code, and that was the last try: {host} now shows a new code. Type the code it shows now."
                )
            if attempt.tries_left == 0:
                return f"Wrong code, no tries left for now: {host} makes every further try wait."
            left = f": {_tries(attempt.tries_left)}" if attempt.tries_left is not None else ""
            return f"Wrong code{left}. Check the code {host} shows and type it again."
        if attempt.reason == "stale":
            return f"{host} changed its code meanwhile: type the code it shows now."
        if attempt.reason == "locked":
            return f"{attempt.message[:1].upper()}{attempt.message[1:]}."
        return None
    if attempt.reason == "wrong_code":  # typed there: this machine's code
        if attempt.new_code:
            return f"{host} typed a wrong code, the last try: this machine's code changed. Its new code is {code}."
        if attempt.tries_left is not None:
            return f"{host} typed a wrong code: {_tries(attempt.tries_left)} before this machine's code changes."
        return f"{host} typed a wrong code."
    return None
