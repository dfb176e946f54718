"""The pure half of webhook delivery: body, headers, re-signing, verdicts, Retry-After (the
retry schedule itself: tests/test_retry_schedules.py)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from e2a_gateway.clock import format_timestamp
from e2a_gateway.signing.identity import IdentityClaim, body_hash
from e2a_gateway.storage.base import InboundMessage
from e2a_gateway.workers.webhook_policy import (
    build_request,
    delivery_id,
    judge_answer,
    parse_retry_after,
    webhook_body,
)
from tests.test_signing_identity import sdk_verifies

pytestmark = pytest.mark.backend_independent

SECRET = "ab" * 32
RAW = b"Authentication-Results: mx.agents.test; spf=pass\r\nFrom: a@example.org\r\n\r\nhi\r\n"
NOW = 1_800_000_000.0
AUTH_NAMES = {
    "X-E2A-Auth-Verified",
    "X-E2A-Auth-Sender",
    "X-E2A-Auth-Entity-Type",
    "X-E2A-Auth-Domain-Check",
    "X-E2A-Auth-Delegation",
    "X-E2A-Auth-Timestamp",
    "X-E2A-Auth-Message-Id",
    "X-E2A-Auth-Body-Hash",
    "X-E2A-Auth-Signature",
}


def stored_message(
    reply_to: str | None = None, conversation_id: str | None = None
) -> InboundMessage:
    claim = IdentityClaim(
        verified=True,
        sender="a@example.org",
        entity_type="human",
        domain_check="spf=pass; dkim=none; dmarc=pass",
        delegation="",
        timestamp=format_timestamp(NOW - 3600),
        message_id="msg_0123456789abcdef01234567",
        body_hash=body_hash(RAW),
    )
    return InboundMessage(
        id="msg_0123456789abcdef01234567",
        seq=7,
        user_id="usr_1",
        agent_email="bot@agents.test",
        from_addr="a@example.org",
        reply_to=reply_to,
        to=["bot@agents.test"],
        cc=["c@example.net"],
        subject="Café",
        conversation_id=conversation_id,
        rfc_message_id="<m1@example.org>",
        status="unread",
        raw_message=RAW,
        auth_headers=claim.signed_headers("old secret"),
        authentication_results={"spf": "pass"},
        delivery_status="pending",
        received_at=format_timestamp(NOW - 3600),
        created_at=format_timestamp(NOW - 3600),
    )


READING = {"reply_text": "Hello.", "trust": {"parts": [], "quoted_unverified": False}}


def test_body_has_exactly_the_contract_fields_reply_to_and_the_reading() -> None:
    message = stored_message(conversation_id="conv-1")
    body = json.loads(webhook_body(message, READING, {"X-E2A-Auth-Sender": "a@example.org"}))
    assert body == {
        "message_id": message.id,
        "conversation_id": "conv-1",
        "from": "a@example.org",
        "to": ["bot@agents.test"],
        "cc": ["c@example.net"],
        "reply_to": [],
        "recipient": "bot@agents.test",
        "subject": "Café",
        "raw_message": base64.b64encode(RAW).decode(),
        "auth_headers": {"X-E2A-Auth-Sender": "a@example.org"},
        "received_at": message.received_at,
        "reply_text": "Hello.",
        "trust": READING["trust"],
    }
    assert base64.b64decode(body["raw_message"], validate=True) == RAW


def test_from_is_reply_to_when_present_and_null_conversation_stays_null() -> None:
    body = json.loads(webhook_body(stored_message(reply_to="replies@example.org"), READING, {}))
    assert body["from"] == "replies@example.org"
    assert body["conversation_id"] is None


def test_from_is_the_first_reply_to_address_when_it_names_several() -> None:
    """The contract's `from` is one address: the first of a Reply-To naming several."""
    several = stored_message(reply_to='"desk, eu"@example.org, team@example.org')
    body = json.loads(webhook_body(several, READING, {}))
    assert body["from"] == '"desk, eu"@example.org'
    assert body["reply_to"] == ['"desk, eu"@example.org', "team@example.org"]


def test_each_attempt_is_signed_afresh_with_the_given_time() -> None:
    message = stored_message()
    first = build_request(message, READING, SECRET, 1, NOW)
    later = build_request(message, READING, SECRET, 2, NOW + 90)

    for attempt, request, when in ((1, first, NOW), (2, later, NOW + 90)):
        body = json.loads(request.body)
        auth = {name: value.decode() for name, value in request.headers.items() if "Auth" in name}
        assert set(auth) == AUTH_NAMES
        assert body["auth_headers"] == auth
        assert auth["X-E2A-Auth-Timestamp"] == format_timestamp(when)
        assert auth["X-E2A-Auth-Body-Hash"] == body_hash(RAW)
        assert sdk_verifies(auth, RAW, SECRET, when)
        assert not sdk_verifies(auth, RAW, "cd" * 32, when)
        assert request.headers["X-E2A-Delivery-Attempt"] == str(attempt).encode()
        assert request.headers["X-E2A-Delivery-Id"] == delivery_id(message.id).encode()
        assert request.headers["Content-Type"] == b"application/json"

    first_auth = json.loads(first.body)["auth_headers"]
    later_auth = json.loads(later.body)["auth_headers"]
    assert first_auth["X-E2A-Auth-Signature"] != later_auth["X-E2A-Auth-Signature"]
    assert not sdk_verifies(first_auth, RAW, SECRET, NOW + 301)


def test_delivery_id_is_stable_and_prefixed() -> None:
    assert delivery_id("msg_00ff") == "dlv_00ff" == delivery_id("msg_00ff")


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, "delivered"),
        (204, "delivered"),
        (299, "delivered"),
        (None, "retry"),
        (408, "retry"),
        (429, "retry"),
        (500, "retry"),
        (503, "retry"),
        (301, "failed"),
        (400, "failed"),
        (401, "failed"),
        (404, "failed"),
        (410, "failed"),
        (600, "failed"),
        (999, "failed"),
    ],
)
def test_verdicts(status: int | None, verdict: str) -> None:
    assert judge_answer(status) == verdict


def test_retry_after_in_seconds_and_as_http_date() -> None:
    assert parse_retry_after("120", NOW) == 120.0
    assert parse_retry_after(" 5 ", NOW) == 5.0
    date = format_datetime(datetime.fromtimestamp(NOW + 600, UTC), usegmt=True)
    assert parse_retry_after(date, NOW) == pytest.approx(600.0)
    past = format_datetime(datetime.fromtimestamp(NOW - 600, UTC), usegmt=True)
    assert parse_retry_after(past, NOW) == 0.0
    assert parse_retry_after(None, NOW) is None
    assert parse_retry_after("", NOW) is None
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after("-5", NOW) is None
    assert parse_retry_after("\u00b2", NOW) is None  # a digit to str.isdigit, not to HTTP
    assert parse_retry_after("\u0663\u0660", NOW) is None


@pytest.mark.parametrize(
    "value",
    [
        "Fri, 31 Dec 99999999999999999999 23:59:59 GMT",
        "Fri, 31 Dec 2030 99999999999999999999:59:59 GMT",
        "Fri, 31 Dec 2030 23:59:59 +99999999999999999999",
    ],
)
def test_a_retry_after_date_no_calendar_holds_is_unreadable(value: str) -> None:
    assert parse_retry_after(value, NOW) is None
