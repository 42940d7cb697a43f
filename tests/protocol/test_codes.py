"""Pairing codes: what is made, how typing is read, what --code accepts."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recovery.errors import UsageError
from recovery.protocol import codes


def test_generated_codes_are_eight_digits_in_two_groups_and_differ() -> None:
    made = {codes.generate() for _ in range(200)}
    assert all(re.fullmatch(r"\d{4}-\d{4}", c) for c in made)
    assert len(made) > 190


@pytest.mark.parametrize("typed", ["4821-0937", " 4821 0937 ", "48210937", "4821_0937", "4821.0937"])
def test_spaces_and_dashes_do_not_matter(typed: str) -> None:
    assert codes.secret(typed) == codes.secret("4821-0937")


def test_a_given_code_needs_six_letters_or_digits() -> None:
    assert codes.check_given("Orbit-7 Violet") == "Orbit-7 Violet"
    assert codes.secret("Orbit-7 Violet") == codes.secret("orbit7violet")
    for short in ("abc", "ab-cd-e", "      ", "12 34 5"):
        with pytest.raises(UsageError, match="at least 6"):
            codes.check_given(short)
    with pytest.raises(UsageError, match="at most"):
        codes.check_given("x" * 200)


@given(st.text(max_size=40))
def test_any_text_normalises_without_error(text: str) -> None:
    assert codes.normalise(codes.normalise(text)) == codes.normalise(text)
