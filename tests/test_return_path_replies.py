"""Mail at a return path that is no report: an out-of-office reply (RFC 3834 responders answer
the envelope sender) or a person whose client answered the `Return-Path`. It reaches the
sending agent's inbox as inbound mail, threaded into the sent message's conversation and past
the agent's gate, and is never recorded as a bounce; only a return path with a valid MAC for a
message that exists delivers anything. Over real SMTP, the agent's message sent through the
relay sink as in tests/test_returned_mail_fixtures.py."""

from __future__ import annotations

import os
import smtplib
from typing import Any
from urllib.parse import quote

import pytest

from e2a_gateway.app import RunningGateway
from e2a_gateway.outbound.return_path import return_path_for, return_path_key
from tests.conftest import Account
from tests.delivery_support import create_agent, smtp_send, wait_until
from tests.relay_support import Sink, relay_port, sink
from tests.test_returned_mail_fixtures import (
    CAROL,
    DAVE,
    Sent,
    events_of,
    filled_in,
    forged,
    settings,
)

pytestmark = pytest.mark.slow

__all__ = ["relay_port", "settings", "sink"]  # fixtures

PERSONAL_REPLY = (
    "From: Carol Example <carol@example.org>\r\n"
    "To: {to}\r\n"
    "Subject: Re: Hi\r\n"
    "Message-ID: <carol-reply-{tag}@example.org>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=us-ascii\r\n"
    "\r\n"
    "Thanks, that works for me.\r\n"
)
"""A person's answer from a client that wrote to the Return-Path and kept no In-Reply-To."""


CONVERSATION = "conv-hi"


async def send_in_conversation(alice: Account, sink: Sink) -> Sent:
    """The agent's message to Carol and Dave in its conversation CONVERSATION."""
    bot = await create_agent(alice, "bot")
    body = {"from": bot, "to": [CAROL, DAVE], "subject": "Hi", "body": "Hello"}
    sent = await alice.http.post("/api/v1/send", json={**body, "conversation_id": CONVERSATION})
    assert sent.status_code == 200, sent.text
    await wait_until(lambda: len(sink.received) == 2)
    carol_path, carol_copy = sink.copy_to(CAROL)
    dave_path, _ = sink.copy_to(DAVE)
    return Sent(bot, sent.json()["message_id"], carol_path, dave_path, carol_copy)


async def inbox(alice: Account, agent: str) -> list[dict[str, Any]]:
    listing = await alice.http.get(f"/api/v1/agents/{quote(agent, safe='')}/messages?status=all")
    assert listing.status_code == 200, listing.text
    return list(listing.json()["messages"])


async def assert_no_bounce(alice: Account, sent: Sent) -> None:
    assert await events_of(alice, "email.bounced") == []
    assert await events_of(alice, "email.complained") == []
    listed = await alice.http.get("/v1/account/suppressions")
    assert listed.json()["items"] == []
    viewed = await alice.http.get(f"/v1/agents/{sent.agent}/messages/{sent.message_id}")
    assert viewed.json()["delivery_status"] == "sent"


@pytest.mark.parametrize("sender", ["", CAROL])
async def test_an_out_of_office_reply_reaches_the_agent_in_its_conversation(
    running: RunningGateway, make_account: Any, sink: Sink, sender: str
) -> None:
    alice: Account = await make_account("alice@example.com")
    sent = await send_in_conversation(alice, sink)
    report = filled_in("out_of_office_exchange.eml", sent.carol_path, sent)
    await smtp_send(running.addresses.smtp_port, [sent.carol_path], report, sender=sender)

    (received,) = await inbox(alice, sent.agent)
    assert received["subject"] == "Automatic reply: Hi"
    assert received["from"] == "carol@example.org"
    assert received["conversation_id"] == CONVERSATION
    await assert_no_bounce(alice, sent)
    (event,) = await events_of(alice, "email.received")
    assert event["data"]["message_id"] == received["message_id"]


async def test_a_persons_reply_to_the_return_path_threads_by_the_return_path(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    """No In-Reply-To, no References: the authenticated return path alone names the message."""
    alice: Account = await make_account("alice@example.com")
    sent = await send_in_conversation(alice, sink)
    reply = PERSONAL_REPLY.format(to=sent.carol_path, tag="1").encode()
    await smtp_send(running.addresses.smtp_port, [sent.carol_path], reply, sender=CAROL)

    (received,) = await inbox(alice, sent.agent)
    assert received["subject"] == "Re: Hi"
    assert received["conversation_id"] == CONVERSATION
    await assert_no_bounce(alice, sent)


async def test_a_reply_at_a_return_path_meets_the_agents_gate(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    alice: Account = await make_account("alice@example.com")
    sent = await send_in_conversation(alice, sink)
    inbound = {"policy": "allowlist", "allowlist": ["boss@example.com"], "action": "block"}
    config = {"inbound": {"gate": inbound, "scan": {}}, "outbound": {"gate": {}, "scan": {}}}
    answer = await alice.http.put(
        f"/v1/agents/{quote(sent.agent, safe='')}/protection", json={**config, "holds": {}}
    )
    assert answer.status_code == 200, answer.text
    reply = PERSONAL_REPLY.format(to=sent.carol_path, tag="2").encode()
    await smtp_send(running.addresses.smtp_port, [sent.carol_path], reply, sender=CAROL)

    assert await inbox(alice, sent.agent) == []
    (blocked,) = await events_of(alice, "email.blocked")
    assert blocked["data"]["agent_email"] == sent.agent
    await assert_no_bounce(alice, sent)


async def test_a_return_path_reaches_no_inbox_unless_authentic_and_of_a_message(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    """A forged token is refused at RCPT TO; an authentic token for a message that does not
    exist (or no longer does) delivers nothing to anyone."""
    alice: Account = await make_account("alice@example.com")
    sent = await send_in_conversation(alice, sink)
    port = running.addresses.smtp_port
    reply = PERSONAL_REPLY.format(to="x", tag="3").encode()
    with pytest.raises(smtplib.SMTPRecipientsRefused, match="550"):
        await smtp_send(port, [forged(sent.carol_path)], reply, sender=CAROL)
    key = return_path_key(running.gateway.server_key)
    absent = "msg_" + os.urandom(12).hex()
    await smtp_send(port, [return_path_for(absent, CAROL, key, "agents.test")], reply, sender=CAROL)
    assert await inbox(alice, sent.agent) == []
    assert await events_of(alice, "email.received") == []
    await assert_no_bounce(alice, sent)
