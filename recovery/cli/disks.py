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


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("disks", help="list this machine's disks",
                       description="List block devices: size, model, serial, partitions, "
                       "filesystems, mounts, and whether each may be written.")
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
        notes = [n for n in (
            "removable" if d.removable else "",
            d.transport or "",
            "SYSTEM" if d.system else "",
            "BOOT MEDIUM" if d.boot_medium else "",
            f"{d.sector_size}-byte sectors" if d.sector_size else "",
        ) if n]
        lines.append(f"{d.path:<14} {human_size(d.size):>10}  {hw}  [{d.ptable or 'no table'}]"
                     + (f"  ({', '.join(notes)})" if notes else ""))
        for p in d.partitions:
            used = f"used {human_size(p.used)}" if p.used is not None else ""
            lines.append(f"    {p.number:>3}  {human_size(p.size):>10}  {p.fstype or '?':<8} "
                         f"{p.label or '':<16} {used}")
        if d.refusal:
            lines.append(f"    cannot be a target: {d.refusal}")
        if d.mountpoints:
            lines.append(f"    mounted: {', '.join(d.mountpoints)}")
    return "\n".join(lines) + "\n"
