"""Disk identity: what pins a source or target independently of its /dev name.

An identity carries the hardware names (WWN, serial, model), the size, a
fingerprint of the partition-table areas, and storage keys that tell when
two paths on one host are the same storage:

- ``=blk:MAJ:MIN`` / ``=file:DEV:INO``: the thing itself (a loop device also
  carries its backing file's key);
- ``@blk:MAJ:MIN``: storage it lives on (a partition's disk, the filesystem
  device a file is stored on, a loop device's backing file's filesystem).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import socket
from collections.abc import Callable
from functools import cache

import blake3

from recovery.disks import blockdev, machinename
from recovery.protocol.values import HostInfo, Identity
from recovery.units import human_size

FINGERPRINT_SPAN = 64 << 10  # bytes hashed at each end of the disk


@cache
def host_id() -> str:
    """This boot of this machine; equal for two processes on one host."""
    for path in ("/proc/sys/kernel/random/boot_id", "/etc/machine-id"):
        try:
            with open(path) as f:
                return f.read().strip().replace("-", "")
        except OSError:
            continue
    return socket.gethostname()


@cache
def machine_id() -> str | None:
    """This machine's /etc/machine-id (None where there is none)."""
    try:
        with open("/etc/machine-id") as f:
            return f.read().strip()[:64] or None
    except OSError:
        return None


def host_info(software: str, uuid: str | None = None) -> HostInfo:
    return HostInfo(
        hostname=machinename.this_machine().name,
        host_id=host_id(),
        software=software,
        uuid=uuid,
        machine_id=machine_id(),
    )


def fingerprint(fd: int, size: int) -> str:
    """BLAKE3 of the first and last 64 KiB: the partition tables (MBR, GPT, backup GPT).

    On a failing disk a page that cannot be read counts as 4 KiB of 0xFF: the same bad pages give
    the same fingerprint, whatever the page cache held.
    """
    return fingerprint_of(lambda offset, length: _span(fd, offset, length), size)


def fingerprint_of(read: Callable[[int, int], bytes], size: int) -> str:
    """:func:`fingerprint` of a disk whose bytes ``read(offset, length)`` gives (an image's disk)."""
    h = blake3.blake3()
    span = min(FINGERPRINT_SPAN, size)
    h.update(read(0, span))
    if size > span:
        tail = min(FINGERPRINT_SPAN, size - span)
        h.update(read(size - tail, tail))
    h.update(size.to_bytes(8, "little"))
    return h.hexdigest()


def _span(fd: int, offset: int, length: int) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) == length:
        return data
    out = bytearray()
    for pos in range(offset, offset + length, 4096):
        n = min(4096, offset + length - pos)
        try:
            piece = os.pread(fd, n, pos)
        except OSError as e:
            if e.errno not in (errno.EIO, errno.ENODATA, errno.EBADMSG):
                raise
            piece = b""
        out += piece if len(piece) == n else b"\xff" * n
    return bytes(out)


def _hardware(rdev: int) -> tuple[str | None, str | None, str | None]:
    """(wwn, serial, model) of the whole disk holding ``rdev``; a loop device's backing file as its serial."""
    hw = blockdev.hardware(rdev)
    serial = hw.serial
    backing = blockdev.loop_backing(blockdev.parent_disk(rdev) or rdev)
    if backing and not serial:
        serial = f"loop:{backing[0]}@{backing[1]}"
    return hw.wwn, serial, hw.model


def storage_keys(node: blockdev.Node) -> tuple[str, ...]:
    keys: list[str] = []
    if node.is_block:
        keys.append(f"=blk:{node.devnum}")
        parent = blockdev.parent_disk(node.rdev)
        if parent is not None:
            keys.append(f"@blk:{os.major(parent)}:{os.minor(parent)}")
        for under in blockdev.slaves(node.rdev):
            keys.append(f"@blk:{os.major(under)}:{os.minor(under)}")
        backing = blockdev.loop_backing(parent or node.rdev)
        if backing:
            try:
                st = os.stat(backing[0])
                keys.append(f"=file:{st.st_dev}:{st.st_ino}")
                keys.extend(_filesystem_keys(st.st_dev))
            except OSError:
                pass
    else:
        keys.append(f"=file:{node.dev}:{node.ino}")
        keys.extend(_filesystem_keys(node.dev))
    return tuple(dict.fromkeys(keys))


