"""A failing disk, served by FUSE: a file whose reads fail with EIO where its sectors are bad.

Run by the system's Python 3 (it needs Debian's python3-fusepy and libfuse2,
which the project's virtualenv does not have); tests start it through
:mod:`tests.rescue.failing` and attach the file read-only to a loop device,
which then fails as a disk with bad sectors does. It models a disk that
fails a whole request when any sector of it is bad (never a short read: the
loop driver would fill the rest with zeros and report success), and can get
slower after its first error, as a dying disk does.

    python3 fuse_disk.py IMAGE MOUNTPOINT CONFIG

CONFIG is a JSON file, read again whenever it changes: {"bad": [sector,
...], "sector": 512, "slow_after_error": seconds per read once a read
failed}. Every read is appended to MOUNTPOINT/../reads.log as "offset size
ok|EIO", so a test can see where the disk was read.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
import threading
import time

import fusepy as fuse  # type: ignore[import-not-found]


class FailingDisk(fuse.Operations):  # type: ignore[misc]
    def __init__(self, image: str, config: str, log: str) -> None:
        self.fd = os.open(image, os.O_RDONLY)
        self.size = os.fstat(self.fd).st_size
        self.config_path = config
        self.config_stamp = 0.0
        self.bad: set[int] = set()
        self.sector = 512
        self.slow = 0.0
        self.failed = False
        self.lock = threading.Lock()
        self.log = open(log, "a", buffering=1)

    def _config(self) -> None:
        stamp = os.stat(self.config_path).st_mtime
        if stamp != self.config_stamp:
            with open(self.config_path) as f:
                config = json.load(f)
            self.bad = set(config.get("bad", []))
            self.sector = config.get("sector", 512)
            self.slow = config.get("slow_after_error", 0.0)
            self.config_stamp = stamp

    def getattr(self, path: str, fh: object = None) -> dict[str, int]:
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
        if path == "/disk":
            return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": self.size}
        raise fuse.FuseOSError(errno.ENOENT)

    def readdir(self, path: str, fh: object) -> list[str]:
        return [".", "..", "disk"]

    def open(self, path: str, flags: int) -> int:
        return 0

    def read(self, path: str, size: int, offset: int, fh: object) -> bytes:
        with self.lock:
            self._config()
            first, last = offset // self.sector, (offset + size - 1) // self.sector
            bad = any(s in self.bad for s in range(first, last + 1))
            slow = self.slow if self.failed else 0.0
            if bad:
                self.failed = True
        if slow:
            time.sleep(slow)
        self.log.write(f"{offset} {size} {'EIO' if bad else 'ok'}\n")
        if bad:
            raise fuse.FuseOSError(errno.EIO)
        return os.pread(self.fd, size, offset)


def main() -> None:
    image, mountpoint, config = sys.argv[1:4]
    log = os.path.join(os.path.dirname(os.path.abspath(mountpoint)), "reads.log")
    fuse.FUSE(
        FailingDisk(image, config, log),
        mountpoint,
        foreground=True,
        ro=True,
        direct_io=True,
        allow_other=True,
        nothreads=False,
    )


if __name__ == "__main__":
    main()
