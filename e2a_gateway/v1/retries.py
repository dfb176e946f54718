"""When the SDK makes a request again, and after how long: the policy both clients follow.

An error whose `retryable` is true (`errors.is_retryable`, e2a's SDK 5.x rule: a 408, a 429,
any 5xx but a 501 `not_implemented`, an `idempotency_in_flight` 409 while the first request
with its key is still being made), or no answer at all (`E2AConnectionError`: the connection
refused, dropped or timed out) is tried again, at most `max_retries` times, for a call a repeat
cannot make twice: a read, a PUT or DELETE, or a write carrying an Idempotency-Key (sends,
replies and approvals always carry one). The wait is the answer's `Retry-After`; an answer
asking for more than LONGEST_WAIT_SECONDS is raised at once (the caller decides whether to wait
that long), and one naming no wait (no answer included) is tried after a jittered, doubling
pause. No I/O here.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import httpx

from e2a_gateway.v1.endpoints import Call
from e2a_gateway.v1.errors import E2AApiError, E2AConnectionError, retry_after_seconds

MAX_RETRIES = 2
"""How many times a call is tried again by default (e2a's SDK 5.x tries as often)."""
LONGEST_WAIT_SECONDS = 60.0
"""The longest `Retry-After` waited out; a longer one is raised with the error."""
FIRST_PAUSE_SECONDS = 0.5
"""The pause before the first retry of an answer naming no wait; it doubles each time."""


def retry_delay(
    call: Call[Any],
    outcome: httpx.Response | E2AConnectionError,
    retries_made: int,
    max_retries: int,
    *,
    jitter: Callable[[], float] = random.random,
) -> float | None:
    """Seconds to wait before making `call` again after `outcome` (its answer, or the error
    saying there was none), or None to settle with it (a success, an error no retry clears,
    a call a repeat could make twice, the retries spent, or a wait longer than
    LONGEST_WAIT_SECONDS)."""
    if retries_made >= max_retries or not call.repeatable:
        return None
    if isinstance(outcome, E2AConnectionError):
        asked = None if outcome.retryable else float("inf")
    elif outcome.is_error and E2AApiError.from_response(outcome).retryable:
        asked = retry_after_seconds(outcome.headers.get("retry-after"))
    else:
        return None
    if asked is None:
        return float(FIRST_PAUSE_SECONDS * 2**retries_made * (0.5 + 0.5 * jitter()))
    return asked if asked <= LONGEST_WAIT_SECONDS else None
