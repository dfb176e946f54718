"""The outbound send worker end to end: queued rows in storage, an aiosmtpd sink on 127.0.0.1
(test-only) as `outbound_smtp`, local agent-to-agent delivery read back over REST, and a fake
clock for retries."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.message import EmailMessage, MIMEPart
from pathlib import Path
from typing import Any
from urllib.parse import quote

import dkim
import psycopg
import pytest
import trio
import trustme
from aiosmtpd.controller import Controller
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from e2a_gateway.config import Settings
from e2a_gateway.gateway import Gateway
from e2a_gateway.hub import Listener
from e2a_gateway.ids import new_id
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.outbound.mime import new_message_id
from e2a_gateway.outbound.return_path import parse_return_path, return_path_key
from e2a_gateway.smtp.client import Outcome
from e2a_gateway.storage.base import Job, OutboundMessage, SendAttempt, StorageUnavailable
from e2a_gateway.workers.leases import JOB_LEASE_SECONDS
from e2a_gateway.workers.outbound import (
    OutboundWorker,
    relay_bounces,
    relay_results,
    settle,
    unreached,
)
from tests.conftest import Account, agent_path, make_settings
from tests.databases import fresh_postgres_database, run_out_leases
from tests.delivery_support import (
    agent_id,
    create_agent,
    new_signing_secret,
    open_account,
    quiet_gateway,
    wait_until,
)
from tests.relay_support import ClockedSink, Sink, free_port, relay_on_loopback
from tests.test_outbound_relay import authenticator
from tests.test_signing_identity import contract_verify

NOW = time.time()
EXTERNAL = "carol@example.org"
PDF = b"%PDF-1.4 not really a pdf \x00\x01\x02" * 10


def no_jitter(low: float, high: float) -> float:
    """Jitter source that always answers the middle (1.0): retries land exactly on 30 s, 60 s…"""
    return 1.0


@dataclass
class Setup:
    """A gateway serving its API, an account with agent `sender`, and a worker on a fake clock."""

    gateway: Gateway
    http_url: str
    account: Account
    sender: str
    worker: OutboundWorker


@pytest.fixture
def sink() -> Sink:
    return Sink()


def start_sink(sink: Sink, port: int, **kwargs: Any) -> Controller:
    controller = Controller(sink, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    return controller


@pytest.fixture
def relay_port(sink: Sink) -> Iterator[int]:
    port = free_port()
    controller = start_sink(sink, port)
    yield port
    controller.stop()


def relay_settings(tmp_path: Path, port: int | None, **extra: Any) -> Settings:
    overrides: dict[str, Any] = dict(extra)
    if port is not None:
        overrides["outbound_smtp"] = {
            "host": "127.0.0.1",
            "port": port,
            "tls": "none",
            "timeout_seconds": 10,
            **overrides.get("outbound_smtp", {}),
        }
    return make_settings(tmp_path, **overrides)


@asynccontextmanager
async def open_setup(settings: Settings) -> AsyncIterator[Setup]:
    async with quiet_gateway(settings, FixtureResolver()) as quiet:
        account = await open_account(quiet.gateway, quiet.http_url, "owner@example.com")
        sender = await create_agent(account, "sender")
        worker = OutboundWorker(quiet.gateway, clock=lambda: NOW, uniform=no_jitter)
        yield Setup(quiet.gateway, quiet.http_url, account, sender, worker)
        await account.http.aclose()


@pytest.fixture
async def setup(tmp_path: Path, relay_port: int) -> AsyncIterator[Setup]:
    async with open_setup(relay_settings(tmp_path, relay_port)) as value:
        yield value


async def queue(setup: Setup, **fields: Any) -> OutboundMessage:
    """Store a `queued` outbound message from the sender agent, as the REST API would."""
    agent = await setup.gateway.storage.find_agent(setup.sender)
    assert agent is not None
    values: dict[str, Any] = {
        "id": new_id("msg"),
        "user_id": agent.user_id,
        "agent_email": setup.sender,
        "kind": "send",
        "to": [EXTERNAL],
        "cc": [],
        "bcc": [],
        "subject": "Quarterly report",
        "body_text": "Numbers attached.\n",
        "body_html": None,
        "attachments": None,
        "conversation_id": None,
        "in_reply_to": None,
        "references": [],
        "email_message_id": new_message_id("agents.test"),
        "status": "queued",
        "approval_expires_at": None,
        "created_at": "2026-01-01T00:00:00Z",
        "created_epoch": NOW,
    }
    values.update(fields)
    message = OutboundMessage(**values)
    await setup.gateway.storage.add_outbound(message)
    return message


async def stored(setup: Setup, message_id: str) -> OutboundMessage:
    message = await setup.gateway.storage.get_outbound(None, message_id)
    assert message is not None
    return message


def parsed(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def content(part: MIMEPart) -> str:
    """A text part's content with the wire's CRLF line ends turned back into LF."""
    return str(part.get_content()).replace("\r\n", "\n")


async def test_plain_send_reaches_the_relay_and_scrubs_the_body(setup: Setup, sink: Sink) -> None:
    message = await queue(setup)
    assert await setup.worker.deliver_due(NOW) == 1

    ((mail_from, recipients, raw),) = sink.received
    # The envelope sender is the message's return path, on the agent's domain.
    assert recipients == [EXTERNAL] and mail_from.endswith("@" + setup.sender.split("@")[1])
    path = parse_return_path(mail_from, return_path_key(setup.gateway.server_key))
    assert path is not None and path.message_id == message.id
    received = parsed(raw)
    assert received["From"] == setup.sender
    assert received["To"] == EXTERNAL
    assert received["Subject"] == "Quarterly report"
    assert received["Message-ID"] == message.email_message_id
    assert email.utils.parsedate_to_datetime(received["Date"]).timestamp() == int(NOW)
    assert "X-E2A-Conversation-Id" not in received
    body = received.get_body(("plain",))
    assert body is not None and content(body) == "Numbers attached.\n"

    after = await stored(setup, message.id)
    assert (after.status, after.method, after.send_error) == ("sent", "smtp", None)
    assert after.body_text is None and after.attachments is None
    assert await setup.worker.deliver_due(NOW + 3600) == 0  # the job is gone


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("Quarterly Reports", "Quarterly Reports"),
        ('Støtte "Desk", EU', 'Støtte "Desk", EU'),
        ("sender", ""),  # the default name, the address's own local part: the address alone
    ],
)
async def test_the_from_field_shows_the_agents_name(
    setup: Setup, sink: Sink, name: str, shown: str
) -> None:
    """Recipients see who writes, as e2a shows it: the agent's name as the From field's
    display name (quoted or RFC 2047-encoded as it needs), unless it is the address's own
    local part (the name an agent gets by default), which adds nothing."""
    renamed = await setup.account.http.put(agent_path(setup.sender, ""), json={"name": name})
    assert renamed.status_code == 200, renamed.text
    await queue(setup)
    assert await setup.worker.deliver_due(NOW) == 1
    ((_, _, raw),) = sink.received
    header = parsed(raw)["From"]
    assert (header.addresses[0].display_name, header.addresses[0].addr_spec) == (
        shown,
        setup.sender,
    )
    assert raw.isascii()


async def test_html_and_attachment_are_parsed_back(setup: Setup, sink: Sink) -> None:
    attachment = {
        "filename": "report.pdf",
        "content_type": "application/pdf",
        "data": base64.b64encode(PDF).decode(),
    }
    await queue(
        setup,
        subject="Rapport für Q3 ✓",
        body_html="<p>Numbers <b>attached</b>.</p>",
        attachments=[attachment],
    )
    await setup.worker.deliver_due(NOW)

    received = parsed(sink.received[0][2])
    assert received["Subject"] == "Rapport für Q3 ✓"
    html = received.get_body(("html",))
    assert html is not None and "<b>attached</b>" in content(html)
    plain = received.get_body(("plain",))
    assert plain is not None and content(plain) == "Numbers attached.\n"
    (part,) = list(received.iter_attachments())
    assert part.get_filename() == "report.pdf"
    assert part.get_content_type() == "application/pdf"
    assert part.get_content() == PDF


async def test_threading_headers_and_bcc(setup: Setup, sink: Sink) -> None:
    await queue(
        setup,
        kind="reply",
        subject="Re: Plans",
        to=[EXTERNAL],
        cc=["Dave@Example.org"],
        bcc=["audit@example.net", EXTERNAL],
        conversation_id="conv_0123",
        in_reply_to="<b@example.org>",
        references=["<a@example.org>", "<b@example.org>"],
    )
    await setup.worker.deliver_due(NOW)

    # a transaction per recipient, each copy the same, the Bcc in none of them
    assert sorted(rcpts for _, rcpts, _ in sink.received) == [
        ["audit@example.net"],
        [EXTERNAL],
        ["dave@example.org"],
    ]
    assert len({raw for _, _, raw in sink.received}) == 1
    raw = sink.received[0][2]
    received = parsed(raw)
    assert received["In-Reply-To"] == "<b@example.org>"
    assert received["References"] == "<a@example.org> <b@example.org>"
    assert received["X-E2A-Conversation-Id"] == "conv_0123"
    assert received["Cc"] == "Dave@Example.org"
    assert "Bcc" not in received and b"audit@example.net" not in raw


async def test_starttls_with_auth(
    tmp_path: Path, sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    port = free_port()
    controller = start_sink(
        sink,
        port,
        server_hostname="localhost",
        tls_context=server_context,
        require_starttls=True,
        authenticator=authenticator,
        auth_require_tls=True,
    )
    relay = {
        "host": "localhost",
        "tls": "starttls",
        "ca_file": str(ca_file),
        "username": "agent",
        "password": "s3cret",
    }
    try:
        async with open_setup(relay_settings(tmp_path, port, outbound_smtp=relay)) as setup:
            message = await queue(setup)
            await setup.worker.deliver_due(NOW)
            assert (await stored(setup, message.id)).status == "sent"
    finally:
        controller.stop()
    assert parsed(sink.received[0][2])["Message-ID"] == message.email_message_id


async def test_a_relay_certificate_not_trusted_defers_with_the_reason_shown_and_logged(
    tmp_path: Path, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    """TLS required and the relay's certificate from a CA nobody trusts: nothing is sent, the
    message waits (not bounced) with the reason in its `send_error` and in the log, and is
    tried again 30 s later, not at once."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("localhost").configure_cert(server_context)
    port = free_port()
    controller = start_sink(
        sink, port, server_hostname="localhost", tls_context=server_context, require_starttls=True
    )
    relay = {"host": "localhost", "tls": "starttls", "username": "agent", "password": "s3cret"}
    try:
        async with open_setup(relay_settings(tmp_path, port, outbound_smtp=relay)) as setup:
            message = await queue(setup)
            await setup.worker.deliver_due(NOW)
            waiting = await stored(setup, message.id)
            assert waiting.status == "queued"
            assert "CERTIFICATE_VERIFY_FAILED" in (waiting.send_error or "")
            assert await setup.worker.deliver_due(NOW + 29) == 0
    finally:
        controller.stop()
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
    assert "s3cret" not in caplog.text
    assert sink.received == []


