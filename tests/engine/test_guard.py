"""The serving side's code guard: one attempt at a time, a new code after three wrong ones,
and growing waits after that; a given code is rate-limited instead of replaced."""

from __future__ import annotations

from recovery.engine.guard import MAX_TRIES, CodeGuard
from recovery.protocol import codes


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_attempt_at_a_time() -> None:
    guard = CodeGuard("secret-code")
    first = guard.admit()
    assert first.secret == codes.secret("secret-code")
    second = guard.admit()
    assert second.secret is None and second.reason == "busy"
    guard.done(False)
    assert guard.admit().secret is not None


def test_a_made_code_is_replaced_after_three_wrong_tries_and_announced() -> None:
    clock = Clock()
    announced: list[tuple[str, str]] = []
    guard = CodeGuard(on_new_code=lambda code, why: announced.append((code, why)), clock=clock)
    old = guard.code
    for _ in range(MAX_TRIES - 1):
        assert guard.admit().secret == codes.secret(old)
        guard.done(False)
    assert guard.tries_left == 1 and not announced
    guard.admit()
    guard.done(False)
    assert guard.code != old and announced == [(guard.code, announced[0][1])]
    assert "3 wrong codes" in announced[0][1]
    assert guard.admit().reason == "locked"  # and a short wait before the next try
    clock.now += 1.1
    assert guard.admit().secret == codes.secret(guard.code)


def test_a_given_code_stays_and_each_further_wrong_try_waits_twice_as_long() -> None:
    clock = Clock()
    guard = CodeGuard("secret-code", clock=clock)
    waits = []
    for _ in range(MAX_TRIES + 4):
        while guard.admit().secret is None:
            clock.now += 0.5
        guard.done(False)
        waits.append(guard.locked_until - clock.now if guard.locked_until > clock.now else 0.0)
    assert guard.code == "secret-code"
    assert waits[:MAX_TRIES - 1] == [0.0] * (MAX_TRIES - 1)  # a typo or two is forgiven
    assert waits[MAX_TRIES - 1:] == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_a_success_starts_the_count_again() -> None:
    guard = CodeGuard("secret-code")
    for _ in range(2):
        guard.admit()
        guard.done(False)
    guard.admit()
    guard.done(True)
    assert guard.failures == 0 and guard.tries_left == MAX_TRIES


def test_renew_makes_a_new_code_unless_one_was_given() -> None:
    made = CodeGuard()
    old = made.code
    assert made.renew() != old
    given = CodeGuard("secret-code")
    assert given.renew() == "secret-code"
