"""Stateless approval tokens for magic links (contract/hitl.md). Pure: no I/O, no clock.

A token is `base64url(payload) "." base64url(HMAC-SHA256(key, payload))` with payload
`message_id|action|expiry-unix-seconds`, keyed by a key only the gateway can compute (derived
from its server key) — never by a signing secret, which every webhook receiver holds.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Literal

Action = Literal["approve", "reject"]
LINK_GRACE_SECONDS = 600
_KEY_CONTEXT = b"e2a magic link\x00"
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


class TokenError(ValueError):
    """The token is malformed or its signature does not match (answer 400)."""


class TokenExpired(ValueError):
    """The token was genuine but its expiry has passed (answer 410)."""


@dataclass(frozen=True)
class ApprovalToken:
    """What a verified token says."""

    message_id: str
    action: Action
    expires_at: int


def link_key(server_key: str) -> bytes:
    """The 32-byte key magic links are signed with: HMAC-SHA256 of a fixed context under the
    gateway's server key (`signing.hmac_secret`). Signing secrets are derived under another
    context, so holding one says nothing about this key."""
    return hmac.new(server_key.encode("utf-8"), _KEY_CONTEXT, hashlib.sha256).digest()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    """The bytes of canonical unpadded base64url `text`: the URL-safe alphabet only, no
    padding, and exactly the spelling `_b64encode` gives those bytes (so unused low bits in
    the last character must be zero). Anything else is a TokenError."""
    if not _BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        raise TokenError("token is not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("token is not base64url") from None
    if _b64encode(data) != text:
        raise TokenError("token is not canonical base64url")
    return data


def issue_token(key: bytes, message_id: str, action: Action, approval_deadline: int) -> str:
    """A token for `action` on `message_id`, valid until 10 minutes after the deadline."""
    payload = f"{message_id}|{action}|{approval_deadline + LINK_GRACE_SECONDS}".encode()
    mac = hmac.new(key, payload, hashlib.sha256).digest()
    return f"{_b64encode(payload)}.{_b64encode(mac)}"


def verify_token(key: bytes, token: str, now: float) -> ApprovalToken:
    """Check the token's spelling, its HMAC (constant time) and its expiry; TokenError or
    TokenExpired."""
    encoded, dot, signature = token.partition(".")
    if not dot:
        raise TokenError("token must be payload.signature")
    payload = _b64decode(encoded)
    expected = hmac.new(key, payload, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, _b64decode(signature)):
        raise TokenError("token signature does not match")
    try:
        parts = payload.decode("utf-8").split("|")
    except UnicodeDecodeError:
        raise TokenError("token payload is malformed") from None
    well_formed = len(parts) == 3 and parts[0] and parts[1] in ("approve", "reject")
    if not well_formed or not (parts[2].isascii() and parts[2].isdigit()):
        raise TokenError("token payload is malformed")
    action: Action = "approve" if parts[1] == "approve" else "reject"
    token_data = ApprovalToken(parts[0], action, int(parts[2]))
    if now > token_data.expires_at:
        raise TokenExpired("this link has expired")
    return token_data
