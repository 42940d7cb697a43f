"""The rescue's mapfile as a stranger sharing its directory would bend it: a link planted where the
mapfile or its temporary file goes is never followed, and reading one never echoes what it holds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recovery.engine.rescue.sectormap import FINISHED, MapFormatError, MapStatus, SectorMap, read_mapfile, write_mapfile

SIZE = 1 << 20


def a_map() -> SectorMap:
    smap = SectorMap(SIZE)
    smap.set(0, SIZE, FINISHED)
    return smap


def test_links_planted_beside_or_at_the_mapfile_are_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    path = tmp_path / "source.map"
    (tmp_path / "source.map.tmp").symlink_to(victim)  # where the old code wrote its temporary file
    write_mapfile(path, a_map(), MapStatus(0, FINISHED, 1))
    assert victim.read_text() == "precious\n"
    assert path.stat().st_mode & 0o777 == 0o600 and list(read_mapfile(path, SIZE)[0].blocks()) == [(0, SIZE, FINISHED)]
    path.unlink()
    path.symlink_to(victim)  # the mapfile itself a link: replaced by the new file
    write_mapfile(path, a_map(), MapStatus(0, FINISHED, 1))
    assert victim.read_text() == "precious\n" and not path.is_symlink()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp") and not p.startswith("source.map")]


@pytest.mark.parametrize("how", ["link", "garbage"])
def test_a_mapfile_that_is_not_one_is_refused_without_echoing_it(tmp_path: Path, how: str) -> None:
    secret = tmp_path / "secret"
    secret.write_text("admin:$6$hunter2 x\n0x0 + 1\n")
    path = tmp_path / "source.map"
    if how == "link":
        path.symlink_to(secret)
    else:
        path.write_text(secret.read_text())
    with pytest.raises(MapFormatError) as refused:
        read_mapfile(path, SIZE)
    assert "hunter2" not in str(refused.value) and "$6$" not in str(refused.value)
    if how == "link":
        assert "symbolic link" in str(refused.value)
