"""What an error screen says: a title, what happened, what state the disks are in, what to do."""

from __future__ import annotations

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


def _steps(code: str, peer: str) -> tuple[str, tuple[str, ...], bool]:
    if code in ("link_lost", "no_peer"):
        return (
            f"The link to {peer} was lost",
            (
                f"Check that the cable is plugged in firmly at both ends, and that usb4-recovery still runs on {peer}.",
                f"To go on, pair with {peer} once more (it shows a new code), then Retry: the clone resumes "
                "where the target's safely written part ends.",
            ),
            True,
        )
    if code == "refused":
        return (
            "The clone was refused",
            ("Choose another target, or free this one (unmount it, stop what uses it).",),
            False,
        )
    if code == "source_read":
        return (
            "The source disk cannot be read",
            (
                "Retry: a loose cable or a disk that went to sleep can fail once.",
                "If it fails again at the same place the disk has bad sectors: continue in rescue mode "
                "(the wizard asks), which copies everything that can still be read and lists what cannot.",
            ),
            False,
        )
    if code == "target_write":
        return (
            "The target disk cannot be written",
            (
                "Check how the target is connected, then Retry.",
                "If it fails again, use another target disk.",
            ),
            False,
        )
    if code == "verify_failed":
        return (
            "The copy could not be verified",
            (
                "The target did not read back what was written, or could not be read back at all (it may be "
                "failing), or a filesystem on it failed its check: the message says which.",
                "Retry, or use another target disk; if a filesystem check failed, clone in exact mode.",
            ),
            False,
        )
    if code == "integrity":
        return "Data arrived damaged", ("Check the cable, then Retry.",), False
    if code == "cancelled":
        return "The clone was cancelled", ("Retry whenever you are ready.",), False
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
            ("The message names the program and why. Retry; if it fails again, keep the log and report it.",),
            False,
        )
    if code == "usage":
        return "That cannot be done", (), False
    return (
        "Something went wrong inside usb4-recovery",
        ("Retry. If it happens again, keep the log and report it.",),
        False,
    )


def advise(
    code: str, message: str, hint: str | None = None, *, peer: str = "the other machine", reported_by: str | None = None
) -> Advice:
    """The error screen for an error ``code`` (see :mod:`recovery.errors`); ``reported_by``: the
    machine it happened on, when not this one."""
    title, steps, waiting = _steps(code, peer)
    if reported_by:
        message = f"{message} (reported by {reported_by})"
    if code == "cancelled" and "the peer cancelled" in message:
        title = f"The clone was cancelled on {peer}"
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
