"""The signed identity claim: X-E2A-Auth-* headers, their canonical string and HMAC.

Pure functions, following contract/delivery.md exactly: eight values joined with `\\n` in a
fixed order, HMAC-SHA256 keyed by the owner's signing secret (its hex string as ASCII bytes),
and a body hash over the exact bytes delivered. No I/O, no clock of its own.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

HEADER_PREFIX = "X-E2A-Auth-"
VERIFIED = "X-E2A-Auth-Verified"
SENDER = "X-E2A-Auth-Sender"
ENTITY_TYPE = "X-E2A-Auth-Entity-Type"
DOMAIN_CHECK = "X-E2A-Auth-Domain-Check"
DELEGATION = "X-E2A-Auth-Delegation"
TIMESTAMP = "X-E2A-Auth-Timestamp"
MESSAGE_ID = "X-E2A-Auth-Message-Id"
BODY_HASH = "X-E2A-Auth-Body-Hash"
SIGNATURE = "X-E2A-Auth-Signature"
SIGNED_HEADERS = (
    VERIFIED,
    SENDER,
    ENTITY_TYPE,
    DOMAIN_CHECK,
    DELEGATION,
    TIMESTAMP,
    MESSAGE_ID,
    BODY_HASH,
    SIGNATURE,
)
"""The nine headers of a signed claim, in the order `IdentityClaim.signed_headers` gives them."""


_AUTH_FIELD = re.compile(rb"^x-e2a-auth-[^:]*:", re.IGNORECASE)
_ENCODED_WORD = re.compile(rb"=\?[^?\s]*\?[bq]\?[^?\s]*\?=", re.IGNORECASE)
"""An RFC 2047 encoded word: `=?charset?b-or-q?text?=`."""
_AUTH_NAME = re.compile(r"\s*x-e2a-auth-", re.IGNORECASE)


@dataclass(frozen=True)
class IdentityClaim:
    """What the gateway asserts about a delivered message, before signing."""

    verified: bool
    sender: str
    entity_type: str
    domain_check: str
    delegation: str
    timestamp: str
    message_id: str
    body_hash: str

    def canonical_string(self) -> str:
        """The eight values joined with newlines, in contract order, no trailing newline."""
        return CopiesClaim(self).canonical_string(self.message_id)

    def signed_headers(self, secret: str) -> dict[str, str]:
        """All nine X-E2A-Auth-* headers, the signature computed with `secret`."""
        return CopiesClaim(self).signed_headers(self.message_id, secret)


class CopiesClaim:
    """`claim` made by each agent's copy of one message, the message id being the copy's own.
    Made once per message, it signs each copy without building that copy's claim and canonical
    string from the start (a message for fifty agents is signed fifty times)."""

    __slots__ = ("_before_message_id", "_body_hash", "_keyed", "_shared_headers")

    def __init__(self, claim: IdentityClaim) -> None:
        self._body_hash = _single_line(BODY_HASH, claim.body_hash)
        self._shared_headers = {
            VERIFIED: "true" if claim.verified else "false",
            SENDER: claim.sender,
            ENTITY_TYPE: claim.entity_type,
            DOMAIN_CHECK: claim.domain_check,
            DELEGATION: claim.delegation,
            TIMESTAMP: claim.timestamp,
        }
        """The six headers before the message id, in contract order."""
        for name, value in self._shared_headers.items():
            _single_line(name, value)
        self._before_message_id = "".join(f"{value}\n" for value in self._shared_headers.values())
        """The canonical string up to the message id, its newline included."""
        self._keyed: dict[str, hmac.HMAC] = {}
        """Per secret, the HMAC of `_before_message_id` so far: each copy's signature goes on
        from a copy of it (the same MAC as over its whole canonical string)."""

    def canonical_string(self, message_id: str) -> str:
        """The canonical string of the copy `message_id`: the eight values joined with
        newlines, in contract order, no trailing newline."""
        return f"{self._before_message_id}{_single_line(MESSAGE_ID, message_id)}\n{self._body_hash}"

    def signed_headers(self, message_id: str, secret: str) -> dict[str, str]:
        """All nine X-E2A-Auth-* headers of the copy `message_id`, signed with `secret`."""
        keyed = self._keyed.get(secret)
        if keyed is None:
            keyed = hmac.new(
                secret.encode("ascii"), self._before_message_id.encode("utf-8"), hashlib.sha256
            )
            self._keyed[secret] = keyed
        mac = keyed.copy()
        mac.update(f"{_single_line(MESSAGE_ID, message_id)}\n{self._body_hash}".encode())
        return {
            **self._shared_headers,
            MESSAGE_ID: message_id,
            BODY_HASH: self._body_hash,
            SIGNATURE: mac.hexdigest(),
        }


def _single_line(name: str, value: str) -> str:
    """`value`, which is to be signed as `name`; ValueError when it holds a line break: the
    canonical string joins the values with newlines, and is unambiguous only while none holds
    one (the sender is read without control characters: `lowercase_address`)."""
    if "\n" in value or "\r" in value:
        raise ValueError(f"{name}: a signed value cannot hold a line break: {value!r}")
    return value


def body_hash(raw: bytes) -> str:
    """Lowercase hex SHA-256 of the delivered bytes."""
    return hashlib.sha256(raw).hexdigest()


def claim_from_headers(headers: Mapping[str, str]) -> IdentityClaim:
    """Read a claim back from its headers (missing values read as empty)."""
    return IdentityClaim(
        verified=headers.get(VERIFIED, "").lower() == "true",
        sender=headers.get(SENDER, ""),
        entity_type=headers.get(ENTITY_TYPE, ""),
        domain_check=headers.get(DOMAIN_CHECK, ""),
        delegation=headers.get(DELEGATION, ""),
        timestamp=headers.get(TIMESTAMP, ""),
        message_id=headers.get(MESSAGE_ID, ""),
        body_hash=headers.get(BODY_HASH, ""),
    )


def split_header_block(raw: bytes) -> tuple[bytes, bytes]:
    """Split a message into (header block incl. its final CRLF, rest incl. the blank line)."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        index = raw.find(separator)
        if index != -1:
            cut = index + len(separator) // 2
            return raw[:cut], raw[cut:]
    return raw, b""


