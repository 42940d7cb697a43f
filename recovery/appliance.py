"""Boot-time launcher of the USB4 Recovery appliance.

The appliance image starts this module on three terminals (systemd units in
initramfs/rootfs/etc/systemd/system/):

    python3 -m recovery.appliance console   the first screen (tty1)
    python3 -m recovery.appliance serial    the serial console (ttyS0)

(the second screen, tty2, is a plain root shell).  What they do is chosen on
the kernel command line:

    recovery.mode=wizard    (default) the wizard on tty1, root shell on serial
    recovery.mode=shell     root shells everywhere
    recovery.mode=send      headless `recovery send ...`, its log on the serial
    recovery.mode=receive   console and on tty1; then a root shell

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

import argparse
import itertools
import json
import os
import re
import select
import shutil
import subprocess
import sys
import termios
import textwrap
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from recovery.errors import UnreadableSourceError
from recovery.secureboot import ENROL_STEPS, MODULE_KEY, SecureBootState, enrol_command, module_note, read_state

MODES = ("wizard", "shell", "send", "receive")
HEADLESS_MODES = ("send", "receive")
CLONE_MODES = ("used", "exact")
PREFIX = "recovery."
BOOT_PARTNAME = "USB4-RECOVERY"
UDEV_DB = Path("/run/udev/data")  # b MAJOR:MINOR for each block device udev has handled
READY = "USB4-RECOVERY READY"
RESULT = "USB4-RECOVERY RESULT"
RUN_DIR = Path("/run/usb4-recovery")
HEADLESS_LOG = RUN_DIR / "headless.log"
HEADLESS_RESULT = RUN_DIR / "headless.result"

_OPTION_NAME = re.compile(r"[a-z][a-z0-9-]*\Z")
# The device options whose device must exist before the headless run starts.
_DEVICE_OPTIONS = ("--source", "--target")


class CmdlineError(ValueError):
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


def split_cmdline(text: str) -> list[str]:
    """Split a kernel command line the way the kernel does.

    Parameters are separated by whitespace; double quotes group spaces and are
    removed (``a="b c"`` -> ``a=b c``).  Everything after a lone ``--`` is for
    init, not a kernel parameter, and is dropped.
    """
    params: list[str] = []
    current: list[str] = []
    in_quote = False
    started = False
    for ch in text:
        if ch == '"':
            in_quote = not in_quote
            started = True
        elif ch.isspace() and not in_quote:
            if started:
                params.append("".join(current))
                current, started = [], False
        else:
            current.append(ch)
            started = True
    if started:
        params.append("".join(current))
    if "--" in params:
        params = params[: params.index("--")]
    return params


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


@dataclass(frozen=True)
class Problem:
    """Something that stops or limits a clone, with what to do about it."""

    what: str
    todo: str


@dataclass(frozen=True)
class SystemState:
    kernel: str
    stream_loaded: bool
    problems: tuple[Problem, ...] = field(default=())
    disks: tuple[str, ...] = ()
    boot_disk: str | None = None
    secure_boot: SecureBootState = field(default=SecureBootState())
    # What limits this boot but needs nothing done (the wizard starts anyway).
    notes: tuple[str, ...] = ()

    @property
    def can_enrol_module_key(self) -> bool:
        """Lockdown refuses thunderbolt_stream and its key could be enrolled."""
        return (
            not self.stream_loaded
            and self.secure_boot.locked_down
            and not self.secure_boot.enrolment_pending
            and MODULE_KEY.exists()
            and shutil.which("mokutil") is not None
        )


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def _boot_disk(sys_root: Path) -> str | None:
    """The disk holding the ESP named USB4-RECOVERY (the stick we booted from)."""
    for disk in sorted((sys_root / "block").glob("*")):
        for part in disk.glob(f"{disk.name}*/uevent"):
            if f"PARTNAME={BOOT_PARTNAME}" in _read(part).splitlines():
                return disk.name
    return None


def _real_disks(sys_root: Path) -> list[Path]:
    """Whole disks with media: not loop/ram/zram/optical/floppy/dm/md, not empty."""
    return [
        disk
        for disk in sorted((sys_root / "block").glob("*"))
        if not disk.name.startswith(("loop", "ram", "zram", "sr", "fd", "dm-", "md"))
        and _read(disk / "size") not in ("", "0")
    ]


def list_disks(sys_root: Path = Path("/sys")) -> tuple[str, ...]:
    """Whole disks a clone could use: real disks except the stick we booted from."""
    boot = _boot_disk(sys_root)
    return tuple(disk.name for disk in _real_disks(sys_root) if disk.name != boot)


def unsettled_disks(sys_root: Path = Path("/sys"), udev_db: Path = UDEV_DB) -> tuple[str, ...]:
    """Disks udev has not finished with yet.

    The kernel shows a new disk in sysfs before it has read the partition
    table, so until udev has handled the disk (its database entry exists) the
    stick may not yet be recognisable by its partition name.  Without a
    running udev (no database) there is nothing to wait for.
    """
    if not udev_db.is_dir():
        return ()
    return tuple(
        disk.name
        for disk in _real_disks(sys_root)
        if not (udev_db / f"b{_read(disk / 'dev')}").exists()
    )


def check_system(sys_root: Path = Path("/sys"), kernel: str = "") -> SystemState:
    """Look at sysfs and say what is missing, each with what to do."""
    problems = []
    notes = []
    stream_loaded = (sys_root / "module" / "thunderbolt_stream").is_dir()
    secure_boot = read_state(sys_root)
    if not (sys_root / "module" / "thunderbolt").is_dir():
        problems.append(
            Problem(
                "The thunderbolt driver is not loaded.",
                "Run 'modprobe thunderbolt' in the root shell (Alt+F2) and read "
                "'dmesg | tail'; without it no cable link works.",
            )
        )
    if not stream_loaded and secure_boot.locked_down:
        # Expected with Secure Boot on until the key is enrolled: no problem.
        notes.append(module_note(secure_boot))
    elif not stream_loaded:
        todo = (
            "Run 'modprobe thunderbolt_stream' in the root shell (Alt+F2) and "
            "'dmesg | tail' for the reason; the thunderbolt-net link (tbnet) "
            "still works without it."
        )
        problems.append(Problem("The thunderbolt_stream module is not loaded.", todo))
    elif not (sys_root / "kernel" / "config" / "thunderbolt" / "stream").is_dir():
        problems.append(
            Problem(
                "/sys/kernel/config/thunderbolt/stream is missing.",
                "Run 'mount -t configfs none /sys/kernel/config' in the root shell "
                "(Alt+F2); the stream link needs ConfigFS.",
            )
        )
    disks = list_disks(sys_root)
    if not disks:
        problems.append(
            Problem(
                "No disks found (besides this recovery stick).",
                "Check that the disk is connected; in the firmware setup set the "
                "SATA/NVMe mode to AHCI instead of RAID/RST; then press Enter to "
                "look again. 'dmesg' in the root shell (Alt+F2) shows driver errors.",
            )
        )
    return SystemState(
        kernel=kernel,
        stream_loaded=stream_loaded,
        problems=tuple(problems),
        disks=disks,
        boot_disk=_boot_disk(sys_root),
        secure_boot=secure_boot,
        notes=tuple(notes),
    )


def ready_line(plan: BootPlan, state: SystemState) -> str:
    return (
        f"{READY} mode={plan.mode} kernel={state.kernel or 'unknown'} "
        f"thunderbolt_stream={'loaded' if state.stream_loaded else 'missing'} "
        f"problems={len(state.problems)} secureboot={'on' if state.secure_boot.enabled else 'off'}"
    )


def _find_digest(obj: object) -> str | None:
    """The digest of a clone in a JSON event.

    The ``summary`` event of docs/cli.md carries ``image_digest`` (exact mode:
    BLAKE3 of the whole disk, what b3sum gives) and ``list_digest`` (BLAKE3
    over every chunk, equal on both machines); prefer the first.  Other
    events are searched for any string field named like a digest.
    """
    if isinstance(obj, dict):
        for key in ("image_digest", "list_digest"):
            if isinstance(obj.get(key), str) and obj[key]:
                return str(obj[key])
        found = None
        for key, value in obj.items():
            if isinstance(value, str) and value and ("digest" in key.lower() or key.lower() == "blake3"):
                found = value
            else:
                found = _find_digest(value) or found
        return found
    if isinstance(obj, list):
        found = None
        for value in obj:
            found = _find_digest(value) or found
        return found
    return None


def _find_error(obj: object) -> str | None:
    if isinstance(obj, dict):
        for key in ("error", "message"):
            value = obj.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, dict):
                inner = _find_error(value)
                if inner:
                    return inner
    return None


def result_line(exit_code: int, output_lines: Sequence[str]) -> str:
    """Summarise a headless run from its exit code and its --json output.

    The error is the last JSON error event's message; failing that, the last
    plain (stderr) line that is not a hint.
    """
    digest = json_error = plain_error = None
    for raw in output_lines:
        line = raw.strip()
        if not line.startswith("{"):
            if line and not line.startswith("hint:"):
                plain_error = line
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        digest = _find_digest(event) or digest
        json_error = _find_error(event) or json_error
    if exit_code == 0:
        return f"{RESULT} ok exit=0 digest={digest or 'unknown'}"
    reason = " ".join((json_error or plain_error or "no error message").split())[:200]
    outcome = "partial" if exit_code == UnreadableSourceError.exit_code else "failed"
    return f"{RESULT} {outcome} exit={exit_code} error={reason}"


# ---------------------------------------------------------------------------
# Running things (only on the appliance)


def _say(text: str = "") -> None:
    print(text, flush=True)


def _show_problems(state: SystemState) -> None:
    for note in state.notes:
        _say(textwrap.fill(note, width=78, initial_indent="  ", subsequent_indent="  "))
        _say()
    for problem in state.problems:
        _say(f"  !! {problem.what}")
        _say(f"     What to do: {problem.todo}")
    if state.problems:
        _say()


def _wait_for(predicate, timeout: float, step: float = 0.5) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


def _kernel_release() -> str:
    return os.uname().release


def _current_state(wait_disks: float = 10.0) -> SystemState:
    # udev may still be finding disks when this starts: give them a moment,
    # and let it finish each disk it found so the stick is told apart.
    _wait_for(lambda: bool(list_disks()) and not unsettled_disks(), wait_disks)
    return check_system(Path("/sys"), _kernel_release())


def _plan_or_complain() -> tuple[BootPlan, str | None]:
    try:
        return parse_cmdline(Path("/proc/cmdline").read_text()), None
    except CmdlineError as exc:
        return BootPlan(mode="wizard"), str(exc)
    except OSError as exc:
        return BootPlan(mode="wizard"), f"cannot read /proc/cmdline: {exc}"


def _banner(plan: BootPlan, state: SystemState, plan_error: str | None) -> None:
    # Start from a clean screen: boot messages may still be on it.
    sys.stdout.write("\033[H\033[2J")
    _say(f"USB4 Recovery  (kernel {state.kernel}, mode {plan.mode})")
    _say("Alt+F1: this screen   Alt+F2: root shell   The stick may be removed now.")
    _say()
    if plan_error:
        _say(f"  !! Kernel command line: {plan_error}")
        _say("     What to do: fix the recovery.* options (press 'e' in the boot menu);")
        _say("     starting the wizard instead.")
        _say()
    for note in plan.ignored:
        _say(f"  (ignored {note})")
    _show_problems(state)


def _exec_shell() -> None:
    os.execv("/bin/bash", ["bash", "-l"])


def _recovery_cmd() -> list[str]:
    exe = shutil.which("recovery")
    return [exe] if exe else [sys.executable, "-m", "recovery.cli.main"]


def _press_enter(prompt: str) -> None:
    try:
        input(prompt)
    except EOFError:
        time.sleep(5)


ENROL_OFFER_SECONDS = 20


def _ask(prompt: str, timeout: float | None = None) -> str:
    """A line typed on the console ("" when `timeout` passes first)."""
    sys.stdout.write(prompt)
    sys.stdout.flush()
    if timeout is not None and not select.select([sys.stdin], [], [], timeout)[0]:
        _say()
        try:  # half-typed text would go to the wizard
            termios.tcflush(sys.stdin, termios.TCIFLUSH)
        except (OSError, termios.error):
            pass
        return ""
    line = sys.stdin.readline()
    if not line:  # no terminal: do not spin
        time.sleep(5)
    return line


def _enrol_module_key() -> None:
    _say("\nEnrolling this stick's module key (MOK). Choose a one-time password:")
    _say("you type it once more at the next boot, and never again.\n")
    rc = subprocess.call(enrol_command())
    if rc == 0:
        _say()
        for line in ENROL_STEPS:
            _say(line)
    else:
        _say(f"\nmokutil --import failed (exit code {rc}): the key is not enrolled.")
    _press_enter("\nPress Enter to start the wizard. ")


def _before_wizard(state: SystemState, plan_error: str | None) -> None:
    """Let the person read the first screen, and offer to enroll the key."""
    offer = state.can_enrol_module_key
    if offer:
        _say("  For the raw streams: type k and Enter to enroll the stick's key (MOK).")
    if state.problems or plan_error:
        # The wizard would cover the explanation: let the person read it first.
        answer = _ask("\nPress Enter to start the wizard anyway. ")
    elif offer:
        answer = _ask(f"\nThe wizard starts in {ENROL_OFFER_SECONDS} s (Enter: now). ", ENROL_OFFER_SECONDS)
    else:
        return
    if offer and answer.strip().lower() == "k":
        _enrol_module_key()


def _console_wizard(plan: BootPlan, plan_error: str | None) -> int:
    while True:
        state = _current_state()
        _banner(plan, state, plan_error)
        _before_wizard(state, plan_error)
        started = time.monotonic()
        rc = subprocess.call([*_recovery_cmd(), "tui"])
        if rc == 0:
            continue
        # The wizard failed (or does not exist yet): never leave a blank screen.
        if time.monotonic() - started < 5:
            _say(f"\nThe wizard did not start (exit code {rc}). The disks found:\n")
        else:
            _say(f"\nThe wizard stopped with exit code {rc}. The disks found:\n")
        if subprocess.call([*_recovery_cmd(), "disks"]) != 0:
            subprocess.call(["lsblk", "-o", "NAME,SIZE,MODEL,SERIAL,TRAN,PARTLABEL"])
        _say("\nCommand-line use from the root shell (Alt+F2):")
        _say("  recovery receive --target DEV      on the machine that gets the copy")
        _say("  recovery send --source DEV         on the machine that has the data")
        _press_enter("\nPress Enter to start the wizard again. ")


def _console_headless(plan: BootPlan) -> int:
    _say(f"Headless {plan.mode}: {' '.join(plan.argv)}")
    _say("Its log follows (also on the serial console).\n")
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    shown = 0
    while True:
        try:
            text = HEADLESS_LOG.read_text(errors="replace")
        except OSError:
            text = ""
        if len(text) > shown:
            sys.stdout.write(text[shown:])
            sys.stdout.flush()
            shown = len(text)
        if HEADLESS_RESULT.exists() and shown >= len(text):
            break
        time.sleep(1)
    _say("\n" + _read(HEADLESS_RESULT))
    _press_enter("\nPress Enter for a root shell. ")
    _exec_shell()
    return 0


def run_console() -> int:
    plan, plan_error = _plan_or_complain()
    if plan.mode == "shell":
        _banner(plan, _current_state(wait_disks=0), plan_error)
        _exec_shell()
    if plan.headless:
        state = _current_state()
        _banner(plan, state, plan_error)
        return _console_headless(plan)
    return _console_wizard(plan, plan_error)


def _link_local_ready(interface: str) -> bool:
    """True once the interface has an IPv6 link-local address past DAD."""
    proc = subprocess.run(
        ["ip", "-6", "-o", "addr", "show", "dev", interface, "scope", "link"],
        capture_output=True,
        text=True,
        check=False,
    )
    return any("inet6" in line and "tentative" not in line for line in proc.stdout.splitlines())


def _bring_up(interface: str) -> None:
    if not _wait_for(lambda: Path(f"/sys/class/net/{interface}").exists(), 30):
        _say(f"usb4-recovery: network interface {interface} did not appear")
        return
    subprocess.call(["ip", "link", "set", "dev", interface, "up"])
    if not _wait_for(lambda: _link_local_ready(interface), 15):
        _say(f"usb4-recovery: {interface} has no IPv6 link-local address yet (no carrier?)")


def _stream(argv: Sequence[str], log: Path) -> Iterator[str]:
    """Run argv, yielding its output lines (stdout and stderr) as they come."""
    with open(log, "a", encoding="utf-8") as logf:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            logf.write(line)
            logf.flush()
            yield line.rstrip("\n")
        proc.wait()
        yield f"\0exit {proc.returncode}"


def run_headless(plan: BootPlan) -> str:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    HEADLESS_LOG.touch()
    for iface in plan.interfaces():
        _bring_up(iface)
    for dev in plan.device_options():
        if not _wait_for(lambda dev=dev: Path(dev).exists(), 30):
            _say(f"usb4-recovery: {dev} did not appear within 30 s")
    _say("usb4-recovery: running " + " ".join(plan.argv))
    lines: list[str] = []
    rc = 127
    try:
        for line in _stream([*_recovery_cmd(), *plan.argv[1:]], HEADLESS_LOG):
            if line.startswith("\0exit "):
                rc = int(line.split()[1])
                continue
            lines.append(line)
            del lines[:-200]
            _say(line)
    except OSError as exc:
        lines.append(f"cannot run recovery: {exc}")
    result = result_line(rc, lines)
    HEADLESS_RESULT.write_text(result + "\n")
    return result


def run_serial() -> int:
    plan, plan_error = _plan_or_complain()
    state = _current_state()
    if plan_error:
        _say(f"usb4-recovery: kernel command line: {plan_error}")
    for note in plan.ignored:
        _say(f"usb4-recovery: ignored {note}")
    for note in state.notes:
        _say(f"usb4-recovery: note: {note}")
    for problem in state.problems:
        _say(f"usb4-recovery: problem: {problem.what} What to do: {problem.todo}")
    _say(ready_line(plan, state))
    if plan.headless:
        if HEADLESS_RESULT.exists():
            _say(_read(HEADLESS_RESULT))  # ran already this boot: do not clone twice
        else:
            _say(run_headless(plan))
    _say("usb4-recovery: root shell on the serial console")
    _exec_shell()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m recovery.appliance", description=__doc__)
    sub = parser.add_subparsers(dest="role", required=True)
    sub.add_parser("console", help="run on the first screen (tty1)")
    sub.add_parser("serial", help="run on the serial console")
    show = sub.add_parser("plan", help="print what a kernel command line would run")
    show.add_argument("cmdline", nargs="?", help="default: /proc/cmdline")
    args = parser.parse_args(argv)
    if args.role == "plan":
        text = args.cmdline if args.cmdline is not None else Path("/proc/cmdline").read_text()
        try:
            plan = parse_cmdline(text)
        except CmdlineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"mode: {plan.mode}")
        if plan.argv:
            print("runs: " + " ".join(plan.argv))
        for note in plan.ignored:
            print(f"ignored {note}")
        return 0
    if args.role == "console":
        return run_console()
    return run_serial()


if __name__ == "__main__":
    sys.exit(main())
