"""Reply tokens: the per-notice secret in `approvals+<token>@<smtp.hostname>`. Pure, no storage.

A token is 128 random bits in lowercase base32 (26 letters and digits, safe in a local part
and unchanged by servers that fold its case). The database keeps only its SHA-256; what the
token is bound to (message, reviewer, notice Message-ID) lives in that row.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass

REPLY_LOCAL_PREFIX = "approvals+"
TOKEN_LENGTH = 26
_TOKEN = re.compile(r"[a-z2-7]{26}")
_IN_ADDRESS = re.compile(r"(approvals\+)[^@\s>]+(?=@)", re.IGNORECASE)


@dataclass(frozen=True)
class NewReplyToken:
    """A freshly generated reply token: the plaintext goes in the notice, the hash is stored."""

    plaintext: str
    token_hash: str


def hash_reply_token(token: str) -> str:
    """The lowercase hex SHA-256 of a reply token, as stored."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def generate_reply_token() -> NewReplyToken:
    """A new random reply token with its hash."""
    plaintext = base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()
    return NewReplyToken(plaintext, hash_reply_token(plaintext))


def reply_address(token: str, hostname: str) -> str:
    """`approvals+<token>@<hostname>`: where replies to a notice go."""
    return f"{REPLY_LOCAL_PREFIX}{token}@{hostname}"


def token_in_local_part(local_part: str) -> str | None:
    """The token of a local part `approvals+<token>` (any case), or None when it is not one."""
    folded = local_part.lower()
    if not folded.startswith(REPLY_LOCAL_PREFIX):
        return None
    token = folded[len(REPLY_LOCAL_PREFIX) :]
    return token if _TOKEN.fullmatch(token) else None


def redact_reply_tokens(text: str) -> str:
    """`text` (a log line's addresses) with every reply address's token replaced by `…`:
    tokens are secrets and never logged."""
    if "+" not in text:  # no reply address: the common case, a session's every message
        return text
    return _IN_ADDRESS.sub(r"\1…", text)
