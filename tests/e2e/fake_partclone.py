"""A test double for ``partclone.extfs -D`` that loses a metadata range.

It runs the real partclone, then removes the first block group's inode
table from the ``+`` ranges of the domain map it wrote: a map that is known
to be wrong at the narrowest boundary (what partclone reports), everything
else real. It does not model *how* partclone gets maps wrong (the Btrfs
snapshot case), only that a map can be wrong. Called through a wrapper
named ``partclone.extfs`` placed first on the sender's PATH.
"""

from __future__ import annotations

import re
import subprocess
import sys

REAL = "/usr/sbin/partclone.extfs"


def dropped(device: str) -> tuple[int, int]:
    """(offset, length) in bytes of group 0's inode table."""
    text = subprocess.run(["dumpe2fs", device], check=True, capture_output=True, text=True).stdout
    block = int(re.search(r"^Block size:\s+(\d+)", text, re.M).group(1))  # type: ignore[union-attr]
    first, last = map(int, re.search(r"Inode table at (\d+)-(\d+)", text).groups())  # type: ignore[union-attr]
    return first * block, (last - first + 1) * block


def rewrite(domain: str, cut: tuple[int, int]) -> None:
    lo, hi = cut[0], cut[0] + cut[1]
    out = []
    for line in open(domain).read().splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[2] == "+" and not line.startswith("#"):
            start, end = int(fields[0], 16), int(fields[0], 16) + int(fields[1], 16)
            for a, b in ((start, min(end, lo)), (max(start, hi), end)):
                if b > a:
                    out.append(f"0x{a:08X}  0x{b - a:08X}  +")
            continue
        out.append(line)
    with open(domain, "w") as f:
        f.write("\n".join(out) + "\n")


def main(argv: list[str]) -> int:
    code = subprocess.run([REAL, *argv]).returncode
    if code == 0 and "-D" in argv:
        rewrite(argv[argv.index("-o") + 1], dropped(argv[argv.index("-s") + 1]))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
