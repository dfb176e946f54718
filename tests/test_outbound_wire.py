"""What reaches the relay, byte for byte: mail sent, answered and forwarded over `/v1` through a
gateway with a DKIM key and an aiosmtpd sink on 127.0.0.1, read back with the stdlib parser and
verified with dkimpy against the key's public half."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

import dkim
import pytest

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from tests.conftest import Account, make_settings
from tests.delivery_support import accept, create_agent, wait_until
from tests.relay_support import Sink, relay_port, sink
from tests.test_dkim_signing import write_rsa_key

__all__ = ["relay_port", "sink"]  # fixtures

CAROL = "carol@example.org"


@pytest.fixture
def key_record(tmp_path: Path) -> bytes:
    return write_rsa_key(tmp_path / "dkim.pem")


@pytest.fixture
def settings(tmp_path: Path, relay_port: int, key_record: bytes) -> Settings:
    return make_settings(
        tmp_path,
        outbound_smtp={"host": "127.0.0.1", "port": relay_port, "tls": "none"},
        dkim={"selector": "e2a", "private_key_path": str(tmp_path / "dkim.pem")},
    )


def verifies(raw: bytes, key_record: bytes) -> bool:
    """Whether dkimpy verifies `raw` against the key published for agents.test."""

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return key_record if name == b"e2a._domainkey.agents.test." else b""

    return bool(dkim.verify(raw, dnsfunc=dns))


async def relayed(sink: Sink, account: Account, path: str, body: dict[str, Any]) -> bytes:
    """POST `body` to `path` and return the bytes the relay took for the message's first
    copy."""
    before = len(sink.received)
    sent = await account.http.post(path, json=body)
    assert sent.status_code in (200, 202), sent.text  # /api/v1 answers 200 once sent
    await wait_until(lambda: len(sink.received) > before)
    return sink.received[before][2]


def parsed(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


RECEIVED_WITH_NUL = (
    b"From: Mallory <mallory@example.org>\r\n"
    b"To: bot@agents.test\r\n"
    b"Subject: Numbers\r\n"
    b"Message-ID: <nul-1@example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/alternative; boundary=AA\r\n\r\n"
    b"--AA\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"Total=00 due\r\n"
    b"--AA\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"<p>Total=00 due</p>\r\n"
    b"--AA--\r\n"
)


@pytest.mark.parametrize(
    ("action", "body"),
    [
        ("reply", {"text": "Noted.", "html": "<p>Noted.</p>", "quote_history": True}),
        ("forward", {"text": "FYI", "html": "<p>FYI</p>", "to": [CAROL]}),
    ],
)
async def test_a_nul_in_the_mail_answered_or_forwarded_reaches_no_one(
    running: RunningGateway,
    make_account: Any,
    sink: Sink,
    key_record: bytes,
    action: str,
    body: dict[str, Any],
) -> None:
    """A received body may decode to a NUL (`=00`). Quoted into a reply or a forward, it was
    written raw into a 7bit part, which no 7-bit data may hold (RFC 2045 section 2.7) and
    relays refuse, and on PostgreSQL the answer could not even be stored (500). It reads as
    U+FFFD, as e2a reads a NUL in header text."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    received = await accept(running.gateway, [bot], RECEIVED_WITH_NUL)
    path = f"/v1/agents/{quote(bot, safe='')}/messages/{received}/{action}"
    raw = await relayed(sink, alice, path, body)
    assert b"\x00" not in raw
    message = parsed(raw)
    for kind in ("plain", "html"):
        part = message.get_body((kind,))
        assert part is not None
        assert "Total\ufffd due" in part.get_content()
    assert verifies(raw, key_record)


def tampered(raw: bytes, field: bytes) -> bytes:
    """`raw` with `field` added on top of its header, above the signature, as one replaying a
    copy it received would add it: a verifier reads the bottom-most instance of a field the
    signature names once, a reader the topmost."""
    return field + b"\r\n" + raw


@pytest.mark.parametrize(
    "field",
    [
        b"Reply-To: payments@attacker.example",
        b"Subject: Updated bank details",
        b"To: victim@example.net",
        b"Cc: victim@example.net",
        b"Date: Mon, 01 Jan 2035 00:00:00 +0000",
        b"Message-ID: <replayed@attacker.example>",
        b"In-Reply-To: <thread@victim.example>",
        b"References: <thread@victim.example>",
        b"Content-Type: text/html; charset=utf-8",
    ],
    ids=lambda field: field.partition(b":")[0].decode(),
)
async def test_a_field_added_to_a_signed_copy_fails_verification(
    running: RunningGateway, make_account: Any, sink: Sink, key_record: bytes, field: bytes
) -> None:
    """A signed copy replayed with a Reply-To added (or a second Subject, To, Cc, Date, …, on
    top, which mail readers show) passed verification: only From was signed once more than it
    appears. Every field a reader shows or threads by now is, and Reply-To even when the
    message has none."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    raw = await relayed(
        sink,
        alice,
        f"/v1/agents/{quote(bot, safe='')}/messages",
        {"to": [CAROL], "cc": ["dave@example.org"], "subject": "Invoice", "text": "Pay 10."},
    )
    assert verifies(raw, key_record)
    assert not verifies(tampered(raw, field), key_record)


async def test_html_alone_goes_out_with_the_text_it_shows_as_its_plain_part(
    running: RunningGateway, make_account: Any, sink: Sink, key_record: bytes
) -> None:
    """A send or reply with HTML and no text went out as multipart/alternative with an empty
    text/plain part: a reader that shows the plain alternative (a text-only client, a watch,
    a notification preview) showed a blank message. The plain part is now the text the HTML
    shows, as the CLI composes it."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    html = (
        "<html><head><title>T</title><style>p{color:red}</style></head><body>"
        "<p>Your order <b>#42</b> has shipped.</p><ul><li>Tea &amp; cake</li></ul></body></html>"
    )
    sent = await relayed(
        sink,
        alice,
        f"/v1/agents/{quote(bot, safe='')}/messages",
        {"to": [CAROL], "subject": "Shipped", "html": html},
    )
    message = parsed(sent)
    plain = message.get_body(("plain",))
    assert plain is not None and plain.get_content_type() == "text/plain"
    assert plain.get_content() == "Your order #42 has shipped.\r\n\r\nTea & cake\r\n"
    rich = message.get_body(("html",))
    assert rich is not None and rich.get_content().rstrip("\r\n") == html
    assert verifies(sent, key_record)

    legacy = await relayed(
        sink,
        alice,
        "/api/v1/send",
        {"from": bot, "to": [CAROL], "subject": "Hi", "body": "", "html_body": "<p>Hello</p>"},
    )
    plain = parsed(legacy).get_body(("plain",))
    assert plain is not None and plain.get_content() == "Hello\r\n"
