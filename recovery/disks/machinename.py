"""What this machine is called on both screens: a name a technician recognises on the desk.

Booted from the stick, every machine has the stick's host name, so the name comes from what is
different about each one, first found wins:

1. what the user set: ``--name``, or ``recovery.name=`` on the kernel command line;
2. the host name, when the machine runs its own system (not the stick);
3. the system installed on its disks, read without mounting: a Linux ``/etc/hostname``,
   Windows' computer name from its registry hive (``hivexget``), else "Windows on nvme0n1";
4. the firmware's vendor and model with the end of its serial ("Dell Latitude 7420 ·4F2K");
5. a word pair made from this boot's id ("amber-falcon"), the same for every program of this boot.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import blake3

from recovery import kcmdline, run
from recovery.disks import fsinfo
from recovery.errors import RecoveryError
from recovery.protocol.values import DiskInfo
from recovery.sysattr import read_attr

STICK_HOSTNAME = "usb4-recovery"  # build-image.sh writes it to the stick's /etc/hostname
MAX_NAME = 48  # characters kept of any name: it must fit a title bar beside a code
DMI_ROOT = Path("/sys/class/dmi/id")
SERIAL_TAIL = 4  # characters of the serial shown after the model
HIVE_LIMIT = 256 << 20  # bytes of a SYSTEM hive read (real ones are tens of MiB)

# What firmware writes where the maker left a field empty.
_PLACEHOLDERS = re.compile(
    r"(to be filled.*|default string|system (product name|manufacturer|serial number|version)|"
    r"not (specified|applicable|available)|none|n/?a|oem|o\.e\.m\.|unknown|invalid|empty|"
    r"0+|1234567890|0123456789|x+|\.+|-+)",
    re.IGNORECASE,
)
_VENDOR_SUFFIX = re.compile(
    r"[ ,]+(inc\.?|corp\.?|corporation|co\.?,? ?ltd\.?|ltd\.?|limited|gmbh|ag|s\.?a\.?|computer inc\.?|"
    r"international|technology|computer)\s*$",
    re.IGNORECASE,
)
_VENDORS = {"lenovo": "Lenovo", "hewlett-packard": "HP", "asustek": "ASUS", "micro-star": "MSI", "dell": "Dell"}
_ADJECTIVES = (
    "amber", "azure", "brave", "brisk", "calm", "cedar", "clear", "coral", "crisp", "dusky", "eager", "fair",
    "fern", "frosty", "gentle", "golden", "hazel", "ivory", "jade", "keen", "lively", "lunar", "maple", "misty",
    "noble", "ochre", "olive", "pearl", "plucky", "quiet", "rapid", "rosy", "rustic", "sable", "sage", "silver",
    "snowy", "solar", "steady", "sunny", "swift", "tawny", "teal", "tidy", "topaz", "velvet", "vivid", "witty",
)  # fmt: skip
_NOUNS = (
    "badger", "beacon", "birch", "bison", "cobalt", "comet", "condor", "crane", "delta", "ember", "falcon",
    "finch", "fjord", "gecko", "glacier", "harbor", "heron", "ibex", "kestrel", "lagoon", "lark", "lynx",
    "marlin", "meadow", "merlin", "orca", "osprey", "otter", "panda", "pebble", "pine", "plover", "quartz",
    "raven", "reef", "robin", "salmon", "sparrow", "summit", "tern", "thistle", "tundra", "walrus", "willow",
    "wren", "yak", "zebra", "zephyr",
)  # fmt: skip


@dataclass(frozen=True)
class MachineName:
    """This machine's name and where it came from (for ``recovery disks --json`` and the docs' promise)."""

    name: str
    source: str  # "option", "kernel command line", "host name", "installed system", "firmware", "this boot"


def clean(text: str | None) -> str:
    """``text`` as one printable line of at most :data:`MAX_NAME` characters ("" for nothing usable)."""
    if not text:
        return ""
    printable = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(printable.split())[:MAX_NAME].strip()


def _field(root: Path, name: str) -> str:
    value = clean(read_attr(root / name))
    return "" if _PLACEHOLDERS.fullmatch(value) else value


def _vendor(raw: str) -> str:
    for key, short in _VENDORS.items():
        if raw.lower().startswith(key):
            return short
    previous = None
    while previous != raw:
        previous, raw = raw, _VENDOR_SUFFIX.sub("", raw).strip()
    return raw


def firmware_name(root: Path = DMI_ROOT) -> str | None:
    """Vendor, model and the end of the serial from the firmware's DMI tables (None: they say nothing)."""
    vendor = _vendor(_field(root, "sys_vendor") or _field(root, "board_vendor"))
    model = _field(root, "product_name") or _field(root, "board_name")
    version = _field(root, "product_version")
    if vendor == "Lenovo" and version:
        model = version  # Lenovo's product_name is a type number; the family is in the version
    if model.lower().startswith(vendor.lower()):
        vendor = ""
    words = " ".join(w for w in (vendor, model) if w)
    if not words:
        return None
    serial = re.sub(r"[^0-9A-Za-z]", "", _field(root, "product_serial") or _field(root, "board_serial"))
    tail = f" ·{serial[-SERIAL_TAIL:].upper()}" if len(serial) >= SERIAL_TAIL else ""
    return clean(words[: MAX_NAME - len(tail)]) + tail


