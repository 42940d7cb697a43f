"""Sizes as people type them (``--size``, ``--chunk-size``, the wizard's size field)."""

from __future__ import annotations

import pytest

from recovery.errors import UsageError
from recovery.units import parse_size


@pytest.mark.parametrize("text, size", [("4096", 4096), ("4K", 4096), (" 5 MiB ", 5 << 20), ("120G", 120 << 30)])
def test_a_size_in_binary_units(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "G", "-1G", "1.5G", "١٢٠G", "9" * 4400, "1P", "1G\x1b[2J"])
def test_anything_else_is_a_usage_error_never_a_traceback(text: str) -> None:
    """The review's finding: 4301 digits raised Python's ValueError (the wizard's field crashed), and
    non-ASCII digits were taken."""
    with pytest.raises(UsageError, match="bad size") as said:
        parse_size(text)
    assert len(str(said.value)) < 200 and "\x1b" not in str(said.value)
