"""Verification of the gateway's signed identity headers (X-E2A-Auth-*), per delivery.md.

Pure functions over the headers, the delivered bytes, a secret and a time; no I/O and no
imports from the server. Order: body hash, HMAC (constant time), then the timestamp window.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

MAX_AGE_SECONDS = 300
MAX_FUTURE_SKEW_SECONDS = 30
CLAIM_NAMES = (
    "verified",
    "sender",
    "entity-type",
    "domain-check",
    "delegation",
    "timestamp",
    "message-id",
    "body-hash",
    "signature",
)
"""What follows `X-E2A-Auth-` in the nine headers of a claim (delivery.md), lowercased."""


@dataclass(frozen=True)
class AuthHeaders:
    """The X-E2A-Auth-* claim of one delivery.

    `verified` is the gateway's *claim* that SPF or DKIM passed for the From: domain; it only
    means something once the signature over it has been checked.
    """

    verified: bool
    sender: str
    entity_type: str
    domain_check: str
    delegation: str
    signature: str
    timestamp: str
    message_id: str
    body_hash: str
    well_formed: bool = True
    """False when the headers are not one claim as the gateway writes them, and so are never
    verified: a name given twice (in two cases), a Verified other than `true` or `false`, or an
    X-E2A-Auth-* header outside the nine (a version or algorithm this SDK does not know)."""

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> AuthHeaders:
        """Read the claim from a header mapping (names in any case; other headers ignored)."""
        pairs = list(headers.items())  # every pair, repeated names too, in multi-dicts
        folded = {name.lower(): value for name, value in pairs}
        claimed = [
            name.lower()[len("x-e2a-auth-") :]
            for name, _ in pairs
            if name.lower().startswith("x-e2a-auth-")
        ]

        def value(name: str) -> str:
            return str(folded.get(f"x-e2a-auth-{name}", ""))

        well_formed = (
            len(set(claimed)) == len(claimed)
            and set(claimed) <= set(CLAIM_NAMES)
            and value("verified") in ("true", "false")
        )
        return cls(
            verified=value("verified") == "true",
            sender=value("sender"),
            entity_type=value("entity-type"),
            domain_check=value("domain-check"),
            delegation=value("delegation"),
            signature=value("signature"),
            timestamp=value("timestamp"),
            message_id=value("message-id"),
            body_hash=value("body-hash"),
            well_formed=well_formed,
        )

    def signed_values(self) -> list[str]:
        """The eight signed values, in the contract's order."""
        return [
            "true" if self.verified else "false",
            self.sender,
            self.entity_type,
            self.domain_check,
            self.delegation,
            self.timestamp,
            self.message_id,
            self.body_hash,
        ]

    def canonical_string(self) -> str:
        """The eight signed values joined with newlines, in the contract's order."""
        return "\n".join(self.signed_values())

    def unambiguous(self) -> bool:
        """Whether these headers are one claim whose canonical string no other set of values
        joins to: well formed, and no value holds a line break (the gateway signs none)."""
        return self.well_formed and not any(
            "\n" in value or "\r" in value for value in self.signed_values()
        )


def _timestamp_seconds(value: str) -> float | None:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _utf8(value: str) -> bytes:
    """`value` as UTF-8, lone surrogates included as they are: a forged JSON body may hold
    them (`"\\ud800"`), and they must make a check fail, not raise UnicodeEncodeError."""
    return value.encode("utf-8", "surrogatepass")


def _same(received: str, expected: str) -> bool:
    """Constant-time equality of a received header value and the expected hex; False, not a
    TypeError, for a received value that is not ASCII (a forged header may hold anything)."""
    return hmac.compare_digest(_utf8(received), expected.encode("ascii"))


def verify_auth_headers(
    auth: AuthHeaders,
    raw_message: bytes,
    secret: str,
    now: float | None = None,
    max_age: float | None = MAX_AGE_SECONDS,
) -> bool:
    """True when `raw_message` is what was signed, the claim is `unambiguous`, the HMAC under
    `secret` matches and the timestamp is at most `max_age` seconds old (5 minutes; None: any
    age, for a claim stored when its message was accepted, as `e2a listen --forward` passes on)
    and at most 30 s in the future."""
    if not auth.signature or not secret or not auth.unambiguous():
        return False
    if not _same(auth.body_hash, hashlib.sha256(raw_message).hexdigest()):
        return False
    expected = hmac.new(
        secret.encode("ascii", "replace"), _utf8(auth.canonical_string()), hashlib.sha256
    ).hexdigest()
    if not _same(auth.signature, expected):
        return False
    signed_at = _timestamp_seconds(auth.timestamp)
    if signed_at is None:
        return False
    age = (time.time() if now is None else now) - signed_at
    return age >= -MAX_FUTURE_SKEW_SECONDS and (max_age is None or age <= max_age)
