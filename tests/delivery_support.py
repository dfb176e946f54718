"""What the delivery tests share: a gateway whose webhook worker the test drives itself, API
accounts, agents, and mail handed to the inbound pipeline or sent over real SMTP."""

from __future__ import annotations

import inspect
import itertools
import logging
import smtplib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import httpx
import pytest
import trio

from e2a_gateway.accounts import bootstrap_user
from e2a_gateway.app import bind_tcp, serve_http
from e2a_gateway.clock import format_timestamp
from e2a_gateway.config import Settings
from e2a_gateway.gateway import Gateway, open_gateway
from e2a_gateway.ids import new_id
from e2a_gateway.inbound.pipeline import InboundMailSink
from e2a_gateway.mailauth.dns_answers import Resolver
from e2a_gateway.smtp.protocol import Envelope, Mailbox
from e2a_gateway.storage.base import OutboundMessage, Storage, WebhookAttempt, jobs_per_kind
from e2a_gateway.storage.new_inbound import NewInboundMessage
from e2a_gateway.workers.approvals import ApprovalWorker
from e2a_gateway.workers.supervisor import supervise
from tests.conftest import Account
from tests.databases import query, table_locked

SENDER = "alice@example.org"
PEER = "192.0.2.25"


def mail(subject: str = "Hello", extra_headers: str = "", body: str = "Hi there.") -> bytes:
    """A small message from alice@example.org."""
    return (
        f"From: Alice <{SENDER}>\r\n"
        "To: someone@agents.test\r\n"
        f"Subject: {subject}\r\n"
        f"{extra_headers}"
        "\r\n"
        f"{body}\r\n"
    ).encode()


@dataclass
class QuietGateway:
    """A gateway serving only its HTTP API: no SMTP listener and no webhook worker, so a test
    can run `WebhookWorker` itself with a fake clock."""

    gateway: Gateway
    http_url: str


@asynccontextmanager
async def quiet_gateway(settings: Settings, resolver: Resolver) -> AsyncIterator[QuietGateway]:
    """Open storage on `settings.database.url` and serve the API on a free loopback port."""
    sock = bind_tcp("127.0.0.1", 0, "http.listen", "127.0.0.1:0")
    port = sock.getsockname()[1]
    async with open_gateway(settings, resolver) as gateway, trio.open_nursery() as nursery:
        await nursery.start(partial(serve_http, gateway, sock))
        yield QuietGateway(gateway, f"http://127.0.0.1:{port}")
        nursery.cancel_scope.cancel()


async def open_account(gateway: Gateway, http_url: str, email: str) -> Account:
    """A user with an API key and an HTTP client for it (the caller closes `account.http`)."""
    _, issued, _ = await bootstrap_user(gateway.storage, gateway.server_key, email)
    http = httpx.AsyncClient(
        base_url=http_url, headers={"Authorization": f"Bearer {issued.plaintext}"}, timeout=10
    )
    return Account(email, issued.plaintext, http)


