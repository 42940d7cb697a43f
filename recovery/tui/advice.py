"""What an error screen says: a title, what happened, and what the user can do."""

from __future__ import annotations

from dataclasses import dataclass

INCOMPLETE = "The target now holds an incomplete copy: do not boot from it or use it."


@dataclass(frozen=True)
class Advice:
    title: str
    message: str
    steps: tuple[str, ...]
    waiting: bool = False  # the link is gone: the wizard waits for the peer to return
    code: str = ""


def _steps(code: str, peer: str) -> tuple[str, tuple[str, ...], bool]:
    if code in ("link_lost", "no_peer"):
        return f"The link to {peer} was lost", (
            "Check that the cable is plugged in firmly at both ends.",
            f"Check that usb4-recovery still runs on {peer}.",
            f"The wizard reconnects by itself when {peer} is back; choose the same disks and the "
            "clone resumes where it stopped. The source was only read, never changed.",
        ), True
    if code == "refused":
        return "The clone was refused", (
            "Nothing was written.",
            "Choose another target, or free this one (unmount it, stop what uses it).",
        ), False
    if code == "source_read":
        return "The source disk cannot be read", (
            "Try again: a loose cable or a disk that went to sleep can fail once.",
            "If it fails again at the same place the disk has bad sectors: continue in rescue mode "
            "(the wizard asks), which copies everything that can still be read and lists what cannot.",
            INCOMPLETE,
        ), False
    if code == "target_write":
        return "The target disk cannot be written", (
            "Check how the target is connected, then try again.",
            "If it fails again, use another target disk.",
            INCOMPLETE,
        ), False
    if code == "verify_failed":
        return "Verification found differences", (
            "The target did not read back what was written (it may be failing), or a filesystem "
            "on it failed its check: the message says which.",
            "Run the clone again or use another target disk; if a filesystem check failed, "
            "clone in exact mode.",
        ), False
    if code == "integrity":
        return "Data arrived damaged", (
            "Check the cable and try again.",
            INCOMPLETE,
        ), False
    if code == "cancelled":
        return "The clone was cancelled", (
            INCOMPLETE,
            "Start again whenever you are ready.",
        ), False
    if code == "protocol":
        return "The two machines do not understand each other", (
            "Run the same version of usb4-recovery on both machines.",
        ), False
    if code == "missing":
        return "Something this machine needs is missing", (), False
    if code == "usage":
        return "That cannot be done", (), False
    return "Something went wrong inside usb4-recovery", (
        "Try again. If it happens again, keep the log and report it.",
    ), False


def advise(code: str, message: str, hint: str | None = None, *, peer: str = "the other machine") -> Advice:
    """The error screen for an error ``code`` (see :mod:`recovery.errors`)."""
    title, steps, waiting = _steps(code, peer)
    if message.startswith("peer: "):
        message = f"{message[6:]} (reported by {peer})"
    if code == "cancelled" and "the peer cancelled" in message:
        title = f"The clone was cancelled on {peer}"
    if hint:
        steps = (hint[0].upper() + hint[1:], *steps)
    return Advice(title=title, message=message[0].upper() + message[1:] if message else "", steps=steps,
                  waiting=waiting, code=code)
