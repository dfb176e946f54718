"""Dashboard session tokens: sealed, expiring cookies naming an API key by its hash. Pure, no I/O.

A token is `base64url(SecretBox(key, payload))` where the key is derived from the gateway's
server key and the payload names the signed-in API key by its SHA-256 hash (never the key
itself), the owner, an expiry, the session's CSRF token and its id (what signing out records).
Sealing both hides and authenticates it: a browser can neither read nor alter what it carries.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

import nacl.exceptions
import nacl.secret

SESSION_SECONDS = 12 * 3600
"""A session ends this long after sign-in, whatever happens in between."""
TOKEN_VERSION = 1
_KEY_CONTEXT = b"e2a dashboard session\x00"
_ID_CONTEXT = b"e2a dashboard session id\x00"
_MAX_TOKEN_CHARS = 1024


class SessionInvalid(ValueError):
    """The token is malformed, forged, sealed under another key, or expired."""


@dataclass(frozen=True)
class SessionClaims:
    """What a session token says: whose key, until when, its CSRF token and its id."""

    key_hash: str
    user_id: str
    expires_at: int
    csrf_token: str
    session_id: str


def session_key(server_key: str) -> bytes:
    """The 32-byte sealing key for session tokens, derived from the gateway's server key."""
    return hmac.new(server_key.encode("utf-8"), _KEY_CONTEXT, hashlib.sha256).digest()


def new_claims(key_hash: str, user_id: str, now: float) -> SessionClaims:
    """Claims for a session starting at `now` with a fresh random CSRF token and id."""
    return SessionClaims(
        key_hash,
        user_id,
        int(now) + SESSION_SECONDS,
        secrets.token_hex(16),
        secrets.token_hex(16),
    )


def unnamed_session_id(csrf_token: str) -> str:
    """The id of a session sealed before sessions had one (it still lives up to
    SESSION_SECONDS after an upgrade): derived from its CSRF token, random per session, so that
    it too can be signed out; hashed, so a stored id never reveals the token."""
    return hashlib.sha256(_ID_CONTEXT + csrf_token.encode()).hexdigest()[:32]


def seal(key: bytes, claims: SessionClaims) -> str:
    """The cookie value carrying `claims`, encrypted and authenticated under `key`."""
    payload = json.dumps(
        {
            "v": TOKEN_VERSION,
            "k": claims.key_hash,
            "u": claims.user_id,
            "exp": claims.expires_at,
            "csrf": claims.csrf_token,
            "sid": claims.session_id,
        },
        separators=(",", ":"),
    ).encode()
    sealed = nacl.secret.SecretBox(key).encrypt(payload)
    return base64.urlsafe_b64encode(bytes(sealed)).decode("ascii").rstrip("=")


def unseal(key: bytes, token: str, now: float) -> SessionClaims:
    """The claims of a genuine, unexpired token; SessionInvalid otherwise."""
    if not token or len(token) > _MAX_TOKEN_CHARS:
        raise SessionInvalid("no session token")
    try:
        sealed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(nacl.secret.SecretBox(key).decrypt(sealed))
        csrf_token = str(data["csrf"])
        claims = SessionClaims(
            key_hash=str(data["k"]),
            user_id=str(data["u"]),
            expires_at=int(data["exp"]),
            csrf_token=csrf_token,
            session_id=str(data["sid"]) if "sid" in data else unnamed_session_id(csrf_token),
        )
        version = data["v"]
    except (
        binascii.Error,
        ValueError,
        TypeError,
        KeyError,
        nacl.exceptions.CryptoError,
    ):
        raise SessionInvalid("session token is not genuine") from None
    if version != TOKEN_VERSION:
        raise SessionInvalid("session token is from another version")
    if claims.expires_at <= now:
        raise SessionInvalid("session expired")
    return claims


def same_token(expected: str, presented: str | None) -> bool:
    """Constant-time comparison of a CSRF token with what a form presented."""
    if not presented:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())
