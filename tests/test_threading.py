"""Threading over real SMTP: which `conversation_id` an inbound message gets (delivery.md).

Conversation ids are only ever chosen by agents, so the messages being answered are stored
straight through storage with the id an agent gave them (outbound mail comes later).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from e2a_gateway.mailauth.resolver import FixtureResolver
from tests.conftest import Account, agent_path, make_settings
from tests.delivery_support import SENDER, create_agent, mail, smtp_send, store_with_conversation
from tests.test_mailauth_dkim import ed25519_key

OUR_DOMAIN = "out.agents.test"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Mail that this deployment sends leaves from `out.agents.test`."""
    return make_settings(tmp_path, outbound_smtp={"from_domain": OUR_DOMAIN})


@pytest.fixture
async def alice(make_account: Any) -> Account:
    account: Account = await make_account("alice@example.com")
    return account


@pytest.fixture
async def agent(running: RunningGateway, alice: Account) -> str:
    """Alice's agent, which already took part in conversations conv-a and conv-b and received
    one first-contact message without a conversation."""
    address = await create_agent(alice, "threads")
    for conversation, rfc_id in (
        ("conv-a", "<a@agents.test>"),
        ("conv-b", "<b@agents.test>"),
        (None, "<none@example.org>"),
    ):
        await store_with_conversation(running.gateway, address, conversation, rfc_message_id=rfc_id)
    return address


async def conversation_of(
    running: RunningGateway,
    account: Account,
    agent: str,
    headers: str,
    sender: str = SENDER,
    sign_with: Any = None,
) -> str | None:
    """Send a message with `headers` over SMTP (DKIM-signed when `sign_with` is a key) and
    return the conversation_id it was given."""
    data = mail("Re: thread", f"Message-ID: <reply-{len(headers)}@example.org>\r\n{headers}")
    if sign_with is not None:
        data = sign_with.sign(data)
    await smtp_send(running.addresses.smtp_port, [agent], data, sender=sender)
    listing = (await account.http.get(agent_path(agent, "/messages?status=all"))).json()
    newest = listing["messages"][-1]
    assert newest["subject"] == "Re: thread"
    conversation = newest["conversation_id"]
    return None if conversation is None else str(conversation)


async def test_a_human_reply_threads_by_in_reply_to(
    running: RunningGateway, alice: Account, agent: str
) -> None:
    headers = "In-Reply-To: <a@agents.test>\r\nReferences: <b@agents.test>\r\n"
    assert await conversation_of(running, alice, agent, headers) == "conv-a"


async def test_a_reply_with_references_only_takes_the_newest_known_one(
    running: RunningGateway, alice: Account, agent: str
) -> None:
    headers = "References: <a@agents.test> <b@agents.test> <unknown@example.org>\r\n"
    assert await conversation_of(running, alice, agent, headers) == "conv-b"


@pytest.mark.parametrize(
    "references",
    [
        pytest.param("<a@agents.test>,<b@agents.test>", id="commas"),
        pytest.param("<a@agents.test>,\r\n <b@agents.test>", id="commas-folded"),
        pytest.param("<a@agents.test><b@agents.test>", id="no-separator"),
    ],
)
async def test_references_separated_by_commas_or_nothing_are_each_read(
    running: RunningGateway, alice: Account, agent: str, references: str
) -> None:
    """Outlook on the web and other mailers separate References with commas: the newest id
    still decides."""
    headers = f"References: {references}\r\n"
    assert await conversation_of(running, alice, agent, headers) == "conv-b"


async def test_a_reply_to_a_message_without_conversation_stays_without(
    running: RunningGateway, alice: Account, agent: str
) -> None:
    headers = "In-Reply-To: <none@example.org>\r\nReferences: <a@agents.test>\r\n"
    assert await conversation_of(running, alice, agent, headers) is None


async def test_first_contact_and_unknown_references_have_no_conversation(
    running: RunningGateway, alice: Account, agent: str
) -> None:
    assert await conversation_of(running, alice, agent, "") is None
    headers = "In-Reply-To: <elsewhere@example.org>\r\n"
    assert await conversation_of(running, alice, agent, headers) is None


async def test_another_agents_messages_never_lend_their_conversation(
    running: RunningGateway, alice: Account, agent: str, make_account: Any
) -> None:
    bob: Account = await make_account("bob@example.com")
    bobs_agent = await create_agent(bob, "bobs-threads")
    await store_with_conversation(
        running.gateway, bobs_agent, "conv-secret", rfc_message_id="<secret@agents.test>"
    )
    headers = "In-Reply-To: <secret@agents.test>\r\n"
    assert await conversation_of(running, alice, agent, headers) is None


