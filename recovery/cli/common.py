"""Options shared by several commands."""

from __future__ import annotations

import argparse

from recovery.engine.control import DEFAULT_TIMEOUT


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON event per line (see docs/cli.md)")


def add_timeout(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=f"declare the link lost after this long without a word from the peer "
                        f"(default {DEFAULT_TIMEOUT:.0f})")


def add_link(p: argparse.ArgumentParser) -> None:
    p.add_argument("--link", metavar="LINK",
                   help="auto (default), tcp:HOST:PORT, stdio, tbstream, or tbnet[:IFACE]")
