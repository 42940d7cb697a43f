"""The wizard's steps, and what an answer does to the others (pure: no Textual, no I/O).

Six steps (an image file may stand in for a disk: one to restore for the
source, a folder to save one in for the target; see :data:`INSTEAD`; a clone
that changes the layout shows it after the options, see :data:`AFTER`); Esc
goes back one and every answer given stays (a later answer is dropped only
when the new one makes it impossible: another direction means other disks,
another source may make the target too small and turns rescue mode, chosen
for one source, off; the partition sizes chosen on the layout step are dropped with another
disk or another fit). Before a
clone starts, and when the user retries one, the chosen disks are looked up
again in the disk lists as they are now: :func:`recheck` finds each by its
identity and says in words what changed since it was chosen.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from recovery.disks import identity, match
from recovery.protocol.messages import DiskInfo
from recovery.tui.model import Choice, image_disk, restored_disk, short_name, source_refusal, target_refusal

STEPS = ("pair", "direction", "source", "target", "options", "review")
# Steps in the place of another: an image to restore instead of the source disk, a folder to save an
# image in instead of the target disk (capability "images").
INSTEAD = {"image": "source", "folder": "target"}
# A step shown after another only when the choice needs it, as a second page of that step (its number):
# the new layout, when the clone shrinks the source onto a smaller disk or grows it onto a larger one.
AFTER = {"layout": "options"}
TITLES = {
    "pair": "pair with the other machine",
    "direction": "which way to copy",
    "source": "the disk to copy",
    "target": "the disk to overwrite",
    "options": "how to copy",
    "review": "review and confirm",
    "layout": "the new layout",
    "image": "the image to restore",
    "folder": "where to save the image",
}


def number(step: str) -> int:
    return STEPS.index(INSTEAD.get(step) or AFTER.get(step, step)) + 1


def label(step: str) -> str:
    """``Step 4 of 6: the disk to overwrite``."""
    return f"Step {number(step)} of {len(STEPS)}: {TITLES[step]}"


def shows_layout(choice: Choice | None) -> bool:
    """The choice changes the layout (a clone shrunk or grown to fit its target disk): the step shows it."""
    return choice is not None and choice.fit != "keep"


def _steps(choice: Choice | None) -> tuple[str, ...]:
    """The steps ``choice`` goes through, in order (before an image or folder stands in for a disk)."""
    if not shows_layout(choice):
        return STEPS
    after = STEPS.index(AFTER["layout"]) + 1
    return (*STEPS[:after], "layout", *STEPS[after:])


def previous(step: str, choice: Choice | None = None) -> str:
    """The step before ``step``: the one it stands in for or follows, or before that (an image or folder
    chosen instead of a disk is the step shown again)."""
    if step in INSTEAD or step in AFTER:
        return INSTEAD.get(step) or AFTER[step]
    steps = _steps(choice)
    return _instead(steps[max(0, steps.index(step) - 1)], choice)


def following(step: str, choice: Choice | None = None) -> str:
    if step in AFTER:
        return STEPS[STEPS.index(AFTER[step]) + 1]
    steps = _steps(choice)
    return _instead(steps[min(len(steps) - 1, steps.index(INSTEAD.get(step, step)) + 1)], choice)


def _instead(step: str, choice: Choice | None) -> str:
    """``step``, or the image or folder step that the choice took in its place."""
    if choice is not None and step == "source" and choice.image_source is not None:
        return "image"
    if choice is not None and step == "target" and choice.image_target is not None:
        return "folder"
    return step


def activity(step: str) -> str:
    """What the driving user does, for the other screen: ``choosing the disk to copy``."""
    return {
        "pair": "looking at the pairing",
        "review": "reviewing the clone before confirming it",
        "options": "choosing how to copy",
        "layout": "reviewing the new layout of the partitions",
    }.get(step, f"choosing {TITLES[step]}")


def answer(choice: Choice, step: str, value: object) -> Choice:
    """The choice with one step answered; later answers stay while they still fit (the partition sizes
    chosen on the layout step only for the same disks and the same fit)."""
    answered = _answered(choice, step, value)
    if (answered.source, answered.target, answered.fit) != (choice.source, choice.target, choice.fit):
        return dataclasses.replace(answered, sizes={})
    return answered


def _answered(choice: Choice, step: str, value: object) -> Choice:
    if step == "direction":
        assert isinstance(value, bool)
        if value == choice.send:
            return choice
        return dataclasses.replace(
            choice, send=value, source=None, target=None, image_source=None, image_target=None, passphrase=None
        )
    if step in ("source", "image"):
        entry = value[1] if isinstance(value, tuple) else None
        disk = restored_disk(value[0], value[1]) if isinstance(value, tuple) else value
        assert isinstance(disk, DiskInfo)
        target = choice.target if choice.image_target is None else None  # a save's file was for that disk
        if target is not None and target_refusal(disk, target) is not None:
            target = None
        # Rescue mode was chosen for one source (after it could not be read): never for another disk.
        rescue = choice.rescue and choice.source is not None and same_disk(choice.source, disk) and not entry
        mode = entry.mode if entry is not None else choice.mode
        return dataclasses.replace(
            choice,
            source=disk,
            target=target,
            rescue=rescue,
            image_source=entry,
            image_target=None,
            mode=mode,
            passphrase=None,  # a restore's was for its image; a save's for the image of another source
        )
    if step == "target":
        assert isinstance(value, DiskInfo)
        return dataclasses.replace(choice, target=value, image_target=None, passphrase=None)
    if step == "folder":
        assert isinstance(value, str) and choice.source is not None
        return dataclasses.replace(choice, target=image_disk(value, choice.source.size), image_target=value)
    if step == "options":
        assert isinstance(value, Choice)
        return dataclasses.replace(
            choice,
            mode=value.mode,
            level=value.level,
            verify=value.verify,
            grow=value.grow,
            passphrase=value.passphrase,
        )
    if step == "layout":
        assert isinstance(value, dict)
        return dataclasses.replace(choice, sizes=value)
    return choice


def same_disk(a: DiskInfo, b: DiskInfo) -> bool:
    """The same disk (or image file), by identity: never by /dev name alone."""
    if a.identity is None or b.identity is None:
        return False
    return match.same_disk(a.identity, b.identity)


def find(disk: DiskInfo | None, disks: tuple[DiskInfo, ...]) -> DiskInfo | None:
    """``disk`` as it is in ``disks`` now (None: gone, or never identified)."""
    if disk is None:
        return None
    return next((d for d in disks if same_disk(disk, d)), None)


@dataclass(frozen=True)
class Recheck:
    """A choice looked up again: the disks as they are now, and what changed in words."""

    choice: Choice | None  # None: it cannot run (a disk is gone or cannot be used now)
    changes: tuple[str, ...] = ()
    # The only change is the target's partition table (a clone cut short wiped it): the same source
    # and the same target device, by the same path, as chosen.
    written_only: bool = False


def recheck(
    choice: Choice,
    source_disks: tuple[DiskInfo, ...],
    target_disks: tuple[DiskInfo, ...],
    source_host: str,
    target_host: str,
) -> Recheck:
    """Find the chosen source and target again; say what changed and whether the clone can still run."""
    assert choice.source is not None and choice.target is not None
    changes: list[str] = []
    # An image file is not in the disk lists: the machine that holds it checks it again when the clone starts.
    source = choice.source if choice.image_source else find(choice.source, source_disks)
    target = choice.target if choice.image_target else find(choice.target, target_disks)
    written_only = _same_but_tables(choice.source, source, tables=False) and _same_but_tables(choice.target, target)
    for old, new, host, role in (
        (choice.source, source, source_host, "source"),
        (choice.target, target, target_host, "target"),
    ):
        if new is old:
            continue
        name = f"{short_name(old)} on {host}"
        if new is None:
            changes.append(f"the {role} {name} is gone (unplugged, or that machine restarted)")
            continue
        if new.path != old.path:
            changes.append(f"the {role} {name} is now called {short_name(new)}")
        why = identity.mismatch(old.identity, new.identity) if old.identity and new.identity else None
        if why:
            changes.append(f"the {role} {name}: {why}")
    if source is None or target is None:
        return Recheck(None, tuple(changes))
    refusal = source_refusal(source) or (None if choice.image_target else target_refusal(source, target))
    if refusal:
        changes.append(f"it cannot be done now: {refusal}")
        return Recheck(None, tuple(changes))
    return Recheck(dataclasses.replace(choice, source=source, target=target), tuple(changes), written_only)


def _same_but_tables(old: DiskInfo, new: DiskInfo | None, *, tables: bool = True) -> bool:
    """``new`` is ``old`` by path and by identity, but (``tables``) for its partition-table fingerprint."""
    if new is None or new.path != old.path or old.identity is None or new.identity is None:
        return False
    expected = dataclasses.replace(old.identity, fingerprint=new.identity.fingerprint) if tables else old.identity
    return identity.mismatch(expected, new.identity) is None
