"""Resume as a hostile receiver would bend it: an offer beyond the plan is refused before a single
digest is read (they would be held in memory), and the chunks sampled against the source cannot be
known beforehand."""

from __future__ import annotations

import random

import pytest

from recovery.engine import journal, resume
from recovery.engine.chunks import plan_chunks
from recovery.errors import RemoteProtocolError
from recovery.protocol import messages as m

MIB = 1 << 20


class NoDigestsLink:
    """A link whose control channel must not be read: the offer alone is enough to refuse."""

    class ctl:
        @staticmethod
        def expect(*_: object) -> m.Message:
            raise AssertionError("a digest page was read for an offer beyond the plan")

        @staticmethod
        def send(_: m.Message) -> None:
            raise AssertionError("nothing is sent for an offer beyond the plan")


@pytest.mark.parametrize(("seq", "nbytes"), [(2**40, 4 * MIB), (4, 2**50), (5, 4 * MIB)])
def test_an_offer_beyond_the_plan_is_refused_before_any_digest(seq: int, nbytes: int) -> None:
    chunks = list(plan_chunks([(0, 4 * MIB)], MIB))  # 4 chunks, 4 MiB
    offer = m.ResumeOffer(seq=seq, bytes=nbytes, since="", complete=False, rescued=False)
    with pytest.raises(RemoteProtocolError, match="beyond this plan"):
        resume.sender_agree(NoDigestsLink(), offer, chunks, lambda c, v: True,  # type: ignore[arg-type]
                            planned=len(chunks), planned_bytes=4 * MIB, rescan=False, chunk_size=MIB)


def test_the_sample_is_spread_random_and_always_holds_the_last_two() -> None:
    count = 1000
    picks = [journal.sample_indexes(count, rng=random.Random(seed)) for seed in range(20)]
    for p in picks:
        assert {count - 2, count - 1} <= set(p) and journal.SAMPLE + 1 <= len(p) <= journal.SAMPLE + 2
        stretches = {i * journal.SAMPLE // count for i in p}
        assert stretches == set(range(journal.SAMPLE))  # one in each stretch
    assert len({tuple(p) for p in picks}) > 15  # not the same chunks every time
    assert journal.sample_indexes(3) == [0, 1, 2] and journal.sample_indexes(0) == []
    assert 5 not in journal.sample_indexes(10, {5}, want=10)