def word_pair(seed: str) -> str:
    """Two words chosen by ``seed`` (this boot's id): the same in every program of one boot."""
    digest = blake3.blake3(seed.encode()).digest()
    return f"{_ADJECTIVES[digest[0] % len(_ADJECTIVES)]}-{_NOUNS[digest[1] % len(_NOUNS)]}"


# --- the system installed on a disk ----------------------------------------


def linux_hostname(path: str, start: int, size: int) -> str | None:
    """The host name in the ext filesystem at ``start`` of ``path`` (``/etc/hostname``), unmounted."""
    text = fsinfo.debugfs_cat(path, start, size, "/etc/hostname")
    first = next((line.split("#", 1)[0].strip() for line in (text or "").splitlines() if line.strip()), "")
    name = clean(first)
    return name if name and name != "localhost" and name != STICK_HOSTNAME else None


def windows_name(path: str, start: int, size: int) -> str | None:
    """Windows' computer name from the SYSTEM hive on the NTFS at ``start`` of ``path`` (ntfscat and
    hivexget, each confined as :func:`fsinfo.on_region` says: the hive came from that disk too)."""
    with tempfile.TemporaryDirectory(prefix="usb4-recovery-hive-") as tmp:
        hive = os.path.join(tmp, "SYSTEM")
        with open(hive, "wb") as out:
            # At most HIVE_LIMIT bytes of it (the kernel stops a longer file): /tmp is RAM on the stick.
            fsize = [run.need_tool("prlimit", "util-linux"), f"--fsize={HIVE_LIMIT}", "--"]
            proc = fsinfo.on_region(
                lambda dev: [*fsize, run.need_tool("ntfscat", "ntfs-3g"), "-f", dev, "/Windows/System32/config/SYSTEM"],
                path, start, size, stdout=out.fileno(),
            )  # fmt: skip
        if proc is None or proc.returncode != 0:
            return None
        if os.geteuid() == 0:  # the confined hivexget reads it as the unprivileged user
            os.chown(tmp, run.UNPRIVILEGED, run.UNPRIVILEGED)
            os.chown(hive, run.UNPRIVILEGED, run.UNPRIVILEGED)
        current = _hive_value(hive, "Select", "Current") or "1"
        if not (current.isascii() and current.isdigit() and len(current) <= 3):
            return None
        key = rf"ControlSet{int(current):03d}\Control\ComputerName\ComputerName"
        return clean(_hive_value(hive, key, "ComputerName")) or None


def _hive_value(hive: str, key: str, value: str) -> str | None:
    argv = run.confined([run.need_tool("hivexget", "libhivex-bin"), hive, key, value], memory=fsinfo.TOOL_MEMORY)
    proc = run.run(argv, check=False, timeout=fsinfo.TOOL_TIMEOUT, keep=fsinfo.SMALL_FILE)
    if proc.returncode != 0:
        return None
    return proc.stdout.decode(errors="replace").strip() or None


def installed_name(disks: Iterable[DiskInfo]) -> str | None:
    """The name of the first system found on these disks (the stick is skipped)."""
    for disk in disks:
        if disk.boot_medium:
            continue
        for part in disk.partitions:
            if not part.os:
                continue
            try:
                if part.fstype in ("ext2", "ext3", "ext4"):
                    found = linux_hostname(disk.path, part.start, part.size)
                elif part.fstype == "ntfs" and part.os == "Windows":
                    found = windows_name(disk.path, part.start, part.size) or f"Windows on {_short(disk.path)}"
                else:
                    found = None
            except RecoveryError:  # a tool is missing: the next way of naming the machine
                found = None
            if found:
                return found
    return None


def _short(path: str) -> str:
    return path.rsplit("/", 1)[-1]


# --- the choice -------------------------------------------------------------


def choose(
    *,
    option: str | None,
    cmdline: str,
    hostname: str,
    disks: Callable[[], Iterable[DiskInfo]],
    dmi_root: Path,
    boot_id: str,
) -> MachineName:
    """The first name the order in the module's docstring finds."""
    if clean(option):
        return MachineName(clean(option), "option")
    given = clean(kcmdline.parameter(cmdline, "name"))
    if given:
        return MachineName(given, "kernel command line")
    if clean(hostname) and hostname != STICK_HOSTNAME:
        return MachineName(clean(hostname), "host name")
    try:
        found = installed_name(disks())
    except Exception:  # noqa: BLE001 - what a disk holds must never stop the tool: the next way names it
        found = None
    if found:
        return MachineName(found, "installed system")
    firmware = firmware_name(dmi_root)
    if firmware:
        return MachineName(firmware, "firmware")
    return MachineName(word_pair(boot_id), "this boot")


_option: list[str] = []


def set_option(name: str) -> None:
    """What ``--name`` says: it wins over everything else, for this process."""
    _option[:] = [name]
    this_machine.cache_clear()


@cache
def this_machine() -> MachineName:
    """This machine's name, chosen once per process."""
    from recovery.disks import identity, inventory  # identity imports this module

    try:
        cmdline = Path("/proc/cmdline").read_text()
    except OSError:
        cmdline = ""
    return choose(
        option=_option[0] if _option else None,
        cmdline=cmdline,
        hostname=socket.gethostname(),
        disks=inventory.list_disks,
        dmi_root=DMI_ROOT,
        boot_id=identity.host_id(),
    )
