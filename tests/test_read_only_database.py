"""A PostgreSQL database that takes no writes (a standby after a failover, or one set
`default_transaction_read_only`): every write is a storage failure the gateway answers as one
(SMTP 451, REST 503, `/api/health` degraded) while reads go on (a `/v1` WebSocket still
drains the inbox), the operator's log says what to fix, and nothing stored before is lost
once writes come back."""

from __future__ import annotations

import json
import logging
import smtplib
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import psycopg
import pytest
import trio
from trio_websocket import open_websocket_url

from e2a_gateway.accounts import bootstrap_user
from e2a_gateway.app import RunningGateway, run_gateway
from e2a_gateway.mailauth.resolver import FixtureResolver
from tests.conftest import make_settings
from tests.databases import fresh_postgres_database
from tests.delivery_support import mail

pytestmark = pytest.mark.backend_independent

STEP_SECONDS = 10


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh database on the test cluster (skips without E2A_TEST_POSTGRES_URL)."""
    with fresh_postgres_database() as url:
        yield url


def set_read_only(url: str, read_only: bool) -> None:
    """Make the database take writes or not, for every session that starts from now on, and
    end the sessions open now (the gateway's pool connects again)."""
    name = urlsplit(url).path.lstrip("/")
    change = "SET default_transaction_read_only = on" if read_only else "RESET ALL"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SET default_transaction_read_only = off")  # this session may write
        admin.execute(f'ALTER DATABASE "{name}" {change}')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


def smtp_answer(port: int, recipient: str, subject: str) -> int:
    """The reply code to DATA of one message to `recipient`."""
    with smtplib.SMTP("127.0.0.1", port, timeout=STEP_SECONDS) as client:
        client.ehlo("mail.example.org")
        try:
            client.sendmail("alice@example.org", [recipient], mail(subject))
        except smtplib.SMTPDataError as refused:
            return int(refused.smtp_code)
        return 250


async def answering_reads(http: httpx.AsyncClient) -> None:
    """Wait until the gateway's pool has connected again (each old connection fails once)."""
    for _ in range(100):
        if (await http.get("/v1/agents")).status_code == 200:
            return
        await trio.sleep(0.05)
    raise AssertionError("the gateway did not read from the database again")


async def test_a_database_that_takes_no_writes_refuses_politely_and_loses_nothing(
    tmp_path: Path, database: str, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, database={"url": database})
    running: RunningGateway = await nursery.start(
        partial(run_gateway, settings, resolver=FixtureResolver())
    )
    gateway = running.gateway
    _, issued, _ = await bootstrap_user(gateway.storage, gateway.server_key, "owner@example.com")
    headers = {"Authorization": f"Bearer {issued.plaintext}"}
    pairs = [(name.encode(), value.encode()) for name, value in headers.items()]
    async with httpx.AsyncClient(
        base_url=running.addresses.http_url, headers=headers, timeout=STEP_SECONDS
    ) as http:
        created = await http.post("/v1/agents", json={"email": "bot@agents.test"})
        assert created.status_code == 201, created.text
        agent = created.json()["email"]
        port = running.addresses.smtp_port
        assert await trio.to_thread.run_sync(smtp_answer, port, agent, "before") == 250

        await trio.to_thread.run_sync(set_read_only, database, True)
        await answering_reads(http)
        with caplog.at_level(logging.ERROR, logger="e2a"):
            assert await trio.to_thread.run_sync(smtp_answer, port, agent, "refused") == 451
            refused = await http.post("/v1/agents", json={"email": "another@agents.test"})
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
        error = refused.json()["error"]
        assert error["code"] == "internal_error" and "try again" in error["message"]
        assert "point database.url at the primary" in caplog.text

        health = await http.get("/api/health")
        assert health.status_code == 503, health.text
        storage = health.json()["storage"]
        assert storage["state"] == "down" and "transaction_read_only is on" in storage["detail"]

        url = running.addresses.http_url.replace("http://", "ws://")
        socket_url = f"{url}/v1/agents/{quote(agent, safe='')}/ws"
        with trio.fail_after(STEP_SECONDS):
            async with open_websocket_url(socket_url, extra_headers=pairs) as ws:
                frame = json.loads(await ws.get_message())
        assert frame["data"]["subject"] == "before"  # reading needs no write

        await trio.to_thread.run_sync(set_read_only, database, False)
        await answering_reads(http)
        assert (await http.get("/api/health")).json()["status"] == "ok"
        assert await trio.to_thread.run_sync(smtp_answer, port, agent, "after") == 250
        listed = await http.get(f"/v1/agents/{quote(agent, safe='')}/messages")
        assert listed.status_code == 200, listed.text
        subjects = sorted(item["subject"] for item in listed.json()["items"])
        assert subjects == ["after", "before"]
        assert json.dumps(listed.json()).count("refused") == 0


async def test_the_ready_line_names_the_database_without_its_password(
    database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The URL operators are told to give (`postgresql://user:password@host/db`) is logged at
    start without its password (the test cluster trusts loopback, so any password connects)."""
    caplog.set_level(logging.INFO, logger="e2a")
    parts = urlsplit(database)
    user = parts.username or "postgres"
    with_password = parts._replace(netloc=f"{user}:n3ver-logged@{parts.hostname}:{parts.port}")
    settings = make_settings(tmp_path, database={"url": with_password.geturl()})
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(run_gateway, settings, resolver=FixtureResolver()))
        nursery.cancel_scope.cancel()
    (ready,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("e2a ready")]
    assert ready.endswith(
        f"(database postgresql://{user}@{parts.hostname}:{parts.port}{parts.path})"
    )
    assert "n3ver-logged" not in caplog.text
