"""The caller's credentials: API keys (to call the gateway) and signing secrets (to verify what
it delivers). A secret or key is shown once, when issued; only its metadata is kept visible."""

from __future__ import annotations

import math
import time
from typing import Any, Literal

from pydantic import Field

from e2a_gateway.accounts import (
    MAX_SIGNING_SECRETS,
    IssuedApiKey,
    IssuedSigningSecret,
    issue_api_key,
    issue_signing_secret,
)
from e2a_gateway.clock import format_timestamp, parse_timestamp, utc_now
from e2a_gateway.gateway import Gateway
from e2a_gateway.hub import Revocation
from e2a_gateway.operations.agents import owned_agent
from e2a_gateway.operations.caller import Caller, owner_still_there
from e2a_gateway.operations.errors import Invalid, NotFound
from e2a_gateway.operations.requests import RequestBody
from e2a_gateway.storage.base import ApiKey, LastOne, LimitReached, SigningSecret

UNNAMED = "unnamed"
KEYS_PER_READ = 500
"""Keys read at a time for the whole list of `list_api_keys`."""


class CreateSigningSecret(RequestBody):
    """POST /users/me/signing-secrets."""

    name: str | None = Field(default=None, max_length=100)


class CreateApiKey(RequestBody):
    """POST /users/me/api-keys."""

    name: str | None = Field(default=None, max_length=100)


class CreateScopedApiKey(RequestBody):
    """A key for the whole account (`scope` account, the default) or bound to one of its agents
    (`scope` agent with `agent_email`), optionally expiring (`expires_at`, RFC 3339)."""

    name: str | None = Field(default=None, max_length=200)
    scope: Literal["account", "agent"] | None = None
    agent_email: str | None = Field(default=None, max_length=320)
    expires_at: str | None = Field(default=None, max_length=64)


async def list_signing_secrets(gateway: Gateway, caller: Caller) -> list[SigningSecret]:
    """The caller's signing secrets, newest first (metadata only)."""
    caller.require_account("manage signing secrets")
    return await gateway.storage.list_signing_secrets(caller.user_id)


async def new_signing_secret(
    gateway: Gateway, caller: Caller, name: str | None
) -> IssuedSigningSecret:
    """Issue a signing secret for the caller; Invalid past MAX_SIGNING_SECRETS."""
    caller.require_account("manage signing secrets")
    try:
        return await issue_signing_secret(
            gateway.storage, gateway.server_key, caller.user_id, name or UNNAMED
        )
    except LimitReached:
        raise Invalid(
            "signing_secret_limit",
            f"at most {MAX_SIGNING_SECRETS} signing secrets; delete an old one first",
        ) from None


async def remove_signing_secret(gateway: Gateway, caller: Caller, secret_id: str) -> None:
    """Delete one of the caller's signing secrets: never the last one (Invalid); NotFound when
    it is not theirs."""
    caller.require_account("manage signing secrets")
    try:
        deleted = await gateway.storage.delete_signing_secret(caller.user_id, secret_id)
    except LastOne:
        raise Invalid(
            "last_signing_secret",
            "cannot delete your only signing secret; create another first",
        ) from None
    if not deleted:
        raise NotFound.of("signing secret")


async def list_api_keys(gateway: Gateway, caller: Caller) -> list[ApiKey]:
    """The caller's keys not revoked (expired ones too), newest first, prefixes only: the
    whole list `GET /users/me/api-keys` answers, which has no pages. Revoked keys, which pile
    up as keys are rotated and reach nothing, are not read."""
    found: list[ApiKey] = []
    after: tuple[Any, ...] | None = None
    while True:
        page = await api_key_page(gateway, caller, KEYS_PER_READ, after)
        found += page
        if len(page) < KEYS_PER_READ:
            return found
        after = (page[-1].created_at, page[-1].id)


async def api_key_page(
    gateway: Gateway,
    caller: Caller,
    limit: int,
    after: tuple[Any, ...] | None,
    *,
    revoked: bool = False,
) -> list[ApiKey]:
    """Up to `limit` of the caller's keys not revoked (with `revoked`, revoked ones too),
    newest first, after the position `after` (the `(created_at, id)` of the last key of the
    previous page). Expired keys are listed too, as e2a lists them: their `expires_at` shows
    they no longer work."""
    caller.require_account("manage API keys")
    position = (str(after[0]), str(after[1])) if after else None
    return await gateway.storage.api_key_page(caller.user_id, limit, position, revoked=revoked)


async def new_api_key(gateway: Gateway, caller: Caller, name: str | None) -> IssuedApiKey:
    """Issue an API key for the caller."""
    caller.require_account("manage API keys")
    with owner_still_there():
        return await issue_api_key(gateway.storage, caller.user_id, name or UNNAMED)


async def new_scoped_api_key(
    gateway: Gateway, caller: Caller, request: CreateScopedApiKey
) -> IssuedApiKey:
    """Issue an account key, or a key bound to one of the caller's agents; Invalid when the
    agent is missing for an agent key (or given for an account key) or the expiry is not a
    future RFC 3339 time."""
    caller.require_account("manage API keys")
    expires_at = _future_time(request.expires_at)
    if (request.scope or "account") == "account":
        if request.agent_email is not None:
            raise Invalid(
                "invalid_scope",
                'agent_email binds an agent key: send it with "scope": "agent"',
            )
        agent = None
    elif request.agent_email is None:
        raise Invalid(
            "invalid_request", "agent_email (the agent's address) is required when scope=agent"
        )
    else:
        agent = await owned_agent(gateway, caller, request.agent_email)
    with owner_still_there():
        return await issue_api_key(
            gateway.storage,
            caller.user_id,
            request.name or "",  # e2a keeps a key without a name nameless
            agent=agent,
            expires_at=expires_at,
        )


LAST_EXPIRY_SECONDS = 253_402_300_800
"""10000-01-01T00:00:00Z: an expiry is a time of four-digit year, as RFC 3339 writes it."""


def _future_time(text: str | None) -> str | None:
    """`text` (RFC 3339) as RFC 3339 UTC, to the whole second; Invalid unless it is such a time
    and that second is still to come."""
    if text is None:
        return None
    try:
        seconds = parse_timestamp(text).timestamp()
    except ValueError:
        message = "expires_at must be an RFC 3339 time with its offset, e.g. 2030-01-31T12:00:00Z"
        raise Invalid(
            "malformed_expires_at",
            message,
            {"fields": [{"location": "body.expires_at", "message": message}]},
        ) from None
    if math.floor(seconds) <= time.time():  # kept to the whole second, as it is stored
        raise Invalid(
            "invalid_expires_at", "expires_at must be in the future (by a second or more)"
        )
    if seconds >= LAST_EXPIRY_SECONDS:  # stored as text: a fifth digit of year sorts first
        raise Invalid("invalid_expires_at", "expires_at must be before the year 10000 (UTC)")
    return format_timestamp(seconds)


async def revoke_api_key(gateway: Gateway, caller: Caller, key_id: str) -> None:
    """Revoke one of the caller's API keys (it is refused from now on, and the WebSockets and
    dashboard streams it opened are closed); NotFound when it is not theirs."""
    caller.require_account("manage API keys")
    key_hash = await gateway.storage.revoke_api_key(caller.user_id, key_id, utc_now())
    if key_hash is None:
        raise NotFound.of("API key")
    gateway.hub.revoke(Revocation("key", key_hash))
