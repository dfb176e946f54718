"""API-key authentication of the REST routes (`/api/v1` and `/v1`): `Authorization: Bearer
e2a_<64 hex>` resolves to the caller (an account or an agent key), or 401 `unauthorized`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Concatenate, ParamSpec, TypeVar

from quart import request

from e2a_gateway.operations.caller import Caller, authenticate
from e2a_gateway.web.context import bearer_key, current_gateway

P = ParamSpec("P")
R = TypeVar("R")


def requires_caller(
    handler: Callable[Concatenate[Caller, P], Awaitable[R]],
) -> Callable[P, Awaitable[R]]:
    """Decorate a route so it runs only for a valid key, receiving the caller first."""

    @wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        caller = await authenticate(current_gateway(), bearer_key(request.headers))
        return await handler(caller, *args, **kwargs)

    return wrapper
