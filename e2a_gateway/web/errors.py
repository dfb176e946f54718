"""The HTTP status and headers each kind of refusal answers with, for every HTTP face, so REST,
the dashboard and MCP over HTTP report one refusal the same way."""

from __future__ import annotations

from collections.abc import Mapping

from e2a_gateway.operations.errors import (
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    NotFound,
    OperationError,
    PreconditionUnmet,
    RateLimited,
    Unauthorized,
    Unavailable,
    Undeliverable,
    Unprocessable,
)

STATUSES: dict[type[OperationError], int] = {
    Invalid: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    Gone: 410,
    PreconditionUnmet: 412,
    Undeliverable: 422,
    Unprocessable: 422,
    RateLimited: 429,
    Unavailable: 503,
}


def status_of(
    error: OperationError, statuses: Mapping[type[OperationError], int] = STATUSES
) -> int:
    """The HTTP status of `error`: of its nearest kind in `statuses` (default STATUSES; `/v1`
    passes its own), 500 for a kind it does not name."""
    for kind in type(error).__mro__:
        if kind in statuses:
            return statuses[kind]
    return 500


def headers_of(error: OperationError) -> dict[str, str]:
    """Headers the answer to `error` carries: `Retry-After` when the wait is known."""
    if isinstance(error, RateLimited) and error.retry_after is not None:
        return {"Retry-After": str(error.retry_after)}
    return {}
