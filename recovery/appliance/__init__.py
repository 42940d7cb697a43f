"""Boot-time launcher of the USB4 Recovery appliance.

The appliance image starts this module on two terminals and on none
(systemd units in initramfs/rootfs/etc/systemd/system/):

    python3 -m recovery.appliance console    the first screen (tty1)
    python3 -m recovery.appliance serial     the serial console (ttyS0), if there is one
    python3 -m recovery.appliance headless   the headless clone, once per boot, on no terminal

(the second screen, tty2, is a plain root shell).  What they do is chosen on
the kernel command line:

    recovery.mode=wizard    (default) the wizard on tty1, root shell on serial
    recovery.mode=shell     root shells everywhere
    recovery.mode=send      headless `recovery send ...`, its log on the serial
    recovery.mode=receive   console (if any) and on tty1; then a root shell

For send and receive every other ``recovery.<opt>[=<value>]`` becomes
``--<opt> [<value>]`` of the command (``_`` may stand for ``-``), except
``recovery.clone=used|exact``, which becomes ``--mode``.  For example::

    recovery.mode=receive recovery.target=/dev/nvme0n1 recovery.yes
        -> recovery receive --target /dev/nvme0n1 --yes --json

The serial console prints machine-readable lines that the boot tests (and a
person with a serial cable) wait for::

    USB4-RECOVERY READY mode=receive kernel=... thunderbolt_stream=loaded problems=0 secureboot=off
    USB4-RECOVERY RESULT ok exit=0 digest=<blake3 of the disk>
    USB4-RECOVERY RESULT partial exit=14 error=<what could not be read>   (a rescue)
    USB4-RECOVERY RESULT failed exit=3 error=<last error message>

The parsing is pure (``parse_cmdline``, ``check_system`` over a given sysfs
root) so it is unit-tested off the appliance; ``main`` only runs things.
"""

from __future__ import annotations

from recovery.appliance.checks import (
    READY,
    RESULT,
    Problem,
    SystemState,
    check_system,
    ready_line,
    result_line,
    unsettled_disks,
)
from recovery.appliance.cmdline import BootPlan, CmdlineError, parse_cmdline
from recovery.kcmdline import split_cmdline

__all__ = [
    "READY",
    "RESULT",
    "BootPlan",
    "CmdlineError",
    "Problem",
    "SystemState",
    "check_system",
    "parse_cmdline",
    "ready_line",
    "result_line",
    "split_cmdline",
    "unsettled_disks",
]
