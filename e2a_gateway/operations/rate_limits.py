"""Request rate limits: refused with the wait once a sliding window is full.

A request is allowed while fewer than the limit were allowed for its key in the window before
it; only allowed requests are counted (`e2a_gateway.rate_windows`). Counts that must hold
across replicas and restarts (agent registrations, approvals on `/v1`, feedback; sends, in the
commit that stores them) are kept in the database, a row per allowed request; message polls
are counted in this process's memory (`e2a_gateway.local_rate_counts`), so a read never waits
for a durable write.

Each count is also remembered for the request being served (`request_rate_count`): `/v1`
answers the operations e2a limits with the IETF `RateLimit-Limit`, `RateLimit-Remaining` and
`RateLimit-Reset` headers of the tightest limit the request was weighed against, refusals
included. The record lives in a context variable: a request is served in a task of its own,
so one request's count never shows on another's answer.
"""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass

from e2a_gateway.gateway import Gateway
from e2a_gateway.networks import network_of
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.errors import RateLimited
from e2a_gateway.rate_windows import RateCount, RateLimit

POLL_WINDOW_SECONDS = 60

_counted: contextvars.ContextVar[RateCount | None] = contextvars.ContextVar(
    "e2a_rate_count", default=None
)


@dataclass(frozen=True)
class NamedLimit:
    """A limit and what its refusal calls it: `what` completes "{limit} {what}", e.g. "agent
    registrations per hour from this address"."""

    limit: RateLimit
    what: str


async def count_request(gateway: Gateway, *limits: NamedLimit) -> None:
    """Weigh this request against each of `limits` in the database, counting it against all
    of them or none; RateLimited (`rate_limited`, with the whole seconds to wait, at least 1)
    by the one that refuses it longest, as the request is allowed only once all have room."""
    counts = await gateway.storage.hit_rate_limits([each.limit for each in limits], time.time())
    for count in counts:
        _remember(count)
    refusals = [pair for pair in zip(counts, limits, strict=True) if not pair[0].allowed]
    if refusals:
        count, each = max(refusals, key=lambda pair: pair[0].oldest_leaves_at)
        _refuse_when_over(count, each.what)


def count_local_request(gateway: Gateway, limit: NamedLimit) -> None:
    """Weigh this request against `limit` in this process's memory; RateLimited as
    `count_request` when it refuses it."""
    count = gateway.local_counts.hit(limit.limit, time.time())
    _remember(count)
    _refuse_when_over(count, limit.what)


def count_poll(gateway: Gateway, caller: Caller) -> None:
    """Count one message poll (a list or a read of messages, conversations or webhooks)
    against the caller, in this process's memory; RateLimited when over."""
    limit = RateLimit(
        f"message_poll:user:{caller.user_id}",
        POLL_WINDOW_SECONDS,
        gateway.settings.limits.message_polls_per_user_per_minute,
    )
    count_local_request(gateway, NamedLimit(limit, "message reads per minute for this account"))


def counted_address(gateway: Gateway, remote_addr: str | None) -> str:
    """What a per-address limit counts a client at `remote_addr` (as trusted proxies reveal
    it) by: an IPv4 address itself (also written in IPv6, `::ffff:a.b.c.d`), an IPv6 address
    by its network of `http.ipv6_network_prefix` bits, since one client usually holds a whole
    /64 and would otherwise never meet the limit."""
    prefix = gateway.settings.http.ipv6_network_prefix
    return network_of(remote_addr or "", 32, prefix).removesuffix("/32")


def request_rate_count() -> RateCount | None:
    """The tightest limit the request being served was weighed against (the fewest requests
    remaining, then the longest wait for a place to free); None when it was weighed
    against none."""
    return _counted.get()


def _remember(count: RateCount) -> None:
    kept = _counted.get()
    if kept is None or (count.remaining, -count.reset_seconds) < (
        kept.remaining,
        -kept.reset_seconds,
    ):
        _counted.set(count)


def _refuse_when_over(count: RateCount, what: str) -> None:
    """RateLimited with the whole seconds to wait (at least 1: until the oldest counted
    request leaves the window) when `count` was refused."""
    if count.wait is None:
        return
    retry_after = count.reset_seconds
    raise RateLimited(
        "rate_limited",
        f"rate limit reached: {count.limit} {what}; retry in {retry_after} seconds",
        retry_after,
    )
