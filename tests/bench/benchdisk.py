"""The standard bench disk (issue #6): 4 GiB of random bytes (an old disk's
garbage, no TRIM), then ext4 made with nodiscard, then about 40% filled with
real files (copies of /usr/share/doc, /usr/bin, /usr/lib/x86_64-linux-gnu)
plus random data standing for media. Needs root (loop device, mount)."""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

GIB = 1 << 30
MIB = 1 << 20
SOURCES = ("/usr/share/doc", "/usr/bin", "/usr/lib/x86_64-linux-gnu")


def sh(*argv: str) -> str:
    return subprocess.run(list(argv), check=True, capture_output=True, text=True).stdout


def fill_random(path: Path, size: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "wb") as f:
        for _ in range(size // (64 * MIB)):
            f.write(rng.randbytes(64 * MIB))


def copy_tree(src: str, dst: Path, budget: int) -> int:
    """Copy regular files from ``src`` until ``budget`` bytes; return bytes copied."""
    done = 0
    for root, _dirs, files in os.walk(src):
        for name in sorted(files):
            p = Path(root) / name
            if p.is_symlink() or not p.is_file():
                continue
            size = p.stat().st_size
            if done + size > budget:
                return done
            out = dst / Path(root).relative_to("/") / name
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(p, out)
            except OSError:
                continue
            done += size
    return done


def make(path: Path, size: int = 4 * GIB, fill: float = 0.40, seed: int = 4) -> None:
    fill_random(path, size, seed)
    dev = sh("losetup", "--find", "--show", str(path)).strip()
    try:
        sh("mkfs.ext4", "-q", "-F", "-E", "nodiscard,lazy_itable_init=0", "-L", "bench", dev)
        with tempfile.TemporaryDirectory(prefix="benchdisk-") as mnt:
            sh("mount", dev, mnt)
            try:
                budget = int(size * fill)
                used = 0
                for src in SOURCES:
                    used += copy_tree(src, Path(mnt) / "files", budget * 3 // 4 - used)
                rng = random.Random(seed + 1)
                media = Path(mnt) / "media"
                media.mkdir()
                i = 0
                while used < budget:
                    n = min(32 * MIB, budget - used)
                    (media / f"clip-{i:04d}.mp4").write_bytes(rng.randbytes(n))
                    used += n
                    i += 1
            finally:
                sh("umount", mnt)
    finally:
        sh("losetup", "--detach", dev)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("path", type=Path)
    p.add_argument("--size-gib", type=float, default=4)
    args = p.parse_args()
    make(args.path, int(args.size_gib * GIB))
    print(args.path)


if __name__ == "__main__":
    main()