async def test_4xx_is_retried_with_backoff_until_accepted(setup: Setup, sink: Sink) -> None:
    sink.answer = "451 4.3.0 try again later"
    message = await queue(setup)
    await setup.worker.deliver_due(NOW)

    waiting = await stored(setup, message.id)
    assert waiting.status == "queued" and "451" in (waiting.send_error or "")
    assert waiting.body_text == "Numbers attached.\n"  # kept for the retry
    assert await setup.worker.deliver_due(NOW + 29) == 0  # first retry 30 s later
    assert await setup.worker.deliver_due(NOW + 30) == 1
    assert await setup.worker.deliver_due(NOW + 89) == 0  # then 60 s after that
    sink.answer = "250 OK"
    assert await setup.worker.deliver_due(NOW + 90) == 1

    after = await stored(setup, message.id)
    assert (after.status, after.send_error, after.body_text) == ("sent", None, None)
    assert len(sink.received) == 1


async def test_retry_hands_off_only_the_deferred_recipients(setup: Setup, sink: Sink) -> None:
    sink.rcpt_answers["busy@example.net"] = "450 4.2.1 mailbox busy"
    message = await queue(setup, to=[EXTERNAL, "busy@example.net"])
    await setup.worker.deliver_due(NOW)
    assert [rcpts for _, rcpts, _ in sink.received] == [[EXTERNAL]]
    assert (await stored(setup, message.id)).status == "queued"

    sink.rcpt_answers.clear()
    await setup.worker.deliver_due(NOW + 30)
    assert [rcpts for _, rcpts, _ in sink.received] == [[EXTERNAL], ["busy@example.net"]]
    assert (await stored(setup, message.id)).status == "sent"


async def test_a_deferral_is_retried_30_s_after_the_attempt_ended_not_after_its_claim(
    tmp_path: Path,
) -> None:
    """The relay takes 400 s to defer a recipient (a slow link, a relay near its timeouts):
    the retry is due 30 s after the attempt ended, as the schedule says, not at once because
    30 s after the claim have long passed."""
    clock = [NOW]
    relay = ClockedSink(clock, 400)
    relay.rcpt_answers[EXTERNAL] = "450 4.2.1 mailbox busy"
    with relay_on_loopback(relay) as port:
        async with open_setup(relay_settings(tmp_path, port)) as setup:
            worker = OutboundWorker(setup.gateway, clock=lambda: clock[0], uniform=no_jitter)
            message = await queue(setup)
            await worker.deliver_due(NOW)
            assert clock[0] == NOW + 400
            assert (await stored(setup, message.id)).status == "queued"
            assert await worker.deliver_due(NOW + 400 + 29) == 0
            relay.rcpt_answers.clear()
            assert await worker.deliver_due(NOW + 400 + 30) == 1
            assert (await stored(setup, message.id)).status == "sent"


