"""Attachments of mail received over SMTP, as agents fetch them over `/v1`: whatever a sender
writes in a part's Content-Type and filename, the listing names a media type and a file a
client can use, and the download link answers with well-formed headers that never let the
browser render the bytes as a page of the gateway's origin."""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from e2a_gateway.app import RunningGateway
from e2a_gateway.v1 import AsyncE2AClient
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


def disposition_name(value: str) -> str:
    """The file name a browser takes from a Content-Disposition value (RFC 6266): `filename*`
    (UTF-8, percent-encoded) when given, else the quoted `filename`; the value must be nothing
    but those."""
    if value == "attachment":
        return ""
    found = DISPOSITION.fullmatch(value)
    assert found is not None, value
    if found["extended"] is not None:
        return unquote(found["extended"], errors="strict")
    return found["plain"].replace('\\"', '"').replace("\\\\", "\\")


DISPOSITION = re.compile(
    r'attachment; filename="(?P<plain>(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"'
    r"(?:; filename\*=UTF-8''(?P<extended>[A-Za-z0-9%!#$&+.^_`|~-]+))?"
)
"""Content-Disposition as e2a writes it: a quoted printable ASCII `filename`, and the name in
`filename*` when that is not it."""


@pytest.mark.parametrize(
    ("disposition", "listed"),
    [
        (b"attachment; filename*=utf-8''%E2%82%AC%20r%C3%A9sum%C3%A9.pdf", "€ résumé.pdf"),
        (b"attachment; filename*=utf-8''a%0D%0ASet-Cookie%3A%20x%3D1.txt", "aSet-Cookie: x=1.txt"),
        (b"attachment; filename*=utf-8''a%00b.txt", "ab.txt"),
        (b'attachment; filename="../../etc/passwd"', "passwd"),
        (b'attachment; filename="..\\\\..\\\\boot.ini"', "boot.ini"),
        (b'attachment; filename="..."', "..."),
        (b'attachment; filename="a\\"b.txt"', 'a"b.txt'),
        (b"attachment; filename*=utf-8''%E2%80%8B", "\u200b"),
        (b'attachment; filename="100%25 done.txt"', "100%25 done.txt"),
        (b"attachment; filename*=iso-8859-1''caf%E9.txt", "café.txt"),
        (b'attachment; filename="' + b"x" * 300 + b'.pdf"', "x" * 251 + ".pdf"),
    ],
)
async def test_a_received_file_name_is_served_as_listed_in_a_well_formed_header(
    running: RunningGateway, make_account: Any, disposition: bytes, listed: str
) -> None:
    alice: Account = await make_account("alice@example.com")
    head = b"Content-Type: application/octet-stream\r\nContent-Disposition: " + disposition
    meta, download = await received_attachment(running, alice, mail_with_part(head))
    assert meta["filename"] == listed
    assert download.status_code == 200
    served = download.headers["content-disposition"]
    assert disposition_name(served) == "".join(ch for ch in listed if ch.isprintable())


