"""Mail whose MIME parts nest deeper than e2a parses (`MAX_NESTING`) is accepted in time
proportional to its size, its deeper parts listed whole as one attachment, and mail nested as
deep as that is read as before. The stdlib's parser costs lines times levels: 400 levels
around 100,000 lines held a worker for about five seconds at accept, and a thousand levels
reached its recursion limit, the mail showing no text and no attachment."""

from __future__ import annotations

import base64
import time
from typing import Any

from e2a_gateway import kept_bodies
from e2a_gateway.app import RunningGateway
from e2a_gateway.inbound import parse
from e2a_gateway.mime_bounds import MAX_NESTING, NESTED_PART_FILENAME
from e2a_gateway.v1.inbound import parse_raw_email
from tests.conftest import Account
from tests.delivery_support import create_agent, smtp_send

ACCEPT_SECONDS = 4
"""How long accepting a message of about 100,000 lines may take, however deep it nests (at
MAX_NESTING it takes well under a second; at 400 levels, before the bound, five)."""


def nested(depth: int, lines: int = 10) -> bytes:
    """A message of `depth` multipart/mixed parts one in another: the outermost starts with
    the text `Top text.`, the innermost holds the text `Deep text.` and `lines` more short
    lines, and an attachment deep.txt."""
    out = [
        b"From: Dani <dani@example.org>\r\nTo: bot@agents.test\r\nSubject: deep\r\n"
        b"MIME-Version: 1.0\r\n"
    ]
    for level in range(depth):
        out.append(
            b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (level, level)
        )
        if level == 0:
            out.append(b"Content-Type: text/plain\r\n\r\nTop text.\r\n--b0\r\n")
    out.append(b"Content-Type: text/plain\r\n\r\nDeep text.\r\n" + b"x\r\n" * lines)
    out.append(b"--b%d\r\nContent-Type: text/plain; name=deep.txt\r\n" % (depth - 1))
    out.append(b"Content-Disposition: attachment\r\n\r\ndeep file\r\n")
    out.extend(b"--b%d--\r\n" % level for level in reversed(range(depth)))
    return b"".join(out)


async def received(running: RunningGateway, account: Account, data: bytes) -> tuple[str, float]:
    """The id of `data`, sent over SMTP to bot@agents.test of `account`, and how long the
    gateway took to accept it."""
    started = time.monotonic()
    await smtp_send(running.addresses.smtp_port, ["bot@agents.test"], data)
    took = time.monotonic() - started
    listing = await account.http.get("/api/v1/agents/bot@agents.test/messages")
    return str(listing.json()["messages"][0]["message_id"]), took


async def view(account: Account, message_id: str) -> dict[str, Any]:
    response = await account.http.get(f"/v1/agents/bot%40agents.test/messages/{message_id}")
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_mail_nested_a_thousand_levels_is_taken_and_read_to_the_bound(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    await create_agent(alice, "bot")
    data = nested(1000, lines=20_000)
    message_id, took = await received(running, alice, data)
    assert took < ACCEPT_SECONDS, took
    kept_bodies.BODIES.clear()
    shown = await view(alice, message_id)
    assert base64.b64decode(shown["raw_message"]).endswith(data)
    assert shown["parsed"]["text"] == "Top text."
    (listed,) = shown["attachments"]
    assert (listed["filename"], listed["content_type"]) == (
        NESTED_PART_FILENAME,
        "application/octet-stream",
    )
    response = await alice.http.get(
        f"/v1/agents/bot%40agents.test/messages/{message_id}/attachments/0",
        params={"inline": "true"},
    )
    assert response.status_code == 200, response.text
    content = base64.b64decode(response.json()["data"])
    # the part nested one level too deep, as it came from its Content-Type field on
    start = b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (
        MAX_NESTING,
        MAX_NESTING,
    )
    assert content.startswith(start)
    assert b"Deep text." in content and listed["size_bytes"] == len(content)


async def test_mail_nested_hundreds_of_levels_is_accepted_in_time(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    await create_agent(alice, "bot")
    message_id, took = await received(running, alice, nested(400, lines=100_000))
    assert took < ACCEPT_SECONDS, took
    assert (await view(alice, message_id))["parsed"]["text"] == "Top text."


async def test_mail_nested_as_deep_as_the_bound_reads_whole(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    await create_agent(alice, "bot")
    message_id, _ = await received(running, alice, nested(MAX_NESTING))
    shown = await view(alice, message_id)
    assert shown["parsed"]["text"] == "Top text.\n\nDeep text.\n" + "x\n" * 9 + "x"
    assert [item["filename"] for item in shown["attachments"]] == ["deep.txt"]


def test_the_sdk_reads_over_nested_mail_as_the_gateway_does() -> None:
    """The SDK's parse of a received message (`parse_raw_email`, for webhook and forwarded
    mail) gives the same text as the gateway for mail nested past MAX_NESTING, in time: at a
    thousand levels it read no text at all."""
    raw = nested(1000)
    started = time.monotonic()
    parsed = parse_raw_email(raw)
    assert time.monotonic() - started < ACCEPT_SECONDS
    assert parsed.text_body.strip() == (parse.parse_body(raw).text or "").strip() == "Top text."
    assert [a.filename for a in parsed.attachments] == [NESTED_PART_FILENAME]
