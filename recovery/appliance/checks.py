"""What is wrong with this machine at boot, and the lines the serial console prints (pure).

The cable's modules are read from a sysfs tree (a parameter, so tests give
their own); the disks are the ones :func:`recovery.disks.inventory.list_disks`
describes, so the first screen, the wizard and the receiver's refusals tell
the boot stick apart by one rule.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from recovery.appliance.cmdline import BootPlan
from recovery.disks import inventory
from recovery.errors import UnreadableSourceError
from recovery.events import parse_line
from recovery.link.sysfs import CORE_MODULE, STREAM_MODULE, Sysfs
from recovery.protocol.messages import DiskInfo
from recovery.secureboot import MODULE_KEY, SecureBootState, module_note, read_state
from recovery.sysattr import read_attr

UDEV_DB = Path("/run/udev/data")  # b MAJOR:MINOR for each block device udev has handled
READY = "USB4-RECOVERY READY"
RESULT = "USB4-RECOVERY RESULT"


@dataclass(frozen=True)
class Problem:
    """Something that stops or limits a clone, with what to do about it."""

    what: str
    todo: str


@dataclass(frozen=True)
class SystemState:
    kernel: str
    stream_loaded: bool
    problems: tuple[Problem, ...] = field(default=())
    disks: tuple[str, ...] = ()  # the disks a clone could use (not the stick, not unreadable)
    boot_disk: str | None = None
    secure_boot: SecureBootState = field(default=SecureBootState())
    # What limits this boot but needs nothing done (the wizard starts anyway).
    notes: tuple[str, ...] = ()

    @property
    def can_enrol_module_key(self) -> bool:
        """Lockdown refuses thunderbolt_stream and its key could be enrolled."""
        return (
            not self.stream_loaded
            and self.secure_boot.locked_down
            and not self.secure_boot.enrolment_pending
            and MODULE_KEY.exists()
            and shutil.which("mokutil") is not None
        )


def _name(disk: DiskInfo) -> str:
    return os.path.basename(disk.path)


def unsettled_disks(sys_root: Path = Path("/sys"), udev_db: Path = UDEV_DB) -> tuple[str, ...]:
    """Disks udev has not finished with yet.

    The kernel shows a new disk in sysfs before it has read the partition
    table, so until udev has handled the disk (its database entry exists) the
    stick may not yet be recognisable by its partition name.  Without a
    running udev (no database) there is nothing to wait for.  Loop devices
    are never waited for.
    """
    if not udev_db.is_dir():
        return ()
    return tuple(
        disk.name
        for disk in sorted((sys_root / "block").glob("*"))
        if inventory.worth_listing(disk.name)
        and not disk.name.startswith("loop")
        and (read_attr(disk / "size") or "0") != "0"
        and not (udev_db / f"b{read_attr(disk / 'dev')}").exists()
    )


def _modules(sys_root: Path, secure_boot: SecureBootState) -> tuple[list[Problem], list[str]]:
    """What the cable's modules lack: problems (with what to do) and notes (expected, nothing to do)."""
    sysfs = Sysfs(sys_root)
    problems, notes = [], []
    if not sysfs.module_loaded(CORE_MODULE):
        problems.append(
            Problem(
                f"The {CORE_MODULE} driver is not loaded.",
                f"Run 'modprobe {CORE_MODULE}' in the root shell (Alt+F2) and read 'dmesg | tail'; without it no "
                "cable link works.",
            )
        )
    if not sysfs.module_loaded(STREAM_MODULE) and secure_boot.locked_down:
        notes.append(module_note(secure_boot))  # expected with Secure Boot on until the key is enrolled
    elif not sysfs.module_loaded(STREAM_MODULE):
        problems.append(
            Problem(
                f"The {STREAM_MODULE} module is not loaded.",
                f"Run 'modprobe {STREAM_MODULE}' in the root shell (Alt+F2) and 'dmesg | tail' for the reason; "
                "the thunderbolt-net link (tbnet) still works without it.",
            )
        )
    elif not (sys_root / "kernel" / "config" / "thunderbolt" / "stream").is_dir():
        problems.append(
            Problem(
                "/sys/kernel/config/thunderbolt/stream is missing.",
                "Run 'mount -t configfs none /sys/kernel/config' in the root shell (Alt+F2); the stream link needs "
                "ConfigFS.",
            )
        )
    return problems, notes


def check_system(disks: Sequence[DiskInfo], sys_root: Path = Path("/sys"), kernel: str = "") -> SystemState:
    """Say what is missing, each with what to do: the cable's modules (from ``sys_root``) and
    ``disks`` as :func:`recovery.disks.inventory.list_disks` describes them."""
    secure_boot = read_state(sys_root)
    problems, notes = _modules(sys_root, secure_boot)
    usable = tuple(_name(d) for d in disks if not d.boot_medium and not d.unreadable)
    for d in disks:
        if d.unreadable:
            problems.append(
                Problem(
                    f"{d.path} is there but {d.unreadable}.",
                    "Check how it is connected; 'dmesg | tail' in the root shell (Alt+F2) shows the kernel's reason.",
                )
            )
    if not usable:
        problems.append(
            Problem(
                "No disks found (besides this recovery stick).",
                "Check that the disk is connected; in the firmware setup set the SATA/NVMe mode to AHCI instead of "
                "RAID/RST; then press Enter to look again. 'dmesg' in the root shell (Alt+F2) shows driver errors.",
            )
        )
    boot = next((_name(d) for d in disks if d.boot_medium), None)
    return SystemState(
        kernel=kernel,
        stream_loaded=Sysfs(sys_root).module_loaded(STREAM_MODULE),
        problems=tuple(problems),
        disks=usable,
        boot_disk=boot,
        secure_boot=secure_boot,
        notes=tuple(notes),
    )


def ready_line(plan: BootPlan, state: SystemState) -> str:
    return (
        f"{READY} mode={plan.mode} kernel={state.kernel or 'unknown'} "
        f"thunderbolt_stream={'loaded' if state.stream_loaded else 'missing'} "
        f"problems={len(state.problems)} secureboot={'on' if state.secure_boot.enabled else 'off'}"
    )


def result_line(exit_code: int, output_lines: Sequence[str]) -> str:
    """Summarise a headless run from its exit code and its --json output (docs/cli.md).

    The digest is the ``summary`` event's ``image_digest`` (exact mode: what
    b3sum gives), else its ``list_digest``; the error is the last ``error``
    event's message, failing that the last plain (stderr) line that is not a hint.
    """
    digest = json_error = plain_error = None
    for raw in output_lines:
        event = parse_line(raw)
        if event is None:
            line = raw.strip()
            if line and not line.startswith(("hint:", "{")):
                plain_error = line
            continue
        if event["event"] == "summary":
            digest = event.get("image_digest") or event.get("list_digest") or digest
        elif event["event"] == "error" and isinstance(event.get("message"), str):
            json_error = event["message"] or json_error
    if exit_code == 0:
        return f"{RESULT} ok exit=0 digest={digest or 'unknown'}"
    reason = " ".join((json_error or plain_error or "no error message").split())[:200]
    outcome = "partial" if exit_code == UnreadableSourceError.exit_code else "failed"
    return f"{RESULT} {outcome} exit={exit_code} error={reason}"
