"""The serving side's code guard: wrong tries are counted when a proof is checked, per origin and
in all; a made code is replaced after three wrong tries, a given one is rate-limited instead; an
attempt left without its proof counts for its origin; a right proof is never refused for what
other origins did."""

from __future__ import annotations

from recovery.engine.peer.guard import GLOBAL_PER_MINUTE, MAX_TRIES, PRESSURE_LOCK, CodeGuard
from recovery.protocol import codes


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def wrong(guard: CodeGuard, origin: str = "10.0.0.9") -> str:
    return guard.judge(guard.answer(origin), lambda: False).outcome


def right(guard: CodeGuard, origin: str = "10.0.0.2") -> str:
    return guard.judge(guard.answer(origin), lambda: True).outcome


def test_the_answer_is_the_current_code() -> None:
    guard = CodeGuard("secret-code")
    assert guard.answer("a").secret == codes.secret("secret-code")


def test_a_made_code_is_replaced_after_three_wrong_tries_in_all_and_announced() -> None:
    clock = Clock()
    announced: list[tuple[str, str]] = []
    guard = CodeGuard(on_new_code=lambda code, why: announced.append((code, why)), clock=clock)
    old = guard.code
    for origin in ("10.0.0.7", "10.0.0.8"):  # two addresses: the count is of the code, not of one address
        assert wrong(guard, origin) == "wrong_code"
    assert not announced and guard.code == old and guard.tries_left("10.0.0.9") == 1
    assert wrong(guard, "10.0.0.9") == "wrong_code"
    assert guard.code != old and announced and announced[0][0] == guard.code
    assert "3 wrong codes" in announced[0][1]


def test_an_attempt_answered_with_the_old_code_cannot_pair_after_it_changed() -> None:
    guard = CodeGuard()
    answered = guard.answer("10.0.0.2")  # the real peer started with the old code ...
    for _ in range(MAX_TRIES):
        wrong(guard)  # ... a stranger's wrong tries replace it meanwhile
    assert guard.judge(answered, lambda: True).outcome == "stale"


def test_one_origin_guessing_waits_longer_each_time_and_slows_only_itself() -> None:
    clock = Clock()
    guard = CodeGuard("secret-code", clock=clock)
    waits = []
    for _ in range(MAX_TRIES + 4):
        while guard.waiting("10.0.0.9") is not None:
            clock.now += 0.25
        assert wrong(guard) == "wrong_code"
        state = guard._origins["10.0.0.9"]
        waits.append(max(0.0, state.locked_until - clock.now))
    assert guard.code == "secret-code"  # a given code stays
    assert waits[: MAX_TRIES - 1] == [0.0] * (MAX_TRIES - 1)  # a typo or two is forgiven
    assert waits[MAX_TRIES - 1 :] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert guard.waiting("10.0.0.9") is not None and guard.waiting("10.0.0.2") is None
    assert right(guard, "10.0.0.2") == "paired"  # the real peer elsewhere still gets in


def test_many_origins_together_slow_strangers_but_never_refuse_the_right_code() -> None:
    """20 wrong codes from 7 addresses in a moment used to lock everyone out for a minute."""
    clock = Clock()
    guard = CodeGuard("secret-code", clock=clock)
    for i in range(GLOBAL_PER_MINUTE):
        assert wrong(guard, f"10.0.0.{10 + i % 7}") == "wrong_code"
        clock.now += 0.01
    assert right(guard, "10.0.0.2") == "paired"  # the user typing the right code gets in at once
    assert wrong(guard, "10.0.1.1") == "wrong_code"  # under pressure a new stranger gets no grace:
    assert guard.waiting("10.0.1.1") is not None and f"wait {PRESSURE_LOCK:.0f} s" in guard.waiting("10.0.1.1")
    assert guard.judge(guard.answer("10.0.1.1"), lambda: True).outcome == "locked"
    clock.now += PRESSURE_LOCK
    assert wrong(guard, "10.0.1.1") == "wrong_code"
    assert f"wait {2 * PRESSURE_LOCK:.0f} s" in (guard.waiting("10.0.1.1") or "")  # twice as long each time
    clock.now += 61
    assert wrong(guard, "10.0.2.1") == "wrong_code" and guard.waiting("10.0.2.1") is None  # pressure gone


