"""A relay that gives mail a Message-ID of its own (Amazon SES: `250 Ok <id>` to DATA, the
header rewritten to `<id@email.amazonses.com>`): the gateway keeps the id it named per
recipient, and a reply naming `<id@any domain>` joins the sent message's conversation — over
real SMTP, a relay on loopback answering as SES does, and the gateway's own SMTP listener.
Another account's agent, or another agent of the account, naming the id joins nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from e2a_gateway.relay_ids import id_left, relay_message_id
from tests.conftest import Account, agent_path, make_settings
from tests.databases import query
from tests.delivery_support import SENDER, create_agent, mail, smtp_send, wait_until
from tests.relay_support import Sink, relay_port

__all__ = ["relay_port"]  # fixtures

SES_ID = "0100018c5e1a2b3c-5f2d9a7e-1b2c-4d3e-8f90-a1b2c3d4e5f6-000000"
CAROL = "carol@example.org"


@pytest.mark.parametrize(
    ("reply", "named"),
    [
        (f"Ok {SES_ID}", SES_ID),
        ("2.0.0 Ok: queued as 4bGkRq2Xf8z9", "4bGkRq2Xf8z9"),
        ("2.0.0 Ok <abc123def@relay.example>", "abc123def"),
        ("2.0.0 Ok", None),
        ("Message accepted for delivery", None),
        ("2.0.0 OK  1700000000 a1-20020a05600c.123 - gsmtp", None),
        ("OK id=1abcde-000123-AB", None),
        ("Ok <abc123def@relay.example", None),
        (f"Ok {'a1' * 150}", None),
        ("", None),
    ],
)
def test_the_id_a_relay_names_in_its_reply_to_data(reply: str, named: str | None) -> None:
    assert relay_message_id(reply) == named


def test_a_message_id_is_matched_by_its_left_part() -> None:
    assert id_left(f"<{SES_ID}@eu-west-1.amazonses.com>") == SES_ID
    assert id_left(f" <{SES_ID}@email.amazonses.com> ") == SES_ID
    assert id_left("<no-domain-12345>") is None
    assert id_left("<x@example.org>") is None  # too short to be a relay's id
    assert id_left("<a b c d e f@example.org>") is None


@pytest.fixture
def sink() -> Sink:
    """A relay answering the end of DATA as Amazon SES's SMTP interface does."""
    return Sink(answer=f"250 Ok {SES_ID}")


@pytest.fixture
def settings(tmp_path: Path, relay_port: int) -> Settings:
    relay = {"host": "127.0.0.1", "port": relay_port, "tls": "none", "timeout_seconds": 10}
    return make_settings(tmp_path, outbound_smtp=relay)


async def sent_through_the_relay(account: Account, agent: str) -> dict[str, Any]:
    """`agent` writes to Carol over `/v1`, waiting for the relay to take it; the message."""
    sent = await account.http.post(
        f"/v1/agents/{quote(agent, safe='')}/messages",
        params={"wait": "sent"},
        json={"to": [CAROL], "subject": "Quarterly report", "text": "Numbers attached."},
    )
    assert sent.status_code == 200, sent.text
    assert sent.json()["status"] == "sent"
    shown = await account.http.get(
        f"/v1/agents/{quote(agent, safe='')}/messages/{sent.json()['message_id']}"
    )
    assert shown.status_code == 200, shown.text
    message: dict[str, Any] = shown.json()
    return message


async def reply_conversation(
    running: RunningGateway, account: Account, agent: str, in_reply_to: str
) -> str | None:
    """Carol answers `agent` over SMTP naming `in_reply_to`; the conversation it was given."""
    headers = (
        f"Message-ID: <carol-{len(in_reply_to)}@example.org>\r\nIn-Reply-To: {in_reply_to}\r\n"
    )
    await smtp_send(running.addresses.smtp_port, [agent], mail("Re: Quarterly report", headers))
    listing = (await account.http.get(agent_path(agent, "/messages?status=all"))).json()
    (reply,) = [m for m in listing["messages"] if m["subject"] == "Re: Quarterly report"]
    conversation = reply["conversation_id"]
    return None if conversation is None else str(conversation)


