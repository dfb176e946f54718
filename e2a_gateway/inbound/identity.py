"""Deciding what the gateway asserts about an inbound message. Pure: no I/O, no clock.

- the delivered bytes: incoming X-E2A-Auth-* headers removed, our Authentication-Results on
  top, and above it the trace fields (Return-Path, Received);
- whether the mail was produced by this deployment (trusted conversation ids, entity `agent`);
- the identity claim that is signed for each recipient (the body hash, computed once per
  message, is the same for all of them).
"""

from __future__ import annotations

from e2a_gateway.mailauth.results import AuthResults
from e2a_gateway.signing.identity import CopiesClaim, IdentityClaim, strip_auth_headers


def delivered_message(data: bytes, authentication_results: bytes, trace: bytes) -> bytes:
    """The bytes agents receive (and the body hash covers): the trace fields, our A-R header,
    then DATA without X-E2A-Auth-* headers and without the continuation lines it may start
    with (`without_leading_continuations`)."""
    return trace + authentication_results + strip_auth_headers(without_leading_continuations(data))


def without_leading_continuations(data: bytes) -> bytes:
    """`data` without the lines starting with a space or tab that come before its first field.

    A header section cannot start with one (RFC 5322 section 2.2.3): read alone, parsers drop
    it. Put under our own fields it would read as more of our Authentication-Results, letting
    the sender add verdicts to the gateway's, so it is not delivered.
    """
    start = 0
    while data[start : start + 1] in (b" ", b"\t"):
        end = data.find(b"\n", start)
        if end == -1:
            return b""
        start = end + 1
    return data[start:]


def produced_here(auth: AuthResults, envelope_from: str, outbound_domain: str | None) -> bool:
    """True for mail that left through this deployment's relay: envelope sender on
    `outbound_smtp.from_domain` and a passing DKIM signature by that domain."""
    if not outbound_domain:
        return False
    envelope_domain = envelope_from.rpartition("@")[2].lower()
    return envelope_domain == outbound_domain.lower() and outbound_domain.lower() in {
        domain.lower() for domain in auth.dkim_domains
    }


def identity_claim(
    *,
    auth: AuthResults,
    sender: str,
    sender_is_agent: bool,
    message_id: str,
    body_hash: str,
    timestamp: str,
) -> IdentityClaim:
    """The claim for one delivery (unsigned); `sender_is_agent` only for our own agents' mail,
    `body_hash` that of the delivered bytes (`e2a_gateway.signing.identity.body_hash`)."""
    return IdentityClaim(
        verified=auth.verified,
        sender=sender,
        entity_type="agent" if sender_is_agent else "human",
        domain_check=auth.domain_check,
        delegation="",
        timestamp=timestamp,
        message_id=message_id,
        body_hash=body_hash,
    )


def copies_claim(
    *, auth: AuthResults, sender: str, sender_is_agent: bool, body_hash: str, timestamp: str
) -> CopiesClaim:
    """`identity_claim` for every agent's copy of one message at once: each copy's message id
    is put in as it is signed (`CopiesClaim.signed_headers`)."""
    return CopiesClaim(
        identity_claim(
            auth=auth,
            sender=sender,
            sender_is_agent=sender_is_agent,
            message_id="",
            body_hash=body_hash,
            timestamp=timestamp,
        )
    )
