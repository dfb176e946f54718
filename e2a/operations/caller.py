"""Who is calling: the account an API key belongs to, found from the key (stored hashed).

Every operation takes a `Caller`; every storage query an operation makes is scoped by the
caller's user id, so ownership is decided inside the query, never by a check left to a face.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from e2a.gateway import Gateway
from e2a.operations.errors import Unauthorized
from e2a.signing.credentials import hash_api_key, is_well_formed_api_key
from e2a.storage.base import User

Scope = Literal["account"]
"""What a key may reach: today every key reaches its whole account."""


@dataclass(frozen=True)
class Caller:
    """The owner of the key a request presented, the key (by its SHA-256 hash, never the key
    itself) and what the key may reach."""

    user: User
    key_hash: str
    scope: Scope = "account"

    @property
    def user_id(self) -> str:
        """The id every query of this caller is scoped by."""
        return self.user.id


async def authenticate(gateway: Gateway, key: str | None) -> Caller:
    """The caller `key` stands for; Unauthorized saying what is wrong with it otherwise."""
    if key is None:
        raise Unauthorized("unauthorized", "missing API key: send 'Authorization: Bearer e2a_…'")
    if not is_well_formed_api_key(key):
        raise Unauthorized("unauthorized", "malformed API key: expected e2a_ followed by 64 hex")
    caller = await caller_for_key_hash(gateway, hash_api_key(key))
    if caller is None:
        raise Unauthorized("unauthorized", "unknown or revoked API key")
    return caller


async def caller_for_key_hash(gateway: Gateway, key_hash: str) -> Caller | None:
    """The caller of the key with this hash, or None once it is revoked or unknown (a
    dashboard session names its key this way)."""
    user = await gateway.storage.user_for_key_hash(key_hash)
    return None if user is None else Caller(user, key_hash)
