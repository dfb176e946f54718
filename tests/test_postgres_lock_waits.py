"""Another PostgreSQL session that holds a lock the gateway needs (an operator's `psql` left
inside a transaction after a `LOCK TABLE` or an `UPDATE`, a maintenance script, a migration
run by hand) never hangs mail or API calls: a statement waits for it at most
`postgres.LOCK_WAIT_SECONDS`, then SMTP answers 451 and REST 503 with a JSON error, the log
says in one line what holds the database and how to find it, and once the session lets go
everything works again with nothing lost."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from urllib.parse import quote

import httpx
import psycopg
import pytest
import trio

from e2a_gateway.accounts import bootstrap_user
from e2a_gateway.app import RunningGateway, run_gateway
from e2a_gateway.inbound import pipeline
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.storage import postgres
from tests.conftest import make_settings
from tests.databases import fresh_postgres_database
from tests.test_read_only_database import smtp_answer

pytestmark = pytest.mark.backend_independent

STEP_SECONDS = 10
WAIT_SECONDS = 0.5
"""The lock wait the gateway is given here: short, so the test is."""


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh database on the test cluster (skips without E2A_TEST_POSTGRES_URL)."""
    with fresh_postgres_database() as url:
        yield url


async def test_a_lock_held_by_another_session_is_451_and_503_then_recovers(
    tmp_path: Path,
    database: str,
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(postgres, "LOCK_WAIT_SECONDS", WAIT_SECONDS)
    monkeypatch.setattr(pipeline, "COMMIT_SETTLE_SECONDS", WAIT_SECONDS)
    settings = make_settings(tmp_path, database={"url": database})
    running: RunningGateway = await nursery.start(
        partial(run_gateway, settings, resolver=FixtureResolver())
    )
    gateway = running.gateway
    _, issued, _ = await bootstrap_user(gateway.storage, gateway.server_key, "owner@example.com")
    headers = {"Authorization": f"Bearer {issued.plaintext}"}
    async with httpx.AsyncClient(
        base_url=running.addresses.http_url, headers=headers, timeout=STEP_SECONDS
    ) as http:
        created = await http.post("/v1/agents", json={"email": "bot@agents.test"})
        assert created.status_code == 201, created.text
        agent = created.json()["email"]
        inbox = f"/v1/agents/{quote(agent, safe='')}/messages"
        port = running.addresses.smtp_port
        assert await trio.to_thread.run_sync(smtp_answer, port, agent, "before") == 250

        locker = await trio.to_thread.run_sync(psycopg.connect, database)
        try:
            await trio.to_thread.run_sync(
                locker.execute, "LOCK TABLE messages IN ACCESS EXCLUSIVE MODE"
            )
            with caplog.at_level(logging.WARNING, logger="e2a"):
                started = time.monotonic()
                with trio.fail_after(STEP_SECONDS):
                    answer = await trio.to_thread.run_sync(smtp_answer, port, agent, "held")
                    listed = await http.get(inbox)
                assert time.monotonic() - started < STEP_SECONDS
            assert answer == 451
            assert listed.status_code == 503 and listed.headers["Retry-After"] == "5"
            assert "try again" in listed.json()["error"]["message"]
            assert "lock_timeout" not in listed.text and "messages" not in listed.text
            lines = [r.getMessage() for r in caplog.records if "pg_blocking_pids" in r.getMessage()]
            assert lines, caplog.text
            assert all("\n" not in line and "Subject" not in line for line in lines)
        finally:
            await trio.to_thread.run_sync(locker.close)  # lets go of the lock

        assert await trio.to_thread.run_sync(smtp_answer, port, agent, "after") == 250
        listed = await http.get(inbox)
        assert listed.status_code == 200, listed.text
        assert sorted(item["subject"] for item in listed.json()["items"]) == ["after", "before"]
