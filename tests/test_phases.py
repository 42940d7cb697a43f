"""The `phase` event's names: the ones the code emits are exactly the ones documented."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import recovery
from recovery import events
from tests.helpers import REPO

PACKAGE = Path(recovery.__file__).parent
# The agent turns its listener's and the cable's status(way, text) lines into Phase(way, text).
STATUS_SOURCES = ("engine/peer/meeting.py", "engine/peer/cable.py")


def _first_strings(path: Path, called: str) -> tuple[set[str], int]:
    """The string-constant first arguments of calls to ``called`` (a name or an attribute), and how
    many calls had something else there."""
    names: set[str] = set()
    other = 0
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
        if name != called:
            continue
        first = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "name"), None)
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            names.add(first.value)
        else:
            other += 1
    return names, other


def emitted() -> set[str]:
    names: set[str] = set()
    computed = 0
    for path in PACKAGE.rglob("*.py"):
        found, other = _first_strings(path, "Phase")
        names |= found
        computed += other
    assert computed == 1, "one Phase call (the agent's status lines) takes its name from a variable"
    for source in STATUS_SOURCES:
        names |= _first_strings(PACKAGE / source, "status")[0]
    return names


def test_the_docstring_lists_exactly_the_phases_emitted() -> None:
    names = (events.Phase.__doc__ or "").split("one of:", 1)[1]
    assert set(re.findall(r"[a-z]+", re.sub(r"\([^)]*\)", "", names))) == emitted()  # the words outside (...)


def test_the_json_table_lists_exactly_the_phases_emitted() -> None:
    row = next(line for line in (REPO / "docs" / "cli.md").read_text().splitlines() if line.startswith("| `phase` |"))
    assert set(re.findall(r"`([a-z]+)`", row)) - {"phase", "name", "message"} == emitted()
