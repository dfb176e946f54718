"""Sending over REST: validation, HITL holding, review, replies and the rate limit."""

from __future__ import annotations

import base64
import email
import email.policy
from typing import Any

import httpx
import pytest
import trio

from e2a_gateway.app import RunningGateway
from e2a_gateway.inbound.pipeline import InboundMailSink
from e2a_gateway.smtp.protocol import Envelope, Mailbox
from tests.conftest import SHARED_DOMAIN, Account, agent_path
from tests.delivery_support import wait_until


def error_code(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    return str(response.json()["error"]["code"])


async def agent(account: Account, slug: str, hitl: bool = False) -> str:
    created = await account.http.post("/api/v1/agents", json={"slug": slug, "agent_mode": "local"})
    assert created.status_code == 201, created.text
    address = str(created.json()["email"])
    if hitl:
        updated = await account.http.put(
            agent_path(address), json={"hitl_enabled": True, "hitl_ttl_seconds": 3600}
        )
        assert updated.json()["hitl_enabled"] is True
    return address


async def received(running: RunningGateway, slug: str, original: bytes) -> str:
    """Take `original` from human@example.org for `slug`@agents.test as the SMTP listener
    does; the stored message's id."""
    envelope = Envelope(
        "client.example.org", "human@example.org", [Mailbox(slug, "agents.test")], original
    )
    return await InboundMailSink(running.gateway).accept_message(envelope, "192.0.2.1")


async def test_hitl_agent_gets_202_and_nothing_is_queued(
    make_account: Any, running: RunningGateway
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await agent(alice, "held", hitl=True)
    attachment = {
        "filename": "a.txt",
        "content_type": "text/plain",
        "data": base64.b64encode(b"hi").decode(),
    }
    response = await alice.http.post(
        "/api/v1/send",
        json={
            "to": ["Someone@Example.org"],
            "subject": "Quote",
            "body": "Our price is 10.",
            "html_body": "<p>10</p>",
            "attachments": [attachment],
        },
    )
    assert response.status_code == 202, response.text
    answer = response.json()
    assert set(answer) == {"status", "message_id", "approval_expires_at"}
    assert answer["status"] == "pending_approval" and answer["approval_expires_at"].endswith("Z")

    (pending,) = (await alice.http.get("/api/v1/messages")).json()["messages"]
    assert pending["id"] == answer["message_id"]
    assert pending["agent_id"] == bot and pending["type"] == "send"
    assert pending["to"] == ["someone@example.org"]
    assert pending["body_text"] == "Our price is 10." and pending["attachments"] == [attachment]
    assert pending["email_message_id"].endswith(f"@{SHARED_DOMAIN}>")
    stored = await running.gateway.storage.get_outbound(None, answer["message_id"])
    assert stored is not None and stored.status == "pending_approval"
    assert await running.gateway.storage.claim_jobs("outbound", 1e12, 10, 60) == []


async def test_approve_with_edits_then_409(make_account: Any, running: RunningGateway) -> None:
    alice: Account = await make_account("alice@example.com")
    await agent(alice, "held", hitl=True)
    sent = (
        await alice.http.post(
            "/api/v1/send", json={"to": ["x@example.org"], "subject": "s", "body": "b"}
        )
    ).json()
    approved = await alice.http.post(
        f"/api/v1/messages/{sent['message_id']}/approve",
        json={"subject": "Better subject", "to": ["y@example.org"]},
    )
    assert approved.status_code == 200, approved.text
    view = approved.json()
    assert view["edited"] is True and view["subject"] == "Better subject"
    assert view["to"] == ["y@example.org"] and view["reviewed_at"]
    assert view["status"] in ("queued", "sent", "failed")
    again = await alice.http.post(f"/api/v1/messages/{sent['message_id']}/approve")
    assert error_code(again, 409) == "conflict"
    assert (
        error_code(await alice.http.post(f"/api/v1/messages/{sent['message_id']}/reject"), 409)
        == "conflict"
    )


async def test_reject_scrubs_the_body(make_account: Any, running: RunningGateway) -> None:
    alice: Account = await make_account("alice@example.com")
    await agent(alice, "held", hitl=True)
    sent = (
        await alice.http.post(
            "/api/v1/send", json={"to": ["x@example.org"], "subject": "s", "body": "secret draft"}
        )
    ).json()
    rejected = await alice.http.post(
        f"/api/v1/messages/{sent['message_id']}/reject", json={"reason": "wrong tone"}
    )
    assert rejected.status_code == 200
    view = rejected.json()
    assert view["status"] == "rejected" and view["rejection_reason"] == "wrong tone"
    assert "body_text" not in view
    stored = await running.gateway.storage.get_outbound(None, sent["message_id"])
    assert stored is not None
    assert (stored.body_text, stored.body_html, stored.attachments) == (None, None, None)
    listed = (await alice.http.get("/api/v1/messages?status=rejected")).json()["messages"]
    assert [m["id"] for m in listed] == [sent["message_id"]]


async def test_racing_approvals_succeed_once(make_account: Any) -> None:
    alice: Account = await make_account("alice@example.com")
    await agent(alice, "held", hitl=True)
    sent = (
        await alice.http.post(
            "/api/v1/send", json={"to": ["x@example.org"], "subject": "s", "body": "b"}
        )
    ).json()
    statuses: list[int] = []

    async def approve() -> None:
        response = await alice.http.post(f"/api/v1/messages/{sent['message_id']}/approve")
        statuses.append(response.status_code)

    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(approve)
    assert sorted(statuses) == [200] + [409] * 7


async def test_another_user_cannot_review_or_read(make_account: Any) -> None:
    alice: Account = await make_account("alice@example.com")
    mallory: Account = await make_account("mallory@example.com")
    await agent(alice, "held", hitl=True)
    sent = (
        await alice.http.post(
            "/api/v1/send", json={"to": ["x@example.org"], "subject": "s", "body": "b"}
        )
    ).json()
    message_id = sent["message_id"]
    for method, path in (
        ("GET", f"/api/v1/messages/{message_id}"),
        ("POST", f"/api/v1/messages/{message_id}/approve"),
        ("POST", f"/api/v1/messages/{message_id}/reject"),
    ):
        assert error_code(await mallory.http.request(method, path), 404) == "not_found"
    assert (await mallory.http.get("/api/v1/messages")).json() == {"messages": []}
    still = (await alice.http.get(f"/api/v1/messages/{message_id}")).json()
    assert still["status"] == "pending_approval"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"to": [], "subject": "s", "body": "b"}, 400, "invalid_request"),
        ({"to": ["x@example.org"], "subject": "s"}, 400, "invalid_request"),
        (
            {"to": ["x@example.org"], "subject": "s", "body": "b", "extra": 1},
            400,
            "invalid_request",
        ),
        ({"to": ["not an address"], "subject": "s", "body": "b"}, 400, "invalid_email"),
        (
            {"to": ["x@example.org\r\nBcc: y@evil.example"], "subject": "s", "body": "b"},
            400,
            "invalid_header",
        ),
        (
            {"to": ["x@example.org"], "subject": "hi\r\nBcc: y@evil.example", "body": "b"},
            400,
            "invalid_header",
        ),
        (
            {"to": ["x@example.org"], "subject": "s", "body": "b", "conversation_id": "c\nX: 1"},
            400,
            "invalid_header",
        ),
        (
            {
                "to": ["x@example.org"],
                "subject": "s",
                "body": "b",
                "attachments": [{"filename": "a", "content_type": "text/plain", "data": "***"}],
            },
            400,
            "invalid_attachment",
        ),
        (
            {"from": "stranger@agents.test", "to": ["x@example.org"], "subject": "s", "body": "b"},
            400,
            "invalid_from",
        ),
    ],
)
async def test_bad_sends(make_account: Any, body: dict[str, Any], status: int, code: str) -> None:
    alice: Account = await make_account("alice@example.com")
    await agent(alice, "held", hitl=True)
    assert error_code(await alice.http.post("/api/v1/send", json=body), status) == code
    assert (await alice.http.get("/api/v1/messages")).json() == {"messages": []}


