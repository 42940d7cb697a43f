"""A Windows registry hive made for the tests: the smallest valid one, then keys and values by hivexsh.

The regf layout (a 4 KiB base block with its XOR checksum, one 4 KiB bin holding the root key and its
security cell, the rest one free cell) is the public format's minimum; hivexsh (libhivex-bin) adds the
rest, as it would to a real SYSTEM hive.
"""

from __future__ import annotations

import struct
from pathlib import Path

from tests.helpers import sh

BIN = 0x1000
NO_CELL = 0xFFFFFFFF


def _cell(body: bytes) -> bytes:
    size = (4 + len(body) + 7) // 8 * 8
    return struct.pack("<i", -size) + body.ljust(size - 4, b"\0")


def empty_hive(path: Path) -> None:
    """A hive whose root key ("ROOT") has no subkeys and no values."""
    root_at, name = 0x20, b"ROOT"
    fields = [0x2C, 0, 0, NO_CELL, 0, 0, NO_CELL, NO_CELL, 0, NO_CELL, 0, NO_CELL, 0, 0, 0, 0, 0, len(name), 0]
    node = b"nk" + struct.pack("<HQIIIIIIIIIIIIIIIHH", *fields) + name
    sk_at = root_at + len(_cell(node))
    node = node[:0x2C] + struct.pack("<I", sk_at) + node[0x30:]  # its security cell
    descriptor = struct.pack("<BBHIIII", 1, 0, 0x8004, 0, 0, 0, 0)  # self-relative, a NULL DACL
    security = b"sk" + struct.pack("<HIIII", 0, sk_at, sk_at, 1, len(descriptor)) + descriptor
    cells = _cell(node) + _cell(security)
    free = BIN - 0x20 - len(cells)
    hbin = b"hbin" + struct.pack("<II", 0, BIN) + bytes(20) + cells + struct.pack("<i", free) + bytes(free - 4)
    base = bytearray(BIN)
    struct.pack_into("<4sIIQIIIIIII", base, 0, b"regf", 1, 1, 0, 1, 3, 0, 1, root_at, BIN, 1)
    checksum = 0
    for (word,) in struct.iter_unpack("<I", bytes(base[:508])):
        checksum ^= word
    struct.pack_into("<I", base, 508, checksum)
    path.write_bytes(bytes(base) + hbin)


def system_hive(path: Path, computer_name: str, control_set: int = 1, current: str | None = None) -> None:
    """A SYSTEM hive naming the computer in control set ``control_set``, which Select\\Current points to
    (``current``: a string there instead, as a crafted hive may hold)."""
    empty_hive(path)
    keys = ["Control", "ComputerName", "ComputerName"]
    pointer = f"string:{current}" if current is not None else f"dword:{control_set:#010x}"
    script = [
        "add Select", "cd Select", "setval 1", "Current", pointer, "cd ..",
        f"add ControlSet{control_set:03d}", f"cd ControlSet{control_set:03d}",
        *[line for key in keys for line in (f"add {key}", f"cd {key}")],
        "setval 1", "ComputerName", f"string:{computer_name}", "commit",
    ]  # fmt: skip
    sh("hivexsh", "-w", str(path), input="\n".join(script) + "\n")
