"""What the review promises, row by row, from the choice alone (pure: no Textual, no I/O).

Every row is something the clone will do, as the engine will do it: the
disks, what is destroyed, the mode, rescue mode, whether it resumes an
interrupted clone or starts from the beginning, and what is checked at the
end. Both screens show these rows: the driving one to confirm them, the
serving one (told them in the driver's ``activity``) before anything is
written there.
"""

from __future__ import annotations

from recovery.engine.peer.jobs import earlier_copy, unfinished
from recovery.protocol.messages import DiskInfo, Unfinished
from recovery.tui.model import Choice, contents, copy_text, image_text, passphrase_asked, short_name, used_bytes
from recovery.units import human_size

Rows = list[tuple[str, str]]


def hardware(disk: DiskInfo) -> str:
    return ", ".join(x for x in (disk.model, disk.serial, human_size(disk.size)) if x)


def review_rows(choice: Choice, host: str, peer: str) -> Rows:
    """The review of ``choice`` driven from ``host`` with ``peer``, in the order a technician checks it."""
    assert choice.source is not None and choice.target is not None
    src_host, dst_host = (host, peer) if choice.send else (peer, host)
    return [
        copy_row(choice, src_host),
        *onto_rows(choice, dst_host),
        *fit_rows(choice, src_host),
        ("Mode", mode_text(choice)),
        ("Rescue", rescue_text(choice.rescue)),
        ("Start", start_text(choice)),
        ("Verify", verify_text(choice, dst_host)),
        *encrypted_rows(choice, src_host, dst_host),
    ]


def encrypted_rows(choice: Choice, src_host: str, dst_host: str) -> Rows:
    """Whether the image is encrypted (never the passphrase: the other screen is shown these rows too)."""
    asked = passphrase_asked(choice)
    if asked == "new" and choice.passphrase is not None:
        return [
            (
                "Encrypt",
                f"yes: {dst_host} encrypts the image (AES-256-GCM) under the passphrase typed here; "
                "without it the image cannot be read or restored",
            )
        ]
    if asked == "image":
        return [("Encrypt", f"the image is: {src_host} opens it with the passphrase typed here")]
    return []


def copy_row(choice: Choice, src_host: str) -> tuple[str, str]:
    """What is read: the source disk, or the image a restore reads (and what it holds)."""
    assert choice.source is not None
    entry = choice.image_source
    if entry is not None:
        return ("Restore", f"the image {choice.source.path} of {src_host}: {image_text(entry)}")
    return ("Copy", f"{choice.source.path} of {src_host} ({hardware(choice.source)})")


def onto_rows(choice: Choice, dst_host: str) -> Rows:
    """What is written, and what that destroys (a save destroys nothing: it makes a new file)."""
    target = choice.target
    assert target is not None
    if choice.image_target is not None:
        return [
            ("Into", f"a new image file {target.path} of {dst_host}"),
            ("Changes", f"nothing on {dst_host} but that new file: no disk is overwritten"),
        ]
    return [
        ("Onto", f"{target.path} of {dst_host} ({hardware(target)})"),
        ("DESTROYS", f"everything on {short_name(target)} of {dst_host}: {contents(target)}"),
    ]


# Where a fitted clone's new layout is seen: estimated on the layout step, exact on the source's machine.
LAYOUT_STEP = (
    "the step before this review estimates the new layout; {} measures it exactly, and shows and logs it "
    "before the target is written"
)


def fit_rows(choice: Choice, src_host: str) -> Rows:
    """A smaller target: the source's filesystems shrunk to fit, on a copy; a larger one they grow into."""
    source, target = choice.source, choice.target
    assert source is not None and target is not None
    fit = choice.fit
    sized = chosen_sizes(choice)
    if fit == "grow":
        return [
            (
                "Grows",
                f"{short_name(target)} is larger ({human_size(target.size)} for {human_size(source.size)}): the "
                f"filesystems that can grow fill it{sized}, resized on a copy-on-write view of the source on "
                f"{src_host}; the source is never written; {LAYOUT_STEP.format(src_host)}",
            )
        ]
    if fit != "shrink":
        return []
    return [
        (
            "Shrinks",
            f"{short_name(target)} is smaller ({human_size(target.size)} for {human_size(source.size)}): the "
            f"filesystems are shrunk to fit{sized} on a copy-on-write view of the source on {src_host}; the source "
            f"is never written; {LAYOUT_STEP.format(src_host)}",
        )
    ]


def chosen_sizes(choice: Choice) -> str:
    """The partition sizes the user chose, as the review says them: ``, partition 2 at 120.0 GiB as chosen``."""
    if not choice.sizes:
        return ""
    sized = ", ".join(f"partition {n} at {human_size(size)}" for n, size in sorted(choice.sizes.items()))
    return f" ({sized} as chosen, the others around it)"


def mode_text(choice: Choice) -> str:
    assert choice.source is not None
    if choice.mode == "used":
        used = used_bytes(choice.source)
        mode = "used: blocks in use" + (f" (about {human_size(used)})" if used is not None else "")
    else:
        mode = f"exact: all {human_size(choice.source.size)}, block for block"
    compression = {None: "compressed", 0: "not compressed"}.get(choice.level, f"zstd level {choice.level}")
    return f"{mode}, {compression}"


def rescue_text(rescue: bool) -> str:
    if not rescue:
        return "off"
    return "on: copies what it can read and lists the rest"


def resumed_clone(choice: Choice) -> Unfinished | None:
    """The interrupted clone on the target that this clone resumes (None: it starts from the beginning).

    As the receiver decides (:mod:`recovery.engine.resume.agree`): a clone of the same source in the same
    mode, not started over; it also checks the target still holds it, and the sender checks every chunk
    against the source."""
    if choice.source is None or choice.target is None or choice.restart:
        return None
    job = unfinished(choice.source, choice.target)
    if job is None or job.mode != choice.mode:
        return None
    return job


def start_text(choice: Choice) -> str:
    """Resuming (how much is on the target already) or from the beginning, and why."""
    job = resumed_clone(choice)
    since = f" of {job.since[:16]}" if job is not None and job.since else ""
    if job is not None and job.complete:
        return f"only the areas the source could not read are tried again (the clone{since} is on the target)"
    if job is not None:
        return f"resumes at {human_size(job.done)} of {human_size(job.total)} (the clone{since}): only the rest is sent"
    other = unfinished(choice.source, choice.target) if choice.source and choice.target else None
    if other is not None and choice.restart:
        return "from the beginning: the interrupted clone on the target is started over"
    if other is not None:
        return f"from the beginning: the interrupted clone on the target ran in {other.mode} mode"
    record = earlier_copy(choice.source, choice.target) if choice.source and choice.target else None
    if record is not None and choice.restart:
        return f"from the beginning: the {copy_text(record)} on the target is overwritten, all of it is sent"
    if record is not None and record.mode == choice.mode:
        return f"updates the {copy_text(record)} on the target: only the changes are sent"
    return "from the beginning"


def verify_text(choice: Choice, dst_host: str) -> str:
    """What is checked at the end, as it will happen: the machine that writes decides for its own disk."""
    if choice.image_target is not None:
        checks = "reads the image back and checks every chunk against the source's digests"
    elif choice.mode == "exact":
        checks = "reads the whole target back: its BLAKE3 must be the source's"
    else:
        checks = "reads back every block written and checks each filesystem (read-only)"
    if choice.verify:
        return f"{dst_host} {checks}"
    if choice.send:
        return f"{dst_host} {checks} (it always checks what it writes)"
    return "off: nothing is read back, no filesystem is checked (not recommended)"
