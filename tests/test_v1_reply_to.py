"""Reply-To on `/v1`'s sends and replies, and on the MCP tools writing through them: a mailbox
with a display name, as e2a takes it (`"Support Desk <help@example.com>"`), written into the
message as RFC 5322 wants it (quoted, or RFC 2047-encoded when not ASCII); anything that is not
one mailbox refused with a 400 saying what is wrong, header injection included. On a live
gateway, mail delivered between its own agents and read back raw."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

import pytest

from e2a_gateway.app import RunningGateway
from tests.conftest import Account
from tests.delivery_support import create_agent, wait_until
from tests.mcp_support import call, failure, mcp_client
from tests.test_outbound_mime import reply_to_of


def messages_of(agent: str, suffix: str = "") -> str:
    return f"/v1/agents/{quote(agent, safe='')}/messages{suffix}"


async def reply_to_received(account: Account, agent: str, subject: str) -> list[tuple[str, str]]:
    """The Reply-To mailboxes of the message `agent` received with `subject`, as an RFC 2047
    reader decodes its raw header (which must be ASCII)."""
    listed = await account.http.get(messages_of(agent, "?read_status=all"))
    assert listed.status_code == 200, listed.text
    [found] = [item for item in listed.json()["items"] if item["subject"] == subject]
    opened = await account.http.get(messages_of(agent, f"/{found['id']}"))
    return reply_to_of(base64.b64decode(opened.json()["raw_message"]))


async def test_a_reply_to_with_a_display_name_is_written_into_the_message(
    running: RunningGateway, make_account: Any
) -> None:
    account: Account = await make_account("reply-to@example.com")
    bot = await create_agent(account, "reply-to-bot")
    peer = await create_agent(account, "reply-to-peer")
    for subject, reply_to, expected in (
        ("Named", "Support Desk <help@example.com>", [("Support Desk", "help@example.com")]),
        ("Quoted", '"Doe, Jane" <Jane@Example.com>', [("Doe, Jane", "jane@example.com")]),
        ("Bare", "<desk@example.com>", [("", "desk@example.com")]),
        (
            "Several",
            ["Støtte Ålesund <hjelp@example.no>", "desk@example.com", "Desk <DESK@example.com>"],
            [("Støtte Ålesund", "hjelp@example.no"), ("", "desk@example.com")],
        ),
    ):
        body = {"to": [peer], "subject": subject, "text": "Hi.", "reply_to": reply_to}
        sent = await account.http.post(messages_of(bot, "?wait=sent"), json=body)
        assert sent.status_code == 200 and sent.json()["status"] == "sent", sent.text
        assert await reply_to_received(account, peer, subject) == expected, subject
    # A reply takes the same; answering mail with a named Reply-To goes to its address.
    listed = (await account.http.get(messages_of(peer, "?read_status=all"))).json()["items"]
    [named] = [item for item in listed if item["subject"] == "Named"]
    assert named["reply_to"] == ["help@example.com"]
    [own] = [item for item in listed if item["subject"] == "Bare"]
    answer = {"text": "Thanks.", "reply_to": "Ærlig Talt <talt@example.com>"}
    replied = await account.http.post(messages_of(peer, f"/{own['id']}/reply"), json=answer)
    assert replied.status_code == 202, replied.text
    stored = await running.gateway.storage.get_outbound(None, replied.json()["message_id"])
    assert stored is not None and stored.to == ["desk@example.com"]
    assert stored.reply_to == "Ærlig Talt <talt@example.com>"


@pytest.mark.parametrize(
    ("reply_to", "message"),
    [
        ("a@example.com, b@example.com", "holds more than one address"),
        ("Doe, Jane <jane@example.com>", "holds more than one address"),
        ("Desk help@example.com", "write a display name as Name <addr@example.com>"),
        ("Desk <help@example.com", "write a display name as Name <addr@example.com>"),
        ("Desk (help) <help@example.com>", "in double quotes"),
        ('"Desk <help@example.com>', "never closed"),
        ("=?utf-8?q?Bank?= <help@example.com>", "encoded word"),
        ("Desk <nobody>", "is not a valid email address"),
        ("Desk <help@example.com>\r\nBcc: victim@example.org", "must not contain line breaks"),
        ("Desk\u2028 <help@example.com>", "must not contain line breaks"),
        ("D" * 302 + " <help@example.com>", "321 characters, at most 320"),
        (["ok@example.com", "Desk <help@example.com>\nBcc: x@example.org"], "reply_to[1]"),
        ([], "reply_to takes 1 to 5 addresses"),
        (["a@example.com"] * 6, "reply_to takes 1 to 5 addresses"),
    ],
)
async def test_a_malformed_reply_to_is_refused_before_anything_is_stored(
    running: RunningGateway, make_account: Any, reply_to: Any, message: str
) -> None:
    account: Account = await make_account("reply-to-bad@example.com")
    bot = await create_agent(account, "reply-to-bad")
    body = {"to": ["someone@example.org"], "subject": "s", "text": "b", "reply_to": reply_to}
    refused = await account.http.post(messages_of(bot), json=body)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "invalid_request" and message in error["message"], error
    assert error["message"].startswith("reply_to")
    assert (await account.http.get("/api/v1/messages?status=queued")).json()["messages"] == []


async def inbox(client: Any, email: str) -> list[dict[str, Any]]:
    page = await call(client, "list_messages", {"email": email, "read_status": "all"})
    return list(page["messages"])


async def test_mcp_send_and_reply_take_a_named_reply_to(
    running: RunningGateway, make_account: Any
) -> None:
    account: Account = await make_account("reply-to-mcp@example.com")
    bot = await create_agent(account, "reply-to-mcp")
    peer = await create_agent(account, "reply-to-mcp-peer")
    async with mcp_client(running, account.key, agent=bot) as client:
        draft = {"to": [peer], "subject": "By MCP", "text": "Hi.", "reply_to": "Desk <d@x.org>"}
        assert (await call(client, "send_message", draft))["status"] == "accepted"
        bad = await failure(client, "send_message", draft | {"reply_to": "Desk <d@x.org>, e@x.org"})
        assert bad["code"] == "invalid_request" and bad["status"] == 400
        assert "holds more than one address" in bad["message"]

        async def arrived() -> bool:
            return bool(await inbox(client, peer))

        await wait_until(arrived)
        [received] = await inbox(client, peer)
        answer = {"message_id": received["message_id"], "text": "Back.", "email": peer}
        replied = await call(client, "reply_to_message", answer | {"reply_to": '"A, B" <a@x.org>'})
        assert replied["status"] == "accepted"
    assert await reply_to_received(account, peer, "By MCP") == [("Desk", "d@x.org")]
    stored = await running.gateway.storage.get_outbound(None, replied["message_id"])
    assert stored is not None and stored.reply_to == '"A, B" <a@x.org>'
