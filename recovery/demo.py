"""The demo's sample disk: a GPT image with real ext4 and FAT filesystems.

Built without root and without mounting anything: sfdisk writes the table,
``mkfs.ext4 -d`` fills the ext4 from a directory, ``mkfs.vfat --offset`` and
mtools' ``mcopy`` make and fill the FAT. The content is generated from a
fixed seed, so every run clones the same bytes.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

from recovery import run

MIB = 1 << 20
WORDS = (
    "disk backup restore cable sector block chunk verify digest stream partition "
    "filesystem journal inode superblock cluster volume mirror rescue boot kernel "
    "thunderbolt recovery clone image zero hash compress write read flush link"
).split()


def _text(rng: random.Random, size: int) -> bytes:
    out = []
    total = 0
    while total < size:
        line = " ".join(rng.choice(WORDS) for _ in range(12)) + ".\n"
        out.append(line)
        total += len(line)
    return "".join(out).encode()[:size]


def _populate(root: Path, rng: random.Random, text_mib: int, random_mib: int) -> None:
    (root / "documents").mkdir(parents=True)
    (root / "media").mkdir()
    (root / "README.txt").write_text("A sample disk made by `recovery demo`.\n")
    for i in range(text_mib):
        (root / "documents" / f"report-{i:03d}.txt").write_bytes(_text(rng, MIB))
    for i in range(random_mib // 2):
        (root / "media" / f"photo-{i:03d}.jpg").write_bytes(rng.randbytes(2 * MIB))


def build_sample_disk(path: str, size_mib: int = 256) -> None:
    """Write a sample disk image at ``path`` (about half of it in use)."""
    if size_mib < 64:
        raise ValueError("the sample disk needs at least 64 MiB")
    sector = 512
    ext_start = MIB // sector
    ext_sectors = (size_mib * 5 // 8) * MIB // sector
    fat_start = ext_start + ext_sectors
    fat_sectors = (size_mib * MIB - 2 * MIB) // sector - ext_sectors
    with open(path, "wb") as f:
        f.truncate(size_mib * MIB)
    script = (
        "label: gpt\n"
        f'start={ext_start}, size={ext_sectors}, type=linux, name="demo-root"\n'
        f'start={fat_start}, size={fat_sectors}, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name="demo-data"\n'
    )
    run.run(["sfdisk", "--quiet", path], input=script.encode())
    rng = random.Random(20261125)
    with tempfile.TemporaryDirectory(prefix="recovery-sample-") as tmp:
        root = Path(tmp) / "root"
        _populate(root, rng, text_mib=size_mib // 8, random_mib=size_mib // 16)
        run.run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-L", "demo-root", "-d", str(root),
                 "-E", f"offset={ext_start * sector}", path, f"{ext_sectors * sector // 1024}k"])
        fat_bits = "32" if fat_sectors * sector >= 256 * MIB else "16"  # mkfs.vfat's own pick can fail
        run.run(["mkfs.vfat", "-F", fat_bits, "--offset", str(fat_start), "-n", "DEMO-DATA", path,
                 str(fat_sectors * sector // 1024)])
        data = Path(tmp) / "data"
        _populate(data, rng, text_mib=size_mib // 32, random_mib=size_mib // 32)
        image = f"{path}@@{fat_start * sector}"
        env = {"MTOOLS_SKIP_CHECK": "1"}
        run.run(["mcopy", "-s", "-i", image, *[str(p) for p in sorted(data.iterdir())], "::/"], env=env)
    os.sync()
