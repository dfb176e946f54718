"""e2a behind a connection pooler in transaction mode (PgBouncer), as managed PostgreSQL
services hand it out.

A real PgBouncer on loopback in front of the test cluster, `pool_mode = transaction`: with
`database.pooled = true` the pool's statements run however often, from however many
connections, and with `database.listen_url` pointing past the pooler two replicas hear each
other; a LISTEN connection through the pooler (which would hear nothing) stops the gateway at
start with a message saying what to set; and a write transaction whose client vanished
without the pooler hearing of it is ended by the server all the same, freeing its locks.

Skipped (with a message) unless E2A_TEST_POSTGRES_URL names a test cluster and
E2A_TEST_PGBOUNCER names a PgBouncer binary (or a script running one); docs/replicas.md says
how to get one.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
import trio
from trio_websocket import open_websocket_url

from e2a_gateway.app import RunningGateway, run_gateway
from e2a_gateway.inbound import pipeline
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.storage import open_storage, postgres
from e2a_gateway.storage.base import StorageUnavailable
from e2a_gateway.storage.postgres import PostgresStorage
from tests.conftest import make_settings
from tests.databases import fresh_postgres_database, require_postgres
from tests.delivery_support import create_agent as create_agent_in_process
from tests.delivery_support import open_account
from tests.dns_server import serve_dns
from tests.test_cli import free_port
from tests.test_commit_failures import SLOW_COMMIT_SECONDS, commit_dropper, stored_subjects
from tests.test_read_only_database import smtp_answer
from tests.test_replicas import (
    NOTIFY_SECONDS,
    bootstrap,
    create_agent,
    replica,
    send_mail,
    write_config,
)

pytestmark = pytest.mark.backend_independent

PGBOUNCER_VAR = "E2A_TEST_PGBOUNCER"
START_SECONDS = 10.0
REPEATS = 12
"""More runs of one statement than psycopg's prepare_threshold (5), on each of two clients."""


@dataclass
class Pooler:
    """A running PgBouncer in transaction mode in front of the test cluster."""

    port: int
    log: Path

    def url_for(self, direct_url: str) -> str:
        """`direct_url` (a database on the test cluster) reached through the pooler."""
        parts = urlsplit(direct_url)
        user = f"{parts.username}@" if parts.username else ""
        netloc = f"{user}127.0.0.1:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _pgbouncer_binary() -> str:
    found = os.environ.get(PGBOUNCER_VAR)
    if not found:
        pytest.skip(
            f"pooler tests skipped: set {PGBOUNCER_VAR}=/path/to/pgbouncer (a binary, or a "
            "script that runs one) to run them — e.g. `apt-get download pgbouncer` and "
            "`dpkg -x` it, docs/replicas.md"
        )
    return found


