"""API-key authentication: `Authorization: Bearer e2a_<64 hex>` resolves to a user or 401."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Concatenate, ParamSpec, TypeVar

from quart import current_app, request
from werkzeug.datastructures import Headers

from e2a.api.errors import ApiError
from e2a.gateway import Gateway
from e2a.signing.credentials import hash_api_key, is_well_formed_api_key
from e2a.storage.base import Storage, User

P = ParamSpec("P")
R = TypeVar("R")


def gateway() -> Gateway:
    """The Gateway the running app serves."""
    found: Gateway = current_app.config["E2A_GATEWAY"]
    return found


def bearer_key(headers: Headers) -> str | None:
    """The key in an `Authorization: Bearer …` header, or None."""
    scheme, _, value = str(headers.get("Authorization", "")).partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


async def user_for_key(storage: Storage, key: str | None) -> User:
    """Return the owner of `key` in `storage`, or raise 401 saying what is wrong."""
    if key is None:
        raise ApiError(401, "unauthorized", "missing API key: send 'Authorization: Bearer e2a_…'")
    if not is_well_formed_api_key(key):
        raise ApiError(401, "unauthorized", "malformed API key: expected e2a_ followed by 64 hex")
    user = await storage.user_for_key_hash(hash_api_key(key))
    if user is None:
        raise ApiError(401, "unauthorized", "unknown or revoked API key")
    return user


async def authenticate(key: str | None) -> User:
    """Return the owner of `key` (in the running app's storage), or raise 401."""
    return await user_for_key(gateway().storage, key)


def requires_user(
    handler: Callable[Concatenate[User, P], Awaitable[R]],
) -> Callable[P, Awaitable[R]]:
    """Decorate a route so it runs only for a valid key, receiving the key's owner first."""

    @wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        user = await authenticate(bearer_key(request.headers))
        return await handler(user, *args, **kwargs)

    return wrapper