async def test_5xx_is_final(setup: Setup, sink: Sink) -> None:
    sink.rcpt_answers[EXTERNAL] = "550 5.1.1 no such user"
    message = await queue(setup)
    await setup.worker.deliver_due(NOW)

    after = await stored(setup, message.id)  # a relay's 5xx is a bounce
    assert after.status == "bounced" and "550 5.1.1 no such user" in (after.send_error or "")
    assert after.body_text is None
    assert await setup.worker.deliver_due(NOW + 86400) == 0


GONE = "gone@example.net"
BUSY = "busy@example.net"
HARD = "550 5.1.1 no such user"
SOFT = "450 4.2.1 mailbox busy"
FULL = "552 5.2.2 mailbox full"


async def views(setup: Setup, message_id: str) -> tuple[str, str, str]:
    """The message's state as stored, as `/api/v1` shows it and `/v1`'s `delivery_status`."""
    api = await setup.account.http.get(f"/api/v1/messages/{message_id}")
    assert api.status_code == 200, api.text
    v1 = await setup.account.http.get(
        f"/v1/agents/{quote(setup.sender, safe='')}/messages/{message_id}"
    )
    assert v1.status_code == 200, v1.text
    stored_status = (await stored(setup, message_id)).status
    return stored_status, api.json()["status"], v1.json()["delivery_status"]


@pytest.mark.parametrize(
    ("first", "last", "expected"),
    [
        # One refused for good, the other given up on: the refusal came first, or last.
        ({GONE: HARD, BUSY: SOFT}, {BUSY: SOFT}, ("bounced", "failed", "bounced")),
        ({GONE: SOFT, BUSY: SOFT}, {GONE: HARD, BUSY: SOFT}, ("bounced", "failed", "bounced")),
        # Both refused for good, in one attempt or one after the other.
        ({GONE: HARD, BUSY: HARD}, {}, ("bounced", "failed", "bounced")),
        ({GONE: HARD, BUSY: SOFT}, {BUSY: HARD}, ("bounced", "failed", "bounced")),
        ({GONE: SOFT, BUSY: HARD}, {GONE: HARD}, ("bounced", "failed", "bounced")),
        # A 5xx at RCPT that says nothing bad of the address (its mailbox full) is refused for
        # good all the same: not suppressed, but no retry either.
        ({GONE: FULL, BUSY: SOFT}, {BUSY: SOFT}, ("bounced", "failed", "bounced")),
        # Given up on after temporary failures only.
        ({GONE: SOFT, BUSY: SOFT}, {GONE: SOFT, BUSY: SOFT}, ("failed", "failed", "failed")),
    ],
)
async def test_mail_nobody_got_ends_the_same_whatever_the_order_of_its_refusals(
    setup: Setup,
    sink: Sink,
    first: dict[str, str],
    last: dict[str, str],
    expected: tuple[str, str, str],
) -> None:
    sink.rcpt_answers.update(first)
    message = await queue(setup, to=[GONE, BUSY])
    await setup.worker.deliver_due(NOW)
    sink.rcpt_answers.clear()
    sink.rcpt_answers.update(last)
    await setup.worker.deliver_due(NOW + 86400)  # the last attempt: the 24 h have run out

    assert sink.received == []
    assert await views(setup, message.id) == expected
    assert await setup.worker.deliver_due(NOW + 2 * 86400) == 0  # settled


async def test_each_recipient_has_a_transaction_and_a_return_path_of_its_own(
    setup: Setup, sink: Sink
) -> None:
    sink.rcpt_answers["gone@example.net"] = "550 5.1.1 no such user"
    everyone = [EXTERNAL, "gone@example.net", "dave@example.org"]
    message = await queue(setup, to=everyone[:2], bcc=everyone[2:])
    await setup.worker.deliver_due(NOW)

    assert setup.worker.relay_connections_opened == 1  # one after another, on one connection
    key = return_path_key(setup.gateway.server_key)
    for mail_from, recipients, _ in sink.received:
        path = parse_return_path(mail_from, key)
        assert path is not None and path.message_id == message.id
        assert [path.recipient_among(everyone)] == recipients
    assert sorted(rcpts[0] for _, rcpts, _ in sink.received) == [EXTERNAL, "dave@example.org"]
    after = await stored(setup, message.id)  # sent, the refused one named: only it bounced
    assert after.status == "sent"
    assert "gone@example.net: refused: RCPT TO: 550" in (after.send_error or "")
    listed = await setup.gateway.storage.suppressed_among(after.user_id, setup.sender, [*everyone])
    assert listed == ["gone@example.net"]


@pytest.mark.parametrize(
    "refusal",
    [
        "554 5.7.1 <{rcpt}>: Relay access denied",  # Postfix, mail from a client it does not know
        "550 5.7.1 <{rcpt}>... Relaying denied",  # Sendmail
        "550 relay not permitted",  # Exim
        "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain",  # Exchange
    ],
)
async def test_a_relay_refusing_to_relay_suppresses_no_one(
    setup: Setup, sink: Sink, refusal: str
) -> None:
    """A relay that refuses to relay for the gateway (no credentials set, its network not
    trusted, or outbound_smtp pointing back at the gateway's own MX) refuses each recipient at
    RCPT; that says nothing of the addresses, so none goes on the suppression list, where it
    would stop every later message to them once the relay is fixed."""
    sink.rcpt_answers[EXTERNAL] = refusal.format(rcpt=EXTERNAL)
    message = await queue(setup)
    await setup.worker.deliver_due(NOW)

    after = await stored(setup, message.id)
    assert after.status == "failed"
    assert refusal.format(rcpt=EXTERNAL) in (after.send_error or "")
    listed = await setup.gateway.storage.suppressed_among(after.user_id, setup.sender, [EXTERNAL])
    assert listed == []
    assert await views(setup, message.id) == ("failed", "failed", "failed")


async def test_outcomes_that_end_together_are_committed_together(setup: Setup, sink: Sink) -> None:
    """Sends that end while another's outcome is being committed share the next transaction;
    each message still gets its own outcome, one refused among them."""
    refused = "nobody@example.net"
    sink.rcpt_answers[refused] = "550 5.1.1 no such user"
    messages = [await queue(setup) for _ in range(7)] + [await queue(setup, to=[refused])]

    assert await setup.worker.deliver_due(NOW) == len(messages)

    assert 1 <= setup.worker.outcome_commits < len(messages)
    statuses = [(await stored(setup, message.id)).status for message in messages]
    assert statuses == ["sent"] * 7 + ["bounced"]
    assert sorted(rcpts[0] for _, rcpts, _ in sink.received) == [EXTERNAL] * 7
    assert await setup.worker.deliver_due(NOW + 86400) == 0  # every job is gone


