"""A reply-all to mail that copied an internationalised address (RFC 6531), end to end: the mail
arrives over SMTP, the agent answers it over `/api/v1` and `/v1`, and the relay on loopback
gets the reply for everyone e2a can send to; the address beyond ASCII is refused alone, named
with its reason, instead of the whole reply being refused."""

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

JOSE = "josé@example.com"
ORIGINAL = (
    "From: Human <human@example.org>\r\n"
    "To: bot@agents.test, José <JOSÉ@example.com>, colleague@example.org\r\n"
    "Cc: boss@example.org\r\n"
    "Subject: Plan\r\n"
    "Message-ID: <plan@example.org>\r\n"
    "\r\n"
    "Shall we?\r\n"
).encode()
REACHED = ["boss@example.org", "colleague@example.org", "human@example.org"]


@pytest.fixture
def settings(tmp_path: Path, relay_port: int) -> Settings:
    relay = {"host": "127.0.0.1", "port": relay_port, "tls": "none", "timeout_seconds": 10}
    return make_settings(tmp_path, outbound_smtp=relay)


async def received(running: RunningGateway, alice: Account) -> str:
    """ORIGINAL, sent over SMTP (with SMTPUTF8, as its raw UTF-8 needs) to bot@agents.test;
    its message id."""
    await smtp_send(running.addresses.smtp_port, ["bot@agents.test"], ORIGINAL)
    (summary,) = (await alice.http.get(agent_path("bot@agents.test", "/messages"))).json()[
        "messages"
    ]
    return str(summary["message_id"])


async def relayed(sink: Sink) -> list[str]:
    """Every recipient the relay accepted a copy for, once all three arrived; no copy names
    the internationalised address, which no 7-bit field can carry."""
    await wait_until(lambda: sum(len(rcpts) for _, rcpts, _ in sink.received) >= len(REACHED))
    for _, _, raw in sink.received:
        copy = email.message_from_bytes(raw, policy=email.policy.default)
        assert "José" not in str(copy["To"]) and "jos" not in str(copy.get("Cc", ""))
        assert raw.isascii()
    return sorted(rcpt for _, rcpts, _ in sink.received for rcpt in rcpts)


