"""Nothing secret reaches the logs: a gateway run at DEBUG (every logger, every library) through
SMTP ingest, webhook delivery, REST reads, an agent-to-agent send and refused credentials
never logs a message body, an API key, a signing secret or the server key."""

from __future__ import annotations

import base64
import json
import logging
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from e2a_gateway.logs import JsonFormatter
from tests.conftest import Account, agent_path, make_settings
from tests.delivery_support import (
    create_agent,
    mail,
    new_signing_secret,
    smtp_send,
    wait_for_status,
    wait_until,
)
from tests.http_receiver import HttpReceiver

SERVER_KEY = secrets.token_hex(32)
INBOUND_MARKER = f"inbound-body-{secrets.token_hex(8)}"
OUTBOUND_MARKER = f"outbound-body-{secrets.token_hex(8)}"
WRONG_KEY = f"e2a_{secrets.token_hex(20)}"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A known server key, debug logging, webhooks allowed to the loopback receiver."""
    return make_settings(
        tmp_path,
        signing={"hmac_secret": SERVER_KEY},
        log={"level": "debug"},
        webhooks={"allow_private": True},
    )


@pytest.fixture
def everything_logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every record of every logger at DEBUG and above."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="e2a")
    return caplog


def rendered(records: list[logging.LogRecord]) -> str:
    """The records as the text and the JSON formats write them, tracebacks included."""
    text, json_lines = logging.Formatter("%(name)s %(message)s"), JsonFormatter()
    return "\n".join(f"{text.format(r)}\n{json_lines.format(r)}" for r in records)


async def test_bodies_keys_and_secrets_never_reach_the_logs(
    running: RunningGateway,
    make_account: Any,
    nursery: trio.Nursery,
    everything_logged: pytest.LogCaptureFixture,
) -> None:
    receiver = HttpReceiver()
    await nursery.start(receiver.serve)
    alice: Account = await make_account("alice@example.com")
    signing_secret = await new_signing_secret(alice)
    cloud = await create_agent(alice, "cloud", receiver.url)
    local = await create_agent(alice, "local")

    data = mail("Scrub check", body=f"The secret word is {INBOUND_MARKER}.")
    await smtp_send(running.addresses.smtp_port, [cloud, local], data)
    (delivered,) = await receiver.wait_for(1)
    payload = json.loads(delivered.body)
    assert INBOUND_MARKER.encode() in base64.b64decode(payload["raw_message"])  # it went through
    listing = await alice.http.get(f"{agent_path(local)}/messages?status=all")
    (message,) = listing.json()["messages"]
    read = await alice.http.get(f"{agent_path(local)}/messages/{message['message_id']}")
    assert INBOUND_MARKER in read.text

    sent = await alice.http.post(
        "/api/v1/send",
        json={"from": cloud, "to": [local], "subject": "Internal", "body": OUTBOUND_MARKER},
    )
    assert sent.status_code in (200, 202), sent.text

    async def arrived() -> bool:
        page = await alice.http.get(f"{agent_path(local)}/messages?status=all")
        return len(page.json()["messages"]) == 2

    await wait_until(arrived)
    await wait_for_status(alice, cloud, payload["message_id"], "delivered")
    async with httpx.AsyncClient(base_url=running.addresses.http_url) as stranger:
        refused = await stranger.get(
            "/api/v1/agents", headers={"Authorization": f"Bearer {WRONG_KEY}"}
        )
    assert refused.status_code == 401

    logged = rendered(everything_logged.records)
    assert "SMTP session" in logged and "webhook" in logged  # the run was logged at all
    for secret in (INBOUND_MARKER, OUTBOUND_MARKER, alice.key, WRONG_KEY, signing_secret):
        assert secret not in logged
    assert SERVER_KEY not in logged