async def sent_all(setup: Setup, messages: list[OutboundMessage]) -> None:
    """Wait (at most 10 s) until the running worker has sent every one of `messages`."""

    async def all_sent() -> bool:
        return all([(await stored(setup, message.id)).status == "sent" for message in messages])

    await wait_until(all_sent)


async def test_the_running_worker_sends_later_mail_over_the_connections_it_kept(
    setup: Setup, sink: Sink
) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(setup.worker.run)
        await sent_all(setup, [await queue(setup) for _ in range(3)])
        opened = setup.worker.relay_connections_opened
        assert 1 <= opened <= 3
        for _ in range(3):  # one after another: each finds a kept connection
            await sent_all(setup, [await queue(setup)])
        assert setup.worker.relay_connections_opened == opened  # none opened for these
        nursery.cancel_scope.cancel()
    assert len(sink.received) == 6
    registry = setup.gateway.metrics.registry
    assert registry.get_sample_value("e2a_outbound_relay_connections_total") == opened


async def test_relay_down_then_up(tmp_path: Path, sink: Sink) -> None:
    port = free_port()  # nothing listens yet
    async with open_setup(relay_settings(tmp_path, port)) as setup:
        message = await queue(setup)
        await setup.worker.deliver_due(NOW)
        waiting = await stored(setup, message.id)
        assert waiting.status == "queued" and "127.0.0.1" in (waiting.send_error or "")

        controller = start_sink(sink, port)
        try:
            assert await setup.worker.deliver_due(NOW + 30) == 1
        finally:
            controller.stop()
        assert (await stored(setup, message.id)).status == "sent"
    assert len(sink.received) == 1


async def test_gives_up_24_hours_after_creation(tmp_path: Path) -> None:
    port = free_port()  # nothing ever listens
    async with open_setup(relay_settings(tmp_path, port)) as setup:
        message = await queue(setup)
        await setup.worker.deliver_due(NOW)
        await setup.worker.deliver_due(NOW + 86400)
        after = await stored(setup, message.id)
        assert after.status == "failed" and "gave up" in (after.send_error or "")


async def test_a_draft_approved_days_later_gets_its_24_hours_of_retries(
    setup: Setup, sink: Sink
) -> None:
    """The retry window runs from the approval that queued the send, not from the draft:
    a draft approved two days on, whose relay defers it once, is tried again, not failed."""
    week = 7 * 86400
    draft = await queue(setup, status="pending_approval", approval_expires_at=NOW + week)
    approved_at = NOW + 2 * 86400
    await setup.gateway.storage.review_outbound(None, draft.id, True, None, None, approved_at)
    sink.answer = "451 4.7.1 greylisted, try again later"
    assert await setup.worker.deliver_due(approved_at) == 1
    waiting = await stored(setup, draft.id)
    assert waiting.status == "queued" and "451" in (waiting.send_error or ""), waiting.send_error
    sink.answer = "250 OK"
    assert await setup.worker.deliver_due(approved_at + 30) == 1
    assert (await stored(setup, draft.id)).status == "sent"
    assert len(sink.received) == 1


async def test_a_draft_approved_later_is_dated_when_it_was_approved(
    setup: Setup, sink: Sink
) -> None:
    """A held draft goes out dated at its approval, when it was let into the mail system, not
    days before it (a receiver would file it, and score it, as a week-old message)."""
    later = await queue(setup, status="pending_approval", approval_expires_at=NOW + 86400)
    approved_at = NOW + 3 * 3600
    await setup.gateway.storage.review_outbound(None, later.id, True, None, None, approved_at)
    assert await setup.worker.deliver_due(approved_at) == 1
    ((_, _, raw),) = sink.received
    date = email.utils.parsedate_to_datetime(parsed(raw)["Date"]).timestamp()
    assert date == int(approved_at)


async def test_a_scheduled_send_is_dated_at_its_scheduled_time(setup: Setup, sink: Sink) -> None:
    """A send scheduled ahead goes out dated when it was let into the mail system, its
    `send_at`, not when it was asked for: a receiver's mail client sorts by Date, and would
    file a send scheduled for Monday under the Friday it was written. One approved before its
    time is dated at that time too; one approved after it, at its approval."""
    ahead = await queue(setup, scheduled_at=NOW + 3 * 86400)
    assert await setup.worker.deliver_due(NOW + 3 * 86400 + 5) == 1  # handed on 5 s late
    held = await queue(
        setup, status="pending_approval", approval_expires_at=NOW + 7 * 86400,
        scheduled_at=NOW + 2 * 3600,
    )  # fmt: skip
    await setup.gateway.storage.review_outbound(None, held.id, True, None, None, NOW + 3600)
    late = await queue(
        setup, status="pending_approval", approval_expires_at=NOW + 7 * 86400,
        scheduled_at=NOW + 3600,
    )  # fmt: skip
    await setup.gateway.storage.review_outbound(None, late.id, True, None, None, NOW + 5 * 3600)
    assert await setup.worker.deliver_due(NOW + 5 * 3600) == 2
    dates = {
        parsed(raw)["Message-ID"]: email.utils.parsedate_to_datetime(parsed(raw)["Date"])
        for _, _, raw in sink.received
    }
    assert dates[ahead.email_message_id].timestamp() == int(NOW + 3 * 86400)
    assert dates[held.email_message_id].timestamp() == int(NOW + 2 * 3600)
    assert dates[late.email_message_id].timestamp() == int(NOW + 5 * 3600)


async def test_without_a_relay_remote_recipients_fail_clearly(tmp_path: Path) -> None:
    async with open_setup(relay_settings(tmp_path, None)) as setup:
        message = await queue(setup)
        await setup.worker.deliver_due(NOW)
        after = await stored(setup, message.id)
        assert after.status == "failed"
        assert "outbound_smtp.host is not set" in (after.send_error or "")