async def test_from_is_required_with_several_agents(make_account: Any) -> None:
    alice: Account = await make_account("alice@example.com")
    await agent(alice, "one", hitl=True)
    two = await agent(alice, "two", hitl=True)
    body = {"to": ["x@example.org"], "subject": "s", "body": "b"}
    assert error_code(await alice.http.post("/api/v1/send", json=body), 400) == "invalid_from"
    chosen = await alice.http.post("/api/v1/send", json={**body, "from": two})
    assert chosen.status_code == 202
    (pending,) = (await alice.http.get(f"/api/v1/messages?agent={two}")).json()["messages"]
    assert pending["agent_id"] == two


async def test_rate_limit_per_agent(make_account: Any, running: RunningGateway) -> None:
    running.gateway.settings.limits.sends_per_agent_per_minute = 3
    alice: Account = await make_account("alice@example.com")
    await agent(alice, "busy", hitl=True)
    body = {"to": ["x@example.org"], "subject": "s", "body": "b"}
    for number in range(3):
        assert (await alice.http.post("/api/v1/send", json=body)).status_code == 202
        if number == 0:
            await trio.sleep(2.0)  # the window has room again 60 s after this first send
    limited = await alice.http.post("/api/v1/send", json=body)
    assert error_code(limited, 429) == "rate_limited"
    assert 50 <= int(limited.headers["Retry-After"]) <= 58  # not a whole minute
    assert len((await alice.http.get("/api/v1/messages")).json()["messages"]) == 3


async def test_reply_is_threaded(make_account: Any, running: RunningGateway) -> None:

    alice: Account = await make_account("alice@example.com")
    bot = await agent(alice, "replier", hitl=True)
    original = (
        b"From: Human <human@example.org>\r\nReply-To: desk@example.org\r\n"
        b"To: replier@agents.test, colleague@example.org\r\nCc: boss@example.org\r\n"
        b"Subject: Order 7\r\nMessage-ID: <m2@example.org>\r\nReferences: <m1@example.org>\r\n"
        b"\r\nwhere is it?\r\n"
    )
    sink = InboundMailSink(running.gateway)
    envelope = Envelope(
        "client.example.org", "human@example.org", [Mailbox("replier", "agents.test")], original
    )
    inbound_id = await sink.accept_message(envelope, "192.0.2.1")

    response = await alice.http.post(
        agent_path(bot, f"/messages/{inbound_id}/reply"),
        json={"body": "On its way.", "reply_all": True, "conversation_id": "order-7"},
    )
    assert response.status_code == 202, response.text
    stored = await running.gateway.storage.get_outbound(
        alice_id := None, response.json()["message_id"]
    )
    assert alice_id is None and stored is not None
    assert stored.kind == "reply" and stored.subject == "Re: Order 7"
    assert stored.to == ["desk@example.org"]
    assert stored.cc == ["colleague@example.org", "boss@example.org"]
    assert stored.in_reply_to == "<m2@example.org>"
    assert stored.references == ["<m1@example.org>", "<m2@example.org>"]
    assert stored.conversation_id == "order-7"
    missing = await alice.http.post(agent_path(bot, "/messages/msg_nope/reply"), json={"body": "x"})
    assert error_code(missing, 404) == "not_found"


