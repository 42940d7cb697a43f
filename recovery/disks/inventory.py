"""The local disks, as a user needs them to pick a source or a target.

pyudev gives the device tree and udev's names (model, serial, WWN); where
udevd does not run, sysfs attributes fill in. Partition tables and
filesystems are read from the disk itself (sfdisk, blkid), so partitions
show up even when the kernel made no partition nodes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pyudev

from recovery import run
from recovery.disks import blockdev, partitions
from recovery.protocol.messages import DiskInfo, PartitionInfo

SKIP_PREFIXES = ("ram", "zram", "fd", "sr", "nbd", "mtdblock")
SYSTEM_MOUNTS = {"/", "/boot", "/boot/efi", "/efi", "/usr", "/var", "/home"}
BOOT_PART_NAME = "USB4-RECOVERY"  # GPT partition name of the appliance's ESP
BOOT_FS_LABEL = "U4RECOVERY"  # its filesystem label
ESP_TYPES = {"c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "ef"}
LOADER_PARTUUID = Path(
    "/sys/firmware/efi/efivars/LoaderDevicePartUUID-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
)


@dataclass(frozen=True)
class Mount:
    devnum: str  # "MAJ:MIN"
    source: str
    mountpoint: str
    fstype: str


def mounts() -> list[Mount]:
    out: list[Mount] = []
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        f = left.split()
        r = right.split()
        if len(f) < 5 or len(r) < 2:
            continue
        mountpoint = f[4].replace("\\040", " ")
        devnum = f[2]
        source = r[1]
        if source.startswith("/dev/"):
            try:
                rdev = os.stat(source).st_rdev
                devnum = f"{os.major(rdev)}:{os.minor(rdev)}" if rdev else devnum
            except OSError:
                pass
        out.append(Mount(devnum, source, mountpoint, r[0]))
    return out


def swaps() -> set[str]:
    """Device numbers of active swap devices."""
    out: set[str] = set()
    try:
        lines = Path("/proc/swaps").read_text().splitlines()[1:]
    except OSError:
        return out
    for line in lines:
        path = line.split()[0] if line.split() else ""
        try:
            rdev = os.stat(path).st_rdev
        except OSError:
            continue
        if rdev:
            out.add(f"{os.major(rdev)}:{os.minor(rdev)}")
    return out


def loader_partuuid() -> str | None:
    """The PARTUUID the firmware loaded us from (set by systemd-boot/stub)."""
    try:
        raw = LOADER_PARTUUID.read_bytes()[4:]
    except OSError:
        return None
    return raw.decode("utf-16-le", errors="ignore").strip("\0").strip().lower() or None


@dataclass(frozen=True)
class Usage:
    """Facts about a disk that decide whether it may be written."""

    mountpoints: tuple[str, ...]
    system: bool
    boot_medium: bool
    swap: bool
    holders: tuple[str, ...]

    def refusal(self) -> str | None:
        if self.boot_medium:
            return "it is the boot medium of this appliance"
        if self.system:
            return "it holds the running system"
        if self.mountpoints:
            return f"it is mounted at {', '.join(self.mountpoints)}"
        if self.swap:
            return "it is in use as swap"
        if self.holders:
            return f"it is in use by {', '.join(self.holders)}"
        return None


def usage(rdev: int, table: partitions.Table | None = None) -> Usage:
    """How a disk (and its partitions) is in use right now."""
    nums = [rdev, *blockdev.partitions_of(rdev)] if not blockdev.is_partition(rdev) else [rdev]
    keys = {f"{os.major(n)}:{os.minor(n)}" for n in nums}
    all_mounts = mounts()
    mine = [m for m in all_mounts if m.devnum in keys]
    # Filesystems on device-mapper/md devices built on this disk count too.
    for m in all_mounts:
        if m.devnum in keys or not m.source.startswith("/dev/"):
            continue
        try:
            under = {f"{os.major(s)}:{os.minor(s)}" for s in blockdev.slaves(blockdev.devnum_of(m.devnum))}
        except (OSError, ValueError):
            continue
        if under & keys:
            mine.append(m)
    mountpoints = tuple(sorted({m.mountpoint for m in mine}))
    system = any(m.mountpoint in SYSTEM_MOUNTS for m in mine)
    swap = bool(swaps() & keys)
    hold: list[str] = []
    for n in nums:
        hold.extend(blockdev.holders(n))
    boot = False
    if table is not None:
        loader = loader_partuuid()
        for p in table.partitions:
            if (p.name or "") == BOOT_PART_NAME or (loader and (p.uuid or "").lower() == loader):
                boot = True
            elif p.type in ESP_TYPES:
                path = blockdev.node_path(rdev)
                if path and partitions.probe(path, p.start, p.size).label == BOOT_FS_LABEL:
                    boot = True
    return Usage(mountpoints, system, boot, swap, tuple(sorted(set(hold))))


def _udev_device(context: pyudev.Context, rdev: int) -> pyudev.Device | None:
    try:
        return pyudev.Devices.from_device_number(context, "block", rdev)
    except (pyudev.DeviceNotFoundError, ValueError, OSError):
        return None


def _prop(dev: pyudev.Device | None, *names: str) -> str | None:
    if dev is None:
        return None
    for name in names:
        value = dev.properties.get(name)
        if value:
            return str(value).strip()
    return None


def _used_bytes(part_node: str | None, fstype: str | None, mountpoints: list[str]) -> int | None:
    if mountpoints:
        try:
            st = os.statvfs(mountpoints[0])
            return (st.f_blocks - st.f_bfree) * st.f_frsize
        except OSError:
            return None
    if part_node and fstype in ("ext2", "ext3", "ext4"):
        proc = run.run(["dumpe2fs", "-h", part_node], check=False)
        text = proc.stdout.decode(errors="replace")
        fields = dict(re.findall(r"^([A-Za-z ]+):\s+(\d+)$", text, re.M))
        try:
            return (int(fields["Block count"]) - int(fields["Free blocks"])) * int(fields["Block size"])
        except KeyError:
            return None
    return None


def describe_disk(path: str, context: pyudev.Context | None = None) -> DiskInfo:
    """Everything a user needs to recognise one disk (or image file)."""
    node = blockdev.inspect(path)
    table = partitions.read_table(node.path)
    parts: list[PartitionInfo] = []
    mount_map: dict[str, list[str]] = {}
    for m in mounts():
        mount_map.setdefault(m.devnum, []).append(m.mountpoint)
    kernel_parts: dict[int, int] = {}
    if node.is_block:
        for num in blockdev.partitions_of(node.rdev):
            start = blockdev.read_attr(blockdev.sysfs_dir(num) / "start")
            if start is not None:
                kernel_parts[int(start) * 512] = num
    for p in table.partitions if table else ():
        sig = partitions.probe(p.node, 0) if p.node else partitions.probe(node.path, p.start, p.size)
        part_num = kernel_parts.get(p.start)
        mps = mount_map.get(f"{os.major(part_num)}:{os.minor(part_num)}", []) if part_num else []
        part_node = p.node or (blockdev.node_path(part_num) if part_num else None)
        parts.append(
            PartitionInfo(
                number=p.number,
                start=p.start,
                size=p.size,
                fstype=sig.fstype,
                label=sig.label or p.name,
                used=_used_bytes(part_node, sig.fstype, mps),
            )
        )
    try:
        fd = os.open(node.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            sector = blockdev.logical_sector_size(fd)
        finally:
            os.close(fd)
    except OSError:
        sector = None
    if not node.is_block:
        whole = partitions.probe(node.path) if table is None else None
        if whole and whole.fstype:
            parts.append(PartitionInfo(number=0, start=0, size=node.size, fstype=whole.fstype,
                                       label=whole.label, used=None))
        return DiskInfo(path=node.path, size=node.size, model="image file",
                        ptable=table.label if table else None, partitions=tuple(parts), sector_size=sector)
    context = context or pyudev.Context()
    dev = _udev_device(context, node.rdev)
    d = blockdev.sysfs_dir(node.rdev)
    u = usage(node.rdev, table)
    backing = blockdev.loop_backing(node.rdev)
    model = _prop(dev, "ID_MODEL_FROM_DATABASE", "ID_MODEL") or blockdev.read_attr(d / "device" / "model")
    if model:
        model = model.replace("_", " ")
    if backing and not model:
        model = f"loop: {backing[0]}"
    transport = _prop(dev, "ID_BUS")
    if not transport:
        real = str(d)
        transport = next((t for t in ("nvme", "usb", "virtio", "ata", "scsi") if f"/{t}" in real), None)
        if d.name.startswith("loop"):
            transport = "loop"
    return DiskInfo(
        path=node.path,
        size=node.size,
        model=model,
        serial=_prop(dev, "ID_SERIAL_SHORT") or blockdev.read_attr(d / "device" / "serial"),
        wwn=_prop(dev, "ID_WWN") or blockdev.read_attr(d / "wwid") or blockdev.read_attr(d / "device" / "wwid"),
        transport=transport,
        removable=blockdev.read_attr(d / "removable") == "1",
        ptable=table.label if table else None,
        partitions=tuple(parts),
        mountpoints=u.mountpoints,
        system=u.system,
        boot_medium=u.boot_medium,
        refusal=u.refusal(),
        sector_size=sector,
    )


def list_disks(include_all: bool = False) -> list[DiskInfo]:
    """Every whole disk of this machine worth showing, in name order."""
    context = pyudev.Context()
    out = []
    for dev in context.list_devices(subsystem="block", DEVTYPE="disk"):
        name = dev.sys_name
        if not include_all and (name.startswith(SKIP_PREFIXES) or name.startswith(("dm-", "md"))):
            continue
        if name.startswith("loop") and not blockdev.loop_backing(dev.device_number):
            continue
        if not dev.device_node or blockdev.read_attr(Path(dev.sys_path) / "size") in (None, "0"):
            continue
        try:
            out.append(describe_disk(dev.device_node, context))
        except OSError:
            continue  # vanished or unreadable while we looked
    return sorted(out, key=lambda d: d.path)
