"""What ``cp -a`` does not copy: each inode's flags (immutable, append-only, no-dump, no-atime, ...) and
project id, as the FS_IOC_FSGETXATTR ioctl tells them (``chattr``, and XFS's project quotas). Read from
regular files and folders; carried onto the copy after ``cp``, the immutable and append-only flags last.
Extent size hints, real-time and preallocation marks are not carried: they cannot be set on a file that
already holds data, and they change no byte of it."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct

FSXATTR = struct.Struct("<IIIII8x")  # xflags, extsize, nextents, projid, cowextsize
GET, SET = 0x801C581F, 0x401C5820  # FS_IOC_FSGETXATTR, FS_IOC_FSSETXATTR
# sync, immutable, append-only, no-atime, no-dump, project inherit, no symlinks, no defrag, filestreams, DAX
KEPT = 0x20 | 0x08 | 0x10 | 0x40 | 0x80 | 0x200 | 0x400 | 0x2000 | 0x4000 | 0x8000
HASATTR = 0x80000000  # "has extended attributes": told, never set
FROZEN = 0x08 | 0x10  # immutable, append-only: set last, or nothing after could be
Attrs = tuple[int, int]  # the flags kept, the project id


def get(path: bytes) -> Attrs | None:
    """The attributes of a regular file or folder at ``path``; None for others, or where the filesystem
    has none."""
    if not _settable(path):
        return None
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        raw = fcntl.ioctl(fd, GET, bytes(FSXATTR.size))
    except OSError as e:
        if e.errno in (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL):
            return None
        raise
    finally:
        os.close(fd)
    xflags, _, _, projid, _ = FSXATTR.unpack(raw)
    return xflags & KEPT, projid


def carry(old: bytes, new: bytes) -> None:
    """Give every file and folder under ``new`` the attributes of its namesake under ``old``."""
    frozen: list[tuple[bytes, Attrs]] = []
    for top, dirs, files in os.walk(old):
        for name in (*dirs, *files):
            rel = os.path.relpath(os.path.join(top, name), old)
            found = get(os.path.join(old, rel))
            if found and any(found):
                _set(os.path.join(new, rel), (found[0] & ~FROZEN, found[1]))
                if found[0] & FROZEN:
                    frozen.append((rel, found))
    root = get(old)
    if root and any(root):
        _set(new, (root[0] & ~FROZEN, root[1]))
    for rel, found in [*frozen, *([(b".", root)] if root and root[0] & FROZEN else [])]:
        _set(os.path.join(new, rel), found)


def _settable(path: bytes) -> bool:
    mode = os.lstat(path).st_mode
    return stat.S_ISREG(mode) or stat.S_ISDIR(mode)


def _set(path: bytes, attrs: Attrs) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        xflags, extsize, nextents, _, cowextsize = FSXATTR.unpack(fcntl.ioctl(fd, GET, bytes(FSXATTR.size)))
        flags, projid = attrs
        own = xflags & ~KEPT & ~HASATTR  # what this copy keeps of its own (its extent size hint, say)
        fcntl.ioctl(fd, SET, FSXATTR.pack(own | flags, extsize, nextents, projid, cowextsize))
    finally:
        os.close(fd)
