"""Users and their credentials: bootstrap, API keys and signing secrets.

Shared by the CLI (`e2a bootstrap`) and the REST API so both create credentials the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from e2a_gateway.clock import utc_now
from e2a_gateway.ids import new_id
from e2a_gateway.signing.credentials import (
    SECRET_PREFIX_LENGTH,
    derive_signing_secret,
    generate_api_key,
    new_secret_seed,
)
from e2a_gateway.storage.base import Accounts, Agent, ApiKey, SigningSecret, User

MAX_SIGNING_SECRETS = 5
DEFAULT_SECRET_NAME = "default"


@dataclass(frozen=True)
class IssuedApiKey:
    """An API key just created: its metadata and its plaintext, shown once."""

    key: ApiKey
    plaintext: str


@dataclass(frozen=True)
class IssuedSigningSecret:
    """A signing secret just created: its metadata and its plaintext, shown once."""

    secret: SigningSecret
    plaintext: str


async def issue_api_key(
    storage: Accounts,
    user_id: str,
    name: str,
    *,
    agent: Agent | None = None,
    expires_at: str | None = None,
) -> IssuedApiKey:
    """Create and store a new API key for the user: an account key, or bound to `agent` (one
    of the user's) when given; valid until `expires_at` (RFC 3339 UTC) when given."""
    generated = generate_api_key()
    key = ApiKey(
        id=new_id("apk"),
        user_id=user_id,
        name=name,
        key_prefix=generated.prefix,
        created_at=utc_now(),
        last_used_at=None,
        revoked_at=None,
        scope="account" if agent is None else "agent",
        agent_id=None if agent is None else agent.id,
        expires_at=expires_at,
        agent_email=None if agent is None else agent.email,
    )
    await storage.add_api_key(key, generated.key_hash)
    return IssuedApiKey(key, generated.plaintext)


async def issue_signing_secret(
    storage: Accounts, server_key: str, user_id: str, name: str
) -> IssuedSigningSecret:
    """Create a signing secret for the user (LimitReached past MAX_SIGNING_SECRETS)."""
    seed = new_secret_seed()
    plaintext = derive_signing_secret(server_key, seed)
    secret = SigningSecret(
        id=new_id("wsec"),
        user_id=user_id,
        name=name,
        seed=seed,
        secret_prefix=plaintext[:SECRET_PREFIX_LENGTH],
        created_at=utc_now(),
        last_signed_at=None,
    )
    await storage.add_signing_secret(secret, MAX_SIGNING_SECRETS)
    return IssuedSigningSecret(secret, plaintext)


async def bootstrap_user(
    storage: Accounts, server_key: str, email: str
) -> tuple[User, IssuedApiKey, bool]:
    """Create the user if needed (with a `default` signing secret) and issue a new API key.

    Safe to repeat: a user left without a signing secret by an interrupted run gets one.

    Returns (user, key, created) where `created` tells whether the user is new.
    """
    user, created = await storage.ensure_user(new_id("usr"), email, utc_now())
    if not await storage.list_signing_secrets(user.id):
        await issue_signing_secret(storage, server_key, user.id, DEFAULT_SECRET_NAME)
    key = await issue_api_key(storage, user.id, "bootstrap")
    return user, key, created
