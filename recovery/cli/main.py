"""Entry point: parse the command line, run one command, turn errors into exit codes.

Every failure becomes one line on stderr (and a JSON ``error`` event with
``--json``) and the exit code of its class in :mod:`recovery.errors`;
tracebacks only with ``--debug``, and never for a usage error (its one line
says all there is to say).
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import traceback
from collections.abc import Sequence
from types import ModuleType

from recovery import __version__, events
from recovery.cli.common import INTERRUPTS
from recovery.cli.output import Output
from recovery.disks import machinename
from recovery.errors import INTERRUPTED_EXIT_CODE, CancelledError, Interrupted, RecoveryError, UsageError

# Command name -> its module under recovery.cli, in the order `--help` lists them.
COMMANDS = ("send", "receive", "image", "disks", "peers", "stream", "verify", "demo", "bench", "tui", "agent")
TERMINATED_EXIT_CODE = 143
GLOBAL_OPTIONS = {"--debug": "--debug", "--name": "--name NAME"}  # options of `recovery` itself, with their usage


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        hint = f"see `{self.prog} --help`"
        if message.startswith("unrecognized arguments:"):
            misplaced = [opt for opt in GLOBAL_OPTIONS if opt in message.split()]
            if misplaced:
                hint = f"{misplaced[0]} goes before the command: `recovery {GLOBAL_OPTIONS[misplaced[0]]} COMMAND ...`"
        raise UsageError(f"{self.prog}: {message}", hint=hint)


def _modules(argv: Sequence[str]) -> list[ModuleType]:
    """The command modules to load: only the one named on the command line
    (a clone should not wait for the wizard's imports), else all of them."""
    words = [a for i, a in enumerate(argv) if not a.startswith("-") and (i == 0 or argv[i - 1] != "--name")]
    named = words[0] if words else None
    names = [named] if named in COMMANDS else list(COMMANDS)
    return [importlib.import_module(f"recovery.cli.{name}") for name in names]


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="recovery",
        description="Clone disks between two machines over a USB4/Thunderbolt cable, "
        "compressed and verified end to end.",
    )
    parser.add_argument("--version", action="version", version=f"usb4-recovery {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show where an error happened (a traceback); never for a bad command line"
    )
    parser.add_argument(
        "--name",
        metavar="NAME",
        help="what this machine is called on both screens, in the job log and in --json "
        "(default: its host name; booted from the stick, the system on its disk or the firmware's model)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in _modules(argv):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # until the command line is parsed: it may fail before that
    out = Output(json_mode="--json" in argv)
    signal.signal(signal.SIGINT, INTERRUPTS.handler)
    signal.signal(signal.SIGTERM, INTERRUPTS.handler)
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        debug = args.debug
        if args.name is not None:
            machinename.set_option(args.name)
        if args.command is None:
            # The appliance's first console: a person, so the wizard. Anything else: help.
            if sys.stdin.isatty() and sys.stdout.isatty():
                return importlib.import_module("recovery.cli.tui").run_default()  # type: ignore[no-any-return]
            parser.print_help()
            return 0
        out = args.output = Output(json_mode=getattr(args, "json", False), stream=_report_stream(args))
        return int(args.run(args) or 0)
    except RecoveryError as e:
        if debug and not isinstance(e, UsageError):
            traceback.print_exc()
        code = e.exit_code
        if isinstance(e, Interrupted) and INTERRUPTS.signal == signal.SIGTERM:
            code = TERMINATED_EXIT_CODE
        out.error(events.Failed(code=e.code, message=e.message, exit_code=code, hint=e.hint, peer=e.peer))
        return code
    except KeyboardInterrupt:
        terminated = INTERRUPTS.signal == signal.SIGTERM
        code = TERMINATED_EXIT_CODE if terminated else INTERRUPTED_EXIT_CODE
        out.error(
            events.Failed(code="cancelled", message="terminated" if terminated else "interrupted", exit_code=code)
        )
        return code
    except Exception as e:  # noqa: BLE001 - the last resort: one line, exit 1
        if debug:
            traceback.print_exc()
        err = CancelledError if isinstance(e, BrokenPipeError) else RecoveryError
        msg = f"internal error: {type(e).__name__}: {e}"
        out.error(
            events.Failed(
                code=err.code, message=msg, exit_code=1, hint="run again with --debug and report the traceback"
            )
        )
        return 1


def _report_stream(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """Events go to stdout, unless stdout carries the link itself."""
    stdio = (getattr(args, "to", None), getattr(args, "from_", None), getattr(args, "link", None))
    if "-" in stdio[:2] or stdio[2] == "stdio":
        return sys.stderr
    return sys.stdout


if __name__ == "__main__":
    sys.exit(main())