async def test_our_own_agents_mail_carries_its_conversation_id(
    running: RunningGateway, alice: Account, agent: str, resolver: FixtureResolver
) -> None:
    key = ed25519_key(OUR_DOMAIN)
    resolver.load_zone(key.zone())
    headers = "X-E2A-Conversation-Id: conv-between-agents\r\nIn-Reply-To: <a@agents.test>\r\n"
    conversation = await conversation_of(
        running, alice, agent, headers, sender=f"helper@{OUR_DOMAIN}", sign_with=key
    )
    assert conversation == "conv-between-agents"


@pytest.mark.parametrize(
    ("sender", "signer"),
    [
        pytest.param(SENDER, None, id="outsider"),
        pytest.param(f"helper@{OUR_DOMAIN}", None, id="our-envelope-without-dkim"),
        pytest.param(f"helper@{OUR_DOMAIN}", "attacker.test", id="our-envelope-their-dkim"),
        pytest.param(SENDER, OUR_DOMAIN, id="our-dkim-their-envelope"),
    ],
)
async def test_a_forged_conversation_header_from_outside_is_ignored(
    running: RunningGateway,
    alice: Account,
    agent: str,
    resolver: FixtureResolver,
    sender: str,
    signer: str | None,
) -> None:
    key = None
    if signer is not None:
        key = ed25519_key(signer)
        resolver.load_zone(key.zone())
    forged = "X-E2A-Conversation-Id: conv-forged\r\n"
    assert await conversation_of(running, alice, agent, forged, sender, key) is None
    threaded = forged + "In-Reply-To: <b@agents.test>\r\n"
    assert await conversation_of(running, alice, agent, threaded, sender, key) == "conv-b"


async def send(account: Account, sender: str, to: str, conversation_id: str, **extra: Any) -> None:
    """Send over REST from `sender` to the local agent `to` and wait for the hand-off."""
    body = {"from": sender, "to": [to], "subject": "Re: thread", "body": "hi", **extra}
    response = await account.http.post(
        "/api/v1/send", json={**body, "conversation_id": conversation_id}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "sent",
        "message_id": response.json()["message_id"],
        "method": "local",
    }


async def newest_conversation(account: Account, agent: str) -> str | None:
    listing = (await account.http.get(agent_path(agent, "/messages?status=all"))).json()
    conversation = listing["messages"][-1]["conversation_id"]
    return None if conversation is None else str(conversation)


async def test_another_users_agent_cannot_thread_into_a_conversation(
    running: RunningGateway, alice: Account, agent: str, make_account: Any
) -> None:
    """Alice's agent holds conv-a (with alice@example.org). Mallory's agent names conv-a when
    writing to it: the message arrives outside that conversation. Her own fresh id, and the
    ids between Alice's own agents, are kept."""
    mallory: Account = await make_account("mallory@example.com")
    intruder = await create_agent(mallory, "intruder")
    await send(mallory, intruder, agent, "conv-a")
    assert await newest_conversation(alice, agent) is None

    await send(mallory, intruder, agent, "conv-mallory")
    assert await newest_conversation(alice, agent) == "conv-mallory"
    await send(mallory, intruder, agent, "conv-mallory")  # she is in it now: it holds
    assert await newest_conversation(alice, agent) == "conv-mallory"

    colleague = await create_agent(alice, "colleague")
    await send(alice, colleague, agent, "conv-a")
    assert await newest_conversation(alice, agent) == "conv-a"


async def test_our_own_mail_naming_a_conversation_it_is_not_in_is_not_threaded_into_it(
    running: RunningGateway, alice: Account, agent: str, resolver: FixtureResolver
) -> None:
    """Mail this deployment produced (our envelope domain, our DKIM) from an agent that is not
    in conv-a names it: ignored unless the mail replies to a message of that conversation."""
    key = ed25519_key(OUR_DOMAIN)
    resolver.load_zone(key.zone())
    sender = f"stranger@{OUR_DOMAIN}"
    for n, (extra, expected) in enumerate(
        [("", None), ("In-Reply-To: <a@agents.test>\r\n", "conv-a")]
    ):
        data = (
            f"From: Stranger <{sender}>\r\nTo: {agent}\r\nSubject: Re: thread\r\n"
            f"Message-ID: <stranger-{n}@{OUR_DOMAIN}>\r\n"
            f"X-E2A-Conversation-Id: conv-a\r\n{extra}\r\nhi\r\n"
        ).encode()
        await smtp_send(running.addresses.smtp_port, [agent], key.sign(data), sender=sender)
        assert await newest_conversation(alice, agent) == expected