@asynccontextmanager
async def agent_scoped_client(account: Account, agent: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `account`'s gateway holding a new API key bound to its agent `agent`."""
    made = await account.http.post(
        "/v1/account/api-keys", json={"name": agent, "scope": "agent", "agent_email": agent}
    )
    assert made.status_code == 201, made.text
    async with httpx.AsyncClient(
        base_url=account.http.base_url,
        headers={"Authorization": f"Bearer {made.json()['key']}"},
        timeout=10,
    ) as client:
        yield client


async def create_agent(account: Account, slug: str, webhook_url: str | None = None) -> str:
    """Register `slug@agents.test`: a cloud agent when `webhook_url` is given, else local."""
    body = {"slug": slug, "agent_mode": "cloud" if webhook_url else "local"}
    if webhook_url:
        body["webhook_url"] = webhook_url
    response = await account.http.post("/api/v1/agents", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["email"])


async def agent_id(gateway: Gateway, address: str) -> str:
    """The internal id of the agent at `address` (what live subscriptions are bound to)."""
    agent = await gateway.storage.find_agent(address)
    assert agent is not None, address
    return agent.id


async def new_signing_secret(account: Account) -> str:
    """Create a signing secret over REST (deliveries are signed with the newest) and return it."""
    response = await account.http.post("/api/v1/users/me/signing-secrets", json={"name": "test"})
    assert response.status_code == 201, response.text
    return str(response.json()["secret"])


async def accept(
    gateway: Gateway, recipients: list[str], data: bytes, *, mail_from: str = SENDER
) -> str:
    """Hand a message to the inbound pipeline as the SMTP listener would; return its id."""
    mailboxes = [Mailbox(*address.rsplit("@", 1)) for address in recipients]
    envelope = Envelope(
        helo="mail.example.org", mail_from=mail_from, recipients=mailboxes, data=data
    )
    return await InboundMailSink(gateway).accept_message(envelope, PEER)


async def store_with_conversation(
    gateway: Gateway,
    agent: str,
    conversation_id: str | None,
    *,
    rfc_message_id: str | None = None,
    subject: str = "Threaded",
) -> str:
    """Store a message for `agent` straight through storage, as mail an agent took part in
    (only agents choose conversation ids, and outbound mail is not built yet); return its id."""
    message_id = new_id("msg")
    now = time.time()
    message = NewInboundMessage(
        id=message_id,
        agent_email=agent,
        envelope_from=SENDER,
        from_addr=SENDER,
        reply_to=None,
        to=[agent],
        cc=[],
        subject=subject,
        conversation_id=conversation_id,
        rfc_message_id=rfc_message_id,
        raw_message=mail(subject),
        auth_headers={},
        authentication_results={},
        received_at=format_timestamp(now),
    )
    await gateway.storage.store_inbound([message], now)
    return message_id


def _send_over_smtp(port: int, sender: str, recipients: list[str], data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("mail.example.org")
        refused = client.sendmail(sender, recipients, data)
    assert refused == {}, refused


async def smtp_send(port: int, recipients: list[str], data: bytes, sender: str = SENDER) -> None:
    """Send one message over real SMTP to the gateway listening on `port`."""
    await trio.to_thread.run_sync(_send_over_smtp, port, sender, recipients, data)


async def recorded_attempts(gateway: Gateway, message_id: str) -> list[WebhookAttempt]:
    """The webhook attempts recorded for `message_id`, asked as its owner (storage answers
    a user about their own messages only)."""
    owners = query(
        gateway.settings.database.url, "SELECT user_id FROM messages WHERE id = ?", (message_id,)
    )
    assert owners, f"no message {message_id}"
    return await gateway.storage.webhook_attempts(owners[0][0], message_id)


async def delivery_status(account: Account, agent: str, message_id: str) -> str | None:
    """The message's `delivery_status` as the REST API shows it."""
    response = await account.http.get(f"/api/v1/agents/{agent}/messages/{message_id}")
    assert response.status_code == 200, response.text
    status = response.json().get("delivery_status")
    return None if status is None else str(status)


async def wait_for_status(account: Account, agent: str, message_id: str, wanted: str) -> None:
    """Poll the REST API until the message's delivery_status is `wanted` (at most 10 s)."""
    with trio.fail_after(10):
        for _ in itertools.count():
            if await delivery_status(account, agent, message_id) == wanted:
                return
            await trio.sleep(0.02)


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], seconds: float = 10.0
) -> None:
    """Poll `condition` (a function or a coroutine function) until it holds; fail after
    `seconds`."""
    with trio.fail_after(seconds):
        for _ in itertools.count():
            holds = condition()
            if await holds if inspect.isawaitable(holds) else holds:
                return
            await trio.sleep(0.01)


DEADLINE_AHEAD_SECONDS = 0.05
"""How far ahead `expiry_sweeps_paused` puts the deadline it gives."""


def expiry_sweeps_paused(monkeypatch: pytest.MonkeyPatch) -> float:
    """Pause the expiry sweeps of the running gateway's approval worker (one at its start, then
    one every 15 s) for the rest of the test, so that a review deadline the test lets pass is
    not decided by a sweep that happened to fall after it; return such a deadline, just ahead,
    for the test to store and then `await deadline_passed(deadline)`. (A sweep already under way
    keeps its own code, but it read its clock before that deadline and leaves it alone.)"""

    async def paused(self: ApprovalWorker, now: float) -> list[OutboundMessage]:
        return []

    monkeypatch.setattr(ApprovalWorker, "expire_due", paused)
    return time.time() + DEADLINE_AHEAD_SECONDS


async def deadline_passed(deadline: float) -> None:
    """Return once `deadline` (one `expiry_sweeps_paused` gave, a fraction of a second ahead)
    is in the past."""
    await trio.sleep(max(0.0, deadline - time.time()) + DEADLINE_AHEAD_SECONDS)
    assert time.time() > deadline


async def queued_jobs(storage: Storage) -> dict[str, int]:
    """How many jobs of each kind are queued now, whatever their state."""
    return jobs_per_kind(await storage.job_queue_states(time.time()))


async def through_a_failing_database(
    caplog: pytest.LogCaptureFixture,
    database_url: str,
    table: str,
    worker: tuple[str, Callable[[], Awaitable[None]]],
    rounds: str,
    done: Callable[[], Awaitable[bool]],
) -> None:
    """Run the `worker` (its name, its `run`) under the gateway's supervisor while `table` is
    locked (`table_locked`) until it says its `rounds` met a failing database, then until
    `done`; check that it said so once, as a warning without a traceback, and was neither
    ended nor restarted."""
    with caplog.at_level(logging.INFO, logger="e2a"):
        async with trio.open_nursery() as nursery:
            with table_locked(database_url, table):
                nursery.start_soon(supervise, *worker)
                await wait_until(
                    lambda: f"{rounds}: the database failed" in caplog.text,
                    seconds=30,  # SQLite's busy timeout is 10 s
                )
            await wait_until(done)
            nursery.cancel_scope.cancel()
    failed = [record for record in caplog.records if "database failed" in record.getMessage()]
    assert len(failed) == 1
    assert failed[0].levelno == logging.WARNING and failed[0].exc_info is None
    assert "crashed" not in caplog.text and "Traceback" not in caplog.text