async def test_agent_to_agent_is_delivered_locally_and_signed(tmp_path: Path) -> None:
    async with open_setup(relay_settings(tmp_path, None)) as setup:
        other = await open_account(setup.gateway, setup.http_url, "bee@example.com")
        receiver = await create_agent(other, "receiver")
        secret = await new_signing_secret(other)
        listener = Listener(await agent_id(setup.gateway, receiver), "usr_b", "hash", "websocket")
        with setup.gateway.hub.subscribe(listener) as frames:
            message = await queue(
                setup, to=[receiver.upper()], subject="Hi B", conversation_id="conv_ab"
            )
            await setup.worker.deliver_due(NOW)
            with trio.fail_after(5):
                frame = await frames.receive()
        assert frame is not None

        after = await stored(setup, message.id)
        assert (after.status, after.method, after.body_text) == ("sent", "local", None)
        local_id = frame["message_id"]
        assert frame["conversation_id"] == "conv_ab" and frame["from"] == setup.sender

        response = await other.http.get(agent_path(receiver, f"/messages/{local_id}"))
        assert response.status_code == 200, response.text
        view = response.json()
        headers = view["auth_headers"]
        raw = base64.b64decode(view["raw_message"])
        assert headers["X-E2A-Auth-Entity-Type"] == "agent"
        assert headers["X-E2A-Auth-Verified"] == "true"
        assert headers["X-E2A-Auth-Sender"] == setup.sender
        assert headers["X-E2A-Auth-Domain-Check"] == "spf=none; dkim=none; dmarc=none"
        assert headers["X-E2A-Auth-Message-Id"] == local_id
        assert contract_verify(headers, raw, secret)
        assert view["conversation_id"] == "conv_ab"
        assert view["subject"] == "Hi B" and view["from"] == setup.sender
        assert raw.startswith(
            f"Return-Path: <{setup.sender}>\r\nReceived: by mx.agents.test".encode()
        )
        assert b"\r\nAuthentication-Results: mx.agents.test;\r\n auth=pass (local delivery" in raw
        assert parsed(raw)["Message-ID"] == message.email_message_id
        await other.http.aclose()


async def test_mixed_local_and_remote_recipients(setup: Setup, sink: Sink) -> None:
    colleague = await create_agent(setup.account, "colleague")
    await new_signing_secret(setup.account)
    message = await queue(setup, to=[colleague, EXTERNAL])
    await setup.worker.deliver_due(NOW)

    assert [rcpts for _, rcpts, _ in sink.received] == [[EXTERNAL]]
    after = await stored(setup, message.id)
    assert (after.status, after.method) == ("sent", "smtp")
    page = await setup.account.http.get(agent_path(colleague, "/messages"))
    assert page.status_code == 200
    assert [m["subject"] for m in page.json()["messages"]] == ["Quarterly report"]


async def test_dkim_signature_verifies(tmp_path: Path, sink: Sink, relay_port: int) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_path = tmp_path / "dkim.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    settings = relay_settings(
        tmp_path, relay_port, dkim={"selector": "e2a", "private_key_path": str(key_path)}
    )
    async with open_setup(settings) as setup:
        await queue(setup, body_html="<p>signed</p>")
        await setup.worker.deliver_due(NOW)

    raw = sink.received[0][2]
    assert raw.startswith(b"DKIM-Signature:")
    signature = parsed(raw)["DKIM-Signature"]
    assert "d=agents.test" in signature and "s=e2a" in signature

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return record if name == b"e2a._domainkey.agents.test." else b""

    assert dkim.verify(raw, dnsfunc=dns)
    assert not dkim.verify(raw.replace(b"Numbers attached.", b"Numbers altered!!"), dnsfunc=dns)


def test_only_a_refused_rcpt_is_a_bounce() -> None:
    """A relay refusing the session (a wrong password, STARTTLS), the sender or the message
    fails it for every recipient; none of them is a bounce, so none is suppressed."""
    results = {
        "gone@example.org": "refused: RCPT TO: 550 5.1.1 no such user",
        "full@example.org": "refused: RCPT TO: 552 5.2.2 mailbox full",
        "auth@example.org": "refused: AUTH: 535 5.7.8 bad credentials",
        "tls@example.org": "refused: STARTTLS: 554 5.7.3 TLS not available",
        "login@example.org": "refused: AUTH LOGIN: 535 5.7.8 bad credentials",
        "sender@example.org": "refused: MAIL FROM: 550 5.7.1 sender not owned",
        "data@example.org": "refused: DATA: 554 5.5.1 no valid recipients",
        "content@example.org": "refused: end of DATA: 554 5.7.1 spam",
        "denied@example.org": "refused: RCPT TO: 554 5.7.1 <denied@x.org>: Relay access denied",
        "relay@example.org": "refused: RCPT TO: 550 5.1.1 <relay@example.org>: access denied",
        "ok@example.org": "accepted",
    }
    bounced = {item.address: item.bounce_type for item in relay_bounces(results)}
    assert bounced == {
        "gone@example.org": "permanent",
        "full@example.org": "transient",
        "relay@example.org": "permanent",  # an address named relay is no refusal to relay
    }


def test_every_recipient_not_reached_is_named_once_with_its_kind() -> None:
    """A 5xx to RCPT is read as a bounce, any other refusal is `undetermined` and a recipient
    given up on `transient`; those who got it are not named."""
    results = {
        "gone@example.org": "refused: RCPT TO: 550 5.1.1 no such user",
        "sender@example.org": "refused: MAIL FROM: 550 5.7.1 sender not owned",
        "ghost@agents.test": "refused: no agent at ghost@agents.test on this gateway",
        "ok@example.org": "accepted",
        "bot@agents.test": "local msg_1",
    }
    gave_up = {"slow@example.org": "gave up: RCPT TO: 451 4.3.0 try again later"}
    named = {item.address: (item.bounce_type, item.detail) for item in unreached(results, gave_up)}
    assert named == {
        "gone@example.org": ("permanent", "RCPT TO: 550 5.1.1 no such user"),
        "sender@example.org": ("undetermined", "MAIL FROM: 550 5.7.1 sender not owned"),
        "ghost@agents.test": ("undetermined", "no agent at ghost@agents.test on this gateway"),
        "slow@example.org": ("transient", "RCPT TO: 451 4.3.0 try again later"),
    }


def test_a_deferral_names_the_session_error_once() -> None:
    """The session's error adds to a recipient's reason when it says more, and is not said
    twice when it is that reason."""
    lost = "connection lost"
    refused = "relay 127.0.0.1:25: ConnectionRefusedError: [Errno 111] Connection refused"
    _, alone = relay_results(Outcome(deferred={"a@x.org": lost}, error=lost))
    _, explained = relay_results(Outcome(deferred={"a@x.org": lost}, error=refused))
    assert alone == {"a@x.org": lost}
    assert explained == {"a@x.org": f"{lost} ({refused})"}


