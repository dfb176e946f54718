"""Stateless approval tokens for magic links (contract/hitl.md). Pure: no I/O, no clock.

A token is `base64url(payload) "." base64url(HMAC-SHA256(key, payload))` with payload
`message_id|action|expiry-unix-seconds`, keyed by the message owner's signing secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal

Action = Literal["approve", "reject"]
LINK_GRACE_SECONDS = 600


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


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("token is not base64url") from None


def issue_token(secret: str, message_id: str, action: Action, approval_deadline: int) -> str:
    """A token for `action` on `message_id`, valid until 10 minutes after the deadline."""
    payload = f"{message_id}|{action}|{approval_deadline + LINK_GRACE_SECONDS}".encode()
    mac = hmac.new(secret.encode("ascii"), payload, hashlib.sha256).digest()
    return f"{_b64encode(payload)}.{_b64encode(mac)}"


def peek_message_id(token: str) -> str:
    """The message id a token names, unverified (to find whose secret verifies it)."""
    encoded, _, _ = token.partition(".")
    message_id, _, _ = _b64decode(encoded).decode("utf-8", "replace").partition("|")
    if not message_id:
        raise TokenError("token names no message")
    return message_id


def verify_token(secret: str, token: str, now: float) -> ApprovalToken:
    """Check the token's HMAC (constant time) and expiry; TokenError or TokenExpired."""
    encoded, dot, signature = token.partition(".")
    if not dot or not encoded or not signature:
        raise TokenError("token must be payload.signature")
    payload = _b64decode(encoded)
    expected = hmac.new(secret.encode("ascii"), payload, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, _b64decode(signature)):
        raise TokenError("token signature does not match")
    parts = payload.decode("utf-8", "replace").split("|")
    well_formed = len(parts) == 3 and parts[1] in ("approve", "reject")
    if not well_formed or not (parts[2].isascii() and parts[2].isdigit()):
        raise TokenError("token payload is malformed")
    action: Action = "approve" if parts[1] == "approve" else "reject"
    token_data = ApprovalToken(parts[0], action, int(parts[2]))
    if now > token_data.expires_at:
        raise TokenExpired("this link has expired")
    return token_data