def test_a_connection_that_left_without_pairing_counts_for_its_own_address_only() -> None:
    """Not for its /64: every SLAAC host of a LAN shares one, and a stranger there would lock them all out."""
    clock = Clock()
    guard = CodeGuard("secret-code", clock=clock)
    net, stranger, neighbour = "2001:db8::/64", "2001:db8::3", "2001:db8::2"
    for _ in range(MAX_TRIES):
        assert guard.waiting(net, stranger) is None
        guard.stalled(stranger)
    assert "too many tries from 2001:db8::3" in (guard.waiting(net, stranger) or "")
    assert guard.waiting(net, neighbour) is None
    assert guard.wrong_since_new == 0 and guard.code == "secret-code"  # nothing learned: the code stays
    assert guard.judge(guard.answer(net, address=neighbour), lambda: True).outcome == "paired"


def test_wrong_codes_count_for_the_whole_origin() -> None:
    clock = Clock()
    guard = CodeGuard("secret-code", clock=clock)
    net = "2001:db8::/64"
    for i in range(MAX_TRIES):  # guessed from three addresses of one /64: one origin
        assert guard.judge(guard.answer(net, address=f"2001:db8::{i + 10}"), lambda: False).outcome == "wrong_code"
    assert "too many tries from 2001:db8::/64" in (guard.waiting(net, "2001:db8::99") or "")


def test_a_success_starts_that_origins_count_again() -> None:
    guard = CodeGuard("secret-code")
    for _ in range(2):
        wrong(guard, "10.0.0.2")
    assert right(guard, "10.0.0.2") == "paired"
    assert guard.tries_left("10.0.0.2") == MAX_TRIES


def test_renew_makes_a_new_code_unless_one_was_given() -> None:
    made = CodeGuard()
    old = made.code
    assert made.renew() != old
    given = CodeGuard("secret-code")
    assert given.renew() == "secret-code"


def test_a_lost_pairing_may_come_back_once_with_its_secret_and_not_after_its_time() -> None:
    from recovery.engine.peer.guard import REJOIN_FOR

    clock = Clock()
    guard = CodeGuard(clock=clock)
    assert guard.answer("10.0.0.2", rejoin=True) is None  # nothing was lost: a rejoin is turned away
    secret = bytes(range(32))
    guard.allow_rejoin(secret)
    answered = guard.answer("10.0.0.2", rejoin=True)
    assert answered is not None and answered.secret == secret and answered.rejoin
    assert guard.judge(answered, lambda: True).outcome == "paired"
    assert guard.answer("10.0.0.2", rejoin=True) is None  # once only
    guard.allow_rejoin(secret)
    clock.now += REJOIN_FOR + 1
    assert guard.answer("10.0.0.2", rejoin=True) is None  # too late


def test_a_wrong_rejoin_proof_counts_as_a_wrong_try_and_a_code_pairing_ends_the_offer() -> None:
    guard = CodeGuard()
    code = guard.code
    guard.allow_rejoin(bytes(32))
    answered = guard.answer("10.0.0.9", rejoin=True)
    assert answered is not None and "secret" not in repr(answered)  # the secret is never printed
    assert guard.judge(answered, lambda: False).outcome == "wrong_code"
    assert guard.tries_left("10.0.0.9") == MAX_TRIES - 1 and guard.code == code  # counted; the code stays
    again = guard.answer("10.0.0.2", rejoin=True)  # a stranger's failed proof does not take the offer away
    assert again is not None
    assert right(guard) == "paired"  # someone paired by the code: the lost pairing is over
    assert guard.answer("10.0.0.2", rejoin=True) is None
    assert guard.judge(again, lambda: True).outcome == "stale"