def test_settle_policy_on_plain_data() -> None:
    local = {"b@agents.test": "local msg_1"}
    assert settle(local, {}, attempt=1, queued_at=0, now=0).method == "local"
    partly = settle(
        {"a@x.org": "accepted", "c@x.org": "refused: 550 no"}, {}, attempt=1, queued_at=0, now=0
    )
    assert (partly.outcome, partly.method) == ("sent", "smtp")
    assert partly.error == "c@x.org: refused: 550 no"
    retry = settle({}, {"a@x.org": "451"}, attempt=3, queued_at=0, now=10, uniform=no_jitter)
    assert (retry.outcome, retry.retry_at) == ("retry", 10 + 120)
    capped = settle({}, {"a@x.org": "451"}, attempt=20, queued_at=0, now=10, uniform=no_jitter)
    assert capped.retry_at == 10 + 3600
    late = settle({}, {"a@x.org": "451"}, attempt=30, queued_at=0, now=86400)
    assert (late.outcome, late.gave_up) == ("failed", {"a@x.org": "gave up: 451"})
    # e2a's terminal outcomes (e2a_outbound_terminal_total): none while retried.
    refused = settle({"a@x.org": "refused: 550 no"}, {}, attempt=1, queued_at=0, now=0)
    assert [v.terminal_outcome for v in (partly, retry, late, refused)] == [
        "sent",
        None,
        "failed_local_retries",
        "failed_provider",
    ]


async def test_an_unexpected_error_is_retried_then_fails(
    setup: Setup, sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> bytes:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr("e2a_gateway.outbound.relay.RelayConnections.hand_off_each", broken)
    message = await queue(setup)
    now = NOW
    for attempt in range(1, 6):
        assert await setup.worker.deliver_due(now) == 1, attempt
        after = await stored(setup, message.id)
        if attempt < 5:
            assert after.status == "queued" and "internal error" in (after.send_error or "")
        now += 3 * 3600
    assert after.status == "failed" and after.body_text is None
    assert await setup.worker.deliver_due(now + 86400) == 0
    assert sink.received == []


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (
            {"subject": "Quarterly\u2028report"},
            "subject must not contain line breaks or control characters (found U+2028)",
        ),
        ({"to": [f"{EXTERNAL}\x00"]}, "to must not contain line breaks"),
        (
            {"email_message_id": "<id\u2029@agents.test>"},
            "Header values may not contain linefeed or carriage return characters",
        ),
    ],
    ids=["subject", "to", "message-id"],
)
async def test_a_message_that_cannot_be_built_fails_at_once_with_the_reason(
    setup: Setup, sink: Sink, fields: dict[str, Any], reason: str
) -> None:
    """Rows written before today's request checks (stored here straight through storage) are
    settled on their first attempt, not left queued for retries that cannot help."""
    message = await queue(setup, **fields)
    assert await setup.worker.deliver_due(NOW) == 1
    after = await stored(setup, message.id)
    assert after.status == "failed" and after.body_text is None
    assert after.send_error is not None
    assert after.send_error.startswith("cannot build the message: ")
    assert reason in after.send_error
    assert await setup.worker.deliver_due(NOW + 86400) == 0
    assert sink.received == []


class AnsweringLate(Sink):
    """A relay that takes `data_seconds` to answer the end of DATA; `data_arrived` is set once
    the end of DATA is in."""

    def __init__(self, data_seconds: float) -> None:
        super().__init__(data_seconds=data_seconds)
        self.data_arrived = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.data_arrived.set()
        return await super().handle_DATA(server, session, envelope)


@pytest.mark.parametrize(
    ("answer_seconds", "grace_seconds", "outcome"),
    [(0.5, 10.0, "sent"), (30.0, 1.0, "queued")],
)
async def test_a_stopping_worker_lets_the_hand_off_in_flight_finish_within_the_grace_period(
    tmp_path: Path, answer_seconds: float, grace_seconds: float, outcome: str
) -> None:
    """Cancelled while the relay holds a message it has not yet answered for, the worker waits
    for the answer and records it (so a restart does not send the message twice), but no
    longer than `smtp.shutdown_grace_seconds`; the message is then left queued."""
    relay = AnsweringLate(answer_seconds)
    port = free_port()
    controller = start_sink(relay, port)
    smtp = {"listen": "127.0.0.1:0", "hostname": "mx.agents.test"}
    settings = relay_settings(
        tmp_path, port, smtp={**smtp, "shutdown_grace_seconds": grace_seconds}
    )
    try:
        async with open_setup(settings) as setup:
            message = await queue(setup)
            async with trio.open_nursery() as nursery:
                await nursery.start(setup.worker.run)
                assert await trio.to_thread.run_sync(relay.data_arrived.wait, 10)
                stopped_at = trio.current_time()
                nursery.cancel_scope.cancel()
            stopping = trio.current_time() - stopped_at
            assert (await stored(setup, message.id)).status == outcome
    finally:
        controller.stop()
    assert stopping < min(answer_seconds, grace_seconds) + 1.0


async def test_a_stopping_worker_hands_off_to_no_further_recipient(tmp_path: Path) -> None:
    """Stopped while a message goes out recipient after recipient, the worker finishes the
    transaction in flight and starts no other, so what was handed off is recorded within the
    grace period: after the restart the others get the message, and nobody gets it twice."""
    relay = AnsweringLate(0.5)
    port = free_port()
    controller = start_sink(relay, port)
    smtp = {"listen": "127.0.0.1:0", "hostname": "mx.agents.test"}
    settings = relay_settings(tmp_path, port, smtp={**smtp, "shutdown_grace_seconds": 1.2})
    everyone = [EXTERNAL, "dave@example.org", "erin@example.net"]
    try:
        async with open_setup(settings) as setup:
            message = await queue(setup, to=everyone)
            async with trio.open_nursery() as nursery:
                await nursery.start(setup.worker.run)
                assert await trio.to_thread.run_sync(relay.data_arrived.wait, 10)
                nursery.cancel_scope.cancel()
            waiting = await stored(setup, message.id)
            assert waiting.status == "queued" and "stopping" in (waiting.send_error or "")
            assert len(relay.received) == 1

            restarted = OutboundWorker(setup.gateway, clock=lambda: NOW, uniform=no_jitter)
            assert await restarted.deliver_due(NOW + 30) == 1
            assert (await stored(setup, message.id)).status == "sent"
    finally:
        controller.stop()
    assert sorted(rcpt for _, rcpts, _ in relay.received for rcpt in rcpts) == sorted(everyone)


async def test_an_attachment_type_with_parameters_reaches_the_relay(
    setup: Setup, sink: Sink
) -> None:
    """`text/csv; charset=utf-8`, as clients write a media type and e2a takes it, is sent with
    its charset (refused before as not `type/subtype`)."""
    csv = "name;city\nJosé;Zürich\n".encode()
    attachment = {
        "filename": "people.csv",
        "content_type": "text/csv; charset=utf-8",
        "data": base64.b64encode(csv).decode(),
    }
    sent = await setup.account.http.post(
        f"/v1/agents/{setup.sender}/messages",
        json={
            "to": [EXTERNAL],
            "subject": "List",
            "text": "Attached.",
            "attachments": [attachment],
        },
    )
    assert sent.status_code == 202, sent.text
    await setup.worker.deliver_due(time.time() + 1)
    (part,) = list(parsed(sink.received[0][2]).iter_attachments())
    assert part.get_content_type() == "text/csv"
    assert part.get_param("charset") == "utf-8"
    assert part.get_filename() == "people.csv"
    assert part.get_payload(decode=True) == csv


