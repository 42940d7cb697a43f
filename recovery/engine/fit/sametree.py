"""Two mounted filesystems hold the same files: the same names, kinds, modes, owners, modification times,
sizes, link targets, device numbers, extended attributes (ACLs and SELinux labels among them), flags
(chattr) and project ids, hard links and contents (BLAKE3, several files at once: it releases the GIL).
Access and change times are not compared: no copy can keep a change time. A filesystem that stores no
owners, links, extended attributes or flags, nor times for its top folder (exFAT: its mount makes them
up, the same on both sides) is compared by names, kinds, modes, modification times, sizes and contents."""

from __future__ import annotations

import collections
import errno
import os
import stat
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import blake3

from recovery.engine.fit import fsattr

CHUNK = 1 << 20


class Difference(Exception):
    """The first difference found, in words, naming the file."""


def compare(old: str, new: str, check: Callable[[], None] = lambda: None, *, posix: bool = True) -> int:
    """Raise :class:`Difference` at the first difference between the trees under ``old`` and ``new``; the
    number of entries compared when there is none. ``check`` is called for each entry (a cancel). Contents
    are hashed as the walk goes, a few files at once, so memory stays small whatever the tree holds.
    ``posix``: False for a filesystem that stores no owners, links, extended attributes or flags (exFAT)."""
    links_old: dict[int, bytes] = {}
    links_new: dict[int, bytes] = {}
    count = 0
    old_b, new_b = os.fsencode(old), os.fsencode(new)
    pending: collections.deque[Future[bytes | None]] = collections.deque()
    pool = ThreadPoolExecutor(max_workers=WORKERS)
    try:
        for rel in _entries(old_b, new_b):
            check()
            count += 1
            a = os.lstat(os.path.join(old_b, rel))
            b = os.lstat(os.path.join(new_b, rel))
            _same_entry(old, new, rel, a, b, posix)
            if (
                posix
                and not stat.S_ISDIR(a.st_mode)
                and (a.st_nlink != b.st_nlink or _relinked(a, b, rel, links_old, links_new))
            ):
                raise Difference(f"{_name(rel)}: its hard links differ")
            if stat.S_ISREG(a.st_mode) and a.st_size and links_old.get(a.st_ino, rel) == rel:
                pending.append(pool.submit(_differs, old_b, new_b, rel))
            while len(pending) > WINDOW or (pending and pending[0].done()):
                _raise_if_differs(pending.popleft())
        while pending:
            check()
            _raise_if_differs(pending.popleft())
    finally:
        pool.shutdown(cancel_futures=True)
    return count


WORKERS = min(4, max(2, os.cpu_count() or 2))  # readers at once: more would only seek one disk harder
WINDOW = 64  # files hashed ahead of the walk, at most


def _differs(old: bytes, new: bytes, rel: bytes) -> bytes | None:
    """``rel`` when its contents differ under ``old`` and ``new``, else None."""
    return rel if _digest(os.path.join(old, rel)) != _digest(os.path.join(new, rel)) else None


def _raise_if_differs(found: Future[bytes | None]) -> None:
    rel = found.result()
    if rel is not None:
        raise Difference(f"{_name(rel)}: its contents differ")


