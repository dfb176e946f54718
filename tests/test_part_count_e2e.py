"""Mail of more MIME parts than e2a parses (`MAX_PARTS`) is accepted in about the time mail of
that many takes, its first parts read and the rest listed whole as one attachment. 100,000
tiny parts each naming another file held a worker thread for a minute before the SMTP client
heard 250 (the stdlib's parser, about 0.6 ms per part across e2a's passes)."""

from __future__ import annotations

import base64
import time
from typing import Any

from e2a_gateway import kept_bodies
from e2a_gateway.app import RunningGateway
from e2a_gateway.mime_bounds import MAX_PARTS, MORE_PARTS_FILENAME
from tests.conftest import Account
from tests.delivery_support import create_agent, smtp_send

PARTS = 100_000
ACCEPT_SECONDS = 8
"""How long accepting the message may take (its first MAX_PARTS parts take well under a
second; all 100,000 took a minute). The SMTP client gives up after 10 s without an answer."""


def many_parts() -> bytes:
    """A message of a text body and PARTS tiny attachments, each naming another file (about
    7 MB)."""
    head = (
        b"From: Dani <dani@example.org>\r\nTo: bot@agents.test\r\nSubject: parts\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n'
        b"--XX\r\nContent-Type: text/plain\r\n\r\nMany files.\r\n"
    )
    parts = b"".join(
        b'--XX\r\nContent-Type: application/octet-stream; name="p%d.bin"\r\n\r\nx\r\n' % number
        for number in range(PARTS)
    )
    return head + parts + b"--XX--\r\n"


async def test_mail_of_a_hundred_thousand_parts_is_taken_and_read_to_the_bound(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    await create_agent(alice, "bot")
    data = many_parts()
    started = time.monotonic()
    await smtp_send(running.addresses.smtp_port, ["bot@agents.test"], data)
    took = time.monotonic() - started
    assert took < ACCEPT_SECONDS, took
    listing = await alice.http.get("/api/v1/agents/bot@agents.test/messages")
    message_id = listing.json()["messages"][0]["message_id"]
    kept_bodies.BODIES.clear()
    response = await alice.http.get(f"/v1/agents/bot%40agents.test/messages/{message_id}")
    assert response.status_code == 200, response.text
    shown = response.json()
    assert base64.b64decode(shown["raw_message"]).endswith(data)  # stored whole
    assert shown["parsed"]["text"] == "Many files."
    *files, rest = shown["attachments"]
    # the text part is the first part: MAX_PARTS - 1 files are read
    assert [item["filename"] for item in files] == [f"p{n}.bin" for n in range(MAX_PARTS - 1)]
    assert (rest["filename"], rest["content_type"]) == (
        MORE_PARTS_FILENAME,
        "application/octet-stream",
    )
    response = await alice.http.get(
        f"/v1/agents/bot%40agents.test/messages/{message_id}/attachments/{MAX_PARTS - 1}"
    )
    assert response.status_code == 200, response.text
    path = response.json()["download_url"].partition("/v1/attachments/")[2]
    download = await alice.http.get(f"/v1/attachments/{path}")
    assert download.status_code == 200
    start = data.index(b'Content-Type: application/octet-stream; name="p%d.bin"' % (MAX_PARTS - 1))
    assert download.content == data[start:]  # the rest of the message as it came
