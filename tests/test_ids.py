"""Ids: a type prefix, then 24 hex digits that sort by creation time."""

from __future__ import annotations

import os
import re
import time

import pytest

from e2a_gateway.ids import new_id, new_ids

pytestmark = pytest.mark.backend_independent

ID_FORM = re.compile(r"^msg_[0-9a-f]{24}$")


def test_an_id_is_its_prefix_and_24_hex_digits() -> None:
    assert ID_FORM.match(new_id("msg"))
    assert new_id("evt").startswith("evt_")


def test_ids_start_with_the_millisecond_they_were_made_in() -> None:
    before = time.time_ns() // 1_000_000
    made = new_id("msg")
    after = time.time_ns() // 1_000_000
    assert before <= int(made[4:16], 16) <= after


def test_ids_made_later_sort_later_and_never_repeat() -> None:
    """What keeps the unique indexes on ids growing at their end (one page per batch)."""
    first = [new_id("msg") for _ in range(2000)]
    time.sleep(0.002)
    second = [new_id("msg") for _ in range(2000)]
    assert len(set(first + second)) == 4000
    assert max(first) < min(second)


def test_ids_made_together_share_their_millisecond_and_differ() -> None:
    """`new_ids`: what a message's copies for many agents are named by."""
    before = time.time_ns() // 1_000_000
    made = new_ids("msg", 50)
    after = time.time_ns() // 1_000_000
    assert len(made) == len(set(made)) == 50
    assert all(ID_FORM.match(one) for one in made)
    assert len({one[4:16] for one in made}) == 1
    assert before <= int(made[0][4:16], 16) <= after
    assert new_ids("msg", 0) == []


@pytest.mark.parametrize("count", [1, 2, 3, 9, 10, 11, 20, 57])
def test_ids_made_together_in_any_number_are_whole_and_distinct(count: int) -> None:
    """Many ids are cut from one hash ten at a time: every count gets whole ids, none twice,
    none shared with the next batch."""
    made = new_ids("msg", count)
    following = new_ids("msg", count)
    assert len(made) == count
    assert all(ID_FORM.match(one) for one in made + following)
    assert len({one[16:] for one in made + following}) == 2 * count


def test_a_forked_child_makes_other_ids_than_its_parent() -> None:
    """Its key is drawn anew, so parent and child never make the same id in one millisecond."""
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child process
        os.close(reading)
        os.write(writing, "".join(new_id("msg") for _ in range(100)).encode())
        os._exit(0)
    os.close(writing)
    ours = {new_id("msg")[16:] for _ in range(100)}
    with os.fdopen(reading, "rb") as pipe:
        text = pipe.read().decode()
    os.waitpid(child, 0)
    theirs = {text[index + 16 : index + 28] for index in range(0, len(text), 28)}
    assert len(theirs) == 100 and ours.isdisjoint(theirs)
