"""Per-message return paths (VERP): `bounces+<token>@<domain>` names the outbound message, and
optionally the recipient, a bounce is about. Pure, no I/O; the token is authenticated, so a
forged or altered one is refused.

Token: lowercase base32 of version ‖ message id (12 bytes) ‖ [recipient tag, 5 bytes] ‖
HMAC-SHA256 (10 bytes); 45 characters at most, so the local part stays within 64 octets. The
recipient is a tag, not the address (which may be 254 octets): `recipient_among` finds it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass

LOCAL_PART_PREFIX = "bounces+"
MAX_LOCAL_PART_OCTETS = 64
_VERSION = 1
_MESSAGE_ID = re.compile(r"^msg_([0-9a-f]{24})$")
_ID_BYTES = 12
_RECIPIENT_TAG_BYTES = 5
_MAC_BYTES = 10
_KEY_CONTEXT = b"e2a return path\x00"
_MAC_CONTEXT = b"e2a return path v1\x00"
_TAG_CONTEXT = b"e2a return path recipient\x00"
_TOKEN = re.compile(r"^[a-z2-7]+$")
_TOKEN_LENGTHS = {
    1 + _ID_BYTES + _MAC_BYTES,
    1 + _ID_BYTES + _RECIPIENT_TAG_BYTES + _MAC_BYTES,
}


@dataclass(frozen=True)
class ReturnPath:
    """What an authentic return path names: the outbound message, and (when the return path
    was made for one recipient) a tag of that recipient."""

    message_id: str
    recipient_tag: bytes | None

    def recipient_among(self, recipients: Iterable[str]) -> str | None:
        """The one of `recipients` (the message's own, from storage) this return path was made
        for; None when it was made for the whole message or names none of them."""
        if self.recipient_tag is None:
            return None
        for recipient in recipients:
            if hmac.compare_digest(_recipient_tag(self.message_id, recipient), self.recipient_tag):
                return recipient
        return None


def return_path_key(server_key: str) -> bytes:
    """The 32-byte key that authenticates return paths, derived from the gateway's server key
    (`signing.hmac_secret`); it never leaves the gateway."""
    return hmac.new(server_key.encode("utf-8"), _KEY_CONTEXT, hashlib.sha256).digest()


def return_path_for(message_id: str, recipient: str | None, key: bytes, domain: str) -> str:
    """The envelope sender `bounces+<token>@<domain>` for `message_id` (an e2a id `msg_<24
    hex>`), naming `recipient` too unless it is None (one return path for the whole message).

    Raises ValueError for a message id of another shape: only e2a's own ids fit in 64 octets.
    """
    match = _MESSAGE_ID.match(message_id)
    if match is None:
        raise ValueError(f"not an e2a message id (msg_<24 hex>): {message_id!r}")
    body = bytes([_VERSION]) + bytes.fromhex(match.group(1))
    if recipient is not None:
        body += _recipient_tag(message_id, recipient)
    token = base64.b32encode(body + _mac(key, body)).decode("ascii").rstrip("=").lower()
    return f"{LOCAL_PART_PREFIX}{token}@{domain}"


def parse_return_path(address: str, key: bytes) -> ReturnPath | None:
    """The message (and recipient tag) an envelope recipient `bounces+<token>@…` names, or None
    when the address is not one of ours, malformed, altered, or made under another key."""
    local_part, at, _domain = address.strip().strip("<>").rpartition("@")
    if not at or not local_part.lower().startswith(LOCAL_PART_PREFIX):
        return None
    token = local_part[len(LOCAL_PART_PREFIX) :].lower()
    body = _decode_token(token)
    if body is None or len(body) not in _TOKEN_LENGTHS or body[0] != _VERSION:
        return None
    signed, mac = body[:-_MAC_BYTES], body[-_MAC_BYTES:]
    if not hmac.compare_digest(_mac(key, signed), mac):
        return None
    message_id = "msg_" + signed[1 : 1 + _ID_BYTES].hex()
    tag = signed[1 + _ID_BYTES :] or None
    return ReturnPath(message_id, tag)


def _decode_token(token: str) -> bytes | None:
    """The bytes of a canonical base32 token, or None (bad alphabet, bad length, or spare bits
    set: a token has one spelling only)."""
    if not _TOKEN.match(token) or len(token) > MAX_LOCAL_PART_OCTETS:
        return None
    padded = token.upper() + "=" * (-len(token) % 8)
    try:
        body = base64.b32decode(padded)
    except binascii.Error:
        return None
    canonical = base64.b32encode(body).decode("ascii").rstrip("=").lower()
    return body if canonical == token else None


def _mac(key: bytes, signed: bytes) -> bytes:
    return hmac.new(key, _MAC_CONTEXT + signed, hashlib.sha256).digest()[:_MAC_BYTES]


def _recipient_tag(message_id: str, recipient: str) -> bytes:
    """A short digest of the recipient (case-insensitive) bound to the message, so the same
    address does not carry the same tag on two messages."""
    material = _TAG_CONTEXT + message_id.encode("ascii") + b"\x00"
    material += recipient.strip().casefold().encode("utf-8")
    return hashlib.sha256(material).digest()[:_RECIPIENT_TAG_BYTES]
