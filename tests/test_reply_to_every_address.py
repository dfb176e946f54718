"""A reply to mail whose Reply-To (or From) names several mailboxes goes to every one of them
(RFC 5322 section 3.6.2: replies go to the address(es) Reply-To names), end to end: the mail
arrives over SMTP, the agent answers it over `/api/v1` and `/v1`, and the relay on loopback
gets a copy for each; the agent's own address is never one of them."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path
from typing import Any

import pytest

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from tests.conftest import Account, agent_path, make_settings
from tests.delivery_support import create_agent, smtp_send, wait_until
from tests.relay_support import Sink, relay_port, sink

pytestmark = pytest.mark.slow

__all__ = ["relay_port", "sink"]  # fixtures

ORIGINAL = (
    b"From: Human <human@example.org>\r\n"
    b"Reply-To: Desk <desk@example.org>, Team <team@example.org>, bot@agents.test\r\n"
    b"To: bot@agents.test\r\n"
    b"Subject: Plan\r\n"
    b"Message-ID: <plan@example.org>\r\n"
    b"\r\n"
    b"Shall we?\r\n"
)
FROM_TWO = (
    b"From: human@example.org, partner@example.org\r\n"
    b"Sender: human@example.org\r\n"
    b"To: bot@agents.test\r\n"
    b"Subject: Plan\r\n"
    b"Message-ID: <plan-two@example.org>\r\n"
    b"\r\n"
    b"Shall we?\r\n"
)


@pytest.fixture
def settings(tmp_path: Path, relay_port: int) -> Settings:
    relay = {"host": "127.0.0.1", "port": relay_port, "tls": "none", "timeout_seconds": 10}
    return make_settings(tmp_path, outbound_smtp=relay)


async def _reply(alice: Account, face: str, inbound_id: str) -> None:
    if face == "v1":
        path = f"/v1/agents/bot%40agents.test/messages/{inbound_id}/reply"
        replied = await alice.http.post(path, json={"text": "Yes."})
    else:
        path = agent_path("bot@agents.test", f"/messages/{inbound_id}/reply")
        replied = await alice.http.post(path, json={"body": "Yes."})
    assert replied.status_code in (200, 202), replied.text


@pytest.mark.parametrize("face", ["api/v1", "v1"])
@pytest.mark.parametrize(
    ("original", "expected"),
    [
        (ORIGINAL, ["desk@example.org", "team@example.org"]),
        (FROM_TWO, ["human@example.org", "partner@example.org"]),
    ],
)
async def test_a_reply_goes_to_every_mailbox_the_original_asks_replies_to_go_to(
    running: RunningGateway,
    make_account: Any,
    sink: Sink,
    face: str,
    original: bytes,
    expected: list[str],
) -> None:
    alice: Account = await make_account("alice@example.com")
    await create_agent(alice, "bot")
    await smtp_send(running.addresses.smtp_port, ["bot@agents.test"], original)
    (summary,) = (await alice.http.get(agent_path("bot@agents.test", "/messages"))).json()[
        "messages"
    ]
    await _reply(alice, face, summary["message_id"])
    await wait_until(lambda: sum(len(rcpts) for _, rcpts, _ in sink.received) >= len(expected))
    assert sorted(rcpt for _, rcpts, _ in sink.received for rcpt in rcpts) == expected
    for _, _, raw in sink.received:
        copy = email.message_from_bytes(raw, policy=email.policy.default)
        assert sorted(a.addr_spec for a in copy["To"].addresses) == expected
        assert "Cc" not in copy


NAMED_OTHERWISE = (
    b"From: Human <human@example.org>\r\n"
    b"To: Bot <BOT@Agents.Test.>, colleague@example.org\r\n"
    b"Cc: human@example.org.\r\n"
    b"Subject: Plan\r\n"
    b"Message-ID: <plan-named@example.org>\r\n"
    b"\r\n"
    b"Shall we?\r\n"
)


@pytest.mark.parametrize("face", ["api/v1", "v1"])
async def test_reply_all_leaves_out_the_agent_and_the_sender_however_the_original_wrote_them(
    running: RunningGateway, make_account: Any, sink: Sink, face: str
) -> None:
    """The original names the agent (and its sender) with a trailing dot on the domain: the
    same mailbox. A reply-all copies neither: the agent gets no copy of its own reply, and
    the sender is named once."""
    alice: Account = await make_account("alice@example.com")
    await create_agent(alice, "bot")
    await smtp_send(running.addresses.smtp_port, ["bot@agents.test"], NAMED_OTHERWISE)
    (summary,) = (await alice.http.get(agent_path("bot@agents.test", "/messages"))).json()[
        "messages"
    ]
    if face == "v1":
        path = f"/v1/agents/bot%40agents.test/messages/{summary['message_id']}/reply"
        replied = await alice.http.post(path, json={"text": "Yes.", "reply_all": True})
    else:
        path = agent_path("bot@agents.test", f"/messages/{summary['message_id']}/reply")
        replied = await alice.http.post(path, json={"body": "Yes.", "reply_all": True})
    assert replied.status_code in (200, 202), replied.text
    sent_id = replied.json()["message_id"]
    view = (await alice.http.get(f"/api/v1/messages/{sent_id}")).json()
    assert view["to"] == ["human@example.org"] and view["cc"] == ["colleague@example.org"], view
    await wait_until(lambda: sum(len(rcpts) for _, rcpts, _ in sink.received) >= 2)
    await wait_until(lambda: _status(alice, f"/api/v1/messages/{sent_id}"), seconds=10)
    inbox = (await alice.http.get(agent_path("bot@agents.test", "/messages?status=all"))).json()
    assert len(inbox["messages"]) == 1, inbox  # the original alone: no copy of the reply


async def _status(alice: Account, path: str) -> bool:
    return bool((await alice.http.get(path)).json()["status"] == "sent")


UNREACHABLE_TOO = (
    b"From: Human <human@example.org>\r\n"
    b"Reply-To: desk@example.org, Admin <admin@intranet>\r\n"
    b"To: bot@agents.test\r\n"
    b"Subject: Plan\r\n"
    b"Message-ID: <plan-intranet@example.org>\r\n"
    b"\r\n"
    b"Shall we?\r\n"
)


async def test_a_reply_to_a_reply_that_named_an_address_e2a_cannot_send_to_goes_out(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    """The Reply-To names, after the first, an address e2a cannot send to: the reply goes to
    the first and names the other, refused alone. Answering that reply (a follow-up to the
    same people) is not refused for it either."""
    alice: Account = await make_account("alice@example.com")
    await create_agent(alice, "bot")
    await smtp_send(running.addresses.smtp_port, ["bot@agents.test"], UNREACHABLE_TOO)
    (summary,) = (await alice.http.get(agent_path("bot@agents.test", "/messages"))).json()[
        "messages"
    ]
    path = "/v1/agents/bot%40agents.test/messages/{}/reply"
    first = await alice.http.post(path.format(summary["message_id"]), json={"text": "Yes."})
    assert first.status_code == 202, first.text
    first_id = first.json()["message_id"]
    await wait_until(lambda: _status(alice, f"/api/v1/messages/{first_id}"))
    view = (await alice.http.get(f"/api/v1/messages/{first_id}")).json()
    assert view["to"] == ["desk@example.org", "admin@intranet"], view
    assert "admin@intranet" in view["error"] and "desk@example.org" not in view["error"]

    again = await alice.http.post(path.format(first_id), json={"text": "And then?"})
    assert again.status_code == 202, again.text
    await wait_until(lambda: len(sink.received) >= 2)
    assert [rcpts for _, rcpts, _ in sink.received] == [["desk@example.org"]] * 2


@pytest.mark.parametrize("face", ["api/v1", "v1"])
async def test_a_reply_to_a_reply_to_naming_crowds_is_refused_not_sent_to_them(
    running: RunningGateway, make_account: Any, sink: Sink, face: str
) -> None:
    """Mail whose Reply-To names more addresses than a send may have (100 in a field on
    `/api/v1`, 50 in all on `/v1`) would turn an agent's answer into mail to a crowd the
    sender chose: the reply is refused, naming the bound, and nothing goes out."""
    alice: Account = await make_account("alice@example.com")
    await create_agent(alice, "bot")
    crowd = ",\r\n ".join(f"victim{i}@example.net" for i in range(150)).encode()
    data = ORIGINAL.replace(b"Desk <desk@example.org>, Team <team@example.org>", crowd)
    await smtp_send(running.addresses.smtp_port, ["bot@agents.test"], data)
    (summary,) = (await alice.http.get(agent_path("bot@agents.test", "/messages"))).json()[
        "messages"
    ]
    if face == "v1":
        path = f"/v1/agents/bot%40agents.test/messages/{summary['message_id']}/reply"
        replied = await alice.http.post(path, json={"text": "Yes."})
        assert replied.status_code == 400, replied.text
        assert replied.json()["error"]["code"] == "too_many_recipients"
    else:
        path = agent_path("bot@agents.test", f"/messages/{summary['message_id']}/reply")
        replied = await alice.http.post(path, json={"body": "Yes."})
        assert replied.status_code == 400, replied.text
        assert "at most 100" in replied.json()["error"]["message"]
    sent = (await alice.http.get("/api/v1/messages?status=queued")).json()["messages"]
    assert sent == [] and sink.received == []


async def test_every_reply_to_address_is_shown_where_the_message_is(
    running: RunningGateway, make_account: Any
) -> None:
    """The message's views show each mailbox its Reply-To names, in order: `/v1` lists them
    (getMessage, listMessages, the email.received event, the account export), `/api/v1`'s
    export writes them as one RFC 5322 address list, and `/api/v1`'s webhook `from`, which
    the contract makes one address, stays the first."""
    alice: Account = await make_account("alice@example.com")
    await create_agent(alice, "bot")
    await smtp_send(running.addresses.smtp_port, ["bot@agents.test"], ORIGINAL)
    every = ["desk@example.org", "team@example.org", "bot@agents.test"]
    messages = "/v1/agents/bot%40agents.test/messages"
    (listed,) = (await alice.http.get(f"{messages}?read_status=all")).json()["items"]
    assert listed["reply_to"] == every
    opened = (await alice.http.get(f"{messages}/{listed['id']}")).json()
    assert opened["reply_to"] == every
    (event,) = (await alice.http.get("/v1/events?type=email.received")).json()["items"]
    assert event["data"]["reply_to"] == every
    (exported,) = (await alice.http.get("/v1/account/export")).json()["messages"]
    assert exported["reply_to"] == every
    (kept,) = (await alice.http.get("/api/v1/users/me/export")).json()["messages"]
    assert kept["reply_to"] == "desk@example.org, team@example.org, bot@agents.test"
