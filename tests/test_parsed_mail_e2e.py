"""Mail of the shapes parse.py reads, handed to the inbound pipeline and read back over the API
as agents read it."""

from __future__ import annotations

import base64
from typing import Any

from e2a_gateway.app import RunningGateway
from e2a_gateway.v1 import AsyncE2AClient
from tests.conftest import Account, agent_path
from tests.delivery_support import accept, create_agent, smtp_send

HEADER = (
    b"From: Dani <dani@example.org>\r\n"
    b"To: bot@agents.test\r\n"
    b"Message-ID: <m1@example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
)


async def received(running: RunningGateway, account: Account, data: bytes) -> dict[str, Any]:
    """The message view of `data`, accepted for a new agent `bot` of `account`."""
    bot = await create_agent(account, "bot")
    message_id = await accept(running.gateway, [bot], data)
    response = await account.http.get(agent_path(bot, f"/messages/{message_id}"))
    assert response.status_code == 200, response.text
    return dict(response.json())


async def received_over_smtp(
    running: RunningGateway, account: Account, data: bytes
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The listing entry and the message view of `data`, sent over SMTP to a new agent `bot`
    of `account`."""
    bot = await create_agent(account, "bot")
    await smtp_send(running.addresses.smtp_port, [bot], data)
    listing = await account.http.get(agent_path(bot, "/messages"))
    (summary,) = listing.json()["messages"]
    response = await account.http.get(agent_path(bot, f"/messages/{summary['message_id']}"))
    assert response.status_code == 200, response.text
    return dict(summary), dict(response.json())


async def downloaded(account: Account, message_id: str, index: int) -> bytes:
    """Attachment `index` of message `message_id` of `bot`, as getAttachment hands it over."""
    path = f"/v1/agents/bot%40agents.test/messages/{message_id}/attachments/{index}?inline=true"
    response = await account.http.get(path)
    assert response.status_code == 200, response.text
    return base64.b64decode(response.json()["data"])


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


async def test_japanese_and_latin_1_as_windows_writes_them_read_over_smtp(
    running: RunningGateway, make_account: Any
) -> None:
    # Outlook labels “smart quotes” and € ISO-8859-1, and writes ① (NEC's row 13) into
    # ISO-2022-JP: agents read them as mail readers show them, no C1 control nor escape.
    data = HEADER + (
        b"Subject: =?iso-8859-1?q?=93Angebot=94_f=FCr_10_=80?=\r\n"
        b"Content-Type: text/plain; charset=ISO-2022-JP\r\n"
        b"Content-Transfer-Encoding: 7bit\r\n"
        b"\r\n"
        b"\x1b$B-!F|K\\\x1b(B\r\n"
    )
    account = await make_account("alice@example.com")
    summary, view = await received_over_smtp(running, account, data)
    assert summary["subject"] == "“Angebot” für 10 €"
    assert view["text_body"] == "①日本\n"


async def test_a_subject_splitting_a_character_between_encoded_words_reads_whole(
    running: RunningGateway, make_account: Any
) -> None:
    subject = b"Subject: =?utf-8?b?UmU6IOaXpeacrOiq?=\r\n =?utf-8?b?nuOBruS8muitsA==?=\r\n"
    account = await make_account("alice@example.com")
    summary, _ = await received_over_smtp(running, account, HEADER + subject + b"\r\nhi\r\n")
    assert summary["subject"] == "Re: 日本語の会議"


async def test_a_japanese_filename_from_windows_is_listed_as_written(
    running: RunningGateway, make_account: Any
) -> None:
    data = HEADER + (
        b"Subject: t\r\n"
        b'Content-Type: multipart/mixed; boundary="XX"\r\n'
        b"\r\n"
        b"--XX\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
        b'--XX\r\nContent-Type: application/pdf; name="=?ISO-2022-JP?B?GyRCLSFGfEtcGyhC?=.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n"
        b"--XX--\r\n"
    )
    _, view = await received_over_smtp(running, await make_account("alice@example.com"), data)
    assert [item["filename"] for item in view["attachments"]] == ["①日本.pdf"]


async def test_a_byte_order_mark_does_not_reach_the_agent(
    running: RunningGateway, make_account: Any
) -> None:
    # PowerShell's Send-MailMessage -Encoding UTF8 starts the body with one.
    data = HEADER + (
        b"Subject: t\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n" + base64.b64encode("\ufeffDeploy finished.\r\n".encode()) + b"\r\n"
    )
    _, view = await received_over_smtp(running, await make_account("alice@example.com"), data)
    assert view["text_body"] == "Deploy finished.\n"


async def test_a_forwarded_message_is_listed_and_downloaded_and_keeps_out_of_the_body(
    running: RunningGateway, make_account: Any
) -> None:
    forwarded = (
        b"From: promo@shop.example\r\n"
        b"Subject: SALE\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n"
        b"\r\n"
        b"<h1>50% off everything</h1>"
    )  # 110 bytes
    data = HEADER + (
        b"Subject: t\r\n"
        b'Content-Type: multipart/mixed; boundary="XX"\r\n'
        b"\r\n"
        b"--XX\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"\r\n"
        b"FYI, see the attached newsletter.\r\n"
        b"--XX\r\n"
        b"Content-Type: message/rfc822\r\n"
        b'Content-Disposition: attachment; filename="news.eml"\r\n'
        b"\r\n" + forwarded + b"\r\n"
        b"--XX--\r\n"
    )
    alice = await make_account("alice@example.com")
    view = await received(running, alice, data)
    assert (view["text_body"], view["html_body"]) == ("FYI, see the attached newsletter.", None)
    assert view["attachments"] == [
        {
            "filename": "news.eml",
            "content_type": "message/rfc822",
            "size": 110,
            "content_id": None,
        }
    ]
    events = await alice.http.get("/v1/events", params={"type": "email.received"})
    (event,) = events.json()["items"]
    assert event["data"]["attachments"] == [  # as stored when the message was accepted
        {"index": 0, "filename": "news.eml", "content_type": "message/rfc822", "size_bytes": 110}
    ]
    assert await downloaded(alice, view["message_id"], 0) == forwarded


async def test_text_after_an_inline_pdf_reaches_the_agent(
    running: RunningGateway, make_account: Any
) -> None:
    data = HEADER + (
        b"Subject: t\r\n"
        b'Content-Type: multipart/mixed; boundary="XX"\r\n'
        b"\r\n"
        b"--XX\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n"
        b"\r\n"
        b"Here is the signed contract:\r\n"
        b"--XX\r\n"
        b"Content-Disposition: inline; filename=contract.pdf\r\n"
        b'Content-Type: application/pdf; name="contract.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n"
        b"JVBERi0=\r\n"
        b"--XX\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n"
        b"\r\n"
        b"Please wire the deposit by Friday.\r\n"
        b"--XX--\r\n"
    )
    alice = await make_account("alice@example.com")
    view = await received(running, alice, data)
    assert view["text_body"] == "Here is the signed contract:\n\nPlease wire the deposit by Friday."
    assert [item["filename"] for item in view["attachments"]] == ["contract.pdf"]
    assert await downloaded(alice, view["message_id"], 0) == b"%PDF-"


async def test_a_multipart_message_without_a_boundary_shows_its_text(
    running: RunningGateway, make_account: Any
) -> None:
    data = HEADER + (b"Subject: t\r\nContent-Type: multipart/mixed\r\n\r\nMeet at 10, not 11.\r\n")
    view = await received(running, await make_account("alice@example.com"), data)
    assert (view["text_body"], view["html_body"]) == ("Meet at 10, not 11.\n", None)
    assert view["attachments"] == []


async def test_nul_in_header_fields_reads_as_a_replacement_character(
    running: RunningGateway, make_account: Any
) -> None:
    """A NUL in the Subject, the message ids or the conversation header (written raw, or in an
    encoded word) is read as U+FFFD, as the database of every backend can keep it: the mail is
    accepted and read back alike on SQLite and PostgreSQL, and threads on its ids."""
    alice: Account = await make_account("alice@example.com")
    data = (
        b"From: Dani <dani@example.org>\r\n"
        b"To: bot@agents.test\r\n"
        b"Subject: =?utf-8?q?a=00b?= c\x00d\r\n"
        b"Message-ID: <m\x001@example.org>\r\n"
        b"In-Reply-To: <p\x00q@example.org>\r\n"
        b"References: <r\x00s@example.org>\r\n"
        b"X-E2A-Conversation-Id: cv\x00x\r\n"
        b"\r\n"
        b"Hi.\r\n"
    )
    message = await received(running, alice, data)
    assert message["subject"] == "a\ufffdb c\ufffdd"
    reply = (
        b"From: Dani <dani@example.org>\r\n"
        b"To: bot@agents.test\r\n"
        b"Subject: again\r\n"
        b"In-Reply-To: <m\x001@example.org>\r\n"
        b"\r\n"
        b"Hi again.\r\n"
    )
    second = await accept(running.gateway, ["bot@agents.test"], reply)
    response = await alice.http.get(agent_path("bot@agents.test", f"/messages/{second}"))
    assert response.status_code == 200, response.text
    assert response.json()["conversation_id"] == message["conversation_id"]


async def test_rfc_2231_filenames_in_windows_charsets_read_as_mail_readers_show_them(
    running: RunningGateway, make_account: Any
) -> None:
    # RFC 2231 parameters name their charset as encoded words do; Windows mailers label
    # Windows-1252 `iso-8859-1` and write NEC's ① into Shift_JIS and ISO-2022-JP. A name in
    # ISO-2022-JP with ① made the whole message unreadable: it was refused at DATA.
    parts = [
        b"Content-Disposition: attachment; filename*=windows-1252''Caf%E9.pdf",
        b"Content-Disposition: attachment; filename*=iso-8859-1''%93Offer%94%20%80.pdf",
        b"Content-Disposition: attachment; filename*=shift_jis''%87%40%93%FA%96%7B.pdf",
        b"Content-Disposition: attachment; filename*=iso-2022-jp''%1B%24B%2D%21F%7CK%5C%1B%28B.pdf",
        b"Content-Disposition: attachment;\r\n filename*0*=windows-1252''%93Caf;\r\n"
        b' filename*1*=%E9%94; filename*2=".pdf"',
        b"Content-Disposition: attachment; filename*=utf-8''Caf%C3%A9.pdf",
    ]
    data = HEADER + b'Subject: t\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n'
    data += b"--XX\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
    for fields in parts:
        data += b"--XX\r\nContent-Type: application/pdf\r\n" + fields + b"\r\n"
        data += b"Content-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n"
    data += b"--XX--\r\n"
    account = await make_account("alice@example.com")
    _, view = await received_over_smtp(running, account, data)
    names = ["Café.pdf", "“Offer” €.pdf", "①日本.pdf", "①日本.pdf", "“Café”.pdf", "Café.pdf"]
    assert [item["filename"] for item in view["attachments"]] == names
    listed = await account.http.get(f"/v1/agents/bot%40agents.test/messages/{view['message_id']}")
    assert [item["filename"] for item in listed.json()["attachments"]] == names


async def test_rfc_2231_filenames_with_raw_8bit_bytes_read_as_they_stand(
    running: RunningGateway, make_account: Any
) -> None:
    # Some mailers write a name's UTF-8 bytes as they are rather than %-encoded; the message
    # is readable, the name in its charset, and so is a text part's content beside it.
    data = HEADER + b'Subject: t\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n'
    data += b"--XX\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
    data += b"--XX\r\nContent-Type: application/pdf\r\n"
    data += b"Content-Disposition: attachment; filename*=utf-8''Caf\xc3\xa9%20menu.pdf\r\n"
    data += b"Content-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n--XX--\r\n"
    account = await make_account("alice@example.com")
    _, view = await received_over_smtp(running, account, data)
    assert view["text_body"].strip() == "hi"
    assert [item["filename"] for item in view["attachments"]] == ["Café menu.pdf"]


async def test_attachment_filenames_are_names_not_paths_nor_controls(
    running: RunningGateway, make_account: Any
) -> None:
    # An agent saving attachments under the names it is given must not write outside its
    # folder, nor be shown a name whose controls hide its real extension or break a log line.
    names = [
        b'filename="../../etc/passwd"',
        b'filename="C:\\\\Users\\\\x\\\\report.pdf"',
        b"filename*=utf-8''%2Fabs%2Fa%0D%0Ab%00c%07.txt",
        b"filename*=utf-8''invoice%E2%80%AEfdp.exe",
        b'filename=".."',
        b'filename="notes.txt"',
        b'filename="notes.txt"',
    ]
    data = HEADER + b'Subject: t\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n'
    data += b"--XX\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
    for number, name in enumerate(names):
        data += b"--XX\r\nContent-Type: application/octet-stream\r\n"
        data += b"Content-Disposition: attachment; " + name + b"\r\n\r\n"
        data += b"file %d\r\n" % number
    data += b"--XX--\r\n"
    alice = await make_account("alice@example.com")
    _, view = await received_over_smtp(running, alice, data)
    expected = ["passwd", "report.pdf", "abc.txt", "invoicefdp.exe", None, "notes.txt", "notes.txt"]
    assert [item["filename"] for item in view["attachments"]] == expected
    path = f"/v1/agents/bot%40agents.test/messages/{view['message_id']}"
    listed = (await alice.http.get(path)).json()["attachments"]
    assert [item.get("filename") for item in listed] == expected
    events = await alice.http.get("/v1/events", params={"type": "email.received"})
    (event,) = events.json()["items"]
    assert [item.get("filename") for item in event["data"]["attachments"]] == expected
    for number in range(len(names)):
        assert await downloaded(alice, view["message_id"], number) == b"file %d" % number


async def test_parts_naming_no_file_are_listed_after_the_others_and_download_whole(
    running: RunningGateway, make_account: Any
) -> None:
    # An image the HTML shows by cid: with no filename (as many mailing tools write it), a
    # calendar invitation beside the text, and a PGP/MIME encrypted body: none is the text or
    # HTML body, and each must reach the agent, after the parts listed before them.
    logo = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    data = HEADER + b'Subject: t\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n'
    data += b'--XX\r\nContent-Type: multipart/related; boundary="RR"\r\n\r\n'
    data += b'--RR\r\nContent-Type: multipart/alternative; boundary="AA"\r\n\r\n'
    data += b"--AA\r\nContent-Type: text/plain\r\n\r\nSee you then.\r\n"
    data += b'--AA\r\nContent-Type: text/html\r\n\r\n<p>See you then.</p><img src="cid:logo@x">\r\n'
    data += b"--AA\r\nContent-Type: text/calendar; method=REQUEST\r\n\r\nBEGIN:VCALENDAR\r\n"
    data += b"END:VCALENDAR\r\n--AA--\r\n"
    data += b"--RR\r\nContent-Type: image/png\r\nContent-ID: <logo@x>\r\n"
    data += b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(logo).replace(
        b"\n", b"\r\n"
    )
    data += b"--RR--\r\n"
    data += b"--XX\r\nContent-Type: application/pdf\r\n"
    data += b'Content-Disposition: attachment; filename="agenda.pdf"\r\n\r\n%PDF-\r\n'
    data += b"--XX--\r\n"
    alice = await make_account("alice@example.com")
    _, view = await received_over_smtp(running, alice, data)
    assert (view["text_body"], view["html_body"]) == (
        "See you then.",
        '<p>See you then.</p><img src="cid:logo@x">',
    )
    assert view["attachments"] == [
        {
            "filename": "agenda.pdf",
            "content_type": "application/pdf",
            "size": 5,
            "content_id": None,
        },
        {
            "filename": None,
            "content_type": "text/calendar",
            "size": 30,
            "content_id": None,
        },
        {"filename": None, "content_type": "image/png", "size": 264, "content_id": "<logo@x>"},
    ]
    assert await downloaded(alice, view["message_id"], 1) == b"BEGIN:VCALENDAR\r\nEND:VCALENDAR"
    assert await downloaded(alice, view["message_id"], 2) == logo

    encrypted = HEADER + (
        b"Subject: secret\r\n"
        b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";'
        b' boundary="EE"\r\n\r\n'
        b"--EE\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n"
        b"--EE\r\nContent-Type: application/octet-stream\r\n\r\n"
        b"-----BEGIN PGP MESSAGE-----\r\nhQEMA\r\n-----END PGP MESSAGE-----\r\n"
        b"--EE--\r\n"
    )
    await smtp_send(running.addresses.smtp_port, ["bot@agents.test"], encrypted)
    listing = (await alice.http.get(agent_path("bot@agents.test", "/messages"))).json()
    (secret,) = [item for item in listing["messages"] if item["subject"] == "secret"]
    path = f"/v1/agents/bot%40agents.test/messages/{secret['message_id']}"
    listed = (await alice.http.get(path)).json()["attachments"]
    assert [item["content_type"] for item in listed] == [
        "application/pgp-encrypted",
        "application/octet-stream",
    ]
    assert await downloaded(alice, secret["message_id"], 1) == (
        b"-----BEGIN PGP MESSAGE-----\r\nhQEMA\r\n-----END PGP MESSAGE-----"
    )


async def sdk_read(running: RunningGateway, account: Account, message_id: str) -> tuple[str, Any]:
    """The text and HTML bodies of `message_id` of `bot` as the SDK reads them over REST (as
    it reads a webhook's or WebSocket frame's raw message)."""
    base_url = running.addresses.http_url
    async with AsyncE2AClient(account.key, "bot@agents.test", base_url) as sdk:
        email = await sdk.get_message(message_id)
        return email.text_body, email.html_body


async def test_a_transfer_encoding_with_trailing_space_or_a_comment_is_decoded(
    running: RunningGateway, make_account: Any
) -> None:
    # RFC 2045 allows comments and whitespace around the mechanism; some mailers leave a
    # trailing space. The body reached agents still base64- or quoted-printable-encoded.
    data = HEADER + (
        b"Subject: t\r\n"
        b'Content-Type: multipart/mixed; boundary="XX"\r\n'
        b"\r\n"
        b"--XX\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: base64 \r\n"
        b"\r\n" + base64.b64encode("Caf\u00e9 at 10.\n".encode()) + b"\r\n"
        b"--XX\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: Quoted-Printable (Outlook)\r\n"
        b"\r\n"
        b"<p>Caf=C3=A9</p>\r\n"
        b"--XX--\r\n"
    )
    alice = await make_account("alice@example.com")
    _, view = await received_over_smtp(running, alice, data)
    assert (view["text_body"], view["html_body"]) == ("Caf\u00e9 at 10.\n", "<p>Caf\u00e9</p>")
    assert await sdk_read(running, alice, view["message_id"]) == (
        "Caf\u00e9 at 10.\n",
        "<p>Caf\u00e9</p>",
    )
    single = HEADER + (
        b"Subject: t\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: BASE64\t\r\n\r\n" + base64.b64encode(b"ok\n") + b"\r\n"
    )
    await smtp_send(running.addresses.smtp_port, ["bot@agents.test"], single)
    listing = (await alice.http.get(agent_path("bot@agents.test", "/messages"))).json()
    (newest,) = [item for item in listing["messages"] if item["message_id"] != view["message_id"]]
    path = agent_path("bot@agents.test", f"/messages/{newest['message_id']}")
    assert (await alice.http.get(path)).json()["text_body"] == "ok\n"


async def test_the_sdk_reads_the_bodies_the_gateway_shows(
    running: RunningGateway, make_account: Any
) -> None:
    # A webhook or WebSocket agent reads the body with the SDK: the text of a forwarded
    # message is the forwarded author's, not this message's; the text after an inline PDF
    # is this message's; a multipart part with no boundary reads as text, as over REST.
    forwarded = (
        b"From: ceo@example.org\r\nSubject: old\r\nContent-Type: text/plain\r\n\r\n"
        b"Approved: wire USD 9,000.\r\n"
    )
    messages = [
        HEADER + b'Subject: t\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n'
        b"--XX\r\nContent-Type: text/html\r\n\r\n<p>FYI</p>\r\n"
        b"--XX\r\nContent-Type: message/rfc822\r\n\r\n" + forwarded + b"--XX--\r\n",
        HEADER + b'Subject: t\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n'
        b"--XX\r\nContent-Type: text/plain\r\n\r\nSigned:\r\n"
        b"--XX\r\nContent-Type: application/pdf\r\nContent-Disposition: inline; "
        b"filename=c.pdf\r\n\r\n%PDF-\r\n"
        b"--XX\r\nContent-Type: text/plain\r\n\r\nWire by Friday.\r\n--XX--\r\n",
        HEADER + b"Subject: t\r\nContent-Type: multipart/mixed\r\n\r\nMeet at 10.\r\n",
    ]
    shown = [(None, "<p>FYI</p>"), ("Signed:\n\nWire by Friday.", None), ("Meet at 10.\n", None)]
    alice = await make_account("alice@example.com")
    await create_agent(alice, "bot")
    for number, data in enumerate(messages):
        subject = b"Subject: message %d\r\n" % number
        await smtp_send(
            running.addresses.smtp_port,
            ["bot@agents.test"],
            data.replace(b"Subject: t\r\n", subject),
        )
    listing = (await alice.http.get(agent_path("bot@agents.test", "/messages"))).json()
    by_subject = {item["subject"]: item["message_id"] for item in listing["messages"]}
    for number, (text, html) in enumerate(shown):
        message_id = by_subject[f"message {number}"]
        view = (
            await alice.http.get(agent_path("bot@agents.test", f"/messages/{message_id}"))
        ).json()
        assert (view["text_body"], view["html_body"]) == (text, html)
        assert await sdk_read(running, alice, message_id) == (text or "", html)


async def test_html_naming_its_charset_in_a_meta_element_only_reads_in_it(
    running: RunningGateway, make_account: Any
) -> None:
    # Web-to-mail tools send a page as it is: its Content-Type names no charset, its <meta>
    # does, and mail readers (as browsers) read it in that one. Windows-1251 showed as Latin.
    page = "<html><head><meta http-equiv='Content-Type' content='text/html; charset=windows-1251'>"
    data = HEADER + (
        b"Subject: t\r\n"
        b"Content-Type: text/html\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n" + page.encode() + "</head><body>Привет</body></html>\r\n".encode("cp1251")
    )
    alice = await make_account("alice@example.com")
    _, view = await received_over_smtp(running, alice, data)
    assert view["html_body"] == page + "</head><body>Привет</body></html>\n"
    assert (await sdk_read(running, alice, view["message_id"]))[1] == view["html_body"]


async def test_utf8_labelled_latin_1_reads_as_utf8(
    running: RunningGateway, make_account: Any
) -> None:
    # Scripts and old mailers label whatever they write iso-8859-1; bytes that are UTF-8
    # (multibyte sequences, every one whole) say what they are, and showed as "CafÃ©".
    # Windows' own Latin-1 (“smart quotes”, é alone) still reads as windows-1252.
    data = HEADER + (
        b"Subject: =?iso-8859-1?q?Caf=C3=A9_=E2=80=94_men=C3=BC?= =?windows-1252?q?_=93ok=94?=\r\n"
        b"Content-Type: multipart/mixed; boundary=XX\r\n"
        b"\r\n"
        b"--XX\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\nCaf\xc3\xa9 \xe2\x80\x94 10 \xe2\x82\xac\r\n"
        b"--XX\r\nContent-Type: text/html; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n<p>Caf\xe9 \x93ok\x94</p>\r\n"
        b"--XX--\r\n"
    )
    alice = await make_account("alice@example.com")
    summary, view = await received_over_smtp(running, alice, data)
    assert summary["subject"] == "Café — menü “ok”"
    assert (view["text_body"], view["html_body"]) == ("Café — 10 €", "<p>Café “ok”</p>")


async def test_an_attachment_name_longer_than_a_file_name_may_be_is_cut_keeping_its_extension(
    running: RunningGateway, make_account: Any
) -> None:
    # File systems take names of at most 255 bytes: an agent saving the attachment under a
    # 400-character (or 300 two-byte-character) name failed with ENAMETOOLONG.
    names = ["a" * 400 + ".pdf", "é" * 300 + ".tar.gz", "x" * 300]
    data = HEADER + b'Subject: t\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n'
    data += b"--XX\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
    for name in names:
        quoted = "".join(f"%{byte:02X}" for byte in name.encode())
        data += b"--XX\r\nContent-Type: application/octet-stream\r\n"
        sections = [quoted[start : start + 300] for start in range(0, len(quoted), 300)]
        fields = ";\r\n ".join(
            f"filename*{number}*={'utf-8' if number == 0 else ''}{'' if number else chr(39) * 2}"
            f"{section}"
            for number, section in enumerate(sections)
        )
        data += b"Content-Disposition: attachment;\r\n " + fields.encode() + b"\r\n\r\nfile\r\n"
    data += b"--XX--\r\n"
    _, view = await received_over_smtp(running, await make_account("alice@example.com"), data)
    listed = [item["filename"] for item in view["attachments"]]
    assert listed == ["a" * 251 + ".pdf", "é" * 124 + ".tar.gz", "x" * 255]
    assert all(len(name.encode()) <= 255 for name in listed)
