"""What a sender's mail can make an MCP tool answer: never more than an MCP client takes in one
message (the official client refuses a server-sent event over 1 MiB, and every answer is sent
twice, as text and as structured content). Driven by the official `mcp` client over both
transports, `/mcp` and `e2a mcp` on stdio, with mail arriving over real SMTP.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import trio

from e2a_gateway.app import RunningGateway
from e2a_gateway.mcp.bounds import (
    CUT_MARK,
    MAX_ANSWER_BYTES,
    MAX_BODY_BYTES,
    MAX_ROW_ADDRESSES,
    MAX_ROW_TEXT_CHARS,
)
from tests.conftest import Account
from tests.delivery_support import accept, create_agent, smtp_send, wait_until
from tests.mcp_support import call, failure
from tests.test_mcp_names import TRANSPORTS, opener

CLIENT_EVENT_LIMIT = 1_048_576
"""The official MCP client's bound on one server-sent event."""


def _folded(field: str, words: str, size: int) -> str:
    """A header field of about `size` characters of `words`, folded every 800."""
    value = (words * (size // len(words) + 1))[:size].strip()
    lines = [value[start : start + 800] for start in range(0, len(value), 800)]
    return f"{field}: " + "\r\n ".join(lines) + "\r\n"


def _long_subject_mail(agent: str, n: int) -> bytes:
    subject = _folded("Subject", f"Invoice {n} overdue, please act now ", 250_000)
    return (
        f"From: Mallory <mallory@example.org>\r\nTo: {agent}\r\n{subject}\r\nPay up.\r\n"
    ).encode()


def _size(answer: Any) -> int:
    """How many bytes an answer takes twice, as text and as structured content."""
    return 2 * len(json.dumps(answer, ensure_ascii=False).encode())


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_long_subjects_do_not_break_the_list_tools(
    transport: str, running: RunningGateway, make_account: Any
) -> None:
    """Five mails each with a 250 KB Subject: list_messages (inbox and `/v1` listing),
    list_conversations and list_events still answer, each subject cut at MAX_ROW_TEXT_CHARS
    with CUT_MARK; get_message still shows the message."""
    account: Account = await make_account(f"long-subject-{transport}@example.com")
    agent = await create_agent(account, f"long-subject-{transport}")
    for n in range(5):
        await smtp_send(running.addresses.smtp_port, [agent], _long_subject_mail(agent, n))
    with trio.fail_after(120):
        async with opener(transport, running)(account.key, agent) as client:

            async def arrived() -> bool:
                listed = await call(client, "list_messages", {"read_status": "all", "limit": 1})
                return bool(listed["messages"]) and "next_cursor" in listed

            await wait_until(arrived)
            inbox = await call(client, "list_messages", {})
            every = await call(client, "list_messages", {"direction": "all"})
            conversations = await call(client, "list_conversations", {})
            events = await call(client, "list_events", {})
            shown = await call(
                client, "get_message", {"message_id": inbox["messages"][0]["message_id"]}
            )
    for rows in (inbox["messages"], every["messages"]):
        assert len(rows) == 5
        for row in rows:
            assert row["subject"].startswith("Invoice ") and row["subject"].endswith(CUT_MARK)
            assert len(row["subject"]) == MAX_ROW_TEXT_CHARS + len(CUT_MARK)
    for answer in (inbox, every, conversations, events, shown):
        assert _size(answer) < MAX_ANSWER_BYTES < CLIENT_EVENT_LIMIT
    assert shown["subject"].startswith("Invoice 0 overdue")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_long_recipient_lists_are_cut_in_list_rows(
    transport: str, running: RunningGateway, make_account: Any
) -> None:
    """A mail copied to 3,000 addresses: its list_messages row keeps MAX_ROW_ADDRESSES of them
    and says how many more there are; get_message still lists them all."""
    account: Account = await make_account(f"long-cc-{transport}@example.com")
    agent = await create_agent(account, f"long-cc-{transport}")
    copied = [f"person{n}@example.net" for n in range(3000)]
    lines = [", ".join(copied[start : start + 10]) for start in range(0, 3000, 10)]
    cc = "Cc: " + ",\r\n ".join(lines) + "\r\n"
    data = f"From: Mallory <mallory@example.org>\r\nTo: {agent}\r\n{cc}Subject: All\r\n\r\nHi\r\n"
    await smtp_send(running.addresses.smtp_port, [agent], data.encode())
    with trio.fail_after(120):
        async with opener(transport, running)(account.key, agent) as client:

            async def arrived() -> bool:
                return bool((await call(client, "list_messages", {}))["messages"])

            await wait_until(arrived)
            [row] = (await call(client, "list_messages", {}))["messages"]
            [same] = (await call(client, "list_messages", {"direction": "all"}))["messages"]
    for shown in (row, same):
        assert shown["cc"][:MAX_ROW_ADDRESSES] == copied[:MAX_ROW_ADDRESSES]
        assert shown["cc"][MAX_ROW_ADDRESSES:] == [f"…[{3000 - MAX_ROW_ADDRESSES} more]"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_long_chinese_body_fits_in_bytes(
    transport: str, running: RunningGateway, make_account: Any
) -> None:
    """200 KB of Chinese text and the same as HTML (three bytes a character): get_message and
    read_email answer text, html, reply_text and the quoted passages within MAX_BODY_BYTES of
    UTF-8 together, marked `truncated`, and the whole answer fits an MCP client's event."""
    account: Account = await make_account(f"chinese-{transport}@example.com")
    agent = await create_agent(account, f"chinese-{transport}")
    line = "季度预算说明请逐行核对每一项费用并在周五前回复。\r\n"
    text = line * (200_000 // len(line.encode()))
    encoded = base64.encodebytes(text.encode()).decode().replace("\n", "\r\n")
    html = base64.encodebytes(f"<p>{text}</p>".encode()).decode().replace("\n", "\r\n")
    data = (
        f"From: Alice <alice@example.org>\r\nTo: {agent}\r\nSubject: 预算\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n"
        "--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64"
        f"\r\n\r\n{encoded}--b\r\nContent-Type: text/html; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n{html}--b--\r\n"
    )
    await smtp_send(running.addresses.smtp_port, [agent], data.encode())
    with trio.fail_after(120):
        async with opener(transport, running)(account.key, agent) as client:

            async def arrived() -> bool:
                return bool((await call(client, "list_messages", {}))["messages"])

            await wait_until(arrived)
            [row] = (await call(client, "list_messages", {}))["messages"]
            shown = await call(client, "get_message", {"message_id": row["message_id"]})
            read = await call(client, "read_email", {"message_id": row["message_id"]})

    def utf8(value: str | None) -> int:
        return len((value or "").encode())

    parts = shown["trust"]["parts"]
    total = sum(utf8(shown[name]) for name in ("text", "html", "reply_text"))
    assert total + sum(utf8(part.get("content")) for part in parts) <= MAX_BODY_BYTES
    assert shown["truncated"] is True and shown["text"].startswith(line.replace("\r\n", "\n"))
    assert shown["html"].startswith("<p>季度")
    read_total = sum(utf8(read[name]) for name in ("text_body", "html_body", "reply_text"))
    assert read_total <= MAX_BODY_BYTES and read["truncated"] is True
    assert read["text_body"].startswith(line.strip()) and read["html_body"].startswith("<p>")
    for answer in (shown, read):
        assert _size(answer) < MAX_ANSWER_BYTES


def _crowded_mail(agent: str, n: int) -> bytes:
    """A mail with a long subject and 30 long To and Cc addresses each: a list row still takes
    about 10 KB once cut."""
    copied = ",\r\n ".join(f"{'x' * 190}{k}@example.net" for k in range(30))
    subject = _folded("Subject", f"Crowded {n} ", 2_000)
    return (
        f"From: Mallory <mallory@example.org>\r\nTo: {agent},\r\n {copied}\r\n"
        f"Cc: {copied}\r\n{subject}\r\nHi\r\n"
    ).encode()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_answer_too_large_says_to_ask_for_fewer(
    transport: str, running: RunningGateway, make_account: Any
) -> None:
    """100 crowded mails: list_messages with limit 100 would answer more than an MCP client
    takes, so it fails as a tool error (`answer_too_large`, naming `limit`), never as a
    broken transport; a smaller page answers."""
    account: Account = await make_account(f"crowded-{transport}@example.com")
    agent = await create_agent(account, f"crowded-{transport}")
    for n in range(100):
        await accept(running.gateway, [agent], _crowded_mail(agent, n))
    with trio.fail_after(120):
        async with opener(transport, running)(account.key, agent) as client:
            refused = await failure(client, "list_messages", {"limit": 100})
            page = await call(client, "list_messages", {"limit": 20})
            still = await call(client, "list_messages", {"limit": 20})
    assert refused["code"] == "answer_too_large" and refused["retryable"] is False
    assert "limit" in refused["message"] and "list_messages" in refused["message"]
    assert len(page["messages"]) == len(still["messages"]) == 20
    assert _size(page) < MAX_ANSWER_BYTES
