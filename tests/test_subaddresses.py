"""Subaddresses (RFC 5233; docs/smtp.md, "Subaddresses") over real SMTP: mail to
`bot+github@agents.test` reaches the agent `bot@agents.test` unless an agent has the tagged
address itself; the agent reads the address it was mailed at; its gate applies as to mail for
its plain address; the gateway's own addresses keep their meaning; `smtp.recipient_delimiter`
chooses the delimiter, and empty turns the feature off. What is refused or relayed elsewhere is
in tests/test_open_relay_audit.py."""

from __future__ import annotations

import base64
import smtplib
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trio

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from tests.conftest import Account, agent_path, make_settings
from tests.databases import query
from tests.delivery_support import create_agent, wait_until

SENDER = "alice@example.org"
DOMAIN = "alice.example"
WAIT_SECONDS = 10


@pytest.fixture
def settings(tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """The test gateway's settings with `smtp.recipient_delimiter` the test's parameter ("+"
    unless given)."""
    delimiter = getattr(request, "param", "+")
    smtp = {"listen": "127.0.0.1:0", "hostname": "mx.agents.test"}
    return make_settings(tmp_path, smtp={**smtp, "recipient_delimiter": delimiter})


def _message(to: str, subject: str) -> bytes:
    return (
        f"From: {SENDER}\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@example.org>\r\n\r\nHello.\r\n"
    ).encode()


def _send(port: int, recipients: list[str], data: bytes) -> list[tuple[int, str]]:
    """One transaction over SMTP: each RCPT's reply (code, enhanced status), then DATA when one
    was taken (its reply must be 250)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.example.org")
        assert client.mail(SENDER)[0] == 250
        replies = []
        for recipient in recipients:
            code, text = client.rcpt(recipient)
            replies.append((code, text.decode().split(" ", 1)[0]))
        if any(code == 250 for code, _ in replies):
            code, text = client.data(data)
            assert code == 250, text
        return replies


async def send(
    running: RunningGateway, recipients: list[str], data: bytes
) -> list[tuple[int, str]]:
    """`_send` off the event loop."""
    port = running.addresses.smtp_port
    return await trio.to_thread.run_sync(_send, port, recipients, data)


def stored_for(settings: Settings) -> list[str]:
    """The agents holding an inbound message, one entry per copy."""
    rows = query(
        settings.database.url, "SELECT agent_email FROM messages WHERE direction = 'inbound'"
    )
    return sorted(row[0] for row in rows)


async def custom_domain_agents(account: Account, *local_parts: str) -> list[str]:
    """Verify DOMAIN for `account` and register an agent at each of `local_parts` there."""
    assert (await account.http.post("/v1/domains", json={"domain": DOMAIN})).is_success
    verified = await account.http.post(f"/api/v1/domains/{DOMAIN}/verify")
    assert verified.status_code == 200, verified.text
    agents = []
    for local in local_parts:
        made = await account.http.post(
            "/api/v1/agents", json={"email": f"{local}@{DOMAIN}", "agent_mode": "local"}
        )
        assert made.status_code == 201, made.text
        agents.append(made.json()["email"])
    return agents


ACCEPTED = (250, "2.1.5")
NO_SUCH_AGENT = (550, "5.1.1")


async def test_tagged_mail_reaches_the_agent_and_shows_the_address_it_was_sent_to(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    tagged = _message("Bot <Bot+GitHub@agents.test>", "signed up")
    assert await send(running, ["Bot+GitHub@Agents.Test"], tagged) == [ACCEPTED]
    blind = _message("list@lists.example", "newsletter")  # the tag in the envelope alone
    assert await send(running, ["bot+news@agents.test"], blind) == [ACCEPTED]

    listing = (await alice.http.get(agent_path(bot, "/messages"))).json()["messages"]
    by_subject = {message["subject"]: message for message in listing}
    assert set(by_subject) == {"signed up", "newsletter"}
    signed_up, newsletter = by_subject["signed up"], by_subject["newsletter"]
    # the agent is the recipient and the fetch key; the tag is where the sender put it
    assert (signed_up["recipient"], signed_up["to"]) == (bot, ["bot+github@agents.test"])
    assert (newsletter["recipient"], newsletter["to"]) == (bot, ["list@lists.example"])
    for message, envelope in ((signed_up, "bot+github"), (newsletter, "bot+news")):
        full = (await alice.http.get(agent_path(bot, f"/messages/{message['message_id']}"))).json()
        raw = base64.b64decode(full["raw_message"])
        assert f"for <{envelope}@agents.test>;".encode() in raw.replace(b"\r\n\t", b" ")
        viewed = await alice.http.get(f"/v1/agents/{quote(bot)}/messages/{message['message_id']}")
        assert viewed.json()["delivered_to"] == bot


async def test_several_tags_of_one_agent_in_one_transaction_make_one_copy(
    running: RunningGateway, settings: Settings, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    recipients = ["bot+a@agents.test", "bot+b@agents.test", "bot@agents.test"]
    assert (
        await send(running, recipients, _message("bot+a@agents.test", "thrice")) == [ACCEPTED] * 3
    )
    assert stored_for(settings) == [bot]
    (message,) = (await alice.http.get(agent_path(bot, "/messages"))).json()["messages"]
    full = (await alice.http.get(agent_path(bot, f"/messages/{message['message_id']}"))).json()
    raw = base64.b64decode(full["raw_message"]).replace(b"\r\n\t", b" ")
    assert b"for <bot+a@agents.test>" not in raw  # the others' tags are not told
    assert b"for <bot@agents.test>;" in raw


async def test_an_agent_whose_own_address_holds_the_delimiter_keeps_its_mail(
    running: RunningGateway, settings: Settings, make_account: Any
) -> None:
    """A custom domain's agent may have `+` in its local part: its exact address wins."""
    alice: Account = await make_account("alice@example.com")
    sales, sales_eu = await custom_domain_agents(alice, "sales", "sales+eu")
    assert await send(running, [f"sales+eu@{DOMAIN}"], _message("sales", "eu")) == [ACCEPTED]
    assert stored_for(settings) == [sales_eu]
    assert await send(running, [f"sales+us@{DOMAIN}"], _message("sales", "us")) == [ACCEPTED]
    assert stored_for(settings) == sorted([sales, sales_eu])


async def test_the_gateways_own_addresses_keep_their_meaning(
    running: RunningGateway, settings: Settings, make_account: Any
) -> None:
    """Return paths (`bounces+…`), reply addresses (`approvals+…`) and operator mailboxes are
    never cut to an agent's address, even where an agent holds the plain one: a forged token is
    refused as before, `postmaster+x` is nobody."""
    alice: Account = await make_account("alice@example.com")
    await create_agent(alice, "approvals")
    await custom_domain_agents(alice, "bounces", "postmaster", "abuse", "approvals")
    refused = [
        f"bounces+{'a' * 40}@{DOMAIN}",
        f"bounces+x@{DOMAIN}",
        "approvals+AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA@agents.test",
        "approvals+AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA@mx.agents.test",
        f"approvals+x@{DOMAIN}",
        f"postmaster+x@{DOMAIN}",
        f"abuse+x@{DOMAIN}",
        "postmaster+x@mx.agents.test",
    ]
    assert await send(running, refused, _message("x", "probe")) == [NO_SUCH_AGENT] * len(refused)
    assert stored_for(settings) == []


async def test_the_inbound_gate_judges_tagged_mail_as_mail_for_the_plain_address(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    inbound = {"policy": "allowlist", "allowlist": ["boss@example.net"], "action": "block"}
    config = {"inbound": {"gate": inbound, "scan": {}}, "outbound": {"gate": {}, "scan": {}}}
    answer = await alice.http.put(
        f"/v1/agents/{quote(bot, safe='')}/protection", json={**config, "holds": {}}
    )
    assert answer.status_code == 200, answer.text

    assert await send(running, ["bot+x@agents.test"], _message("bot+x", "gated")) == [ACCEPTED]

    assert (await alice.http.get(agent_path(bot, "/messages"))).json()["messages"] == []
    blocked = await alice.http.get("/v1/events", params={"type": "email.blocked"})
    (event,) = blocked.json()["items"]
    assert event["data"]["agent_email"] == bot, event
    assert "not authenticated" in event["data"]["reason"], event


@pytest.mark.parametrize("settings", [""], indirect=True)
async def test_an_empty_delimiter_turns_subaddresses_off(
    running: RunningGateway, settings: Settings, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    recipients = ["bot+github@agents.test", "bot@agents.test"]
    assert await send(running, recipients, _message(bot, "off")) == [NO_SUCH_AGENT, ACCEPTED]
    assert stored_for(settings) == [bot]


@pytest.mark.parametrize("settings", ["-"], indirect=True)
async def test_another_delimiter_cuts_there_only(
    running: RunningGateway, settings: Settings, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    recipients = ["bot-github@agents.test", "bot+github@agents.test"]
    assert await send(running, recipients, _message(bot, "dash")) == [ACCEPTED, NO_SUCH_AGENT]
    assert stored_for(settings) == [bot]


@pytest.mark.parametrize("delimiter", ["a", ".", "%", "@", "+ "])
def test_a_delimiter_no_address_could_be_cut_at_is_refused(tmp_path: Path, delimiter: str) -> None:
    with pytest.raises(ValueError, match="cannot separate a tag"):
        make_settings(tmp_path, smtp={"recipient_delimiter": delimiter})


async def test_an_agent_mailing_another_agents_subaddress_delivers_it_here(
    running: RunningGateway, settings: Settings, make_account: Any
) -> None:
    """Mail between agents of this gateway never crosses SMTP, and a tag reaches its agent
    there too (it used to be refused as no agent's address)."""
    alice: Account = await make_account("alice@example.com")
    writer = await create_agent(alice, "writer")
    bot = await create_agent(alice, "bot")
    sent = await alice.http.post(
        "/api/v1/send",
        json={"from": writer, "to": ["Bot+Notes@agents.test"], "subject": "note", "body": "Hi."},
    )
    assert sent.status_code == 200, sent.text
    assert sent.json()["method"] == "local"
    await wait_until(lambda: stored_for(settings) == [bot], WAIT_SECONDS)
    (message,) = (await alice.http.get(agent_path(bot, "/messages"))).json()["messages"]
    assert (message["recipient"], message["to"]) == (bot, ["bot+notes@agents.test"])