def _filesystem_keys(dev: int) -> list[str]:
    """Keys of the block device (and its disk) a filesystem lives on."""
    keys = [f"@blk:{os.major(dev)}:{os.minor(dev)}"]
    if os.major(dev) == 0:
        return keys  # tmpfs, overlay, ...: no block device
    try:
        parent = blockdev.parent_disk(dev)
        lower = blockdev.slaves(dev)
    except OSError:
        return keys
    for d in ([parent] if parent else []) + lower:
        keys.append(f"@blk:{os.major(d)}:{os.minor(d)}")
    return keys


def identify(path: str, fd: int | None = None) -> Identity:
    """The identity of a disk, partition or image file (raises OSError)."""
    node = blockdev.inspect(path)
    own_fd = fd is None
    if fd is None:
        fd = os.open(node.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fp = fingerprint(fd, node.size)
        sector = blockdev.logical_sector_size(fd)
    finally:
        if own_fd:
            os.close(fd)
    wwn = serial = model = None
    if node.is_block:
        wwn, serial, model = _hardware(node.rdev)
        kind = "partition" if blockdev.is_partition(node.rdev) else "disk"
    else:
        kind = "file"
    return Identity(
        path=node.path,
        size=node.size,
        kind=kind,  # type: ignore[arg-type]
        host_id=host_id(),
        fingerprint=fp,
        wwn=wwn,
        serial=serial,
        model=model,
        storage=storage_keys(node),
        sector_size=sector,
    )


def same_storage(a: Identity, b: Identity) -> bool:
    """True when writing ``b`` would write ``a`` (or what ``a`` lives on), on one host."""
    if a.host_id != b.host_id:
        return False
    own_a = {k[1:] for k in a.storage if k.startswith("=")}
    own_b = {k[1:] for k in b.storage if k.startswith("=")}
    on_a = {k[1:] for k in a.storage if k.startswith("@")}
    on_b = {k[1:] for k in b.storage if k.startswith("@")}
    return bool(own_a & own_b or own_a & on_b or on_a & own_b)


def folder_on(ident: Identity, folder: str) -> bool:
    """True when writing a file in ``folder`` would write the disk ``ident`` pins (its filesystem lives on
    it, or on one of its partitions); raises OSError."""
    keys = tuple(_filesystem_keys(os.stat(folder).st_dev))
    return same_storage(ident, dataclasses.replace(ident, kind="file", storage=keys))


def describe(ident: Identity) -> str:
    """One line a user recognises: path, model, serial, size."""
    if ident.kind == "file":
        if not ident.size:
            return f"{ident.path} (new image file)"
        return f"{ident.path} (image file, {human_size(ident.size)})"
    bits = [ident.path]
    hw = " ".join(x for x in (ident.model, ident.serial) if x and not x.startswith("loop:"))
    if hw:
        bits.append(hw)
    bits.append(human_size(ident.size))
    return ", ".join(bits)


def mismatch(expected: Identity, found: Identity) -> str | None:
    """Why ``found`` is not the disk ``expected`` pins, or None if it is."""
    for name in ("kind", "size", "wwn", "serial", "fingerprint"):
        a, b = getattr(expected, name), getattr(found, name)
        if a != b:
            if name == "fingerprint":
                return "its partition table changed since it was chosen"
            return f"its {name} is now {b!r}, expected {a!r}"
    if not (expected.wwn or expected.serial):
        # Nothing names the hardware: the device itself must be the same one.
        own_e = {k for k in expected.storage if k.startswith("=")}
        own_f = {k for k in found.storage if k.startswith("=")}
        if own_e != own_f:
            return "the path now names a different device"
    return None
