"""One live connection per agent, as e2a's `/v1` WebSocket has it: a newer connection for an
agent replaces the older one, which is told so and must not reconnect. Across replicas: each
claim is told to the others (`SocketClaimed`), and every replica keeps only the newest.

Sans-IO: which claim wins is decided here, the same way on every replica, from the claims
alone; telling and hearing them is the `/v1` socket's and the fan-out's job.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import trio

from e2a_gateway.storage.announcements import SocketClaimed


def supersedes(newer: SocketClaimed, older: SocketClaimed) -> bool:
    """True when the claim `newer` replaces `older` (same agent): the later claim time wins,
    ties broken by the greater claim id. A total order, so every replica picks alike."""
    return (newer.claimed_at, newer.claim_id) > (older.claimed_at, older.claim_id)


class ClaimClock:
    """Claim times: the wall clock in nanoseconds, but never at or behind a claim this process
    made or heard of. A claim made after hearing of another is thus newer than it, whatever
    the replicas' clocks say; only claims made before either heard of the other are ordered by
    the clocks (and the claim id)."""

    def __init__(self, now: Callable[[], int] = time.time_ns) -> None:
        self._now = now
        self._last = 0

    def next(self) -> int:
        """The time of a claim made now."""
        self._last = max(self._now(), self._last + 1)
        return self._last

    def heard(self, claimed_at: int) -> None:
        """A claim made elsewhere at `claimed_at`: the next one here comes after it."""
        self._last = max(self._last, claimed_at)


class Claim:
    """An agent's connection slot while one connection holds it (`news`, what the other
    replicas are told); `replaced` fires when a newer claim, here or elsewhere, takes it."""

    def __init__(self, news: SocketClaimed) -> None:
        self.news = news
        self.replaced = trio.Event()


class SoleConnections:
    """Which connection of this replica holds each agent's slot (by the agent's id)."""

    def __init__(
        self,
        now: Callable[[], int] = time.time_ns,
        new_claim_id: Callable[[], str] = lambda: secrets.token_hex(8),
    ) -> None:
        self._holders: dict[str, Claim] = {}
        self._clock = ClaimClock(now)
        self._new_claim_id = new_claim_id

    @contextmanager
    def claim(self, agent_id: str) -> Iterator[Claim]:
        """Hold the agent's slot while the context is open; the previous holder here is
        replaced (the clock makes the new claim the newer). Tell the other replicas of
        `Claim.news`, so they replace theirs."""
        claim = Claim(SocketClaimed(agent_id, self._clock.next(), self._new_claim_id()))
        previous = self._holders.get(agent_id)
        if previous is not None:
            previous.replaced.set()
        self._holders[agent_id] = claim
        try:
            yield claim
        finally:
            if self._holders.get(agent_id) is claim:
                del self._holders[agent_id]

    def heard(self, claimed: SocketClaimed) -> None:
        """Another replica's claim: this replica's holder of that agent's slot is replaced if
        the claim is newer; if the holder is newer, the other replica replaces its own when it
        hears of the holder's claim. A claim heard twice, or this replica's own, changes
        nothing."""
        self._clock.heard(claimed.claimed_at)
        holder = self._holders.get(claimed.agent_id)
        if holder is not None and supersedes(claimed, holder.news):
            holder.replaced.set()
