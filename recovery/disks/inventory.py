"""The local disks, as a user needs them to pick a source or a target.

pyudev gives the device tree and udev's names (model, serial, WWN); where
udevd does not run, sysfs attributes fill in. Partition tables and
filesystems are read from the disk itself (sfdisk, blkid), so partitions
show up even when the kernel made no partition nodes; what each filesystem
holds comes from :mod:`recovery.disks.fsinfo`. A disk that cannot be opened
is listed too, with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyudev

from recovery.disks import blockdev, fsinfo, partitions, usage
from recovery.protocol.values import DiskInfo, PartitionInfo
from recovery.sysattr import read_attr

SKIP_PREFIXES = ("ram", "zram", "fd", "sr", "nbd", "mtdblock")
VIRTUAL_PREFIXES = ("dm-", "md")  # listed with --all only
TRANSPORTS = ("nvme", "usb", "virtio", "ata", "scsi")


def worth_listing(name: str, *, include_all: bool = False) -> bool:
    """Whether a whole disk called ``name`` (``sda``, ``loop3``) is one a user would pick."""
    return include_all or not name.startswith(SKIP_PREFIXES + VIRTUAL_PREFIXES)


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


def _partitions(node: blockdev.Node, table: partitions.Table | None) -> list[PartitionInfo]:
    """Each partition (or the whole-disk filesystem) with its filesystem, label, used space and system."""
    mount_map: dict[str, list[str]] = {}
    for m in usage.mounts():
        mount_map.setdefault(m.devnum, []).append(m.mountpoint)
    kernel = {p.start: p.rdev for p in blockdev.kernel_partitions(node.rdev)} if node.is_block else {}
    regions = [(p.number, p.start, p.size, p.name, p.node) for p in table.partitions] if table else []
    if table is None:
        regions = [(0, 0, node.size, None, node.path if node.is_block else None)]
    out = []
    for number, start, size, name, part_node in regions:
        sig = partitions.probe(part_node, 0) if part_node else partitions.probe(node.path, start, size)
        if number == 0 and not sig.fstype:
            return []  # no table and no filesystem on the whole disk
        num = kernel.get(start) if number else node.rdev
        mps = mount_map.get(f"{os.major(num)}:{os.minor(num)}", []) if num else []
        out.append(
            PartitionInfo(
                number=number,
                start=start,
                size=size,
                fstype=sig.fstype,
                label=sig.label or name,
                used=fsinfo.used_bytes(node.path, start, size, sig.fstype, mountpoint=mps[0] if mps else None),
                os=fsinfo.detect_os(node.path, start, size, sig.fstype),
            )
        )
    return out


def _sector_size(path: str) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return blockdev.logical_sector_size(fd)
        finally:
            os.close(fd)
    except OSError:
        return None


def describe_disk(path: str, context: pyudev.Context | None = None) -> DiskInfo:
    """Everything a user needs to recognise one disk (or image file). Raises OSError."""
    node = blockdev.inspect(path)
    table = partitions.read_table(node.path)
    parts = _partitions(node, table)
    blank = None if table or parts or not node.size else fsinfo.sampled_zeros(node.path, node.size)
    sector = _sector_size(node.path)
    if not node.is_block:
        return DiskInfo(
            path=node.path,
            size=node.size,
            model="image file",
            ptable=table.label if table else None,
            partitions=tuple(parts),
            sector_size=sector,
            blank=blank,
        )
    context = context or pyudev.Context()
    dev = _udev_device(context, node.rdev)
    d = blockdev.sysfs_dir(node.rdev)
    u = usage.usage(node.rdev, table)
    hw = blockdev.hardware(node.rdev)
    return DiskInfo(
        path=node.path,
        size=node.size,
        model=_model(dev, hw.model, node.rdev),
        serial=_prop(dev, "ID_SERIAL_SHORT") or hw.serial,
        wwn=_prop(dev, "ID_WWN") or hw.wwn,
        transport=_transport(dev, d),
        removable=read_attr(d / "removable") == "1",
        ptable=table.label if table else None,
        partitions=tuple(parts),
        mountpoints=u.mountpoints,
        system=u.system,
        boot_medium=u.boot_medium,
        refusal=u.refusal(),
        sector_size=sector,
        blank=blank,
    )


def _model(dev: pyudev.Device | None, sysfs_model: str | None, rdev: int) -> str | None:
    model = _prop(dev, "ID_MODEL_FROM_DATABASE", "ID_MODEL") or sysfs_model
    if model:
        return model.replace("_", " ")
    backing = blockdev.loop_backing(rdev)
    return f"loop: {backing[0]}" if backing else None


def _transport(dev: pyudev.Device | None, d: Path) -> str | None:
    transport = _prop(dev, "ID_BUS")
    if transport:
        return transport
    if d.name.startswith("loop"):
        return "loop"
    return next((t for t in TRANSPORTS if f"/{t}" in str(d)), None)


def unreadable_disk(dev: pyudev.Device, error: OSError) -> DiskInfo:
    """A disk that is there but cannot be opened or read: listed with why, never usable. The running
    system's own disk is said to be that (the mounts say so without reading it), not "cannot be read"."""
    sectors = read_attr(Path(dev.sys_path) / "size") or "0"
    hw = blockdev.hardware(dev.device_number)
    try:
        used = usage.usage(dev.device_number)
    except OSError:
        used = None
    system = used is not None and used.system
    why = "it holds the running system" if system else f"cannot be read: {error.strerror or error}"
    return DiskInfo(
        path=dev.device_node,
        size=int(sectors) * 512 if sectors.isdigit() else 0,
        model=_model(dev, hw.model, dev.device_number),
        serial=_prop(dev, "ID_SERIAL_SHORT") or hw.serial,
        transport=_transport(dev, Path(dev.sys_path)),
        mountpoints=used.mountpoints if used is not None else (),
        system=system,
        refusal=why,
        unreadable=why,
    )


def list_disks(include_all: bool = False) -> list[DiskInfo]:
    """Every whole disk of this machine worth showing, in name order (unreadable ones too)."""
    context = pyudev.Context()
    out = []
    for dev in context.list_devices(subsystem="block", DEVTYPE="disk"):
        name = dev.sys_name
        if not worth_listing(name, include_all=include_all):
            continue
        if name.startswith("loop") and not blockdev.loop_backing(dev.device_number):
            continue  # an unused loop device
        if not dev.device_node or read_attr(Path(dev.sys_path) / "size") in (None, "0"):
            continue  # no medium (an empty card reader): nothing to show
        try:
            out.append(describe_disk(dev.device_node, context))
        except FileNotFoundError:
            continue  # vanished while we looked
        except OSError as e:
            out.append(unreadable_disk(dev, e))
    return sorted(out, key=lambda d: d.path)
