# ruff: noqa: F811 (quiet_dns, imported from tests.test_restart_durability, is a parameter)
"""A send with an Idempotency-Key is made once even when `e2a serve` is killed with SIGKILL after
storing the message and before answering: a retry with the same key and body, after the
restart, gets the message stored the first time and stores and sends nothing again.

A real subprocess on SQLite. `/api/v1/send` answers only once the first hand-off has an outcome
(or after a few seconds), so a relay slow to answer the end of DATA holds the request open
after its message was stored: the process is killed there.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path

import pytest

from bench._gateway_process import AGENT
from tests.relay_support import relay_on_loopback
from tests.test_restart_durability import (  # noqa: F401 (quiet_dns is a fixture)
    SlowRelay,
    quiet_dns,
    send_quietly,
    started_with_relay,
)

pytestmark = [pytest.mark.slow, pytest.mark.backend_independent]

WAIT_SECONDS = 20.0
STALE_SECONDS = 301
"""Older than a claim may be before a retry may take it over (STALE_CLAIM_SECONDS)."""


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
    relay = SlowRelay(answer_seconds=60)  # far longer than the send's answer waits
    database = tmp_path / "e2a.db"
    body = {"from": AGENT, "to": ["someone@example.org"], "subject": "once", "body": "hi"}
    with relay_on_loopback(relay) as relay_port:
        gateway = started_with_relay(tmp_path, quiet_dns, relay_port)
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
