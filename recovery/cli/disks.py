"""`recovery disks`: the local disks, as a user needs them to pick one."""

from __future__ import annotations

import argparse
import json
import sys

from recovery.cli.common import add_json
from recovery.disks.inventory import list_disks
from recovery.protocol.messages import DiskInfo
from recovery.protocol.schema import to_json
from recovery.units import human_size


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "disks",
        help="list this machine's disks",
        description="List block devices: size, model, serial, partitions, "
        "filesystems, mounts, and whether each may be written.",
    )
    p.add_argument("--all", action="store_true", help="also list device-mapper, md and similar devices")
    add_json(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    found = list_disks(include_all=args.all)
    if args.json:
        sys.stdout.write(json.dumps({"disks": [to_json(d) for d in found]}, indent=2) + "\n")
        return 0
    if not found:
        sys.stdout.write("No disks found.\n")
        return 0
    sys.stdout.write(format_disks(found))
    return 0


def format_disks(found: list[DiskInfo]) -> str:
    lines = []
    for d in found:
        hw = " ".join(x for x in (d.model, d.serial) if x) or "-"
        notes = [
            n
            for n in (
                "removable" if d.removable else "",
                d.transport or "",
                "SYSTEM" if d.system else "",
                "BOOT STICK" if d.boot_medium else "",
                f"{d.sector_size}-byte sectors" if d.sector_size else "",
            )
            if n
        ]
        lines.append(
            f"{d.path:<14} {human_size(d.size):>10}  {hw}  [{layout(d)}]" + (f"  ({', '.join(notes)})" if notes else "")
        )
        for p in d.partitions:
            used = f"used {human_size(p.used)}" if p.used is not None else ""
            where = "whole" if p.number == 0 else f"{p.number:>3}"
            lines.append(
                f"    {where:>5}  {human_size(p.size):>10}  {p.fstype or '?':<8} "
                f"{p.label or '':<16} {used:<16} {p.os or ''}".rstrip()
            )
        if d.unreadable:
            lines.append(f"    {d.unreadable}")
        elif d.refusal:
            lines.append(f"    cannot be a target: {d.refusal}")
        if d.mountpoints:
            lines.append(f"    mounted: {', '.join(d.mountpoints)}")
    return "\n".join(lines) + "\n"


def layout(d: DiskInfo) -> str:
    """What the disk is laid out as: its table, a filesystem on the whole disk, or what sampling found."""
    if d.unreadable:
        return "unreadable"
    if d.ptable:
        return d.ptable
    if d.partitions:
        return "no table: a filesystem on the whole disk"
    if d.blank:
        return "no table, all zeros where sampled"
    return "no table, no filesystem: unknown data" if d.blank is False else "no table"