async def test_test_endpoint_sends_to_the_agent_itself(make_account: Any) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await agent(alice, "tester", hitl=True)
    response = await alice.http.post(agent_path(bot, "/test"))
    assert response.status_code == 202
    (pending,) = (await alice.http.get("/api/v1/messages")).json()["messages"]
    assert pending["type"] == "test" and pending["to"] == [bot] and pending["method"] == "local"


async def test_the_test_message_invents_no_conversation_on_api_v1(make_account: Any) -> None:
    """The 2.x contract leaves conversation ids to the agents (`/v1` anchors its test message in
    a new one, as e2a does): the test message and the copy the agent receives are in none."""
    alice: Account = await make_account("alice@example.com")
    bot = await agent(alice, "tester")
    response = await alice.http.post(agent_path(bot, "/test"))
    assert response.status_code == 200, response.text
    sent = (await alice.http.get(f"/api/v1/messages/{response.json()['message_id']}")).json()
    assert sent["type"] == "test" and sent["conversation_id"] is None, sent
    (arrived,) = (await alice.http.get(agent_path(bot, "/messages"))).json()["messages"]
    assert arrived["conversation_id"] is None, arrived


async def test_agent_to_agent_conversation_round_trip(make_account: Any) -> None:
    alice: Account = await make_account("alice@example.com")
    bob: Account = await make_account("bob@example.com")
    a = await agent(alice, "agent-a")
    b = await agent(bob, "agent-b")

    sent = await alice.http.post(
        "/api/v1/send",
        json={
            "from": a,
            "to": [b],
            "subject": "Shall we?",
            "body": "Proposal",
            "conversation_id": "deal-1",
        },
    )
    assert sent.status_code == 200, sent.text
    assert sent.json()["status"] == "sent" and sent.json()["method"] == "local"

    (arrived,) = (await bob.http.get(agent_path(b, "/messages"))).json()["messages"]
    assert arrived["conversation_id"] == "deal-1" and arrived["from"] == a
    full = (await bob.http.get(agent_path(b, f"/messages/{arrived['message_id']}"))).json()
    assert full["auth_headers"]["X-E2A-Auth-Entity-Type"] == "agent"
    assert full["auth_headers"]["X-E2A-Auth-Verified"] == "true"
    assert full["auth_headers"]["X-E2A-Auth-Sender"] == a

    replied = await bob.http.post(
        agent_path(b, f"/messages/{arrived['message_id']}/reply"), json={"body": "Agreed."}
    )
    assert replied.status_code == 200 and replied.json()["status"] == "sent", replied.text
    (answer,) = (await alice.http.get(agent_path(a, "/messages"))).json()["messages"]
    assert answer["conversation_id"] == "deal-1"
    assert answer["subject"] == "Re: Shall we?" and answer["from"] == b
    original = (await alice.http.get(f"/api/v1/messages/{sent.json()['message_id']}")).json()
    answer_full = (await alice.http.get(agent_path(a, f"/messages/{answer['message_id']}"))).json()
    raw = base64.b64decode(answer_full["raw_message"])
    assert f"In-Reply-To: {original['email_message_id']}".encode() in raw
    assert original["status"] == "sent" and "body_text" not in original


async def test_a_send_that_reached_only_some_recipients_names_the_others(
    make_account: Any,
) -> None:
    alice: Account = await make_account("alice@example.com")
    a = await agent(alice, "partly-a")
    b = await agent(alice, "partly-b")

    # b is an agent here; nobody beyond this deployment can be reached (no outbound_smtp).
    sent = await alice.http.post(
        "/api/v1/send",
        json={"from": a, "to": [b, "dave@example.org"], "subject": "Both?", "body": "Hi."},
    )
    assert sent.status_code == 200 and sent.json()["status"] == "sent", sent.text

    view = (await alice.http.get(f"/api/v1/messages/{sent.json()['message_id']}")).json()
    assert view["status"] == "sent" and view["sent_at"]
    assert "dave@example.org" in view["error"] and "outbound_smtp" in view["error"]
    assert b not in view["error"]
    (arrived,) = (await alice.http.get(agent_path(b, "/messages"))).json()["messages"]
    assert arrived["subject"] == "Both?"

    whole = await alice.http.post(
        "/api/v1/send", json={"from": a, "to": [b], "subject": "Only b", "body": "Hi."}
    )
    view = (await alice.http.get(f"/api/v1/messages/{whole.json()['message_id']}")).json()
    assert view["status"] == "sent" and "error" not in view


