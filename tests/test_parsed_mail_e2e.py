"""Mail of the shapes parse.py reads, handed to the inbound pipeline and read back over the API
as agents read it."""

from __future__ import annotations

from typing import Any

from e2a_gateway.app import RunningGateway
from tests.conftest import Account, agent_path
from tests.delivery_support import accept, create_agent

HEADER = (
    b"From: Dani <dani@example.org>\r\n"
    b"To: bot@agents.test\r\n"
    b"Message-ID: <m1@example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
)


async def received(running: RunningGateway, account: Account, data: bytes) -> dict[str, Any]:
    """The message view of `data`, accepted for a new agent of `account`."""
    bot = await create_agent(account, "bot")
    message_id = await accept(running.gateway, [bot], data)
    response = await account.http.get(agent_path(bot, f"/messages/{message_id}"))
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_hebrew_in_iso_8859_8_i_reads_as_hebrew(
    running: RunningGateway, make_account: Any
) -> None:
    data = HEADER + (
        b"Subject: =?iso-8859-8-i?B?+ezl7Q==?=\r\n"
        b'Content-Type: text/plain; charset="iso-8859-8-i"\r\n'
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n"
        b"\xf9\xec\xe5\xed\r\n"
    )
    view = await received(running, await make_account("alice@example.com"), data)
    assert view["subject"] == "שלום"
    assert view["text_body"] == "שלום\n"