async def test_reply_all_goes_to_everyone_else_and_names_the_address_it_cannot_reach(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    alice: Account = await make_account("alice@example.com")
    await create_agent(alice, "bot")
    inbound_id = await received(running, alice)

    replied = await alice.http.post(
        agent_path("bot@agents.test", f"/messages/{inbound_id}/reply"),
        json={"body": "Yes.", "reply_all": True},
    )
    assert replied.status_code == 200, replied.text
    assert await relayed(sink) == REACHED
    sent_id = replied.json()["message_id"]
    await wait_until(
        lambda: _settled(alice, f"/api/v1/messages/{sent_id}"),
    )
    view = (await alice.http.get(f"/api/v1/messages/{sent_id}")).json()
    assert view["status"] == "sent"
    assert view["to"] == ["human@example.org"]
    assert view["cc"] == [JOSE, "colleague@example.org", "boss@example.org"]
    assert view["error"].startswith(f"{JOSE}: ")
    assert "internationalised addresses (RFC 6531, SMTPUTF8) are not supported" in view["error"]
    assert all(address not in view["error"] for address in REACHED)


async def test_v1_reply_all_goes_to_everyone_else_and_names_the_address_it_cannot_reach(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    alice: Account = await make_account("alice@example.com")
    await create_agent(alice, "bot")
    inbound_id = await received(running, alice)

    replied = await alice.http.post(
        f"/v1/agents/bot%40agents.test/messages/{inbound_id}/reply",
        json={"text": "Yes.", "reply_all": True},
    )
    assert replied.status_code == 202 and replied.json()["status"] == "accepted", replied.text
    assert await relayed(sink) == REACHED
    sent_id = replied.json()["message_id"]
    await wait_until(lambda: _settled(alice, f"/api/v1/messages/{sent_id}"))
    view = (await alice.http.get(f"/api/v1/messages/{sent_id}")).json()
    assert view["status"] == "sent" and view["cc"][0] == JOSE
    assert view["error"].startswith(f"{JOSE}: ") and "RFC 6531" in view["error"]

    # A reply-all to that reply carries the address on, and is refused for it alone again.
    again = await alice.http.post(
        f"/v1/agents/bot%40agents.test/messages/{sent_id}/reply",
        json={"text": "And again.", "reply_all": True},
    )
    assert again.status_code == 202, again.text
    second = again.json()["message_id"]
    await wait_until(lambda: _settled(alice, f"/api/v1/messages/{second}"))
    view = (await alice.http.get(f"/api/v1/messages/{second}")).json()
    assert view["status"] == "sent" and JOSE in view["cc"] and "RFC 6531" in view["error"]


async def test_a_reply_to_the_internationalised_sender_alone_is_still_refused_saying_why(
    running: RunningGateway, make_account: Any
) -> None:
    """When the one the reply answers cannot be reached, nothing can be sent: 400, as for a
    send naming such an address."""
    alice: Account = await make_account("alice@example.com")
    await create_agent(alice, "bot")
    data = ORIGINAL.replace(
        b"From: Human <human@example.org>", "From: José <josé@example.com>".encode()
    )
    await smtp_send(running.addresses.smtp_port, ["bot@agents.test"], data)
    (summary,) = (await alice.http.get(agent_path("bot@agents.test", "/messages"))).json()[
        "messages"
    ]
    refused = await alice.http.post(
        agent_path("bot@agents.test", f"/messages/{summary['message_id']}/reply"),
        json={"body": "Yes.", "reply_all": True},
    )
    assert refused.status_code == 400
    assert "RFC 6531" in refused.json()["error"]["message"]


async def _settled(alice: Account, path: str) -> bool:
    view = (await alice.http.get(path)).json()
    return bool(view["status"] == "sent" and view.get("error"))


UNUSUAL = (
    b"From: Human <human@example.org>\r\n"
    b'To: bot@agents.test, Admin <Admin@Intranet>, "Sales Team" <"sales team"@example.com>\r\n'
    b"Cc: boss@example.org, lab@[192.0.2.1]\r\n"
    b"Subject: Plan\r\n"
    b"Message-ID: <plan-unusual@example.org>\r\n"
    b"\r\n"
    b"Shall we?\r\n"
)
UNUSABLE = {
    "admin@intranet": "'intranet' is not a fully qualified domain name",
    '"sales team"@example.com': "a quoted local part",
    "lab@[192.0.2.1]": "is not a valid domain name",
}


@pytest.mark.parametrize("face", ["api/v1", "v1"])
async def test_reply_all_leaves_out_a_copied_address_it_cannot_send_to_saying_why(
    running: RunningGateway, make_account: Any, sink: Sink, face: str
) -> None:
    """A reply-all to mail that copied an address with a dotless domain, a quoted local part or
    an address literal goes to everyone else; each of those is refused alone, named with its
    reason. The copies name them in Cc as the original did, the quoted local part quoted."""
    alice: Account = await make_account("alice@example.com")
    await create_agent(alice, "bot")
    await smtp_send(running.addresses.smtp_port, ["bot@agents.test"], UNUSUAL)
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
    reached = ["boss@example.org", "human@example.org"]
    await wait_until(lambda: sum(len(rcpts) for _, rcpts, _ in sink.received) >= len(reached))
    assert sorted(rcpt for _, rcpts, _ in sink.received for rcpt in rcpts) == reached
    for _, _, raw in sink.received:
        copy = email.message_from_bytes(raw, policy=email.policy.default)
        copied = [address.addr_spec for address in copy["Cc"].addresses]
        assert sorted(copied) == sorted([*UNUSABLE, "boss@example.org"]), copied
    sent_id = replied.json()["message_id"]
    await wait_until(lambda: _settled(alice, f"/api/v1/messages/{sent_id}"))
    view = (await alice.http.get(f"/api/v1/messages/{sent_id}")).json()
    assert view["status"] == "sent"
    for address, reason in UNUSABLE.items():
        assert address in view["cc"], view
        entry = next(part for part in view["error"].split("; ") if part.startswith(address))
        assert reason in entry, view["error"]
    assert all(address not in view["error"] for address in reached)
