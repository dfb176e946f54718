"""Attachments of mail received over SMTP, as agents fetch them over `/v1`: whatever a sender
writes in a part's Content-Type and filename, the listing names a media type and a file a
client can use, and the download link answers with well-formed headers that never let the
browser render the bytes as a page of the gateway's origin."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from e2a_gateway.app import RunningGateway
from e2a_gateway.v1.inbound import parse_raw_email
from tests.conftest import Account
from tests.delivery_support import create_agent, smtp_send

BOT = "bot%40agents.test"


def mail_with_part(head: bytes, body: bytes = b"data") -> bytes:
    """A message of a text body and one more part whose header section is `head`."""
    return (
        b"From: Dani <dani@example.org>\r\nTo: bot@agents.test\r\nSubject: files\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n'
        b"--XX\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
        b"--XX\r\n" + head + b"\r\n\r\n" + body + b"\r\n--XX--\r\n"
    )


async def received_attachment(
    running: RunningGateway, account: Account, data: bytes
) -> tuple[dict[str, Any], httpx.Response]:
    """The one attachment of `data`, sent over SMTP to a new agent `bot` of `account`: its
    getAttachment answer and its download."""
    await create_agent(account, "bot")
    await smtp_send(running.addresses.smtp_port, ["bot@agents.test"], data)
    listing = await account.http.get(f"/v1/agents/{BOT}/messages")
    (summary,) = listing.json()["items"]
    found = await account.http.get(f"/v1/agents/{BOT}/messages/{summary['id']}/attachments/0")
    assert found.status_code == 200, found.text
    path = found.json()["download_url"].partition("/v1/attachments/")[2]
    async with httpx.AsyncClient(base_url=running.addresses.http_url, timeout=10) as anonymous:
        return found.json(), await anonymous.get(f"/v1/attachments/{path}")


@pytest.mark.parametrize(
    "content_type",
    [
        b"text/ht\x01ml",
        b"\xff/\xfe",
        b"application/x\x7fy",
        b'a/b"c',
        b"foo/bar baz",
    ],
)
async def test_a_media_type_no_header_can_carry_is_served_as_octet_stream(
    running: RunningGateway, make_account: Any, content_type: bytes
) -> None:
    alice: Account = await make_account("alice@example.com")
    data = mail_with_part(
        b"Content-Type: " + content_type + b'\r\nContent-Disposition: attachment; filename="f.bin"'
    )
    meta, download = await received_attachment(running, alice, data)
    assert meta["content_type"] == "application/octet-stream"
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/octet-stream"
    assert download.content == b"data"
    # the SDK reads a webhook's raw message alike
    assert [item.content_type for item in parse_raw_email(data).attachments] == [
        "application/octet-stream"
    ]


@pytest.mark.parametrize("content_type", [b"text/html", b"image/svg+xml", b"Text/HTML"])
async def test_a_page_or_image_a_sender_attaches_is_a_download_never_rendered(
    running: RunningGateway, make_account: Any, content_type: bytes
) -> None:
    alice: Account = await make_account("alice@example.com")
    page = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(document.cookie)</script></svg>"
    head = b"Content-Type: %s\r\nContent-Disposition: attachment; filename=x.svg" % content_type
    data = mail_with_part(head, page)
    meta, download = await received_attachment(running, alice, data)
    assert meta["content_type"] == content_type.decode().lower()
    assert download.headers["content-type"].startswith(content_type.decode().lower())
    assert download.headers["content-disposition"] == 'attachment; filename="x.svg"'
    assert download.headers["x-content-type-options"] == "nosniff"
    assert download.content == page