async def test_an_outcome_whose_commit_fails_once_is_recorded_not_sent_again(
    tmp_path: Path, sink: Sink, relay_port: int
) -> None:
    """The relay takes the message, and the commit of that outcome fails once (on PostgreSQL:
    a deadlock's victim, a statement cancelled, a connection lost). The outcome is committed
    again as it was, `sent`: not turned into an internal error whose retry sends the message
    to its recipients a second time."""
    with fresh_postgres_database() as url:
        settings = relay_settings(tmp_path, relay_port, database={"url": url})
        async with open_setup(settings) as setup:
            message = await queue(setup)
            locker = await trio.to_thread.run_sync(psycopg.connect, url)
            try:
                await trio.to_thread.run_sync(
                    locker.execute,
                    "SELECT 1 FROM messages WHERE id = %s FOR UPDATE",
                    (message.id,),
                )
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(setup.worker.deliver_due, NOW)
                    waiting = await _waiting_on_a_lock(url)
                    await trio.to_thread.run_sync(_cancel, url, waiting)
                    await _waiting_on_a_lock(url)  # the outcome, committed once more
                    await trio.to_thread.run_sync(locker.rollback)
            finally:
                await trio.to_thread.run_sync(locker.close)
            after = await stored(setup, message.id)
            assert (after.status, after.send_error) == ("sent", None)
            assert await setup.worker.deliver_due(NOW + 3 * 3600) == 0
    assert len(sink.received) == 1


async def test_a_read_the_database_fails_costs_the_send_no_attempt(
    tmp_path: Path, sink: Sink, relay_port: int
) -> None:
    """A message the relay deferred four times, whose fifth attempt cannot read it (on
    PostgreSQL: a statement cancelled, a deadlock's victim, a connection lost): the database's
    failure is no internal error of the message, whose retries are few and would fail it for
    good; the job is left to its lease, and sent once that has run out."""
    with fresh_postgres_database() as url:
        settings = relay_settings(tmp_path, relay_port, database={"url": url})
        async with open_setup(settings) as setup:
            sink.answer = "451 4.3.0 try again later"
            message = await queue(setup)
            now = NOW
            for _ in range(4):
                assert await setup.worker.deliver_due(now) == 1
                now += 3 * 3600
            sink.answer = "250 OK"
            locker = await trio.to_thread.run_sync(psycopg.connect, url)
            try:
                await trio.to_thread.run_sync(
                    locker.execute, "LOCK TABLE messages IN ACCESS EXCLUSIVE MODE"
                )
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(setup.worker.deliver_due, now)
                    waiting = await _waiting_on_a_lock(url)  # reading the message to send
                    await trio.to_thread.run_sync(_cancel, url, waiting)
                    await trio.to_thread.run_sync(locker.rollback)
            finally:
                await trio.to_thread.run_sync(locker.close)
            after = await stored(setup, message.id)
            assert (after.status, after.body_text) == ("queued", "Numbers attached.\n")
            await trio.to_thread.run_sync(run_out_leases, url, 3 * 3600)
            assert await setup.worker.deliver_due(now + 3 * 3600) == 1  # once the lease is out
            assert (await stored(setup, message.id)).status == "sent"
    assert len(sink.received) == 1


async def _waiting_on_a_lock(url: str) -> int:
    """The process id of the session of `url`'s database that waits for a row lock."""
    with trio.fail_after(10):
        while True:
            pids = await trio.to_thread.run_sync(_lock_waiters, url)
            if pids:
                return pids[0]
            await trio.sleep(0.05)  # polling the server: it tells nobody of a waiter


def _lock_waiters(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"
        ).fetchall()
    return [int(pid) for (pid,) in rows]


def _cancel(url: str, pid: int) -> None:
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_cancel_backend(%s)", (pid,))


async def test_a_worker_run_again_after_its_run_ended_still_sends(setup: Setup, sink: Sink) -> None:
    """Its supervisor runs the same worker again after a crash: the grace period its end began
    is over then, and the new run hands mail to the relay instead of deferring all of it as
    if the gateway were stopping."""
    async with trio.open_nursery() as nursery:
        await nursery.start(setup.worker.run)
        nursery.cancel_scope.cancel()  # the run ends, as a crash ends it
    async with trio.open_nursery() as nursery:
        await nursery.start(setup.worker.run)
        message = await queue(setup)
        with trio.fail_after(10):
            while True:
                if (await stored(setup, message.id)).status == "sent":
                    break
                await trio.sleep(0.05)  # polling storage: the test has no hook on the worker
        nursery.cancel_scope.cancel()
    assert len(sink.received) == 1


class HeldRelay(Sink):
    """A relay that answers the end of DATA only once `release` is set; `data_arrived` is set
    once the end of DATA is in."""

    def __init__(self) -> None:
        super().__init__()
        self.data_arrived = threading.Event()
        self.release = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.data_arrived.set()
        await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 10)
        return await super().handle_DATA(server, session, envelope)


LEASE = JOB_LEASE_SECONDS
"""The lease of a send."""


