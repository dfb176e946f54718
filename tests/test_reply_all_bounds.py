"""A reply-all to mail that copies a crowd is refused at once: a stranger who writes to an
agent naming thousands cannot hold up the gateway's one event loop while the agent's answer is
checked. The mail arrives over SMTP, the agent answers over `/api/v1` and `/v1`, and the relay
on loopback shows that nothing left."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from tests.conftest import Account, agent_path, make_settings
from tests.delivery_support import create_agent, smtp_send
from tests.relay_support import Sink, relay_port, sink

pytestmark = pytest.mark.slow

__all__ = ["relay_port", "sink"]  # fixtures


@pytest.fixture
def settings(tmp_path: Path, relay_port: int) -> Settings:
    relay = {"host": "127.0.0.1", "port": relay_port, "tls": "none", "timeout_seconds": 10}
    return make_settings(tmp_path, outbound_smtp=relay)


def crowd_message(copied: int) -> bytes:
    """Mail to bot@agents.test from a stranger that copies `copied` other addresses, in Cc
    fields of 50 addresses each (every line within SMTP's 1000 octets)."""
    addresses = [f"{index}@x.io" for index in range(copied)]
    fields = [
        "Cc: " + ",\r\n ".join(", ".join(addresses[i : i + 5]) for i in range(start, start + 50, 5))
        for start in range(0, copied, 50)
    ]
    return (
        "From: Stranger <stranger@example.org>\r\n"
        "To: bot@agents.test\r\n"
        + "".join(field + "\r\n" for field in fields)
        + "Subject: Hello all\r\n"
        "Message-ID: <crowd@example.org>\r\n"
        "\r\n"
        "Please answer everyone.\r\n"
    ).encode()


async def received(running: RunningGateway, alice: Account, copied: int) -> str:
    """`crowd_message(copied)`, sent over SMTP; its id in bot's inbox."""
    await smtp_send(running.addresses.smtp_port, ["bot@agents.test"], crowd_message(copied))
    (summary,) = (await alice.http.get(agent_path("bot@agents.test", "/messages"))).json()[
        "messages"
    ]
    return str(summary["message_id"])


CROWD = 18_000
"""About as many addresses as fit the header section SMTP takes (256 KiB)."""


@pytest.mark.parametrize("face", ["/api/v1", "/v1"])
async def test_reply_all_to_mail_copying_a_crowd_is_refused_at_once(
    running: RunningGateway, make_account: Any, sink: Sink, face: str
) -> None:
    """Counting the crowd costs in proportion to it: the gateway's one event loop, which every
    SMTP session and request shares, is not held up while the reply is refused."""
    alice: Account = await make_account("alice@example.com")
    await create_agent(alice, "bot")
    inbound_id = await received(running, alice, CROWD)
    if face == "/v1":
        path, body = f"/v1/agents/bot%40agents.test/messages/{inbound_id}/reply", "text"
    else:
        path, body = agent_path("bot@agents.test", f"/messages/{inbound_id}/reply"), "body"

    started = time.monotonic()
    refused = await alice.http.post(path, json={body: "Hello everyone.", "reply_all": True})
    took = time.monotonic() - started
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] in ("invalid_request", "too_many_recipients")
    assert took < 1.0, f"refusing the reply-all took {took:.1f} s"
    assert sink.received == []