def _wait_listening(port: int, process: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            said = process.stderr.read() if process.stderr else ""
            logged = log.read_text() if log.exists() else ""
            raise AssertionError(f"pgbouncer exited: {said}{logged}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"pgbouncer did not listen on {port}")


@pytest.fixture(scope="module")
def pooler() -> Iterator[Pooler]:
    """PgBouncer on a free loopback port, `pool_mode = transaction`, every database of the
    test cluster behind it (run as the `postgres` user when the tests run as root: it refuses
    root)."""
    binary = _pgbouncer_binary()
    cluster = urlsplit(require_postgres())
    directory = Path(tempfile.mkdtemp(prefix="e2a-pgbouncer-"))
    directory.chmod(0o777)  # its log and pid file, when it runs as another user
    port = free_port()
    log = directory / "pgbouncer.log"
    users = directory / "users.txt"
    users.write_text(f'"{cluster.username or "postgres"}" ""\n')
    ini = directory / "pgbouncer.ini"
    ini.write_text(
        "[databases]\n"
        f"* = host={cluster.hostname} port={cluster.port}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {users}\n"
        "pool_mode = transaction\nmax_client_conn = 200\ndefault_pool_size = 20\n"
        f"logfile = {log}\npidfile = {directory / 'pgbouncer.pid'}\n"
    )
    for path in (users, ini):
        path.chmod(0o644)
    as_user = ["-u", "postgres"] if os.geteuid() == 0 else []
    process = subprocess.Popen(
        [binary, *as_user, str(ini)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_listening(port, process, log)
        yield Pooler(port, log)
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh database on the test cluster, its direct URL."""
    with fresh_postgres_database() as url:
        yield url


async def _migrate(url: str) -> None:
    """Migrate the database at `url` (directly, not through the pooler)."""
    store = open_storage(url)
    try:
        await store.migrate()
    finally:
        await store.close()


async def _run_repeatedly(*stores: PostgresStorage) -> None:
    """Each store runs the same statements REPEATS times, one after the other, so the pooler
    hands them the same server session in turn."""
    for store in stores:
        for _ in range(REPEATS):
            await store.ping()
            assert await store.find_agent("nobody@agents.test") is None


async def test_statements_run_again_and_again_through_a_transaction_pooler(
    pooler: Pooler, database: str
) -> None:
    url = pooler.url_for(database)
    first = open_storage(url, "a", pooled=True)
    second = open_storage(url, "b", pooled=True)
    assert isinstance(first, PostgresStorage) and isinstance(second, PostgresStorage)
    try:
        await _migrate(database)
        await _run_repeatedly(first, second, first)
        async with trio.open_nursery() as nursery:  # and at once, on several connections
            for store in (first, second) * 4:
                nursery.start_soon(_run_repeatedly, store)
    finally:
        await first.close()
        await second.close()


async def test_prepared_statements_behind_a_pooler_say_to_set_pooled(
    pooler: Pooler, database: str
) -> None:
    url = pooler.url_for(database)
    first, second = open_storage(url, "a"), open_storage(url, "b")
    assert isinstance(first, PostgresStorage) and isinstance(second, PostgresStorage)
    try:
        await _migrate(database)
        with pytest.raises(StorageUnavailable, match=r"set database\.pooled = true"):
            await _run_repeatedly(first, second, first)
    finally:
        await first.close()
        await second.close()


def test_a_listener_through_the_pooler_stops_the_gateway_at_start(
    tmp_path: Path, pooler: Pooler, database: str
) -> None:
    config, _, _ = write_config(
        tmp_path, pooler.url_for(database), free_port(), database="pooled = true\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2A_")}
    done = subprocess.run(
        [sys.executable, "-m", "e2a_gateway", "serve", "--config", str(config)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "database.url: the LISTEN connection" in done.stderr
    assert "set database.listen_url to a direct connection" in done.stderr
    assert "Traceback" not in done.stderr


async def test_two_replicas_through_the_pooler_hear_each_other(
    tmp_path: Path, pooler: Pooler, database: str
) -> None:
    pooled = f"pooled = true\nlisten_url = {json.dumps(database)}\n"
    url = pooler.url_for(database)
    async with trio.open_nursery() as nursery:
        dns_port = await nursery.start(serve_dns, {})
        async with (
            replica(tmp_path, "a", url, dns_port, database=pooled) as a,
            replica(tmp_path, "b", url, dns_port, database=pooled) as b,
        ):
            key = await bootstrap(a)
            agent = await create_agent(a, key, {"slug": "bot", "agent_mode": "local"})
            ws_base = a.http_url.replace("http://", "ws://")
            ws_url = f"{ws_base}/api/v1/agents/{quote(agent, safe='')}/ws?token={key}"
            async with open_websocket_url(ws_url, connect_timeout=NOTIFY_SECONDS) as ws:
                await trio.sleep(0.2)  # subscribed before the (empty) drain ends
                subjects = [f"across the pooler {n}" for n in range(REPEATS)]
                await trio.to_thread.run_sync(send_mail, b.smtp_port, agent, subjects)
                heard = []
                with trio.fail_after(NOTIFY_SECONDS * 2):
                    while len(heard) < len(subjects):
                        heard.append(json.loads(await ws.get_message())["subject"])
            assert heard == subjects
        nursery.cancel_scope.cancel()


async def test_a_write_whose_client_vanished_behind_the_pooler_frees_its_agent_at_once(
    tmp_path: Path,
    pooler: Pooler,
    database: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The pooler lends the gateway a server session per transaction, so the bound on idling
    in a transaction is set in each write: the server ends the one whose COMMIT never came
    (the link between gateway and pooler died unheard), and the agent's mail goes on."""
    monkeypatch.setattr(postgres, "IDLE_IN_TRANSACTION_SECONDS", SLOW_COMMIT_SECONDS)
    monkeypatch.setattr(pipeline, "COMMIT_SETTLE_SECONDS", SLOW_COMMIT_SECONDS * 5)
    with commit_dropper(pooler.url_for(database)) as (dropper, proxied):
        async with trio.open_nursery() as gateway_nursery:
            settings = make_settings(
                tmp_path, database={"url": proxied, "pooled": True, "listen_url": database}
            )
            running: RunningGateway = await gateway_nursery.start(
                partial(run_gateway, settings, resolver=FixtureResolver())
            )
            account = await open_account(
                running.gateway, running.addresses.http_url, "o@example.com"
            )
            async with account.http:
                agent = await create_agent_in_process(account, "bot")
            port = running.addresses.smtp_port

            dropper.doom(b"never-heard", unheard=True)
            answer = await trio.to_thread.run_sync(smtp_answer, port, agent, "never-heard")
            assert answer == 451 and dropper.dropped == 1
            assert "could not check whether" not in caplog.text  # the wait did not run out
            assert await trio.to_thread.run_sync(smtp_answer, port, agent, "after") == 250
            assert stored_subjects(database) == ["after"]
            gateway_nursery.cancel_scope.cancel()
