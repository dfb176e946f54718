"""A send with an Idempotency-Key is made once even when `e2a serve` is killed with SIGKILL after
storing the message and before answering: a retry with the same key and body, after the
restart, gets the message stored the first time and stores and sends nothing again.

A real subprocess on SQLite. `/api/v1/send` answers only once the first hand-off has an outcome
(or after a few seconds), so a relay slow to answer the end of DATA holds the request open
after its message was stored: the process is killed there.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench._gateway_process import AGENT, GatewayProcess
from bench._quiet_dns import QuietDns
from tests.relay_support import Sink, relay_on_loopback

pytestmark = pytest.mark.slow

WAIT_SECONDS = 20.0
STALE_SECONDS = 301
"""Older than a claim may be before a retry may take it over (STALE_CLAIM_SECONDS)."""


class SlowRelay(Sink):
    """A relay that has the message at the end of DATA and takes far longer than the send's
    answer waits to say so."""

    def __init__(self) -> None:
        super().__init__()
        self.data_arrived = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.data_arrived.set()
        await asyncio.sleep(60)
        return "250 OK"


@pytest.fixture
def quiet_dns() -> Iterator[str]:
    with QuietDns() as dns:
        yield dns.address


def send_quietly(api: httpx.Client, body: dict[str, Any], key: str) -> None:
    """POST /send with `key`, whatever becomes of the answer (the process dies under it)."""
    with contextlib.suppress(httpx.HTTPError):
        api.post("/send", json=body, headers={"Idempotency-Key": key})


def outbound_ids(database: Path) -> list[str]:
    """The ids of the outbound messages stored, read from the database file itself."""
    with contextlib.closing(sqlite3.connect(database, timeout=10)) as db:
        rows = db.execute("SELECT id FROM messages WHERE direction = 'outbound'").fetchall()
    return [row[0] for row in rows]


def age_claims(database: Path, seconds: float) -> None:
    """Make every idempotency claim `seconds` older, as if that long had passed."""
    with contextlib.closing(sqlite3.connect(database, timeout=10)) as db, db:
        db.execute("UPDATE idempotency_keys SET claimed_at = claimed_at - ?", (seconds,))


def test_a_send_killed_before_its_answer_is_kept_is_not_made_again_on_retry(
    tmp_path: Path, quiet_dns: str
) -> None:
    relay = SlowRelay()
    database = tmp_path / "e2a.db"
    body = {"from": AGENT, "to": ["someone@example.org"], "subject": "once", "body": "hi"}
    with relay_on_loopback(relay) as relay_port:
        gateway = GatewayProcess(tmp_path, quiet_dns, log_level=None)
        with gateway.config.open("a") as config:
            config.write(
                f'[outbound_smtp]\nhost = "127.0.0.1"\nport = {relay_port}\ntls = "none"\n'
            )
        gateway.start()
        try:
            api = gateway.bootstrap()
            first = threading.Thread(target=send_quietly, args=(api, body, "k-1"), daemon=True)
            first.start()
            assert relay.data_arrived.wait(WAIT_SECONDS)  # stored, and its answer still waits
            gateway.kill()
            [stored] = outbound_ids(database)
            gateway.start()
            retried = api.post("/send", json=body, headers={"Idempotency-Key": "k-1"})
            assert retried.status_code == 200, retried.text
            assert retried.json()["message_id"] == stored
            age_claims(database, STALE_SECONDS)
            later = api.post("/send", json=body, headers={"Idempotency-Key": "k-1"})
            assert later.status_code == 200, later.text
            assert later.json()["message_id"] == stored
            other = api.post(
                "/send", json={**body, "subject": "twice"}, headers={"Idempotency-Key": "k-1"}
            )
            assert other.status_code == 422, other.text
            api.close()
        finally:
            gateway.kill()
    assert outbound_ids(database) == [stored], "the retry stored and sent the message again"
