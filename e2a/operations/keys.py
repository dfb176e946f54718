"""The caller's credentials: API keys (to call the gateway) and signing secrets (to verify what
it delivers). A secret or key is shown once, when issued; only its metadata is kept visible."""

from __future__ import annotations

from pydantic import Field

from e2a.accounts import (
    MAX_SIGNING_SECRETS,
    IssuedApiKey,
    IssuedSigningSecret,
    issue_api_key,
    issue_signing_secret,
)
from e2a.clock import utc_now
from e2a.gateway import Gateway
from e2a.hub import Revocation
from e2a.operations.caller import Caller
from e2a.operations.errors import Invalid, NotFound
from e2a.operations.requests import RequestBody
from e2a.storage.base import ApiKey, LastOne, LimitReached, SigningSecret

UNNAMED = "unnamed"


class CreateSigningSecret(RequestBody):
    """POST /users/me/signing-secrets."""

    name: str | None = Field(default=None, max_length=100)


class CreateApiKey(RequestBody):
    """POST /users/me/api-keys."""

    name: str | None = Field(default=None, max_length=100)


async def list_signing_secrets(gateway: Gateway, caller: Caller) -> list[SigningSecret]:
    """The caller's signing secrets, newest first (metadata only)."""
    return await gateway.storage.list_signing_secrets(caller.user_id)


async def new_signing_secret(
    gateway: Gateway, caller: Caller, name: str | None
) -> IssuedSigningSecret:
    """Issue a signing secret for the caller; Invalid past MAX_SIGNING_SECRETS."""
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
    """The caller's API keys (prefixes only)."""
    return await gateway.storage.list_api_keys(caller.user_id)


async def new_api_key(gateway: Gateway, caller: Caller, name: str | None) -> IssuedApiKey:
    """Issue an API key for the caller."""
    return await issue_api_key(gateway.storage, caller.user_id, name or UNNAMED)


async def revoke_api_key(gateway: Gateway, caller: Caller, key_id: str) -> None:
    """Revoke one of the caller's API keys (it is refused from now on, and the WebSockets and
    dashboard streams it opened are closed); NotFound when it is not theirs."""
    key_hash = await gateway.storage.revoke_api_key(caller.user_id, key_id, utc_now())
    if key_hash is None:
        raise NotFound.of("API key")
    gateway.hub.revoke(Revocation("key", key_hash))
