"""Every retry schedule of the gateway, named, with its parameters in one place: when to try a
failed job again, or to give up. Pure: attempt numbers and times in, a time or None out; the
jitter source is passed in, so tests decide it.

A schedule answers `next_attempt_at`; a new kind of schedule (say, fixed delays per attempt)
is one more class with that method, and a new schedule one more named constant below.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

Uniform = Callable[[float, float], float]
"""A jitter source like `random.uniform`: a number between its two arguments."""

MAX_DOUBLINGS = 32
"""Beyond this many doublings every delay is long capped; bounds the arithmetic."""


def attempt_ended(claimed_at: float, began: float, ended: float) -> float:
    """When an attempt whose job was claimed at `claimed_at` ended, on the claim's clock: the
    time it took (`began` to `ended` on the worker's clock, never less than nothing) after the
    claim. A retry is counted from it, not from the claim: an attempt that took longer than the
    next delay (a relay slow to answer, then a 4xx) would otherwise be made again at once."""
    return claimed_at + max(0.0, ended - began)


class RetrySchedule(Protocol):
    """When to try again after a failed attempt."""

    def next_attempt_at(
        self,
        attempt: int,
        *,
        now: float,
        first_at: float,
        retry_after: float | None = None,
        uniform: Uniform = random.uniform,
    ) -> float | None:
        """After the `attempt`-th attempt (counting from 1) failed at `now`, the first having
        been made (or due) at `first_at`: when to try again, or None to give up. `retry_after`
        is how long the other side asked us to wait, when it said."""
        ...


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: `first_seconds` after the first failure, doubling, capped at
    `max_seconds`, each delay scaled by a random factor within ±`jitter`; a longer Retry-After
    is waited out. It gives up after `max_attempts` attempts, or once `window_seconds` have
    passed since the first attempt: the last try is made at the window's end."""

    first_seconds: float
    max_seconds: float
    jitter: float = 0.0
    window_seconds: float | None = None
    max_attempts: int | None = None

    def delay(self, attempt: int, uniform: Uniform = random.uniform) -> float:
        """Seconds to wait after the `attempt`-th failure, jitter included."""
        doublings = min(max(attempt - 1, 0), MAX_DOUBLINGS)
        base = min(self.first_seconds * 2**doublings, self.max_seconds)
        if not self.jitter:
            return float(base)
        return float(base * uniform(1 - self.jitter, 1 + self.jitter))

    def next_attempt_at(
        self,
        attempt: int,
        *,
        now: float,
        first_at: float,
        retry_after: float | None = None,
        uniform: Uniform = random.uniform,
    ) -> float | None:
        """See `RetrySchedule.next_attempt_at`."""
        if self.max_attempts is not None and attempt >= self.max_attempts:
            return None
        window_end = None if self.window_seconds is None else first_at + self.window_seconds
        if window_end is not None and now >= window_end:
            return None
        delay = self.delay(attempt, uniform)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return now + delay if window_end is None else min(now + delay, window_end)


@dataclass(frozen=True)
class FixedDelays:
    """A frozen schedule: after the n-th failed attempt wait `delays[n - 1]` seconds (a longer
    Retry-After is waited out, up to the longest of the delays: a receiver asking for a year,
    or for more seconds than a time can hold, is tried again then); once the delays are used
    up, give up. No jitter: the times are part of a contract."""

    delays: tuple[float, ...]

    def next_attempt_at(
        self,
        attempt: int,
        *,
        now: float,
        first_at: float,
        retry_after: float | None = None,
        uniform: Uniform = random.uniform,
    ) -> float | None:
        """See `RetrySchedule.next_attempt_at`."""
        if attempt < 1 or attempt > len(self.delays):
            return None
        delay = self.delays[attempt - 1]
        if retry_after is not None:
            delay = max(delay, min(retry_after, max(self.delays)))
        return now + delay


WEBHOOK_DELIVERY = Backoff(
    first_seconds=30.0, max_seconds=3600.0, jitter=0.2, window_seconds=24 * 3600.0
)
"""A webhook POST that got no answer, a timeout, 408, 429 or 5xx (contract/delivery.md): about
30 s, doubling, capped at 1 h, jittered, honouring Retry-After, until 24 h after receipt."""

OUTBOUND_HAND_OFF = Backoff(
    first_seconds=30.0, max_seconds=3600.0, jitter=0.2, window_seconds=24 * 3600.0
)
"""Recipients the relay deferred (4xx, connection errors; contract/hitl.md): the same rhythm,
until 24 h after the message was queued for sending (sent, or approved); then they count as
failed."""

OUTBOUND_INTERNAL_ERROR = Backoff(
    first_seconds=30.0, max_seconds=3600.0, jitter=0.2, max_attempts=5
)
"""A send that failed inside the gateway (a bug, not the relay): retried a few times, then the
message fails, so a broken message cannot loop forever."""

APPROVAL_NOTICE = Backoff(first_seconds=30.0, max_seconds=3600.0)
"""An approval notice the relay deferred: 30 s doubling to 1 h. The approval worker gives up
when the next try would come after the message's approval deadline (contract/hitl.md)."""

SUBSCRIBER_DELIVERY = FixedDelays((60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 8 * 3600.0, 16 * 3600.0))
"""A `/v1` webhook delivery (e2a's frozen eight attempts): immediate, then 1 m, 5 m, 15 m, 1 h,
4 h, 8 h and 16 h after the previous one (a Retry-After waited out up to 16 h); after the
eighth fails, the delivery is `failed` (it stays redeliverable by hand)."""
