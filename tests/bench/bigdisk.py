"""A large, mostly empty disk: 64 GiB, a GPT with one small ext4 partition.

The case a laptop's disk or a VM image often is: a 1 GiB partition holding
a few hundred MB of files, the rest never partitioned (here with 64 MiB of
old data in it, 40 GiB in, as a disk that had another life). The image is a
sparse file, so it costs only what was written. Needs root (loop, mount).
"""

from __future__ import annotations

import random
from pathlib import Path

from tests.helpers import MIB, loop_device, mounted, populate, sh

GIB = 1 << 30
SIZE = 64 * GIB
PART_MIB = 1024
OLD_DATA_AT = 40 * GIB


def make(path: Path, fill_mib: int = 240) -> None:
    with open(path, "wb") as f:
        f.truncate(SIZE)
        rng = random.Random(64)
        f.seek(OLD_DATA_AT)
        for _ in range(16):
            f.write(rng.randbytes(4 * MIB))
    sh("sfdisk", "--quiet", str(path), input=f"label: gpt\nstart=2048, size={PART_MIB}MiB, type=linux\n")
    with loop_device(path) as dev:
        sh("mkfs.ext4", "-q", "-F", "-E", "nodiscard,lazy_itable_init=0", "-L", "big", f"{dev}p1")
        with mounted(f"{dev}p1") as mnt:
            populate(mnt, seed=64, mib=fill_mib // 2)
            # populate writes about 1.5 MiB per step: the rest is random media
            media = mnt / "media"
            media.mkdir()
            (media / "clip.bin").write_bytes(rng.randbytes((fill_mib - fill_mib * 3 // 4) * MIB))


def allocated(path: Path) -> int:
    """Bytes the host filesystem allocated for a (sparse) file."""
    return path.stat().st_blocks * 512


def used_bytes(dev: str) -> int:
    """Bytes the ext4 on ``dev`` uses (blocks in use, metadata included)."""
    text = sh("dumpe2fs", "-h", dev).stdout
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    block = int(fields["Block size"])
    return (int(fields["Block count"]) - int(fields["Free blocks"])) * block


if __name__ == "__main__":
    import sys

    make(Path(sys.argv[1]))
