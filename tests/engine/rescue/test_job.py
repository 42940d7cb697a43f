"""The sender's rescue job as a receiver's word would bend it: a resume offer never makes the sender's
own mapfile claim more than it knows (an area it recorded as not read stays so)."""

from __future__ import annotations

import os
from pathlib import Path

from recovery import events
from recovery.engine.api import SendOptions
from recovery.engine.clone.chunks import plan_chunks
from recovery.engine.clone.source import Source
from recovery.engine.rescue.job import RescueJob
from recovery.engine.rescue.sectormap import BAD, FINISHED, MapStatus, SectorMap, read_mapfile, write_mapfile

MIB = 1 << 20


def test_a_resume_offer_does_not_mark_what_the_mapfile_records_as_bad_finished(tmp_path: Path) -> None:
    src, mapfile = tmp_path / "failing.img", tmp_path / "failing.map"
    src.write_bytes(os.urandom(8 * MIB))
    smap = SectorMap(8 * MIB, FINISHED)
    smap.set(3 * MIB, 64 << 10, BAD)  # an earlier rescue run found 64 KiB it could not read
    write_mapfile(mapfile, smap, MapStatus(0, FINISHED, 1))
    opts = SendOptions(
        source=str(src), mode="exact", rescue=True, mapfile=str(mapfile), log_dir=tmp_path, chunk_size=MIB
    )
    source = Source(str(src))
    job = RescueJob(source, opts, events.ignore)
    try:
        extents = [(0, 8 * MIB)]
        assert job.unreadable(extents) == [(3 * MIB, 64 << 10)]
        job.resumed(plan_chunks(extents, MIB), 8, rescued=False)  # the target holds all 8 chunks, it says
        assert job.unreadable(extents) == [(3 * MIB, 64 << 10)]
        job.save(final=True)
        assert read_mapfile(mapfile, 8 * MIB)[0].total(BAD) == 64 << 10
    finally:
        job.close()
        source.close()


def test_the_mapfile_heading_never_records_the_pairing_code() -> None:
    from recovery.engine.rescue.job import _redacted

    args = ["send", "--rescue", "--code", "ABCD-1234", "/dev/sda", "--code=WXYZ-9876", "--via", "x"]
    assert _redacted(args) == ["send", "--rescue", "--code", "…", "/dev/sda", "--code=…", "--via", "x"]
