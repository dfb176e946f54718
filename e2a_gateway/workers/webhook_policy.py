"""What a webhook attempt sends and what its answer means. Pure: no sockets, no clock.

- the JSON body and HTTP headers of an attempt (re-signed with a fresh timestamp each time);
- the outcome of an answer (delivered, retry, final failure), and how long it asks us to wait
  (Retry-After). When to retry is `retry_schedules.WEBHOOK_DELIVERY`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, Literal

from e2a_gateway.clock import format_timestamp
from e2a_gateway.rfc5322 import address_list
from e2a_gateway.signing.identity import claim_from_headers
from e2a_gateway.storage.base import InboundMessage

RETRYABLE_STATUSES = frozenset({408, 429})

Verdict = Literal["delivered", "retry", "failed"]


@dataclass(frozen=True)
class WebhookRequest:
    """The body and headers of one attempt."""

    body: bytes
    headers: dict[str, bytes]


def delivery_id(message_id: str) -> str:
    """A stable id for all attempts of one message's delivery (receivers de-duplicate on it)."""
    return "dlv_" + message_id.removeprefix("msg_")


def webhook_body(
    message: InboundMessage, reading: Mapping[str, Any], auth_headers: dict[str, str]
) -> bytes:
    """The JSON body: the contract's fields, `from` being Reply-To's first address when present,
    `reply_to` every address it names (as the e2a 2.x SDK reads them), and the message's
    `reply_text` and `trust` map (docs/replies.md)."""
    reply_to = address_list(message.reply_to)
    payload = {
        "message_id": message.id,
        "conversation_id": message.conversation_id,
        "from": (reply_to or [message.from_addr])[0],
        "to": message.to,
        "cc": message.cc,
        "reply_to": reply_to,
        "recipient": message.agent_email,
        "subject": message.subject,
        "raw_message": base64.b64encode(message.raw_message).decode("ascii"),
        "auth_headers": auth_headers,
        "received_at": message.received_at,
        "reply_text": reading["reply_text"],
        "trust": reading["trust"],
    }
    return json.dumps(payload, ensure_ascii=False).encode("utf-8")


def build_request(
    message: InboundMessage, reading: Mapping[str, Any], secret: str, attempt: int, now: float
) -> WebhookRequest:
    """Re-sign the stored claim at `now` and build the attempt's body (with the message's
    `reading`, `e2a_gateway.operations.trust.reading_of`) and headers."""
    claim = replace(claim_from_headers(message.auth_headers), timestamp=format_timestamp(now))
    auth_headers = claim.signed_headers(secret)
    headers = {name: value.encode("utf-8") for name, value in auth_headers.items()}
    headers["Content-Type"] = b"application/json"
    headers["User-Agent"] = b"e2a-webhook/1"
    headers["X-E2A-Delivery-Id"] = delivery_id(message.id).encode("ascii")
    headers["X-E2A-Delivery-Attempt"] = str(attempt).encode("ascii")
    return WebhookRequest(webhook_body(message, reading, auth_headers), headers)


def judge_answer(status_code: int | None) -> Verdict:
    """2xx delivered; 408, 429, 5xx and no answer (None) retry; anything else is final,
    a status beyond 599 (which HTTP/1.1 lets a receiver send) included."""
    if status_code is None:
        return "retry"
    if 200 <= status_code < 300:
        return "delivered"
    if status_code in RETRYABLE_STATUSES or 500 <= status_code < 600:
        return "retry"
    return "failed"


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if absent
    or unreadable. A date in RFC 5322's `-0000` (or with no zone) is read as UTC, as HTTP dates
    are, never in the server's own zone. A date with a number no calendar holds (a year of
    twenty digits) is unreadable: the header is the receiver's to write, whatever it says."""
    if not value:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
        if when.tzinfo is None:  # `-0000`: parsedate_to_datetime leaves the zone out
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - now)
    except (TypeError, ValueError, OverflowError):
        return None
