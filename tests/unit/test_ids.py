"""Run and command ids: the ULID text python-ulid gives for the same bits, ordered by time."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st
from ulid import ULID

from actors.ids import new_ulid, ulid_text


@given(st.integers(min_value=0, max_value=2**128 - 1))
def test_an_id_is_the_text_python_ulid_gives_for_the_same_bits(value: int) -> None:
    assert ulid_text(value) == str(ULID.from_int(value))


def test_the_extremes_are_the_first_and_last_ulids() -> None:
    assert ulid_text(0) == "0" * 26
    assert ulid_text(2**128 - 1) == "7" + "Z" * 25


def test_a_new_id_carries_the_time_it_was_made_and_ids_sort_by_their_millisecond() -> None:
    before = time.time()
    made = ULID.from_str(new_ulid()).timestamp
    assert before - 0.001 <= made <= time.time()
    ms = int(before * 1000)
    assert ulid_text(ms << 80 | (2**80 - 1)) < ulid_text((ms + 1) << 80)  # the last id of a ms, the next ms's first
    assert len({new_ulid() for _ in range(1000)}) == 1000
