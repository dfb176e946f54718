"""A reply-all to mail that copied an internationalised address (RFC 6531), end to end: the mail
arrives over SMTP, the agent answers it over `/api/v1` and `/v1`, and the relay on loopback
(offering SMTPUTF8) gets the reply for everyone, the address beyond ASCII included, with
SMTPUTF8; an address e2a cannot send to (a quoted local part, a dotless domain) is refused
alone, named with its reason, instead of the whole reply being refused."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from tests.conftest import Account, agent_path, make_settings
from tests.delivery_support import create_agent, smtp_send, wait_until
from tests.relay_support import Sink, relay_on_loopback, sink

pytestmark = pytest.mark.slow

__all__ = ["sink"]  # fixtures

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
REACHED = sorted(["boss@example.org", "colleague@example.org", "human@example.org", JOSE])


@pytest.fixture
def relay_port(sink: Sink) -> Iterator[int]:
    """`sink` served on 127.0.0.1, offering SMTPUTF8."""
    with relay_on_loopback(sink, smtputf8=True) as port:
        yield port


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
    """Every recipient the relay accepted a copy for, once all of REACHED got one: each copy
    went with SMTPUTF8 and names José in its Cc field in UTF-8."""
    await wait_until(lambda: sum(len(rcpts) for _, rcpts, _ in sink.received) >= len(REACHED))
    for (_, _, raw), options in zip(sink.received, sink.mail_options, strict=True):
        assert "SMTPUTF8" in options, options
        copy = email.message_from_string(raw.decode("utf-8"), policy=email.policy.default)
        assert JOSE in [address.addr_spec for address in copy["Cc"].addresses]
    return sorted(rcpt for _, rcpts, _ in sink.received for rcpt in rcpts)


async def test_reply_all_goes_to_everyone_the_internationalised_address_too(
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
    await wait_until(lambda: _sent(alice, f"/api/v1/messages/{sent_id}"))
    view = (await alice.http.get(f"/api/v1/messages/{sent_id}")).json()
    assert view["to"] == ["human@example.org"]
    assert view["cc"] == [JOSE, "colleague@example.org", "boss@example.org"]
    assert not view.get("error"), view


async def test_v1_reply_all_goes_to_everyone_the_internationalised_address_too(
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
    await wait_until(lambda: _sent(alice, f"/api/v1/messages/{sent_id}"))
    view = (await alice.http.get(f"/api/v1/messages/{sent_id}")).json()
    assert view["cc"][0] == JOSE and not view.get("error"), view


async def test_a_reply_to_the_internationalised_sender_goes_to_them_with_smtputf8(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    alice: Account = await make_account("alice@example.com")
    await create_agent(alice, "bot")
    data = ORIGINAL.replace(
        b"From: Human <human@example.org>", "From: José <josé@example.com>".encode()
    )
    await smtp_send(running.addresses.smtp_port, ["bot@agents.test"], data)
    (summary,) = (await alice.http.get(agent_path("bot@agents.test", "/messages"))).json()[
        "messages"
    ]
    replied = await alice.http.post(
        agent_path("bot@agents.test", f"/messages/{summary['message_id']}/reply"),
        json={"body": "Yes."},
    )
    assert replied.status_code == 200, replied.text
    await wait_until(lambda: bool(sink.received))
    ((_, rcpts, raw),) = sink.received
    assert rcpts == [JOSE] and "SMTPUTF8" in sink.mail_options[0]
    assert f"To: {JOSE}\r\n".encode() in raw


async def _sent(alice: Account, path: str) -> bool:
    view = (await alice.http.get(path)).json()
    return bool(view["status"] == "sent")


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