async def test_a_reply_naming_the_relays_message_id_joins_the_sent_conversation(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    sent = await sent_through_the_relay(alice, bot)
    assert sent["conversation_id"]
    assert len(sink.received) == 1
    kept = query(
        running.gateway.settings.database.url,
        "SELECT recipient, relay_id FROM relay_message_ids WHERE message_id = ?",
        (sent["id"],),
    )
    assert kept == [(CAROL, SES_ID)]

    answered = await reply_conversation(running, alice, bot, f"<{SES_ID}@email.amazonses.com>")
    assert answered == sent["conversation_id"]


async def test_another_agent_naming_the_relays_message_id_joins_nothing(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    alice: Account = await make_account("alice@example.com")
    bob: Account = await make_account("bob@example.com")
    bot = await create_agent(alice, "bot")
    helper = await create_agent(alice, "helper")
    bobs = await create_agent(bob, "bobs")
    sent = await sent_through_the_relay(alice, bot)
    assert sent["conversation_id"]

    ses_id = f"<{SES_ID}@eu-west-1.amazonses.com>"
    assert await reply_conversation(running, bob, bobs, ses_id) is None
    assert await reply_conversation(running, alice, helper, ses_id) is None


async def test_the_relays_ids_go_with_the_account(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    await sent_through_the_relay(alice, bot)
    url = running.gateway.settings.database.url
    assert query(url, "SELECT count(*) FROM relay_message_ids") == [(1,)]
    user = await running.gateway.storage.find_agent(bot)
    assert user is not None
    await running.gateway.storage.delete_user(user.user_id)
    await wait_until(lambda: query(url, "SELECT count(*) FROM relay_message_ids") == [(0,)])


class NumberingSes(Sink):
    """A relay answering each transaction's end of DATA as Amazon SES does, with an id of its
    own: SES_ID for the first, then the same id counting on (`…-000001`, …)."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.answer = f"250 Ok {SES_ID[:-6]}{len(self.received):06d}"
        return await super().handle_DATA(server, session, envelope)


def ses_message_id(sink: Sink, recipient: str, domain: str = "email.amazonses.com") -> str:
    """The Message-ID SES gave the newest copy it took for `recipient`."""
    number = max(n for n, (_, rcpts, _) in enumerate(sink.received) if recipient in rcpts)
    return f"<{SES_ID[:-6]}{number:06d}@{domain}>"


async def answered_over_smtp(
    running: RunningGateway, account: Account, agent: str, sender: str, answering: str
) -> str | None:
    """`sender` answers `agent` over SMTP, naming the Message-ID `answering` in In-Reply-To
    and References; the conversation_id `/api/v1` lists the answer with."""
    subject = f"Re: {sender} on {answering}"
    headers = f"In-Reply-To: {answering}\r\nReferences: {answering}\r\n"
    raw = mail(subject, headers).replace(f"<{SENDER}>".encode(), f"<{sender}>".encode())
    await smtp_send(running.addresses.smtp_port, [agent], raw)
    listing = (await account.http.get(agent_path(agent, "/messages?status=all"))).json()
    (answer,) = [m for m in listing["messages"] if m["subject"] == subject]
    conversation = answer["conversation_id"]
    return None if conversation is None else str(conversation)


@pytest.mark.parametrize("sink", [NumberingSes()], ids=["ses"])
async def test_api_v1_mail_and_the_answers_of_each_recipient_keep_the_agents_conversation(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    """A 2.x client sends over `/api/v1` naming its conversation, to two people through SES,
    which gives each copy its own Message-ID: each one's answer joins the conversation, the
    agent's `/api/v1` reply to one of them stays in it without naming it, and the answer to
    that reply joins it too. Mail sent naming no conversation has none, nor has its answer:
    the 2.x contract leaves conversation ids to the agents (`null` on first contact)."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    dave, erin = "dave@example.org", "erin@example.org"
    body = {"from": bot, "to": [SENDER, dave], "subject": "Offer", "body": "Our offer."}
    sent = await alice.http.post("/api/v1/send", json={**body, "conversation_id": "deal-42"})
    assert sent.status_code == 200, sent.text
    assert len(sink.received) == 2

    for person in (SENDER, dave):
        answering = ses_message_id(sink, person, "eu-west-1.amazonses.com")
        assert await answered_over_smtp(running, alice, bot, person, answering) == "deal-42"

    listing = (await alice.http.get(agent_path(bot, "/messages?status=all"))).json()
    (answer,) = [m for m in listing["messages"] if m["from"] == SENDER]
    replied = await alice.http.post(
        agent_path(bot, f"/messages/{answer['message_id']}/reply"), json={"body": "Deal."}
    )
    assert replied.status_code == 200, replied.text
    reply = (await alice.http.get(f"/api/v1/messages/{replied.json()['message_id']}")).json()
    assert reply["conversation_id"] == "deal-42"
    answering = ses_message_id(sink, SENDER)
    assert await answered_over_smtp(running, alice, bot, SENDER, answering) == "deal-42"

    plain = await alice.http.post("/api/v1/send", json={**body, "to": [erin]})
    assert plain.status_code == 200, plain.text
    first_contact = (await alice.http.get(f"/api/v1/messages/{plain.json()['message_id']}")).json()
    assert first_contact["conversation_id"] is None
    assert await answered_over_smtp(running, alice, bot, erin, ses_message_id(sink, erin)) is None
