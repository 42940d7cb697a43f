from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from recovery.engine.bench import StageRates, best_level, predict
from tests.helpers import MIB, REPO, random_bytes


def rates(**kw: object) -> StageRates:
    base = dict(
        disk_read=None, blake3=4e9, zstd={1: 500e6, 3: 250e6, 6: 80e6}, ratio={1: 0.5, 3: 0.45, 6: 0.42}, workers=2
    )
    base.update(kw)
    return StageRates(**base)  # type: ignore[arg-type]


def test_slow_link_wants_compression_fast_link_wants_raw() -> None:
    r = rates()
    assert best_level(r, 117e6)[0] in (3, 6)
    assert best_level(r, 5e9)[0] is None
    assert predict(r, 117e6, None) == 117e6  # raw over a slow link: the link's rate


def test_the_disk_caps_everything() -> None:
    assert predict(rates(disk_read=50e6), 5e9, None) == 50e6


def test_bench_command_on_an_image(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(random_bytes(8 * MIB, 3) + bytes(8 * MIB))
    out = subprocess.run(
        [sys.executable, "-m", "recovery", "bench", "--source", str(image), "--read", "8M", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    body = json.loads(out)
    assert body["disk_read"] > 0 and body["blake3"] > 0 and body["size"] == 16 * MIB
    assert 0.9 < body["ratio"]["1"] <= 1.01  # the sample leaves the zeros out: random data stays random
    assert all(p["rate"] > 0 for p in body["predictions"].values())