def allocated(root: str, unit: int | None = None) -> int:
    """The bytes the files under ``root`` take on their disk (``st_blocks``), each inode counted once;
    with ``unit`` (exFAT's cluster), each file's and folder's size in whole units instead, the top folder's
    too (a copy allocates that many; one that allocated more on the source is not counted so)."""
    seen: set[int] = set()
    total = 0
    for top, dirs, files in os.walk(os.fsencode(root)):
        for name in (*dirs, *files):
            st = os.lstat(os.path.join(top, name))
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                if st.st_ino in seen:
                    continue
                seen.add(st.st_ino)
            total += st.st_blocks * 512 if unit is None else -(-st.st_size // unit) * unit
    if unit is not None:
        total += -(-os.stat(root).st_size // unit) * unit
    return total


def _relinked(a: os.stat_result, b: os.stat_result, rel: bytes, old: dict[int, bytes], new: dict[int, bytes]) -> bool:
    """A file of several names whose new inode does not hold the same names: each inode is known by the
    first name found for it, which must be the same on both sides."""
    if a.st_nlink < 2:
        return False
    first = old.setdefault(a.st_ino, rel)
    return new.setdefault(b.st_ino, first) != first


def _entries(old: bytes, new: bytes) -> Iterator[bytes]:
    """Every path under the trees (relative, the root as ``.``), after checking both hold the same names."""
    pending = [b"."]
    while pending:
        rel = pending.pop()
        yield rel
        if not os.path.isdir(os.path.join(old, rel)) or os.path.islink(os.path.join(old, rel)):
            continue
        names_old, names_new = sorted(os.listdir(os.path.join(old, rel))), sorted(os.listdir(os.path.join(new, rel)))
        if names_old != names_new:
            missing = sorted(set(names_old) - set(names_new)) or sorted(set(names_new) - set(names_old))
            raise Difference(f"{_name(os.path.join(rel, missing[0]))}: only in one of them")
        pending.extend(os.path.join(rel, n) for n in reversed(names_old))


def _same_entry(old: str, new: str, rel: bytes, a: os.stat_result, b: os.stat_result, posix: bool) -> None:
    fields = {
        "kind or mode": (a.st_mode, b.st_mode),
        "owner": ((a.st_uid, a.st_gid), (b.st_uid, b.st_gid)),
        "modification time": (a.st_mtime_ns, b.st_mtime_ns),
        "device number": (a.st_rdev, b.st_rdev),
    }
    if not posix:  # exFAT: owners and device numbers are the mount's; its top folder has no times
        del fields["owner"], fields["device number"]
        if rel == b".":
            del fields["modification time"]
    if not stat.S_ISDIR(a.st_mode):
        fields["size"] = (a.st_size, b.st_size)
    for what, (x, y) in fields.items():
        if x != y:
            raise Difference(f"{_name(rel)}: its {what} differs")
    if not posix:
        return
    pa, pb = os.path.join(os.fsencode(old), rel), os.path.join(os.fsencode(new), rel)
    if stat.S_ISLNK(a.st_mode) and os.readlink(pa) != os.readlink(pb):
        raise Difference(f"{_name(rel)}: its link target differs")
    if _xattrs(pa) != _xattrs(pb):
        raise Difference(f"{_name(rel)}: its extended attributes differ")
    if fsattr.get(pa) != fsattr.get(pb):
        raise Difference(f"{_name(rel)}: its flags (chattr) or project id differ")


def _xattrs(path: bytes) -> dict[str, bytes]:
    return {n: os.getxattr(path, n, follow_symlinks=False) for n in os.listxattr(path, follow_symlinks=False)}


ZEROS = memoryview(bytes(CHUNK))


def _digest(path: bytes) -> bytes:
    """BLAKE3 of a file's contents on a fixed grid of CHUNK-sized blocks, each block that is not all zeros
    with its number: the same for the same contents whatever holes either file has, and holes are skipped
    (SEEK_DATA), so a large sparse file costs only its data."""
    hasher = blake3.blake3()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        block = 0
        while True:
            try:
                block = os.lseek(fd, block * CHUNK, os.SEEK_DATA) // CHUNK
            except OSError as e:
                if e.errno == errno.ENXIO:  # no data from there to the end
                    break
                raise
            n = os.preadv(fd, [buf], block * CHUNK)
            if n <= 0:
                break
            if view[:n] != ZEROS[:n]:
                hasher.update(block.to_bytes(8, "little"))
                hasher.update(view[:n])
            block += 1
    finally:
        os.close(fd)
    return hasher.digest()


def _name(rel: bytes) -> str:
    """A path for a message: printable, whatever bytes the name holds."""
    text = os.fsdecode(rel).removeprefix("./")
    if text == ".":
        return "the top folder"
    return repr(text)[1:-1] if not text.isprintable() else text