async def test_a_held_drafts_attachments_are_fetched_as_they_are_listed(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    await create_agent(alice, "bot")
    held = await alice.http.put("/api/v1/agents/bot@agents.test", json={"hitl_enabled": True})
    assert held.status_code == 200, held.text
    report = b"%PDF-1.4 quarterly figures"
    files = [
        {"filename": "notes.txt", "content_type": "text/plain", "data": "aGk="},
        {
            "filename": 'Q3 "final".pdf',
            "content_type": "application/pdf",
            "data": base64.b64encode(report).decode(),
        },
    ]
    body = {"to": ["carol@example.net"], "subject": "Q3", "text": "Attached.", "attachments": files}
    sent = await alice.http.post(f"/v1/agents/{BOT}/messages", json=body)
    assert sent.status_code == 202, sent.text
    message_id = sent.json()["message_id"]
    shown = (await alice.http.get(f"/v1/agents/{BOT}/messages/{message_id}")).json()
    assert [(a["index"], a["filename"]) for a in shown["attachments"]] == [
        (0, "notes.txt"),
        (1, 'Q3 "final".pdf'),
    ]
    found = await alice.http.get(
        f"/v1/agents/{BOT}/messages/{message_id}/attachments/1", params={"inline": "true"}
    )
    assert found.status_code == 200, found.text
    view = found.json()
    assert (view["filename"], view["content_type"], view["size_bytes"]) == (
        'Q3 "final".pdf',
        "application/pdf",
        len(report),
    )
    assert base64.b64decode(view["data"]) == report
    path = view["download_url"].partition("/v1/attachments/")[2]
    async with httpx.AsyncClient(base_url=running.addresses.http_url, timeout=10) as anonymous:
        download = await anonymous.get(f"/v1/attachments/{path}")
    assert download.status_code == 200 and download.content == report
    assert download.headers["content-type"] == "application/pdf"
    assert disposition_name(download.headers["content-disposition"]) == 'Q3 "final".pdf'
    missing = await alice.http.get(f"/v1/agents/{BOT}/messages/{message_id}/attachments/2")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "attachment_not_found"


async def test_a_download_link_dies_with_its_message_and_serves_no_other_account(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    bob: Account = await make_account("bob@example.com")
    head = b'Content-Type: text/plain\r\nContent-Disposition: attachment; filename="a.txt"'
    meta, download = await received_attachment(running, alice, mail_with_part(head))
    assert download.status_code == 200
    path = meta["download_url"].partition("/v1/attachments/")[2]
    listing = await alice.http.get(f"/v1/agents/{BOT}/messages", params={"read_status": "all"})
    message = listing.json()["items"][0]["id"]
    other = await bob.http.get(f"/v1/agents/{BOT}/messages/{message}/attachments/0")
    assert other.status_code == 404
    trashed = await alice.http.delete(f"/v1/agents/{BOT}/messages/{message}")
    assert trashed.status_code == 200, trashed.text
    assert (await bob.http.get(f"/v1/attachments/{path}")).status_code == 200  # in the trash
    purged = await alice.http.delete(
        f"/v1/agents/{BOT}/messages/{message}", params={"permanent": "true", "confirm": "DELETE"}
    )
    assert purged.status_code == 200, purged.text
    gone = await bob.http.get(f"/v1/attachments/{path}")
    assert gone.status_code == 404 and b"a.txt" not in gone.content


FORWARDED = b"From: Erin <erin@example.net>\r\nSubject: minutes\r\n\r\nThe minutes.\r\n"


async def test_the_sdk_lists_a_received_messages_attachments_as_the_api_does(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    await create_agent(alice, "bot")
    data = (
        b"From: Dani <dani@example.org>\r\nTo: bot@agents.test\r\nSubject: files\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n'
        b"--XX\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
        b'--XX\r\nContent-Type: text/csv; name="figures.csv"\r\n\r\na,b\r\n1,2\r\n'
        b"--XX\r\nContent-Type: text/calendar; method=REQUEST\r\n\r\nBEGIN:VCALENDAR\r\n"
        b"--XX\r\nContent-Type: message/rfc822\r\n\r\n" + FORWARDED + b"--XX--\r\n"
    )
    await smtp_send(running.addresses.smtp_port, ["bot@agents.test"], data)
    listing = await alice.http.get(f"/v1/agents/{BOT}/messages")
    (summary,) = listing.json()["items"]
    shown = (await alice.http.get(f"/v1/agents/{BOT}/messages/{summary['id']}")).json()
    listed = [(a.get("filename"), a["content_type"], a["size_bytes"]) for a in shown["attachments"]]
    assert listed == [
        ("figures.csv", "text/csv", len(b"a,b\r\n1,2")),
        ("forwarded.eml", "message/rfc822", len(FORWARDED) - 2),  # its CRLF is the boundary's
        (None, "text/calendar", len(b"BEGIN:VCALENDAR")),
    ]
    async with AsyncE2AClient(alice.key, "bot@agents.test", running.addresses.http_url) as sdk:
        read = await sdk.get_message(summary["id"])
    assert [(a.filename, a.content_type, a.size) for a in read.attachments] == [
        (name or "unnamed", kind, size) for name, kind, size in listed
    ]
