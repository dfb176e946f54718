"""e2a's IETF `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` headers, on the
operations e2a's `/v1` limits: the reads counted as message polls (listMessages, getMessage,
listConversations, getConversation, listWebhooks, getWebhook, listWebhookDeliveries) and
createAgent (agent registrations, per account and per address here: the tighter one is told).

A route says it is one of them with `@rate_limited`; `stamp_rate_headers`, run after every
`/v1` request, adds the headers of the limit the request was weighed against
(`e2a_gateway.operations.rate_limits.request_rate_count`) to its answer, a refusal included —
the 429 of a full window says `RateLimit-Remaining: 0` beside its `Retry-After`, and a
createAgent refused for its body was counted and says so. A request refused before it was
weighed (a bad key) carries none, as on e2a.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from quart import Response, g

from e2a_gateway.operations.rate_limits import request_rate_count

P = ParamSpec("P")
R = TypeVar("R")

_FLAG = "e2a_rate_limited_operation"


def rate_limited(handler: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Mark a `/v1` route as one whose answers carry e2a's `RateLimit-*` headers."""

    @wraps(handler)
    async def marked(*args: P.args, **kwargs: P.kwargs) -> R:
        setattr(g, _FLAG, True)
        return await handler(*args, **kwargs)

    return marked


async def stamp_rate_headers(response: Response) -> Response:
    """After a request: the `RateLimit-*` headers of the limit it was weighed against, when
    its route is `@rate_limited` and it was weighed."""
    count = request_rate_count()
    if count is not None and getattr(g, _FLAG, False):
        response.headers["RateLimit-Limit"] = str(count.limit)
        response.headers["RateLimit-Remaining"] = str(count.remaining)
        response.headers["RateLimit-Reset"] = str(count.reset_seconds)
    return response
