"""The kernel command line, read: which mode the appliance runs and the headless command (pure)."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from recovery.errors import UsageError
from recovery.kcmdline import PREFIX, split_cmdline

MODES = ("wizard", "shell", "send", "receive")
HEADLESS_MODES = ("send", "receive")
CLONE_MODES = ("used", "exact")

_OPTION_NAME = re.compile(r"[a-z][a-z0-9-]*\Z")
# The device options whose device must exist before the headless run starts.
_DEVICE_OPTIONS = ("--source", "--target")


class CmdlineError(UsageError):
    """The kernel command line asks for something the appliance cannot do."""


@dataclass(frozen=True)
class BootPlan:
    """What the kernel command line asks the appliance to run."""

    mode: str = "wizard"
    # Full argv of the headless command (empty unless mode is send/receive).
    argv: tuple[str, ...] = ()
    # recovery.* options that were ignored, with the reason.
    ignored: tuple[str, ...] = ()

    @property
    def headless(self) -> bool:
        return self.mode in HEADLESS_MODES

    def interfaces(self) -> tuple[str, ...]:
        """Network interfaces the headless run uses, to be brought up first:
        ``--link tbnet:IFACE`` and the scope of an IPv6 address in
        ``--to``/``--listen`` (``[fe80::1%eth0]:7554``)."""
        args = list(self.argv)
        found: list[str] = []
        for opt, value in itertools.pairwise(args):
            name = None
            if opt == "--link" and value.startswith("tbnet:"):
                name = value.split(":", 1)[1]
            elif opt in ("--to", "--listen") and "%" in value:
                name = re.split(r"[\]:]", value.split("%", 1)[1])[0]
            if name and name not in found:
                found.append(name)
        return tuple(found)

    def device_options(self) -> tuple[str, ...]:
        """Block devices named by --source/--target."""
        args = list(self.argv)
        return tuple(args[i + 1] for i, a in enumerate(args[:-1]) if a in _DEVICE_OPTIONS)


def parse_cmdline(text: str) -> BootPlan:
    """Turn the kernel command line into a BootPlan.

    A parameter given twice counts once, the last one winning, as the kernel
    does for its own parameters.  Raises CmdlineError for a mode or option the
    appliance cannot run, naming the parameter.
    """
    options: dict[str, str | None] = {}
    for param in split_cmdline(text):
        if not param.startswith(PREFIX):
            continue
        key, sep, value = param[len(PREFIX) :].partition("=")
        key = key.replace("_", "-")
        if not _OPTION_NAME.match(key):
            raise CmdlineError(f"kernel parameter {param!r}: {key!r} is not an option name")
        options.pop(key, None)  # keep the order of the last occurrence
        options[key] = value if sep else None

    options.pop("name", None)  # every mode: the machine's name, which recovery.disks.machinename reads itself
    mode = options.pop("mode", "wizard")
    if mode is None or mode not in MODES:
        raise CmdlineError(f"recovery.mode={mode}: unknown mode (choose one of {', '.join(MODES)})")

    if mode not in HEADLESS_MODES:
        ignored = tuple(f"recovery.{key}: only used with recovery.mode=send or receive" for key in options)
        return BootPlan(mode=mode, ignored=ignored)

    argv = ["recovery", mode]
    for name, val in options.items():
        key = name
        if key == "clone":
            if val not in CLONE_MODES:
                raise CmdlineError(f"recovery.clone={val}: choose one of {', '.join(CLONE_MODES)}")
            if mode != "send":
                raise CmdlineError("recovery.clone: the clone mode is chosen by the sender")
            key = "mode"
        if key == "json":
            continue  # always added below
        argv.append(f"--{key}")
        if val is not None:
            argv.append(val)
    argv.append("--json")
    return BootPlan(mode=mode, argv=tuple(argv))


# ---------------------------------------------------------------------------
# What is wrong with this machine: pure checks over a sysfs tree
