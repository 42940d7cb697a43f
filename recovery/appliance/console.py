"""Running things on the appliance: the first screen, the serial console, a headless clone.

A headless clone runs in a unit of its own, on no terminal (``headless``), so
it runs on a machine without a serial port too; the first screen and the
serial console (when there is one) follow its log and show its RESULT line.
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import subprocess
import sys
import termios
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import TextIO

from recovery import run
from recovery.appliance.checks import SystemState, check_system, ready_line, result_line, unsettled_disks
from recovery.appliance.cmdline import BootPlan, CmdlineError, parse_cmdline
from recovery.disks import inventory, machinename
from recovery.errors import RecoveryError
from recovery.link.sysfs import Sysfs
from recovery.protocol.messages import DiskInfo
from recovery.secureboot import ENROL_STEPS, enrol_command
from recovery.sysattr import read_attr

RUN_DIR = Path("/run/usb4-recovery")
HEADLESS_LOG = RUN_DIR / "headless.log"
HEADLESS_RESULT = RUN_DIR / "headless.result"
SERIAL_SHOWN = RUN_DIR / "headless.serial-shown"  # the serial console showed the log (it may restart)


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


def _wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


def _file_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def _kernel_release() -> str:
    return os.uname().release


def _some_disk(sys_root: Path = Path("/sys")) -> bool:
    return any(
        inventory.worth_listing(d.name) and (read_attr(d / "size") or "0") != "0"
        for d in (sys_root / "block").glob("*")
    )


def _settle_disks(timeout: float) -> None:
    """udev may still be finding disks: give them a moment, and let it finish
    each disk it found so the stick is told apart."""
    _wait_for(lambda: _some_disk() and not unsettled_disks(), timeout)


def _current_state(wait_disks: float = 10.0) -> SystemState:
    _settle_disks(wait_disks)
    try:
        disks: Sequence[DiskInfo] = inventory.list_disks()
    except (RecoveryError, OSError) as e:
        _say(f"usb4-recovery: cannot list the disks: {e}")
        disks = ()
    return check_system(disks, Path("/sys"), _kernel_release())


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
    _say(f"This machine: {machinename.this_machine().name}")
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
    rc = run.foreground(enrol_command())
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
        rc = run.foreground([*_recovery_cmd(), "tui"])
        if rc == 0:
            continue
        # The wizard failed (or does not exist yet): never leave a blank screen.
        if time.monotonic() - started < 5:
            _say(f"\nThe wizard did not start (exit code {rc}). The disks found:\n")
        else:
            _say(f"\nThe wizard stopped with exit code {rc}. The disks found:\n")
        if run.foreground([*_recovery_cmd(), "disks"]) != 0:
            run.foreground(["lsblk", "-o", "NAME,SIZE,MODEL,SERIAL,TRAN,PARTLABEL"])
        _say("\nCommand-line use from the root shell (Alt+F2):")
        _say("  recovery receive --target DEV      on the machine that gets the copy")
        _say("  recovery send --source DEV         on the machine that has the data")
        _press_enter("\nPress Enter to start the wizard again. ")


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _follow_headless(write: Callable[[str], None], poll: float = 1.0) -> str:
    """Pass the headless run's log to ``write`` as it grows (whole lines), until
    its result is written; the RESULT line."""
    shown = 0
    while True:
        done = HEADLESS_RESULT.exists()  # before reading: the log is complete once the result is there
        try:
            data = HEADLESS_LOG.read_bytes()
        except OSError:
            data = b""
        end = len(data) if done else data.rfind(b"\n") + 1
        if end > shown:
            write(data[shown:end].decode(errors="replace"))
            shown = end
        if done:
            return _file_text(HEADLESS_RESULT)
        time.sleep(poll)


def _console_headless(plan: BootPlan) -> int:
    _say(f"Headless {plan.mode}: {' '.join(plan.argv)}")
    _say("Its log follows (also on the serial console, if this machine has one).\n")
    _say("\n" + _follow_headless(_write))
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


def _bring_up(interface: str, note: Callable[[str], None]) -> None:
    """The interface a headless run names, up with its link-local address (the tbnet link's own steps)."""
    from recovery.link import tbnet

    sysfs = Sysfs()
    if not _wait_for(lambda: sysfs.interface(interface) is not None, 30):
        note(f"usb4-recovery: network interface {interface} did not appear")
        return
    iface = sysfs.interface(interface)
    assert iface is not None
    try:
        tbnet.bring_up(iface)
    except RecoveryError as e:
        note(f"usb4-recovery: {e.message}")
        return
    if not _wait_for(lambda: bool(tbnet.ready_address(interface)), 15):
        note(f"usb4-recovery: {interface} has no IPv6 link-local address yet (no carrier?)")


def _stream(argv: Sequence[str], log: TextIO) -> Iterator[str]:
    """Run argv, yielding its output lines (stdout and stderr) as they come, each also written to ``log``."""
    proc = run.start(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None and proc.stdin is not None
    proc.stdin.close()
    for raw in proc.stdout:
        line = raw.decode(errors="replace")
        log.write(line)
        log.flush()
        yield line.rstrip("\n")
    proc.wait()
    yield f"\0exit {proc.returncode}"


def run_headless(plan: BootPlan) -> str:
    """Run the headless command: its output and these notes go to HEADLESS_LOG (and
    our stdout); the RESULT line, also written to HEADLESS_RESULT whatever happens,
    so the screens that follow the log never wait for ever."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    rc = 127
    try:
        with open(HEADLESS_LOG, "a", encoding="utf-8") as log:

            def note(text: str) -> None:
                log.write(text + "\n")
                log.flush()
                _say(text)

            try:
                for iface in plan.interfaces():
                    _bring_up(iface, note)
                for dev in plan.device_options():
                    if not _wait_for(partial(os.path.exists, dev), 30):
                        note(f"usb4-recovery: {dev} did not appear within 30 s")
                note("usb4-recovery: running " + " ".join(plan.argv))
                for line in _stream([*_recovery_cmd(), *plan.argv[1:]], log):
                    if line.startswith("\0exit "):
                        rc = int(line.split()[1])
                        continue
                    lines.append(line)
                    del lines[:-200]
                    _say(line)
            except (OSError, RecoveryError) as exc:
                lines.append(f"cannot run recovery: {exc}")
                note(lines[-1])
    except Exception as exc:  # noqa: BLE001 - a bug here must still end the screens' wait, and say why
        lines.append(f"usb4-recovery: {type(exc).__name__}: {exc}")
    result = result_line(rc, lines)
    HEADLESS_RESULT.write_text(result + "\n")
    return result


def run_headless_once() -> int:
    """The headless unit: the clone the kernel command line asks for, once per boot, on no terminal.

    Always 0: the verdict is the RESULT line, which the screens show."""
    plan, _ = _plan_or_complain()  # the screens show a bad command line
    if not plan.headless or HEADLESS_RESULT.exists():
        return 0
    _settle_disks(10.0)
    _say(run_headless(plan))
    return 0


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
    _say(f"usb4-recovery: this machine: {machinename.this_machine().name}")
    _say(ready_line(plan, state))
    if plan.headless:
        # The headless unit runs the clone (with or without this console): follow its log.
        if SERIAL_SHOWN.exists():
            _say(_file_text(HEADLESS_RESULT))  # this console restarted: the log was shown this boot
        else:
            _say(_follow_headless(_write))
            RUN_DIR.mkdir(parents=True, exist_ok=True)
            SERIAL_SHOWN.touch()
    _say("usb4-recovery: root shell on the serial console")
    _exec_shell()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m recovery.appliance", description=__doc__)
    sub = parser.add_subparsers(dest="role", required=True)
    sub.add_parser("console", help="run on the first screen (tty1)")
    sub.add_parser("serial", help="run on the serial console")
    sub.add_parser(
        "headless", help="run the headless clone the kernel command line asks for, once per boot, on no terminal"
    )
    show = sub.add_parser("plan", help="print what a kernel command line would run")
    show.add_argument("cmdline", nargs="?", help="default: /proc/cmdline")
    args = parser.parse_args(argv)
    if args.role == "plan":
        text = args.cmdline if args.cmdline is not None else Path("/proc/cmdline").read_text()
        try:
            plan = parse_cmdline(text)
        except CmdlineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code
        print(f"mode: {plan.mode}")
        if plan.argv:
            print("runs: " + " ".join(plan.argv))
        for note in plan.ignored:
            print(f"ignored {note}")
        return 0
    if args.role == "console":
        return run_console()
    if args.role == "headless":
        return run_headless_once()
    return run_serial()