async def test_a_send_whose_lease_passed_to_another_claim_leaves_that_claim_s_outcome(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The relay is slow to answer, the send's lease runs out, and another replica claims the
    job and records its own attempt (deferred, due again later) before the relay answers.
    The late outcome is not written over it (the job stays, as the other replica left it),
    and says so in the log; the recipient the relay took stays settled, so the job's next
    attempt ends the message `sent` without handing it to them a second time."""
    relay = HeldRelay()
    port = free_port()
    controller = start_sink(relay, port)
    try:
        async with open_setup(relay_settings(tmp_path, port)) as setup:
            storage = setup.gateway.storage
            message = await queue(setup)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(setup.worker.deliver_due, NOW)
                assert await trio.to_thread.run_sync(relay.data_arrived.wait, 10)
                taken_at = NOW + LEASE + 1
                run_out_leases(setup.gateway.settings.database.url, LEASE + 1)
                (job,) = await storage.claim_jobs("outbound", taken_at, 10, LEASE)
                other = SendAttempt(
                    job.id, message.id, "retry", "smtp", "451 try later", taken_at + 300,
                    leased_until=job.leased_until,
                )  # fmt: skip
                assert await storage.finish_outbound([other]) == []
                relay.release.set()
            after = await stored(setup, message.id)
            assert (after.status, after.send_error) == ("queued", "451 try later")
            assert await storage.recipient_results(message.id) == {EXTERNAL: "accepted"}
            assert "another claim took the job" in caplog.text
            assert await setup.worker.deliver_due(taken_at + 300) == 1
            assert (await stored(setup, message.id)).status == "sent"
    finally:
        controller.stop()
    assert len(relay.received) == 1


async def test_a_send_claimed_again_by_its_own_worker_meanwhile_is_recorded_once(
    tmp_path: Path,
) -> None:
    """The send's lease runs out while the relay holds the message and the same worker claims
    the job again: it starts no second attempt, and the attempt under way, now under the new
    lease, records its outcome."""
    relay = HeldRelay()
    port = free_port()
    controller = start_sink(relay, port)
    try:
        async with open_setup(relay_settings(tmp_path, port)) as setup:
            message = await queue(setup)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(setup.worker.deliver_due, NOW)
                assert await trio.to_thread.run_sync(relay.data_arrived.wait, 10)
                run_out_leases(setup.gateway.settings.database.url, LEASE + 1)
                assert await setup.worker.deliver_due(NOW + LEASE + 1) == 1
                relay.release.set()
            assert (await stored(setup, message.id)).status == "sent"
            assert await setup.worker.deliver_due(NOW + 3 * 3600) == 0
    finally:
        controller.stop()
    assert len(relay.received) == 1


async def test_a_send_whose_lease_ran_out_before_its_hand_off_is_not_handed_off(
    setup: Setup, sink: Sink, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The database stalls between the claim of a send and its hand-off for longer than the
    lease, and another replica claims the job meanwhile. The stalled attempt hands nothing to
    the relay (the other claim sends the message: the recipient would get it twice), and the
    other claim's lease and outcome stand."""
    storage = setup.gateway.storage
    message = await queue(setup)
    taken_at = NOW + LEASE + 1
    taken: list[Job] = []
    read = storage.recipient_results

    async def stalled(message_id: str) -> dict[str, str]:
        """The read before the hand-off, answered only once the lease ran out and another
        replica claimed the job."""
        results = await read(message_id)
        await trio.to_thread.run_sync(
            run_out_leases, setup.gateway.settings.database.url, LEASE + 1
        )
        taken.extend(await storage.claim_jobs("outbound", taken_at, 10, LEASE))
        return results

    monkeypatch.setattr(storage, "recipient_results", stalled)
    assert await setup.worker.deliver_due(NOW) == 1
    monkeypatch.undo()
    assert sink.received == []
    assert "not handed off" in caplog.text
    (other,) = taken
    assert (await stored(setup, message.id)).status == "queued"
    sent = SendAttempt(
        other.id, message.id, "sent", "smtp", None, None, {EXTERNAL: "accepted"}, taken_at,
        leased_until=other.leased_until,
    )  # fmt: skip
    assert await storage.finish_outbound([sent]) == []  # the other claim's lease stood
    assert (await stored(setup, message.id)).status == "sent"


async def test_a_send_stalled_for_most_of_its_lease_renews_it_before_the_hand_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stall of 45 s between the claim of a send and its hand-off leaves less than two thirds
    of its 120 s lease (that much lasts until the first renewal during the hand-off): the
    lease is renewed before the hand-off, so no other replica takes the job while the relay
    holds the message, and the send is recorded once. (Leases are timed by the test's clock
    on SQLite; on PostgreSQL by the database's, which the stall does not move: there the
    renewal is only seen to keep the lease that this worker holds.)"""
    relay = HeldRelay()
    port = free_port()
    controller = start_sink(relay, port)
    try:
        async with open_setup(relay_settings(tmp_path, port)) as setup:
            storage = setup.gateway.storage
            clock = [NOW]
            worker = OutboundWorker(setup.gateway, clock=lambda: clock[0], uniform=no_jitter)
            message = await queue(setup)
            read = storage.recipient_results

            async def stalled(message_id: str) -> dict[str, str]:
                """The read before the hand-off, answered 45 s late."""
                clock[0] += 45
                return await read(message_id)

            monkeypatch.setattr(storage, "recipient_results", stalled)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(worker.deliver_due, NOW)
                assert await trio.to_thread.run_sync(relay.data_arrived.wait, 10)
                assert await storage.claim_jobs("outbound", NOW + LEASE + 1, 10, LEASE) == []
                relay.release.set()
            monkeypatch.undo()
            assert (await stored(setup, message.id)).status == "sent"
    finally:
        controller.stop()
    assert len(relay.received) == 1


async def test_a_hand_off_longer_than_the_lease_keeps_it_and_sends_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay holds the end of the data for 2 s (a large message, a slow link); the send's
    lease is 1 s. The lease is renewed while the hand-off goes on, so another replica looking
    for due sends all the while claims nothing, and the message goes out once."""
    monkeypatch.setattr("e2a_gateway.workers.outbound.JOB_LEASE_SECONDS", 1.0)
    relay = HeldRelay()
    port = free_port()
    controller = start_sink(relay, port)
    bounds = {"timeout_seconds": 0.5, "end_of_data_timeout_seconds": 5}
    try:
        async with open_setup(relay_settings(tmp_path, port, outbound_smtp=bounds)) as setup:
            storage = setup.gateway.storage
            worker = OutboundWorker(setup.gateway, uniform=no_jitter)  # on the real clock
            message = await queue(setup)
            lease = 1.0
            taken: list[Job] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(worker.deliver_due, time.time())
                assert await trio.to_thread.run_sync(relay.data_arrived.wait, 10)
                with trio.move_on_after(2):  # another replica, looking all the while
                    while True:
                        taken += await storage.claim_jobs("outbound", time.time(), 10, lease)
                        await trio.sleep(0.1)
                relay.release.set()
            assert taken == []
            assert (await stored(setup, message.id)).status == "sent"
    finally:
        controller.stop()
    assert len(relay.received) == 1


async def test_a_send_claimed_by_a_replica_that_died_is_taken_over_within_two_minutes(
    tmp_path: Path, sink: Sink, relay_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `outbound_smtp.timeout_seconds` at its default (300 s), a replica claims a send and
    is gone before handing it off (its database failed it: nothing renews or finishes the job,
    as after a crash). Another replica takes the job over once its lease of 2 minutes has run
    out, not before, and the message goes out once."""
    settings = relay_settings(tmp_path, relay_port, outbound_smtp={"timeout_seconds": 300})
    async with open_setup(settings) as setup:
        storage = setup.gateway.storage
        url = settings.database.url
        message = await queue(setup)

        async def gone(*args: Any, **kwargs: Any) -> None:
            raise StorageUnavailable("connection lost")

        monkeypatch.setattr(storage, "get_outbound", gone)
        dead = OutboundWorker(setup.gateway, clock=lambda: NOW, uniform=no_jitter)
        assert await dead.deliver_due(NOW) == 1
        monkeypatch.undo()
        run_out_leases(url, 110)
        assert await setup.worker.deliver_due(NOW + 110) == 0
        run_out_leases(url, 11)
        assert await setup.worker.deliver_due(NOW + 121) == 1
        assert (await stored(setup, message.id)).status == "sent"
    assert len(sink.received) == 1
