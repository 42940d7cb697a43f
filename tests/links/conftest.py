"""Fixtures for the link tests: two emulated hosts on a pretend cable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.links.fakekernel import Fabric

SMALL = "00000000-0000-0000-0000-00000000000a"  # alpha: its streams end in "a"
LARGE = "ffffffff-0000-0000-0000-00000000000b"  # beta


@pytest.fixture
def fabric(tmp_path: Path) -> Iterator[Fabric]:
    """alpha (Max Input HopID 15) and beta (19), not plugged yet."""
    f = Fabric(tmp_path, a_uuid=SMALL, b_uuid=LARGE)
    yield f
    f.close()
