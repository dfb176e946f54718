"""Conversations kept across real mail flows: an agent sends over REST through a relay on
loopback, people answer over the gateway's own SMTP listener (delivery.md, Threading)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from tests.conftest import Account, agent_path, make_settings
from tests.delivery_support import create_agent, mail, smtp_send
from tests.relay_support import Sink, relay_port, sink

__all__ = ["relay_port", "sink"]  # fixtures

LIST = "team@lists.example.org"


@pytest.fixture
def settings(tmp_path: Path, relay_port: int) -> Settings:
    relay = {"host": "127.0.0.1", "port": relay_port, "tls": "none", "timeout_seconds": 10}
    return make_settings(tmp_path, outbound_smtp=relay)


async def sent(account: Account, agent: str, to: str) -> dict[str, Any]:
    """`agent` writes to `to` over `/v1`, waiting for the relay to take it; the message."""
    path = f"/v1/agents/{quote(agent, safe='')}/messages"
    answer = await account.http.post(
        path,
        params={"wait": "sent"},
        json={"to": [to], "subject": "Weekly notes", "text": "Notes attached."},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "sent"
    shown = await account.http.get(f"{path}/{answer.json()['message_id']}")
    assert shown.status_code == 200, shown.text
    message: dict[str, Any] = shown.json()
    return message


def sent_bytes(sink: Sink) -> bytes:
    """The one message the relay took."""
    assert len(sink.received) == 1
    return sink.received[0][2]


def message_id_of(raw: bytes) -> str:
    """The Message-ID `raw` was sent with."""
    (field,) = re.findall(rb"^Message-ID: *(<[^>]+>)", raw, flags=re.IGNORECASE | re.MULTILINE)
    return field.decode()


async def conversation_of_newest(account: Account, agent: str, subject: str) -> str | None:
    """The conversation `/api/v1` lists the agent's newest message titled `subject` in."""
    listing = (await account.http.get(agent_path(agent, "/messages?status=all"))).json()
    found = [m for m in listing["messages"] if m["subject"] == subject]
    assert found, listing
    conversation = found[-1]["conversation_id"]
    return None if conversation is None else str(conversation)


async def test_a_reply_to_a_post_the_list_sent_back_joins_the_posts_conversation(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    """An agent posts to a mailing list it is on: the list sends the post back to it under the
    same Message-ID (Mailman does by default). A member's answer naming that Message-ID joins
    the conversation the agent sent the post in, not the copy's."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    post = await sent(alice, bot, LIST)
    assert post["conversation_id"]
    echoed = sent_bytes(sink).replace(b"\r\nTo: ", b"\r\nList-Id: <team.lists.example.org>\r\nTo: ")
    await smtp_send(
        running.addresses.smtp_port, [bot], echoed, sender="team-bounces@lists.example.org"
    )

    answered = message_id_of(echoed)
    headers = f"Message-ID: <answer@example.org>\r\nIn-Reply-To: {answered}\r\n"
    await smtp_send(running.addresses.smtp_port, [bot], mail("Re: Weekly notes", headers))
    assert await conversation_of_newest(alice, bot, "Re: Weekly notes") == post["conversation_id"]
