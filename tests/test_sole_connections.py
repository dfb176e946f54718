"""One `/v1` WebSocket per agent across replicas, without I/O: the order of claims, the claim
clock, what each replica does on hearing another's claim, and the claims' NOTIFY payloads."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from itertools import count

import pytest

from e2a_gateway.hub import Hub
from e2a_gateway.hub.fanout import relay_payload
from e2a_gateway.hub.sole import Claim, ClaimClock, SoleConnections, supersedes
from e2a_gateway.storage.announcements import SocketClaimed
from e2a_gateway.storage.notify_payloads import decode_payload, encode_payloads

pytestmark = pytest.mark.backend_independent

AGENT = "agt_bot"


def fixed_clock(*readings: int) -> Callable[[], int]:
    """A wall clock that reads `readings`, then stays at the last."""
    it: Iterator[int] = iter(readings)
    last = [readings[0]]

    def now() -> int:
        last[0] = next(it, last[0])
        return last[0]

    return now


def replica(now: int, ids: str) -> SoleConnections:
    """A replica's connections whose wall clock stands at `now` and whose claim ids are
    `ids` followed by a counter."""
    numbers = count()
    return SoleConnections(fixed_clock(now), lambda: f"{ids}{next(numbers)}")


def test_the_later_claim_supersedes_and_ties_go_to_the_greater_claim_id() -> None:
    early, late = SocketClaimed(AGENT, 10, "zz"), SocketClaimed(AGENT, 11, "aa")
    assert supersedes(late, early) and not supersedes(early, late)
    tied_low, tied_high = SocketClaimed(AGENT, 10, "a"), SocketClaimed(AGENT, 10, "b")
    assert supersedes(tied_high, tied_low) and not supersedes(tied_low, tied_high)
    assert not supersedes(early, early)


def test_the_claim_clock_never_goes_back_nor_behind_what_it_heard() -> None:
    clock = ClaimClock(fixed_clock(100, 90, 90, 500))
    assert clock.next() == 100
    assert clock.next() == 101  # the wall clock stepped back
    clock.heard(1_000)  # a replica whose clock runs ahead
    assert clock.next() == 1_001
    clock.heard(5)  # an old claim moves nothing
    assert clock.next() == 1_002


def test_a_newer_local_claim_replaces_the_older_local_one() -> None:
    sole = replica(100, "a")
    with sole.claim(AGENT) as first:
        with sole.claim(AGENT) as second:
            assert first.replaced.is_set() and not second.replaced.is_set()
            assert supersedes(second.news, first.news)
        with sole.claim(AGENT) as third:  # `second` left: nothing else to replace
            assert not third.replaced.is_set()


def test_a_claim_heard_replaces_only_an_older_holder_of_that_agent() -> None:
    sole = replica(100, "b")
    with sole.claim(AGENT) as held, sole.claim("agt_other") as bystander:
        sole.heard(SocketClaimed(AGENT, held.news.claimed_at - 1, "zz"))
        assert not held.replaced.is_set()  # older: the other replica closes its own
        sole.heard(held.news)  # its own claim, echoed back
        assert not held.replaced.is_set()
        sole.heard(SocketClaimed(AGENT, held.news.claimed_at + 1, "aa"))
        assert held.replaced.is_set() and not bystander.replaced.is_set()
    sole.heard(SocketClaimed("agt_nobody", 1, "x"))  # no holder here: nothing to do


def test_a_claim_made_after_hearing_another_wins_even_with_a_slow_clock() -> None:
    behind = replica(100, "b")
    behind.heard(SocketClaimed(AGENT, 5_000, "a0"))  # from a replica whose clock runs ahead
    with behind.claim(AGENT) as later:
        assert later.news.claimed_at > 5_000
        assert supersedes(later.news, SocketClaimed(AGENT, 5_000, "a0"))


def exchange(claims: dict[str, Claim], replicas: dict[str, SoleConnections]) -> None:
    """Each replica hears every other replica's claim (after having made its own)."""
    for name, sole in replicas.items():
        for other, claim in claims.items():
            if other != name:
                sole.heard(claim.news)


@pytest.mark.parametrize(
    ("clock_a", "clock_b"),
    [(100, 100), (100, 101), (101, 100), (100, 10_000), (10_000, 100)],
)
def test_simultaneous_claims_on_two_replicas_leave_exactly_one_open(
    clock_a: int, clock_b: int
) -> None:
    """Each replica claims before hearing of the other's claim; whichever order the news
    arrives in, exactly one connection stays, the same on both sides."""
    replicas = {"a": replica(clock_a, "a"), "b": replica(clock_b, "b")}
    with ExitStack() as held:
        claims = {name: held.enter_context(sole.claim(AGENT)) for name, sole in replicas.items()}
        exchange(claims, replicas)
        exchange(claims, replicas)  # news heard twice changes nothing
        open_ = [name for name, claim in claims.items() if not claim.replaced.is_set()]
        newest = max(claims, key=lambda n: (claims[n].news.claimed_at, claims[n].news.claim_id))
        assert open_ == [newest]


def test_many_claims_on_three_replicas_leave_only_the_newest() -> None:
    replicas = {name: replica(100 + n, name) for n, name in enumerate("abc")}
    with ExitStack() as held:
        claims: list[Claim] = []
        for name in "abcabca":  # each replica claims, some hearing others' claims between
            claim = held.enter_context(replicas[name].claim(AGENT))
            claims.append(claim)
            if name == "b":
                for sole in replicas.values():
                    sole.heard(claim.news)
        for claim in claims:
            for sole in replicas.values():
                sole.heard(claim.news)
        still_open = [claim for claim in claims if not claim.replaced.is_set()]
        assert len(still_open) == 1
        assert all(supersedes(still_open[0].news, c.news) for c in claims if c is not still_open[0])


def test_a_claim_travels_as_a_notify_payload() -> None:
    news = SocketClaimed(AGENT, 1_764_000_000_123_456_789, "c0ffee")
    (payload,) = encode_payloads("me", [news])
    assert json.loads(payload) == {
        "origin": "me",
        "claimed": AGENT,
        "at": 1_764_000_000_123_456_789,
        "claim": "c0ffee",
    }
    decoded = decode_payload(payload)
    assert (decoded.origin, decoded.news) == ("me", (news,))
    for malformed in [
        {"claimed": AGENT, "at": "soon", "claim": "c"},
        {"claimed": AGENT, "at": True, "claim": "c"},
        {"claimed": "", "at": 1, "claim": "c"},
        {"claimed": AGENT, "at": 1, "claim": ""},
        {"claimed": AGENT, "at": 1},
    ]:
        with pytest.raises(ValueError):
            decode_payload(json.dumps(malformed))


def test_the_fanout_hands_other_replicas_claims_to_the_sole_connections() -> None:
    hub = Hub()
    with hub.sole.claim(AGENT) as held:
        newer = SocketClaimed(AGENT, held.news.claimed_at + 1, held.news.claim_id)
        (own,) = encode_payloads("me", [newer])
        assert relay_payload(hub, "me", own) == set()
        assert not held.replaced.is_set()  # this replica's own news: handled when it claimed
        (others,) = encode_payloads("other", [newer])
        assert relay_payload(hub, "me", others) == set()
        assert held.replaced.is_set()