def strip_auth_headers(raw: bytes) -> bytes:
    """Remove every X-E2A-Auth-* header field (with its folded lines) from the header block:
    any case, and with a name written as RFC 2047 encoded words too (no parser should decode
    a field name, but one that did must not find our claim there either)."""
    headers, rest = split_header_block(raw)
    kept: list[bytes] = []
    dropping = False
    for line in headers.splitlines(keepends=True):
        if line[:1] not in (b" ", b"\t"):
            dropping = _is_auth_field(line)
        if not dropping:
            kept.append(line)
    return b"".join(kept) + rest


def _is_auth_field(line: bytes) -> bool:
    """Whether the field starting on `line` is named X-E2A-Auth-*, read as written or with
    the encoded words in its name decoded."""
    if _AUTH_FIELD.match(line) is not None:
        return True
    name, colon, _ = line.partition(b":")
    if not colon or _ENCODED_WORD.search(name) is None:
        return False
    decoded = _ENCODED_WORD.sub(_decoded_word, name).decode("latin-1")
    return _AUTH_NAME.match(decoded) is not None


def _decoded_word(word: re.Match[bytes]) -> bytes:
    """The text of one RFC 2047 encoded word, as ASCII-compatible bytes (its charset is not
    trusted: what matters is whether the name spells X-E2A-Auth-); itself when undecodable."""
    _, _, encoding, text, _ = word.group(0).split(b"?")
    try:
        if encoding.lower() == b"q":
            return binascii.a2b_qp(text.replace(b"_", b" "), header=True)
        return base64.b64decode(text + b"=" * (-len(text) % 4))
    except (ValueError, binascii.Error):
        return word.group(0)
