"""Managed-unsubscribe tokens: the opaque part of a `/u/{token}` link. Pure, no storage.

A token is an HMAC under a key derived from the server key of (account, sending agent,
recipient), so every replica and every retry of a send makes the same one, and one link serves
every message an agent sends to one address. The database keeps only its SHA-256, mapped to what
the link may do; the token itself is never stored nor logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

TOKEN_PREFIX = "u1_"
"""Marks the token's version: a later derivation gets another prefix, never a clash."""
_KEY_CONTEXT = b"e2a managed unsubscribe link v1"
_TOKEN = re.compile(r"u1_[A-Za-z0-9_-]{43}")


def unsubscribe_key(server_key: str) -> bytes:
    """The key tokens are made with, derived from the gateway's server key
    (`signing.hmac_secret`) for this use alone."""
    return hmac.new(server_key.encode("utf-8"), _KEY_CONTEXT, hashlib.sha256).digest()


def _field(value: str) -> bytes:
    """`value` with its length in front, so that no two tuples encode alike."""
    data = value.encode("utf-8")
    return len(data).to_bytes(8, "big") + data


def unsubscribe_token(key: bytes, user_id: str, agent_email: str, recipient: str) -> str:
    """The token of the link that suppresses `recipient` for the agent `agent_email` of the
    account `user_id` (addresses compared lowercase): `u1_` and 43 base64url characters."""
    message = b"".join(
        _field(part) for part in (user_id, agent_email.strip().lower(), recipient.strip().lower())
    )
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return TOKEN_PREFIX + base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def hash_unsubscribe_token(token: str) -> str:
    """The lowercase hex SHA-256 of a token, as stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def looks_like_token(text: str) -> bool:
    """Whether `text` has the shape of a token (what it may do is for storage to say)."""
    return _TOKEN.fullmatch(text) is not None
