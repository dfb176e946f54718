"""What the webhook delivery tests share: a fake wall clock, a quiet gateway that allows
loopback webhook targets, alice's account on it, a receiver on 127.0.0.1, a look at when
a delivery job is next due, and inbound mail stored as if it came at a given time. Test
modules import the fixtures they use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from e2a_gateway.clock import format_timestamp
from e2a_gateway.config import Settings
from e2a_gateway.ids import new_id
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.storage.new_inbound import NewInboundMessage
from tests.conftest import Account, make_settings
from tests.databases import query
from tests.delivery_support import QuietGateway, open_account, quiet_gateway
from tests.http_receiver import HttpReceiver


class FakeClock:
    """A wall clock that moves only when the test says so."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Webhook targets on loopback are allowed in these tests."""
    return make_settings(tmp_path, webhooks={"allow_private": True})


@pytest.fixture
async def quiet(settings: Settings, resolver: FixtureResolver) -> AsyncIterator[QuietGateway]:
    """A gateway that runs no worker of its own: the tests drive delivery."""
    async with quiet_gateway(settings, resolver) as opened:
        yield opened


@pytest.fixture
async def alice(quiet: QuietGateway) -> AsyncIterator[Account]:
    """alice@example.com's account on the quiet gateway."""
    account = await open_account(quiet.gateway, quiet.http_url, "alice@example.com")
    async with account.http:
        yield account


@pytest.fixture
async def receiver(nursery: trio.Nursery) -> HttpReceiver:
    """A webhook receiver on 127.0.0.1, serving until the test ends."""
    started = HttpReceiver()
    await nursery.start(started.serve)
    return started


def job_due_at(settings: Settings, message_id: str) -> float | None:
    """When the message's delivery job is next due, read straight from the database."""
    rows = query(
        settings.database.url, "SELECT run_at FROM jobs WHERE message_id = ?", (message_id,)
    )
    return float(rows[0][0]) if rows else None


async def store_received(
    quiet: QuietGateway,
    agent: str,
    now: float,
    subject: str = "Old",
    *,
    hold_expires_at: float | None = None,
) -> str:
    """Store an inbound message for `agent` as if it arrived at `now` (held for review until
    `hold_expires_at` when given, as its gate holds mail not on the allowlist); its id."""
    message = NewInboundMessage(
        id=new_id("msg"),
        agent_email=agent,
        envelope_from="alice@example.org",
        from_addr="alice@example.org",
        reply_to=None,
        to=[agent],
        cc=[],
        subject=subject,
        conversation_id=None,
        rfc_message_id=None,
        raw_message=f"Subject: {subject}\r\n\r\nhi\r\n".encode(),
        auth_headers={},
        authentication_results={},
        received_at=format_timestamp(now),
        hold_expires_at=hold_expires_at,
        flag_reason=None if hold_expires_at is None else "not on the allowlist",
    )
    await quiet.gateway.storage.store_inbound([message], now)
    return message.id