async def test_send_is_made_once_per_idempotency_key(
    make_account: Any, running: RunningGateway
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await agent(alice, "once")
    peer = await agent(alice, "once-peer")
    held = await agent(alice, "once-held", hitl=True)
    draft = {"from": bot, "to": [peer], "subject": "Once", "body": "Sent once."}
    keyed = {"Idempotency-Key": "send-once-1"}
    first = await alice.http.post("/api/v1/send", json=draft, headers=keyed)
    assert first.status_code == 200 and first.json()["status"] == "sent", first.text
    again = await alice.http.post("/api/v1/send", json=draft, headers=keyed)
    assert (again.status_code, again.json()) == (200, first.json())
    other = await alice.http.post("/api/v1/send", json=draft | {"body": "Twice."}, headers=keyed)
    assert error_code(other, 422) == "idempotency_key_reuse"
    bad = await alice.http.post("/api/v1/send", json=draft, headers={"Idempotency-Key": "k" * 256})
    assert error_code(bad, 400) == "invalid_request"
    assert "Idempotency-Key" in bad.json()["error"]["message"]
    # Without a key every call sends; a held send is replayed as held, nothing held twice.
    assert (await alice.http.post("/api/v1/send", json=draft)).json() != first.json()
    waiting = draft | {"from": held, "subject": "Held once"}
    kept = await alice.http.post("/api/v1/send", json=waiting, headers={"Idempotency-Key": "h"})
    assert kept.status_code == 202, kept.text
    replayed = await alice.http.post("/api/v1/send", json=waiting, headers={"Idempotency-Key": "h"})
    assert (replayed.status_code, replayed.json()) == (202, kept.json())
    pending = (await alice.http.get("/api/v1/messages")).json()["messages"]
    assert [message["id"] for message in pending] == [kept.json()["message_id"]]
    arrived = (await alice.http.get(agent_path(peer, "/messages"))).json()["messages"]
    assert [message["subject"] for message in arrived] == ["Once", "Once"]  # keyed once, unkeyed


SEPARATORS = {"nel": "\x85", "line-sep": "\u2028", "para-sep": "\u2029"}
"""Line breaks besides CR and LF. NUL is refused in any request body before its fields are
read (tests/test_request_bodies.py)."""
UNSAFE_FIELDS = {
    "subject": lambda bad: {"subject": f"hi{bad}Bcc: y@evil.example"},
    "to": lambda bad: {"to": [f"x{bad}y@example.org"]},
    "cc": lambda bad: {"cc": [f"c{bad}c@example.org"]},
    "bcc": lambda bad: {"bcc": [f"b@example.org{bad}x"]},
    "conversation_id": lambda bad: {"conversation_id": f"conv{bad}X-Evil: 1"},
}


@pytest.mark.parametrize("separator", SEPARATORS.values(), ids=SEPARATORS.keys())
@pytest.mark.parametrize("field", UNSAFE_FIELDS)
async def test_line_separators_in_any_header_field_are_refused(
    make_account: Any, running: RunningGateway, field: str, separator: str
) -> None:
    alice: Account = await make_account("alice@example.com")
    await agent(alice, "direct")
    body = {"to": ["x@example.org"], "subject": "s", "body": "b"}
    body.update(UNSAFE_FIELDS[field](separator))
    response = await alice.http.post("/api/v1/send", json=body)
    assert error_code(response, 400) == "invalid_header"
    message = response.json()["error"]["message"]
    assert message == (
        f"{field} must not contain line breaks or control characters (found U+{ord(separator):04X})"
    )
    for status in ("queued", "pending_approval", "failed", "sent"):
        listed = await alice.http.get(f"/api/v1/messages?status={status}")
        assert listed.json() == {"messages": []}


@pytest.mark.parametrize("separator", SEPARATORS.values(), ids=SEPARATORS.keys())
async def test_line_separators_in_edits_and_attachment_names_are_refused(
    make_account: Any, separator: str
) -> None:
    alice: Account = await make_account("alice@example.com")
    await agent(alice, "held", hitl=True)
    attachment = {"filename": f"a{separator}b.txt", "content_type": "text/plain", "data": "aGk="}
    body = {"to": ["x@example.org"], "subject": "s", "body": "b", "attachments": [attachment]}
    refused = await alice.http.post("/api/v1/send", json=body)
    assert error_code(refused, 400) == "invalid_attachment"
    assert refused.json()["error"]["message"].startswith("attachments[0].filename must not")

    del body["attachments"]
    held = await alice.http.post("/api/v1/send", json=body)
    assert held.status_code == 202, held.text
    message_id = held.json()["message_id"]
    edit = await alice.http.post(
        f"/api/v1/messages/{message_id}/approve", json={"subject": f"new{separator}subject"}
    )
    assert error_code(edit, 400) == "invalid_header"
    assert edit.json()["error"]["message"].startswith("subject must not contain line breaks")
    still = (await alice.http.get(f"/api/v1/messages/{message_id}")).json()
    assert still["status"] == "pending_approval" and still["subject"] == "s"


async def test_a_reply_to_mail_with_odd_header_text_can_be_built(
    make_account: Any, running: RunningGateway
) -> None:
    """A received subject may decode to line separators and a received Message-ID may hold
    control characters; the reply takes the subject with spaces instead and leaves such ids
    out of its threading headers, so it can always be built."""
    from e2a_gateway.workers.outbound import OutboundWorker

    alice: Account = await make_account("alice@example.com")
    bot = await agent(alice, "odd", hitl=True)
    original = (
        b"From: Human <human@example.org>\r\nTo: odd@agents.test\r\n"
        b"Subject: =?utf-8?q?Order=E2=80=A87=C2=85now?=\r\n"
        b"Message-ID: <m\x01x@example.org>\r\nReferences: <m1@example.org> <m\x7f2@example.org>\r\n"
        b"\r\nwhere is it?\r\n"
    )
    inbound_id = await received(running, "odd", original)
    response = await alice.http.post(
        agent_path(bot, f"/messages/{inbound_id}/reply"), json={"body": "On its way."}
    )
    assert response.status_code == 202, response.text
    stored = await running.gateway.storage.get_outbound(None, response.json()["message_id"])
    assert stored is not None
    assert stored.subject == "Re: Order 7 now"
    assert stored.in_reply_to is None and stored.references == ["<m1@example.org>"]
    raw = OutboundWorker(running.gateway).compose(stored)
    assert b"Subject: Re: Order 7 now\r\n" in raw


async def test_a_reply_to_mail_with_an_endless_subject_keeps_a_subject_a_send_may_have(
    make_account: Any, running: RunningGateway
) -> None:
    """A received subject may run to the header section's limit; a reply's, and a forward's,
    is cut to the 2000 characters a typed subject may have (writing a header that long took
    the outbound worker's event loop a second and more)."""
    from e2a_gateway.workers.outbound import OutboundWorker

    alice: Account = await make_account("alice@example.com")
    bot = await agent(alice, "long", hitl=True)
    subject = ("wörd " * 40_000 + "=?utf-8?q?x?=").encode()
    original = (
        b"From: Human <human@example.org>\r\nTo: long@agents.test\r\n"
        b"Subject: " + subject + b"\r\nMessage-ID: <long@example.org>\r\n\r\nhello\r\n"
    )
    inbound_id = await received(running, "long", original)
    replied = await alice.http.post(
        agent_path(bot, f"/messages/{inbound_id}/reply"), json={"body": "Noted."}
    )
    forwarded = await alice.http.post(
        f"/v1/agents/{bot}/messages/{inbound_id}/forward",
        json={"to": ["carol@example.org"], "text": "FYI"},
    )
    for response, prefix in ((replied, "Re: wörd wörd"), (forwarded, "Fwd: wörd wörd")):
        assert response.status_code in (200, 202), response.text
        stored = await running.gateway.storage.get_outbound(None, response.json()["message_id"])
        assert stored is not None and stored.subject.startswith(prefix)
        assert len(stored.subject) == 2000
        composed = OutboundWorker(running.gateway).compose(stored)
        written = email.message_from_bytes(composed, policy=email.policy.default)["subject"]
        assert written == stored.subject


ENCODED_BREAK = "=?utf-8?q?hi=0D=0ABcc:_y@evil.example?="
"""An RFC 2047 encoded word that decodes to a line break and a header: the `email` package
decodes encoded words in the text it is given and writes what they decode to as it is."""


async def test_line_breaks_in_encoded_words_are_refused(
    make_account: Any, running: RunningGateway
) -> None:
    alice: Account = await make_account("alice@example.com")
    await agent(alice, "direct")
    body: dict[str, Any] = {"to": ["x@example.org"], "subject": f"Re: {ENCODED_BREAK}", "body": "b"}
    refused = await alice.http.post("/api/v1/send", json=body)
    assert error_code(refused, 400) == "invalid_header"
    assert refused.json()["error"]["message"] == (
        "subject must not contain line breaks or control characters "
        "(found U+000D in an RFC 2047 encoded word)"
    )
    attachment = {"filename": ENCODED_BREAK, "content_type": "text/plain", "data": "aGk="}
    body.update(subject="s", attachments=[attachment])
    refused = await alice.http.post("/api/v1/send", json=body)
    assert error_code(refused, 400) == "invalid_attachment"
    for status in ("queued", "failed", "sent"):
        listed = await alice.http.get(f"/api/v1/messages?status={status}")
        assert listed.json() == {"messages": []}


async def test_a_reply_and_a_forward_to_text_hiding_an_encoded_line_break_write_one_header(
    make_account: Any, running: RunningGateway
) -> None:
    """A received subject (and an attachment's name) can hold an encoded word as text, encoded
    once more: decoded on arrival it is an encoded word again, which the `email` package would
    decode into a line break and a header of the reply's own. The reply and the forward write
    it with spaces for the line break instead."""
    from e2a_gateway.workers.outbound import OutboundWorker

    alice: Account = await make_account("alice@example.com")
    bot = await agent(alice, "odd", hitl=True)
    hidden = base64.b64encode(ENCODED_BREAK.encode()).decode()
    quoted_name = "".join(f"%{byte:02X}" for byte in ENCODED_BREAK.encode())
    original = (
        "From: Human <human@example.org>\r\nTo: odd@agents.test\r\n"
        f"Subject: =?utf-8?b?{hidden}?=\r\nMessage-ID: <m1@example.org>\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        "--b\r\nContent-Type: text/plain\r\n"
        f"Content-Disposition: attachment; filename*=utf-8''{quoted_name}\r\n\r\nhi\r\n--b--\r\n"
    ).encode()
    inbound_id = await received(running, "odd", original)
    replied = await alice.http.post(
        agent_path(bot, f"/messages/{inbound_id}/reply"), json={"body": "On its way."}
    )
    forwarded = await alice.http.post(
        f"/v1/agents/{bot}/messages/{inbound_id}/forward",
        json={"to": ["carol@example.org"], "text": "FYI"},
    )
    for response, prefix in ((replied, "Re:"), (forwarded, "Fwd:")):
        assert response.status_code in (200, 202), response.text
        stored = await running.gateway.storage.get_outbound(None, response.json()["message_id"])
        assert stored is not None
        raw = OutboundWorker(running.gateway).compose(stored)
        assert b"\r\nBcc:" not in raw
        written = email.message_from_bytes(raw, policy=email.policy.default)
        assert written["Subject"] == f"{prefix} hi  Bcc: y@evil.example"
        if prefix == "Fwd:":
            names = [part.get_filename() for part in written.iter_attachments()]
            assert names == ["hi  Bcc: y@evil.example"]


async def test_a_reply_to_mail_with_only_in_reply_to_keeps_the_thread(
    make_account: Any, running: RunningGateway
) -> None:
    """RFC 5322 section 3.6.4: a parent with In-Reply-To but no References (as some clients
    write it) gives the reply References of that id then the parent's own, so participants who
    never saw the parent still thread it; the parent's id ends the chain once."""
    from e2a_gateway.workers.outbound import OutboundWorker

    alice: Account = await make_account("alice@example.com")
    bot = await agent(alice, "threads", hitl=True)
    sink = InboundMailSink(running.gateway)
    answers = []
    for extra in (b"In-Reply-To: <m1@example.org>\r\n", b"References: <m2@example.org> <m1@x>\r\n"):
        original = (
            b"From: Human <human@example.org>\r\nTo: threads@agents.test\r\n"
            b"Subject: Order 7\r\nMessage-ID: <m2@example.org>\r\n" + extra + b"\r\nhi\r\n"
        )
        envelope = Envelope(
            "client.example.org", "human@example.org", [Mailbox("threads", "agents.test")], original
        )
        inbound_id = await sink.accept_message(envelope, "192.0.2.1")
        answers.append(
            await alice.http.post(
                agent_path(bot, f"/messages/{inbound_id}/reply"), json={"body": "On its way."}
            )
        )
        answers.append(
            await alice.http.post(
                f"/v1/agents/{bot}/messages/{inbound_id}/reply", json={"text": "On its way."}
            )
        )
    chains = []
    for answer in answers:
        assert answer.status_code in (200, 202), answer.text
        stored = await running.gateway.storage.get_outbound(None, answer.json()["message_id"])
        assert stored is not None and stored.in_reply_to == "<m2@example.org>"
        raw = OutboundWorker(running.gateway).compose(stored)
        written = email.message_from_bytes(raw, policy=email.policy.default)
        chains.append(str(written["References"]).split())
    assert (
        chains
        == [["<m1@example.org>", "<m2@example.org>"]] * 2 + [["<m1@x>", "<m2@example.org>"]] * 2
    )


@pytest.mark.parametrize(
    "content_type", ["message/delivery-status", "multipart/mixed", "message/partial"]
)
async def test_an_attachment_typed_as_mime_structure_is_refused(
    make_account: Any, running: RunningGateway, content_type: str
) -> None:
    """A multipart or a message/* other than a whole message is structure, not data: sent as
    given it made a message that could not be built (message/delivery-status, found only when
    the worker tried) or whose attachment no reader could open (base64 where RFC 2046 allows
    none, a multipart without a boundary)."""
    alice: Account = await make_account("alice@example.com")
    await agent(alice, "direct")
    attachment = {"filename": "a.bin", "content_type": content_type, "data": "aGk="}
    body = {"to": ["x@example.org"], "subject": "s", "body": "b", "attachments": [attachment]}
    refused = await alice.http.post("/api/v1/send", json=body)
    assert error_code(refused, 400) == "invalid_attachment"
    assert refused.json()["error"]["message"].startswith(
        f"attachments[0].content_type {content_type} is a MIME structure"
    )


async def test_a_forward_carries_a_structure_typed_attachment_as_octets(
    make_account: Any, running: RunningGateway
) -> None:
    from e2a_gateway.workers.outbound import OutboundWorker

    alice: Account = await make_account("alice@example.com")
    bot = await agent(alice, "fwd", hitl=True)
    original = (
        b"From: Human <human@example.org>\r\nTo: fwd@agents.test\r\nSubject: Parts\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b"--b\r\nContent-Type: multipart/mixed\r\n"
        b'Content-Disposition: attachment; filename="odd.bin"\r\n\r\nno boundary here\r\n'
        b"--b--\r\n"
    )
    inbound_id = await received(running, "fwd", original)
    forwarded = await alice.http.post(
        f"/v1/agents/{bot}/messages/{inbound_id}/forward",
        json={"to": ["carol@example.org"], "text": "FYI"},
    )
    assert forwarded.status_code in (200, 202), forwarded.text
    stored = await running.gateway.storage.get_outbound(None, forwarded.json()["message_id"])
    assert stored is not None
    raw = OutboundWorker(running.gateway).compose(stored)
    (part,) = email.message_from_bytes(raw, policy=email.policy.default).iter_attachments()
    assert part.get_content_type() == "application/octet-stream"
    assert part.get_filename() == "odd.bin"
    assert part.get_content() == b"no boundary here\r\n"


async def test_a_reply_names_at_most_100_references(
    make_account: Any, running: RunningGateway
) -> None:
    """A received References may fill the header section; the reply's keeps the thread's first
    id and the latest (the parent last), so its header stays within what relays keep (Postfix
    drops what exceeds 100 KiB, breaking the DKIM signature), also reply after reply."""
    from e2a_gateway.workers.outbound import OutboundWorker

    alice: Account = await make_account("alice@example.com")
    bot = await agent(alice, "longthread")
    ids = [f"<{n:05d}.reference.of.a.long.thread@example.org>" for n in range(3000)]
    folded = "\r\n ".join(" ".join(ids[n : n + 20]) for n in range(0, len(ids), 20))
    original = (
        "From: Human <human@example.org>\r\nTo: longthread@agents.test\r\nSubject: Thread\r\n"
        f"Message-ID: <parent@example.org>\r\nReferences: {folded}\r\n\r\nhi\r\n"
    ).encode()
    inbound_id = await received(running, "longthread", original)
    replied = await alice.http.post(
        f"/v1/agents/{bot}/messages/{inbound_id}/reply", json={"text": "Noted."}
    )
    assert replied.status_code == 202, replied.text
    stored = await running.gateway.storage.get_outbound(None, replied.json()["message_id"])
    assert stored is not None
    assert stored.references == [ids[0], *ids[-98:], "<parent@example.org>"]
    raw = OutboundWorker(running.gateway).compose(stored)
    assert len(raw.split(b"\r\n\r\n")[0]) < 8 * 1024
    written = email.message_from_bytes(raw, policy=email.policy.default)
    assert str(written["References"]).split() == stored.references


async def test_a_recipient_beyond_ascii_not_in_nfc_is_refused_saying_why(
    make_account: Any, running: RunningGateway
) -> None:
    """An internationalised address (RFC 6531) is sent to as it is given, and so must be in
    Unicode NFC (RFC 6532 section 3.1): normalising it would send the mail to another address
    (KELVIN SIGN becomes an ASCII K: the mail went to kate@). Refused saying so."""
    alice: Account = await make_account("alice@example.com")
    await agent(alice, "direct")
    refused = await alice.http.post(
        "/api/v1/send", json={"to": ["\u212aate@example.org"], "subject": "s", "body": "b"}
    )
    assert error_code(refused, 400) == "invalid_email"
    assert "not in Unicode NFC" in refused.json()["error"]["message"]
    for status in ("queued", "failed", "sent"):
        listed = await alice.http.get(f"/api/v1/messages?status={status}")
        assert listed.json() == {"messages": []}


async def test_a_reply_leaves_out_message_ids_it_cannot_write_as_they_are(
    make_account: Any, running: RunningGateway
) -> None:
    """A Message-ID beyond ASCII (RFC 6532) or too long for a line went into the reply's
    In-Reply-To and References as RFC 2047 encoded words: no msg-id, matched by no client, and
    a References a reader may drop whole. Such ids are left out, as those with control
    characters are."""
    from e2a_gateway.workers.outbound import OutboundWorker

    alice: Account = await make_account("alice@example.com")
    bot = await agent(alice, "ids", hitl=True)
    long_id = "<" + "x" * 990 + "@example.org>"
    original = (
        "From: Human <human@example.org>\r\nTo: ids@agents.test\r\nSubject: Ids\r\n"
        "Message-ID: <grüße@example.org>\r\n"
        f"References: <root@example.org>\r\n {long_id}\r\n <zwölf@example.org>\r\n\r\nhi\r\n"
    ).encode()
    inbound_id = await received(running, "ids", original)
    replied = await alice.http.post(
        agent_path(bot, f"/messages/{inbound_id}/reply"), json={"body": "Noted."}
    )
    assert replied.status_code == 202, replied.text
    stored = await running.gateway.storage.get_outbound(None, replied.json()["message_id"])
    assert stored is not None
    assert stored.in_reply_to is None and stored.references == ["<root@example.org>"]
    raw = OutboundWorker(running.gateway).compose(stored)
    assert b"=?" not in raw.split(b"\r\n\r\n")[0]
    assert b"\r\nReferences: <root@example.org>\r\n" in raw


async def test_concurrent_sends_never_pass_the_limit(
    make_account: Any, running: RunningGateway
) -> None:
    """Sends racing for the agent's last place in the minute: one takes it, the rest are
    refused, however their checks and stores interleave."""
    running.gateway.settings.limits.sends_per_agent_per_minute = 2
    alice: Account = await make_account("alice@example.com")
    await agent(alice, "racer", hitl=True)
    body = {"to": ["x@example.org"], "subject": "s", "body": "b"}
    assert (await alice.http.post("/api/v1/send", json=body)).status_code == 202
    statuses: list[int] = []

    async def send() -> None:
        statuses.append((await alice.http.post("/api/v1/send", json=body)).status_code)

    async with trio.open_nursery() as nursery:
        for _ in range(6):
            nursery.start_soon(send)
    assert sorted(statuses) == [202, 429, 429, 429, 429, 429]
    assert len((await alice.http.get("/api/v1/messages")).json()["messages"]) == 2


async def test_deleting_sent_mail_frees_no_place_in_the_send_limit(
    make_account: Any, running: RunningGateway
) -> None:
    """The send limit counts sends, not the messages kept: a sent message deleted for good
    still holds its place in the minute."""
    running.gateway.settings.limits.sends_per_agent_per_minute = 1
    alice: Account = await make_account("alice@example.com")
    address = await agent(alice, "loop")
    body = {"to": [address], "subject": "s", "body": "b"}
    sent = await alice.http.post("/api/v1/send", json=body)
    assert sent.status_code == 200 and sent.json()["status"] == "sent", sent.text
    path = f"/v1/agents/{address}/messages/{sent.json()['message_id']}"
    assert (await alice.http.delete(path)).status_code == 200
    purged = await alice.http.delete(path, params={"permanent": "true", "confirm": "DELETE"})
    assert purged.status_code == 200, purged.text
    limited = await alice.http.post("/api/v1/send", json=body)
    assert error_code(limited, 429) == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60


async def test_an_address_freed_and_taken_again_keeps_its_owner_s_send_count_and_no_other(
    make_account: Any, running: RunningGateway
) -> None:
    """The send limit counts an owner's sends from an address: deleting the agent and creating
    it again does not give its owner a fresh minute, and another owner who takes the freed
    address does not inherit (nor learn) the count of the mail sent from it before."""
    running.gateway.settings.limits.sends_per_agent_per_minute = 1
    alice: Account = await make_account("alice@example.com")
    bob: Account = await make_account("bob@example.com")
    body = {"to": ["x@example.org"], "subject": "s", "body": "b"}
    gone = {"confirm": "DELETE", "permanent": "true"}

    address = await agent(alice, "reborn", hitl=True)
    assert (await alice.http.post("/api/v1/send", json=body)).status_code == 202
    assert (await alice.http.delete(f"/v1/agents/{address}", params=gone)).status_code == 200
    assert await agent(alice, "reborn", hitl=True) == address
    again = await alice.http.post("/api/v1/send", json=body)
    assert error_code(again, 429) == "rate_limited"  # the same owner's minute goes on

    assert (await alice.http.delete(f"/v1/agents/{address}", params=gone)).status_code == 200
    assert await agent(bob, "reborn", hitl=True) == address
    taken = await bob.http.post("/api/v1/send", json=body)
    assert taken.status_code == 202, taken.text  # another owner's sends are not counted


async def test_two_agents_replying_to_each_other_stop_at_the_conversation_limit(
    make_account: Any, running: RunningGateway
) -> None:
    """Two agents that answer every message they get (here one through `/api/v1`, the other
    through `/v1`) would mail each other at the send limit for ever. Each may send
    `limits.sends_per_conversation_per_hour` messages into one conversation in an hour: the
    next reply is 429 `rate_limited` naming the conversation, stored and counted nowhere,
    while the same agent still sends into another conversation."""
    running.gateway.settings.limits.sends_per_conversation_per_hour = 3
    alice: Account = await make_account("alice@example.com")
    ping = await agent(alice, "ping")
    pong = await agent(alice, "pong")
    opened = await alice.http.post(
        "/api/v1/send", json={"from": ping, "to": [pong], "subject": "hello", "body": "0"}
    )
    assert opened.status_code == 200 and opened.json()["status"] == "sent", opened.text

    async def reply(address: str, number: int) -> httpx.Response:
        """Answer the newest of the messages `address` got, once the `number`th arrived (a
        reply through `/v1` is handed on by the send worker)."""
        path = f"/v1/agents/{address}/messages"
        inbound: list[dict[str, Any]] = []

        async def arrived() -> bool:
            listed = await alice.http.get(path, params={"read_status": "all", "limit": 20})
            inbound[:] = listed.json()["items"]
            return len(inbound) == (number + 1) // 2

        await wait_until(arrived)
        newest = inbound[0]["id"]
        if address == pong:
            return await alice.http.post(f"{path}/{newest}/reply", json={"text": str(number)})
        path = agent_path(address, f"/messages/{newest}/reply")
        return await alice.http.post(path, json={"body": str(number)})

    answers: list[tuple[str, httpx.Response]] = []
    for number in range(1, 20):  # pong answers first, then each answers the other
        address = pong if number % 2 else ping
        answers.append((address, await reply(address, number)))
        if answers[-1][1].status_code == 429:
            break
    # ping's opening message starts the conversation; each then replies three times in it
    assert [(who, answer.status_code < 300) for who, answer in answers] == [
        (pong, True), (ping, True), (pong, True), (ping, True), (pong, True), (ping, True),
        (pong, False),
    ], [(who, answer.status_code, answer.text) for who, answer in answers]  # fmt: skip
    refused = answers[-1][1]
    assert error_code(refused, 429) == "rate_limited"
    assert "3 messages per hour in one conversation" in refused.json()["error"]["message"]
    assert 3500 <= int(refused.headers["Retry-After"]) <= 3600
    sent = await alice.http.get(f"/v1/agents/{pong}/messages", params={"direction": "outbound"})
    assert len(sent.json()["items"]) == 3
    elsewhere = await alice.http.post(
        "/api/v1/send", json={"from": pong, "to": [ping], "subject": "new", "body": "n"}
    )
    assert elsewhere.status_code == 200, elsewhere.text
