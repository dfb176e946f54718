"""Two `e2a serve` replicas on one PostgreSQL database, as an operator runs them.

Real subprocesses on loopback ports, a fresh database per test: mail accepted by one replica
reaches a WebSocket client of the other at once, and webhook jobs are delivered exactly once
between them. Skipped (with a message) unless E2A_TEST_POSTGRES_URL names a test cluster.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import psycopg
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    WebSocketConnection,
    connect_websocket_url,
    open_websocket_url,
)

from bench._gateway_process import process_tree
from e2a_gateway.hub import Ended, Hub, Listener
from e2a_gateway.hub.fanout import PostgresFanout, relay_payload
from e2a_gateway.hub.job_queue import JobQueue
from e2a_gateway.metrics import PER_REPLICA, SHARED
from e2a_gateway.storage.base import StorageUnavailable
from e2a_gateway.storage.postgres import FANOUT_CHANNEL, PostgresStorage
from e2a_gateway.storage.vocabulary import JOB_KINDS
from tests.databases import fresh_postgres_database, require_postgres
from tests.delivery_support import wait_until
from tests.dns_server import serve_dns
from tests.http_receiver import Answer, HttpReceiver
from tests.test_cli import free_port
from tests.test_dashboard import open_stream, session_csrf, sign_in
from tests.test_metrics import SHARED_FAMILIES, Samples, samples_of, value
from tests.test_smtp_acceptors import _acceptor_serving, _running

pytestmark = pytest.mark.backend_independent

E2A = [sys.executable, "-m", "e2a_gateway"]
START_SECONDS = 30.0
NOTIFY_SECONDS = 5.0
DELIVERY_SECONDS = 30.0
MESSAGES = 500
KILL_MESSAGES = 30
SLOW_ANSWER_SECONDS = 1.0
WEBHOOK_TIMEOUT_SECONDS = 3
LEASE_SECONDS = 6
LONG_LEASE_SECONDS = 40
HELD_POST_SECONDS = 4
CLAIMS_FAILED_SECONDS = 2.0
HELD_LEASE_SECONDS = 8
DELIVERY_SLACK_SECONDS = 8.0
SIMULTANEOUS_ROUNDS = 8
SETTLE_SECONDS = 1.0


@dataclass
class Replica:
    """One running `e2a serve`."""

    name: str
    config: Path
    smtp_port: int
    http_url: str
    process: subprocess.Popen[str]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("E2A_")}


def write_config(
    directory: Path,
    database_url: str,
    dns_port: int,
    webhooks: str = "",
    database: str = "",
    smtp: str = "",
    extra: str = "",
) -> tuple[Path, int, int]:
    """A config for one replica on free loopback ports, serving /metrics (`database`, `smtp`:
    extra lines for those sections; `extra`: further sections at its end). Its DNS is a
    loopback server with an empty zone: nothing leaves the machine, and SPF/DMARC lookups end
    at once (NXDOMAIN) instead of waiting out a timeout per message."""
    directory.mkdir(parents=True, exist_ok=True)
    smtp_port, http_port = free_port(), free_port()
    path = directory / "e2a.toml"
    path.write_text(
        'shared_domain = "agents.test"\n'
        f'[smtp]\nlisten = "127.0.0.1:{smtp_port}"\nhostname = "mx.agents.test"\n{smtp}'
        f'[http]\nlisten = "127.0.0.1:{http_port}"\n'
        f"[database]\nurl = {json.dumps(database_url)}\n{database}"
        f'[dns]\nnameservers = ["127.0.0.1:{dns_port}"]\ntimeout_seconds = 1\n'
        f"[webhooks]\nallow_private = true\n{webhooks}"
        "[metrics]\nenabled = true\n"
        "[limits]\nagent_registrations_per_ip_per_hour = 100000\n"
        "message_polls_per_user_per_minute = 100000\n" + extra
    )
    return path, smtp_port, http_port


async def wait_healthy(replica: Replica) -> None:
    """Poll /api/health until it answers 200 (or the process dies, or START_SECONDS pass)."""
    async with httpx.AsyncClient(timeout=1) as http:
        with trio.fail_after(START_SECONDS):
            while True:
                if replica.process.poll() is not None:
                    stderr = replica.process.stderr.read() if replica.process.stderr else ""
                    raise AssertionError(f"replica {replica.name} exited early: {stderr}")
                try:
                    if (await http.get(f"{replica.http_url}/api/health")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await trio.sleep(0.05)


def stop(process: subprocess.Popen[str]) -> None:
    """Kill `process` if it still runs, and reap it."""
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)


def spawn_serve(config: Path) -> subprocess.Popen[str]:
    """Start `e2a serve` on `config`, its stderr piped (for the reason if it dies early)."""
    return subprocess.Popen(
        [*E2A, "serve", "--config", str(config)],
        cwd=config.parent,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@asynccontextmanager
async def replica(
    tmp_path: Path,
    name: str,
    database_url: str,
    dns_port: int,
    webhooks: str = "",
    database: str = "",
    smtp: str = "",
    extra: str = "",
) -> AsyncIterator[Replica]:
    """Start one replica (`webhooks`, `database`, `smtp`: extra lines for those sections;
    `extra`: further sections) and yield it once healthy; kill it on exit."""
    config, smtp_port, http_port = write_config(
        tmp_path / name, database_url, dns_port, webhooks, database, smtp, extra
    )
    process = spawn_serve(config)
    running = Replica(name, config, smtp_port, f"http://127.0.0.1:{http_port}", process)
    try:
        await wait_healthy(running)
        yield running
    finally:
        stop(process)
        if process.stderr is not None:
            process.stderr.close()


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh database on the test cluster (skips without E2A_TEST_POSTGRES_URL)."""
    with fresh_postgres_database() as url:
        yield url


@asynccontextmanager
async def two_replicas(tmp_path: Path, database_url: str) -> AsyncIterator[tuple[Replica, Replica]]:
    """Replicas A and B on the same database (A migrates it first), with a loopback DNS."""
    async with trio.open_nursery() as nursery:
        dns_port = await nursery.start(serve_dns, {})
        async with (
            replica(tmp_path, "a", database_url, dns_port) as a,
            replica(tmp_path, "b", database_url, dns_port) as b,
        ):
            yield a, b
        nursery.cancel_scope.cancel()


async def bootstrap(replica: Replica) -> str:
    """An API key for me@example.com, made with `e2a bootstrap` against the replica's config."""
    result = await trio.to_thread.run_sync(
        lambda: subprocess.run(
            [*E2A, "bootstrap", "--email", "me@example.com", "--config", str(replica.config)],
            cwd=replica.config.parent,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


async def create_agent(replica: Replica, key: str, body: dict[str, str]) -> str:
    """Create an agent through `replica`'s API; return its address."""
    async with httpx.AsyncClient(timeout=10) as http:
        created = await http.post(
            f"{replica.http_url}/api/v1/agents",
            headers={"Authorization": f"Bearer {key}"},
            json=body,
        )
    assert created.status_code == 201, created.text
    return str(created.json()["email"])


def send_mail(smtp_port: int, recipient: str, subjects: list[str]) -> None:
    """Send one message per subject over one SMTP session (blocking; run it in a thread)."""
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
        for subject in subjects:
            raw = (
                f"From: a@example.org\r\nTo: {recipient}\r\nSubject: {subject}\r\n\r\nhello\r\n"
            ).encode()
            assert client.sendmail("a@example.org", [recipient], raw) == {}


async def test_mail_into_b_reaches_websocket_client_on_a(tmp_path: Path, database: str) -> None:
    async with two_replicas(tmp_path, database) as (a, b):
        key = await bootstrap(a)
        agent = await create_agent(a, key, {"slug": "bot", "agent_mode": "local"})
        url = a.http_url.replace("http://", "ws://")
        ws_url = f"{url}/api/v1/agents/{quote(agent, safe='')}/ws?token={key}"
        async with open_websocket_url(ws_url, connect_timeout=NOTIFY_SECONDS) as ws:
            await trio.sleep(0.2)  # the subscription is taken before the (empty) drain ends
            await trio.to_thread.run_sync(send_mail, b.smtp_port, agent, ["across replicas"])
            sent_at = trio.current_time()
            with trio.fail_after(NOTIFY_SECONDS):
                frame = json.loads(await ws.get_message())
            latency = trio.current_time() - sent_at
        assert frame["recipient"] == agent
        assert frame["subject"] == "across replicas"
        assert frame["message_id"].startswith("msg")
        assert latency < 2.0


async def test_revocations_on_b_close_websockets_on_a(tmp_path: Path, database: str) -> None:
    """A key revoked, an agent deleted, through replica B: the WebSockets they opened on
    replica A are closed within seconds, and only those."""
    async with two_replicas(tmp_path, database) as (a, b):
        key = await bootstrap(a)
        bot = await create_agent(a, key, {"slug": "bot", "agent_mode": "local"})
        other = await create_agent(a, key, {"slug": "other", "agent_mode": "local"})
        async with httpx.AsyncClient(
            base_url=b.http_url, headers={"Authorization": f"Bearer {key}"}, timeout=10
        ) as via_b:
            spare = (await via_b.post("/api/v1/users/me/api-keys", json={"name": "spare"})).json()
            base = a.http_url.replace("http://", "ws://") + "/api/v1/agents"
            async with (
                open_websocket_url(f"{base}/{quote(bot)}/ws?token={spare['key']}") as by_spare,
                open_websocket_url(f"{base}/{quote(other)}/ws?token={key}") as on_other,
                open_websocket_url(f"{base}/{quote(bot)}/ws?token={key}") as on_bot,
            ):
                await trio.sleep(0.2)  # subscribed before the (empty) drain ends
                revoked = await via_b.delete(f"/api/v1/users/me/api-keys/{spare['id']}")
                assert revoked.status_code == 204
                assert await closed_within(by_spare, NOTIFY_SECONDS) == (
                    1008,
                    "the API key was revoked",
                )
                assert (await via_b.delete(f"/api/v1/agents/{quote(other)}")).status_code == 200
                assert await closed_within(on_other, NOTIFY_SECONDS) == (
                    1008,
                    "the agent was deleted",
                )
                await trio.to_thread.run_sync(send_mail, b.smtp_port, bot, ["still here"])
                with trio.fail_after(NOTIFY_SECONDS):
                    frame = json.loads(await on_bot.get_message())
        assert frame["subject"] == "still here"


async def test_signing_out_on_b_ends_the_sessions_live_stream_on_a(
    tmp_path: Path, database: str
) -> None:
    """A dashboard session signed out through replica B: the live inbox stream it opened on
    replica A ends within seconds."""
    async with two_replicas(tmp_path, database) as (a, b):
        key = await bootstrap(a)
        bot = await create_agent(a, key, {"slug": "bot", "agent_mode": "local"})
        async with (
            httpx.AsyncClient(base_url=a.http_url, timeout=10) as on_a,
            httpx.AsyncClient(base_url=b.http_url, timeout=10) as on_b,
        ):
            assert (await sign_in(on_a, key)).status_code == 303
            token = await session_csrf(on_a)
            on_b.cookies.set("e2a_session", on_a.cookies["e2a_session"])
            url = await open_stream(on_a, bot)
            async with on_a.stream("GET", url) as stream:
                lines = stream.aiter_lines()
                assert (await lines.__anext__()).startswith("retry:")
                signed_out = await on_b.post("/signout", data={"csrf_token": token})
                assert signed_out.status_code == 303
                with trio.fail_after(NOTIFY_SECONDS):
                    async for line in lines:
                        assert not line.startswith("data:"), line


async def closed_within(ws: WebSocketConnection, seconds: float) -> tuple[int, str | None]:
    """The code and reason with which the server closes `ws` (failing after `seconds`)."""
    with trio.fail_after(seconds), pytest.raises(ConnectionClosed) as closed:
        while True:
            await ws.get_message()
    return closed.value.reason.code, closed.value.reason.reason


def v1_socket_url(replica: Replica, agent: str) -> str:
    """The `/v1` WebSocket of `agent` on `replica`."""
    base = replica.http_url.replace("http://", "ws://")
    return f"{base}/v1/agents/{quote(agent, safe='')}/ws"


def bearer(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"Authorization", f"Bearer {key}".encode())]


async def still_open(ws: WebSocketConnection, seconds: float) -> bool:
    """True unless the server closes `ws` within `seconds` (no mail is waiting: nothing else
    arrives meanwhile)."""
    with trio.move_on_after(seconds):
        try:
            await ws.get_message()
        except ConnectionClosed:
            return False
        raise AssertionError("nothing was expected on the socket")
    return True


async def test_a_v1_socket_on_b_replaces_the_one_on_a(tmp_path: Path, database: str) -> None:
    """e2a's one connection per agent holds across replicas: a newer `/v1` WebSocket on B
    closes A's with 4000 `replaced`; B's own news does not close B's newest, which hears mail
    accepted by either replica."""
    async with two_replicas(tmp_path, database) as (a, b):
        key = await bootstrap(a)
        agent = await create_agent(a, key, {"slug": "bot", "agent_mode": "local"})
        async with open_websocket_url(v1_socket_url(a, agent), extra_headers=bearer(key)) as on_a:
            assert await still_open(on_a, 0.3)
            async with open_websocket_url(
                v1_socket_url(b, agent), extra_headers=bearer(key)
            ) as on_b:
                assert await closed_within(on_a, NOTIFY_SECONDS) == (4000, "replaced")
                async with open_websocket_url(
                    v1_socket_url(b, agent), extra_headers=bearer(key)
                ) as newest:
                    assert await closed_within(on_b, NOTIFY_SECONDS) == (4000, "replaced")
                    assert await still_open(newest, 1.0)  # B heard its own claim come back
                    for replica_, subject in ((a, "into a"), (b, "into b")):
                        await trio.to_thread.run_sync(
                            send_mail, replica_.smtp_port, agent, [subject]
                        )
                        with trio.fail_after(NOTIFY_SECONDS):
                            event = json.loads(await newest.get_message())
                        assert event["type"] == "email.received"
                        assert event["data"]["subject"] == subject


async def test_near_simultaneous_v1_sockets_on_a_and_b_leave_exactly_one_open(
    tmp_path: Path, database: str
) -> None:
    """Two `/v1` WebSockets for one agent opened at the same moment on A and B, each replica
    claiming before it hears of the other's claim: one is replaced, the other stays."""
    async with two_replicas(tmp_path, database) as (a, b):
        key = await bootstrap(a)
        agent = await create_agent(a, key, {"slug": "bot", "agent_mode": "local"})
        for _ in range(SIMULTANEOUS_ROUNDS):
            closed = await connect_both_at_once(
                v1_socket_url(a, agent), v1_socket_url(b, agent), key
            )
            still = [url for url, reason in closed.items() if reason is None]
            assert len(still) == 1, closed
            (replaced,) = (reason for reason in closed.values() if reason is not None)
            assert (replaced.code, replaced.reason) == (4000, "replaced")


async def connect_both_at_once(url_a: str, url_b: str, key: str) -> dict[str, CloseReason | None]:
    """Open WebSockets to `url_a` and `url_b` at the same moment, wait until one is closed and
    a while longer, and say how each was closed (None: still open); then close them."""
    sockets: dict[str, WebSocketConnection] = {}
    async with trio.open_nursery() as connections:

        async def connect(url: str) -> None:
            sockets[url] = await connect_websocket_url(connections, url, extra_headers=bearer(key))

        with trio.fail_after(NOTIFY_SECONDS):
            async with trio.open_nursery() as both:
                both.start_soon(connect, url_a)
                both.start_soon(connect, url_b)
        one_closed = trio.Event()

        async def until_closed(ws: WebSocketConnection) -> None:
            with pytest.raises(ConnectionClosed):
                while True:
                    await ws.get_message()  # no mail waits: nothing arrives
            one_closed.set()

        async with trio.open_nursery() as watchers:
            for ws in sockets.values():
                watchers.start_soon(until_closed, ws)
            with trio.fail_after(NOTIFY_SECONDS):  # one is replaced...
                await one_closed.wait()
            await trio.sleep(SETTLE_SECONDS)  # ...and the other not, once every claim is heard
            watchers.cancel_scope.cancel()
        closed = {url: ws.closed for url, ws in sockets.items()}
        for ws in sockets.values():
            await ws.aclose()
    return closed


async def test_webhook_jobs_through_both_replicas_are_delivered_exactly_once(
    tmp_path: Path, database: str
) -> None:
    receiver = HttpReceiver()
    async with trio.open_nursery() as nursery:
        await nursery.start(receiver.serve)
        async with two_replicas(tmp_path, database) as (a, b):
            key = await bootstrap(a)
            agent = await create_agent(
                b, key, {"slug": "hook", "agent_mode": "cloud", "webhook_url": receiver.url}
            )
            half = MESSAGES // 2
            async with trio.open_nursery() as senders:
                for replica_, start in ((a, 0), (b, half)):
                    subjects = [f"m{n}" for n in range(start, start + half)]
                    senders.start_soon(
                        trio.to_thread.run_sync, send_mail, replica_.smtp_port, agent, subjects
                    )
            with trio.fail_after(DELIVERY_SECONDS):
                while len(receiver.requests) < MESSAGES:
                    await receiver.wait_for(len(receiver.requests) + 1)
            await trio.sleep(1.0)  # a duplicate, if any, would arrive meanwhile
        nursery.cancel_scope.cancel()
    delivery_ids = [request.headers["x-e2a-delivery-id"] for request in receiver.requests]
    assert len(delivery_ids) == MESSAGES
    assert len(set(delivery_ids)) == MESSAGES
    subjects = {json.loads(request.body)["subject"] for request in receiver.requests}
    assert subjects == {f"m{n}" for n in range(MESSAGES)}


async def scrape(replica: Replica) -> tuple[Samples, dict[str, str]]:
    """`replica`'s /metrics: every sample, and each family's HELP."""
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{replica.http_url}/metrics")
    assert response.status_code == 200, response.text
    helps = {
        family.name: family.documentation
        for family in text_string_to_metric_families(response.text)
    }
    return samples_of(response.text), helps


async def test_two_replicas_count_their_own_traffic_and_report_one_shared_queue(
    tmp_path: Path, database: str
) -> None:
    """Mail taken in by B is counted by B alone (per-replica metrics are summed across
    replicas), while the queue gauges, read from the shared database, are the same on both —
    and each HELP says which kind it is."""
    receiver = HttpReceiver(lambda _: Answer(500))
    async with trio.open_nursery() as nursery:
        await nursery.start(receiver.serve)
        async with two_replicas(tmp_path, database) as (a, b):
            key = await bootstrap(a)
            body = {"slug": "hook", "agent_mode": "cloud", "webhook_url": receiver.url}
            agent = await create_agent(b, key, body)
            await trio.to_thread.run_sync(send_mail, b.smtp_port, agent, ["counted on b"])

            async def waiting_for_its_retry() -> bool:
                (on_a, _), (on_b, _) = await scrape(a), await scrape(b)
                retrying = {"channel": "webhook", "outcome": "retrying"}
                return (
                    value(on_a, "e2a_deliveries_total", **retrying)
                    + value(on_b, "e2a_deliveries_total", **retrying)
                    == 1
                    and value(on_a, "e2a_queue_jobs", kind="webhook") == 1
                    and value(on_b, "e2a_queue_jobs", kind="webhook") == 1
                )

            await wait_until(waiting_for_its_retry, DELIVERY_SECONDS)
            (on_a, helps_a), (on_b, helps_b) = await scrape(a), await scrape(b)
        nursery.cancel_scope.cancel()
    assert len(receiver.requests) == 1  # the retry is about 30 s away
    assert value(on_a, "e2a_smtp_messages_accepted_total") == 0
    assert value(on_b, "e2a_smtp_messages_accepted_total") == 1
    assert value(on_b, "e2a_inbound_messages_stored_total") == 1

    def shared(samples: Samples) -> Samples:
        return {key: count for key, count in samples.items() if key[0] in SHARED_FAMILIES}

    assert shared(on_a) == shared(on_b)
    assert value(on_a, "e2a_queue_depth", queue="webhook", state="retryable") == 1
    assert helps_a == helps_b
    for name, help_text in helps_a.items():
        assert help_text.endswith(SHARED if name in SHARED_FAMILIES else PER_REPLICA), name


async def test_replica_killed_mid_delivery_leaves_its_jobs_to_the_other_after_the_lease(
    tmp_path: Path, database: str
) -> None:
    """A holds jobs (some POSTs in flight, some queued) when it is killed with SIGKILL; B, a
    replica with another name, leaves them alone while A's leases run, then delivers them all.
    Only the POSTs A had in flight are seen twice: at-least-once, never lost."""
    receiver = HttpReceiver(lambda _: Answer(200, delay=SLOW_ANSWER_SECONDS))
    timing = f"timeout_seconds = {WEBHOOK_TIMEOUT_SECONDS}\nlease_seconds = {LEASE_SECONDS}\n"
    subjects = [f"k{n}" for n in range(KILL_MESSAGES)]
    async with trio.open_nursery() as nursery:
        await nursery.start(receiver.serve)
        dns_port = await nursery.start(serve_dns, {})
        async with replica(tmp_path, "a", database, dns_port, timing) as a:
            key = await bootstrap(a)
            agent = await create_agent(
                a, key, {"slug": "hook", "agent_mode": "cloud", "webhook_url": receiver.url}
            )
            sent_at = trio.current_time()
            await trio.to_thread.run_sync(send_mail, a.smtp_port, agent, subjects)
            await receiver.wait_in_flight(8)  # A's per-host limit: 8 POSTs held by the receiver
            a.process.kill()
            killed_at = trio.current_time()
            in_flight_at_kill = {json.loads(r.body)["subject"] for r in receiver.requests}
        async with replica(tmp_path, "b", database, dns_port, timing):
            with trio.fail_after(DELIVERY_SECONDS):
                while True:
                    if await trio.to_thread.run_sync(_all_delivered, database, KILL_MESSAGES):
                        break
                    await trio.sleep(0.2)  # polling the database: no event crosses processes
        nursery.cancel_scope.cancel()

    received: dict[str, list[float]] = {}
    for request in receiver.requests:
        received.setdefault(json.loads(request.body)["subject"], []).append(request.at)
    assert set(received) == set(subjects)
    assert len(in_flight_at_kill) == 8
    for subject, times in received.items():
        if subject in in_flight_at_kill:
            _, again = times  # A's POST, then B's after A's lease ran out
            assert again >= sent_at + LEASE_SECONDS - 0.5
            assert again <= killed_at + LEASE_SECONDS + DELIVERY_SLACK_SECONDS
        else:
            assert len(times) == 1, f"{subject} delivered {len(times)} times"
            assert times[0] > killed_at


async def test_a_stopped_replica_leaves_its_jobs_to_the_others_at_once(
    tmp_path: Path, database: str
) -> None:
    """A holds jobs (some POSTs in flight, some queued) when it is stopped with SIGTERM, as in a
    rolling restart or a scale-down; B, a replica with another name, delivers them all at once,
    not after A's leases: a stop gives back the leases of what it did not finish. Only the
    POSTs A had in flight are seen twice."""
    receiver = HttpReceiver(lambda _: Answer(200, delay=SLOW_ANSWER_SECONDS))
    timing = f"timeout_seconds = {WEBHOOK_TIMEOUT_SECONDS}\nlease_seconds = {LONG_LEASE_SECONDS}\n"
    subjects = [f"s{n}" for n in range(KILL_MESSAGES)]
    async with trio.open_nursery() as nursery:
        await nursery.start(receiver.serve)
        dns_port = await nursery.start(serve_dns, {})
        async with replica(tmp_path, "a", database, dns_port, timing) as a:
            key = await bootstrap(a)
            agent = await create_agent(
                a, key, {"slug": "hook", "agent_mode": "cloud", "webhook_url": receiver.url}
            )
            await trio.to_thread.run_sync(send_mail, a.smtp_port, agent, subjects)
            await receiver.wait_in_flight(8)  # A's per-host limit: 8 POSTs held by the receiver
            claimed_at = trio.current_time()
            a.process.send_signal(signal.SIGTERM)
            assert await trio.to_thread.run_sync(lambda: a.process.wait(timeout=30)) == 0
            in_flight_at_stop = {json.loads(r.body)["subject"] for r in receiver.requests}
        async with replica(tmp_path, "b", database, dns_port, timing):
            with trio.fail_after(DELIVERY_SECONDS):
                while True:
                    if await trio.to_thread.run_sync(_all_delivered, database, KILL_MESSAGES):
                        break
                    await trio.sleep(0.2)  # polling the database: no event crosses processes
            delivered_at = trio.current_time()
        nursery.cancel_scope.cancel()

    received: dict[str, int] = {}
    for request in receiver.requests:
        subject = json.loads(request.body)["subject"]
        received[subject] = received.get(subject, 0) + 1
    assert set(received) == set(subjects)
    assert len(in_flight_at_stop) == 8
    assert {subject for subject, times in received.items() if times > 1} <= in_flight_at_stop
    assert delivered_at < claimed_at + LONG_LEASE_SECONDS / 2, "B waited for A's leases"


async def test_replicas_started_at_once_on_an_empty_database_migrate_it_once(
    tmp_path: Path, database: str
) -> None:
    """Three replicas started at the same moment on an empty database: one applies the
    migrations while the others wait on its lock, then all three serve."""
    async with trio.open_nursery() as nursery:
        dns_port = await nursery.start(serve_dns, {})
        replicas = []
        for name in "abc":
            config, smtp_port, http_port = write_config(tmp_path / name, database, dns_port)
            process = spawn_serve(config)
            replicas.append(
                Replica(name, config, smtp_port, f"http://127.0.0.1:{http_port}", process)
            )
        logs = []
        try:
            for started in replicas:
                await wait_healthy(started)
        finally:
            for started in replicas:
                stop(started.process)
                assert started.process.stderr is not None
                logs.append(started.process.stderr.read())
                started.process.stderr.close()
        nursery.cancel_scope.cancel()
    assert sum("database migrated to version" in log for log in logs) == 1, logs


NEWER_SCHEMA = 9001
"""A schema version no e2a knows yet: what a newer e2a's migration records."""
FENCE_SECONDS = 3.0
"""How soon a running replica must stop taking work once a newer e2a announced its migration."""


async def test_a_running_replica_stops_taking_work_once_a_newer_e2a_migrates(
    tmp_path: Path, database: str
) -> None:
    """Replica B serves, with webhook POSTs in flight, when a newer e2a ("A") migrates the
    database and announces it: B turns unready at once, saying to upgrade it; new SMTP
    connections get 421 4.3.2, a session already open gets no 250; it claims no more jobs
    (no POST starts after the announcement); and it says so once in its log. Upgraded (its
    process restarted on a binary that knows the version), it delivers every message it had
    acknowledged: nothing is lost."""
    receiver = HttpReceiver(lambda _: Answer(200, delay=SLOW_ANSWER_SECONDS))
    timing = f"timeout_seconds = {WEBHOOK_TIMEOUT_SECONDS}\nlease_seconds = {LEASE_SECONDS}\n"
    subjects = [f"m{n}" for n in range(KILL_MESSAGES)]
    async with trio.open_nursery() as nursery:
        await nursery.start(receiver.serve)
        dns_port = await nursery.start(serve_dns, {})
        async with replica(tmp_path, "b", database, dns_port, timing) as b:
            key = await bootstrap(b)
            agent = await create_agent(
                b, key, {"slug": "hook", "agent_mode": "cloud", "webhook_url": receiver.url}
            )
            await trio.to_thread.run_sync(send_mail, b.smtp_port, agent, subjects)
            open_session = await trio.to_thread.run_sync(_greeted_session, b.smtp_port)
            await receiver.wait_in_flight(8)  # B's per-host limit: 8 POSTs held by the receiver
            await trio.to_thread.run_sync(_migrate_as_a_newer_e2a, database)
            migrated_at = trio.current_time()
            with trio.fail_after(FENCE_SECONDS):
                while True:
                    code, text = await trio.to_thread.run_sync(_greeting, b.smtp_port)
                    if code == 421:
                        break
                    await trio.sleep(0.05)  # a new connection each time: no event to wait on
            assert text.startswith("4.3.2 "), text
            with pytest.raises(smtplib.SMTPResponseException) as no_250:
                await trio.to_thread.run_sync(_send_on, open_session, agent)
            assert no_250.value.smtp_code == 451, no_250.value
            async with httpx.AsyncClient(timeout=5) as http:
                ready = await http.get(f"{b.http_url}/readyz")
                health = await http.get(f"{b.http_url}/api/health")
            assert ready.status_code == 503, ready.text
            assert ready.json()["status"] == "not_ready"
            assert f"schema versions {NEWER_SCHEMA}" in ready.json()["reason"]
            assert "upgrade this replica" in ready.json()["reason"]
            assert health.status_code == 503, health.text
            assert health.json()["storage"]["state"] == "schema_unknown", health.text
            assert "upgrade this replica" in health.json()["storage"]["detail"]
            await _notify(database, '{"jobs": true}')  # work to claim, were B to claim any
            await trio.sleep(3 * SLOW_ANSWER_SECONDS)
            assert b.process.poll() is None, "B should stay up, unready"
            b.process.send_signal(signal.SIGTERM)
            assert await trio.to_thread.run_sync(lambda: b.process.wait(timeout=30)) == 0
            assert b.process.stderr is not None
            log = b.process.stderr.read()
        late = [r for r in receiver.requests if r.at > migrated_at + SLOW_ANSWER_SECONDS + 0.5]
        assert not late, f"B began {len(late)} POSTs after the newer e2a migrated"
        assert log.count("a newer e2a migrated the database while this replica ran") == 1, log
        # The upgrade: B's process started again on a binary that knows the version (here the
        # same one, the newer version's record taken back): every acknowledged message arrives.
        await trio.to_thread.run_sync(_forget_newer_schema, database)
        async with replica(tmp_path, "b", database, dns_port, timing):
            with trio.fail_after(DELIVERY_SECONDS):
                while True:
                    if await trio.to_thread.run_sync(_all_delivered, database, KILL_MESSAGES):
                        break
                    await trio.sleep(0.2)  # polling the database: no event crosses processes
        nursery.cancel_scope.cancel()
    assert {json.loads(r.body)["subject"] for r in receiver.requests} == set(subjects)


STOP_SECONDS = 5.0
"""How long the rest of a stopped replica's processes may take to end after it."""
GREETINGS = 5
"""New connections tried on a replica's acceptor process."""


async def test_acceptor_processes_turn_connections_away_once_a_newer_e2a_migrates(
    tmp_path: Path, database: str
) -> None:
    """With `smtp.processes = 2`, once a newer e2a migrated the database and the replica says
    so (`GET /readyz` 503), no process of it greets a new connection with 220: the acceptor
    answers `421 4.3.2` as the main process does, and so does one restarted after the
    refusal. Stopped, the replica exits 0 as one process does, no process of it left running,
    and says once why it took no more mail."""
    async with trio.open_nursery() as nursery:
        dns_port = await nursery.start(serve_dns, {})
        async with replica(tmp_path, "b", database, dns_port, smtp="processes = 2\n") as b:
            root = b.process.pid
            await wait_until(lambda: _acceptor_serving(root) is not None, START_SECONDS)
            first = _acceptor_serving(root)
            assert first is not None
            await trio.to_thread.run_sync(_migrate_as_a_newer_e2a, database)
            async with httpx.AsyncClient(timeout=5) as http:

                async def unready() -> bool:
                    return (await http.get(f"{b.http_url}/readyz")).status_code == 503

                await wait_until(unready, FENCE_SECONDS)
            greetings = [await trio.to_thread.run_sync(_greeting, b.smtp_port)]
            greetings += await _acceptor_greetings(root, b.smtp_port)
            # An acceptor restarted after the refusal refuses too.
            os.kill(first, signal.SIGKILL)
            await wait_until(lambda: _acceptor_serving(root) not in (None, first), START_SECONDS)
            tree = process_tree(root)
            acceptors = _acceptors(root)
            assert len(acceptors) == 1, acceptors
            greetings += await _acceptor_greetings(root, b.smtp_port)
            turned_away = [(421, text) for _, text in greetings if text.startswith("4.3.2 ")]
            assert greetings == turned_away, greetings
            b.process.send_signal(signal.SIGTERM)
            assert await trio.to_thread.run_sync(lambda: b.process.wait(timeout=30)) == 0
            assert b.process.stderr is not None
            log = b.process.stderr.read()
        nursery.cancel_scope.cancel()
    assert not [pid for pid in acceptors if _running(pid)], "an acceptor outlived the main process"
    # The rest (multiprocessing's resource tracker) once it sees the main process gone.
    await wait_until(lambda: not any(map(_running, tree)), STOP_SECONDS)
    assert log.count("a newer e2a migrated the database while this replica ran") == 1, log
    assert log.count("exited with") == 1, log  # the one killed


async def _acceptor_greetings(root: int, smtp_port: int) -> list[tuple[int, str]]:
    """What GREETINGS new connections are greeted with while the main process `root` is
    paused: every one goes to an acceptor."""
    os.kill(root, signal.SIGSTOP)
    try:
        return [await trio.to_thread.run_sync(_greeting, smtp_port) for _ in range(GREETINGS)]
    finally:
        os.kill(root, signal.SIGCONT)


async def test_a_replica_with_acceptors_refuses_a_newer_schema_before_any_greets(
    tmp_path: Path, database: str
) -> None:
    """Started on a database a newer e2a migrated, a replica with `smtp.processes = 2` stops
    as one with a single process does (exit 1, the same line naming the versions it does not
    know), before any acceptor process starts and without a 220 to any client."""
    async with trio.open_nursery() as nursery:
        dns_port = await nursery.start(serve_dns, {})
        async with replica(tmp_path, "first", database, dns_port):
            pass  # the database migrated to this e2a's schema
        await trio.to_thread.run_sync(_migrate_as_a_newer_e2a, database)
        ended: dict[int, tuple[int, str]] = {}
        for processes in (1, 2):
            config, smtp_port, _ = write_config(
                tmp_path / f"p{processes}", database, dns_port, smtp=f"processes = {processes}\n"
            )
            process = spawn_serve(config)
            greeted: set[int | None] = set()
            children: dict[int, bytes] = {}
            try:
                with trio.fail_after(START_SECONDS):
                    while process.poll() is None:
                        children.update(_acceptors(process.pid))
                        greeted.add(await trio.to_thread.run_sync(_greeting_if_any, smtp_port))
                assert process.stderr is not None
                ended[processes] = (process.returncode, process.stderr.read().splitlines()[-1])
            finally:
                stop(process)
                if process.stderr is not None:
                    process.stderr.close()
            assert 220 not in greeted, greeted
            assert not children, f"acceptors started before the schema was refused: {children}"
        nursery.cancel_scope.cancel()
    code, said = ended[1]
    assert code == 1
    assert said.startswith("e2a: database.url: the database was migrated by a newer e2a"), said
    assert f"(schema versions {NEWER_SCHEMA} are unknown to this one)" in said
    assert ended[2] == ended[1]


def _acceptors(root: int) -> dict[int, bytes]:
    """The SMTP acceptor processes under `root`, with their command lines (Linux /proc)."""
    found = {}
    for pid in process_tree(root)[1:]:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in command:
            found[pid] = command
    return found


def _greeting_if_any(smtp_port: int) -> int | None:
    """The code a new SMTP connection is greeted with; None when it is refused, closed or
    not greeted within a second (blocking)."""
    try:
        with socket.create_connection(("127.0.0.1", smtp_port), timeout=1) as sock:
            line = sock.makefile("rb").readline()
    except OSError:
        return None
    return int(line[:3]) if line[:3].isdigit() else None


def _greeted_session(smtp_port: int) -> smtplib.SMTP:
    """An SMTP session, greeted and past EHLO (blocking)."""
    client = smtplib.SMTP("127.0.0.1", smtp_port, timeout=10)
    client.ehlo()
    return client


def _send_on(client: smtplib.SMTP, recipient: str) -> None:
    """Send one message on `client`, then close it (blocking)."""
    raw = f"From: a@example.org\r\nTo: {recipient}\r\nSubject: late\r\n\r\nhello\r\n"
    try:
        refused = client.sendmail("a@example.org", [recipient], raw.encode())
        assert refused == {}
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = exc.recipients[recipient]
        raise smtplib.SMTPResponseException(code, text) from None
    finally:
        client.close()


def _greeting(smtp_port: int) -> tuple[int, str]:
    """The code and text a new SMTP connection is greeted with (blocking)."""
    with socket.create_connection(("127.0.0.1", smtp_port), timeout=10) as sock:
        line = sock.makefile("rb").readline().decode()
    code, _, text = line.rstrip("\r\n").partition(" ")
    return int(code), text.removeprefix("mx.agents.test ")


def _migrate_as_a_newer_e2a(database_url: str) -> None:
    """What a newer e2a's start does to the database: record a schema version this one does
    not know, and announce it to the running replicas in the same transaction."""
    with psycopg.connect(database_url) as db:
        db.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) "
            "VALUES (%s, 'from the future', '2030-01-01T00:00:00Z')",
            (NEWER_SCHEMA,),
        )
        payload = json.dumps({"origin": "newer", "schema": NEWER_SCHEMA})
        db.execute("SELECT pg_notify(%s, %s)", (FANOUT_CHANNEL, payload))


def _forget_newer_schema(database_url: str) -> None:
    with psycopg.connect(database_url) as db:
        db.execute("DELETE FROM schema_migrations WHERE version = %s", (NEWER_SCHEMA,))


async def test_every_database_connection_gives_up_on_a_silent_server(database: str) -> None:
    """A database host that vanishes without a word (a partition, a host that died, a
    failover to another address: packets dropped, no reset) is given up on within
    `database.silent_server_seconds` (5 s unless set), not after the kernel's own retries (some
    15 minutes, every call hanging): each connection, the pool's and the LISTEN one, sends
    keepalives and bounds unacknowledged data (TCP_USER_TIMEOUT). Read from the sockets'
    options, as the kernel applies them; an option the URL sets wins. (A loopback peer cannot
    go silent: its kernel answers for it; docs/replicas.md gives the figures measured with a
    route cut for real.)"""

    def options(connection: psycopg.Connection[Any]) -> tuple[int, int, int, int]:
        with socket.socket(fileno=os.dup(connection.pgconn.socket)) as sock:
            return (
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
            )

    storage = PostgresStorage.open(database)
    patient = PostgresStorage.open(database, silent_server_seconds=30)
    own = PostgresStorage.open(
        f"{database}?tcp_user_timeout=7000&keepalives_idle=40", silent_server_seconds=30
    )
    for made, expected in (
        (storage._connect, (1, 5, 1, 5_000)),
        (storage.connect_listener, (1, 5, 1, 5_000)),
        (patient._connect, (1, 30, 10, 30_000)),
        (patient.connect_listener, (1, 30, 10, 30_000)),
        (own._connect, (1, 40, 10, 7_000)),
    ):
        connection = await trio.to_thread.run_sync(made)
        try:
            assert options(connection) == expected
        finally:
            connection.close()


async def test_a_claim_that_fails_leaves_the_posts_in_flight_alone(
    tmp_path: Path, database: str
) -> None:
    """A worker's look at the queue fails (the database cancelled it: a blip, a failover, an
    administrator) while a webhook POST is in flight. The worker looks again later; the POST
    goes on and is recorded, and the receiver gets the message once, not again after the
    lease because the failed look took the POST in flight down with it."""
    receiver = HttpReceiver(lambda _: Answer(200, delay=HELD_POST_SECONDS))
    timing = f"timeout_seconds = {HELD_POST_SECONDS + 2}\nlease_seconds = {HELD_LEASE_SECONDS}\n"
    async with trio.open_nursery() as nursery:
        await nursery.start(receiver.serve)
        dns_port = await nursery.start(serve_dns, {})
        async with replica(tmp_path, "a", database, dns_port, timing) as a:
            key = await bootstrap(a)
            agent = await create_agent(
                a, key, {"slug": "hook", "agent_mode": "cloud", "webhook_url": receiver.url}
            )
            await trio.to_thread.run_sync(send_mail, a.smtp_port, agent, ["once"])
            await receiver.wait_in_flight(1)
            await trio.to_thread.run_sync(_fail_the_next_claims, database)
            with trio.fail_after(DELIVERY_SECONDS):
                while True:
                    if await trio.to_thread.run_sync(_all_delivered, database, 1):
                        break
                    await trio.sleep(0.2)  # polling the database: no event crosses processes
            await trio.sleep(HELD_LEASE_SECONDS + 1)  # a POST cut short is sent again by now
        nursery.cancel_scope.cancel()
    assert [json.loads(request.body)["subject"] for request in receiver.requests] == ["once"]


def _fail_the_next_claims(database_url: str) -> None:
    """Lock the job queue until the gateway's workers wait for it, cancel their looks, and
    let go."""
    with psycopg.connect(database_url) as locker, psycopg.connect(database_url) as admin:
        admin.autocommit = True
        locker.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
        cancelled: set[int] = set()
        until = time.monotonic() + CLAIMS_FAILED_SECONDS  # every worker looks meanwhile
        while time.monotonic() < until:
            for (pid,) in admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            ).fetchall():
                admin.execute("SELECT pg_cancel_backend(%s)", (pid,))
                cancelled.add(pid)
            time.sleep(0.02)
        locker.rollback()
    assert cancelled, "no worker looked at the queue"


def _all_delivered(database_url: str, expected: int) -> bool:
    """True once `expected` messages are delivered and no job is left in the queue."""
    with psycopg.connect(database_url, autocommit=True) as db:
        delivered = db.execute(
            "SELECT count(*) FROM messages WHERE delivery_status = 'delivered'"
        ).fetchone()
        jobs = db.execute("SELECT count(*) FROM jobs").fetchone()
    return delivered == (expected,) and jobs == (0,)


# -- the fan-out in process: relaying, skipping own frames, reconnecting ----------------------


BOT = Listener("agt_bot", "usr_1", "key_1", "websocket")


async def test_relay_payload_publishes_others_frames_and_skips_own() -> None:
    hub = Hub()
    summary = {
        "agent_id": "agt_bot",
        "agent": "bot@agents.test",
        "id": "msg_1",
        "from": "a@example.org",
        "subject": "hi",
        "received_at": "2026-01-01T00:00:00Z",
        "conversation_id": None,
    }
    with hub.subscribe(BOT) as live:
        assert not relay_payload(hub, "me", json.dumps({**summary, "origin": "me"}))
        assert not relay_payload(hub, "me", json.dumps({**summary, "origin": "other"}))
        assert not relay_payload(hub, "me", "not json")
        assert relay_payload(hub, "me", '{"jobs": true}') == set(JOB_KINDS)
        assert relay_payload(hub, "me", '{"origin": "other", "jobs": ["outbound"]}') == {"outbound"}
        assert not relay_payload(hub, "me", '{"origin": "me", "jobs": ["outbound"]}')
        with trio.fail_after(1):
            frame = await live.receive()
        assert frame == {
            "message_id": "msg_1",
            "from": "a@example.org",
            "recipient": "bot@agents.test",
            "subject": "hi",
            "received_at": "2026-01-01T00:00:00Z",
        }
        relay_payload(hub, "me", json.dumps({"origin": "x", "agent_id": "agt_bot", "resync": 1}))
        assert live.ended is Ended.BEHIND


def test_a_payload_this_version_cannot_read_is_logged_without_its_subject(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A replica of another version may announce a stored message in a shape this one cannot
    read (a field renamed in an upgrade): the warning says so without quoting the payload,
    which carries the message's subject and sender."""
    subject = "Quarterly figures for the board"
    newer = {
        "origin": "other",
        "agent_id": "agt_bot",
        "agent": "bot@agents.test",
        "id": "msg_1",
        "from": "a@example.org",
        "subject": subject,
        "received": "2026-01-01T00:00:00Z",  # once `received_at`
    }
    caplog.set_level(logging.DEBUG)
    assert not relay_payload(Hub(), "me", json.dumps(newer))
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    logged = warning.getMessage()
    assert "malformed notification" in logged and "received_at" in logged
    for private in ("Quarterly", "a@example.org"):
        assert private not in logged, logged


@pytest.mark.parametrize(
    ("kind", "value", "ended"),
    [
        ("agent", "agt_bot", Ended.AGENT_DELETED),
        ("key", "key_1", Ended.KEY_REVOKED),
        ("user", "usr_1", Ended.ACCOUNT_DELETED),
        ("session", "ses_1", Ended.SIGNED_OUT),
    ],
)
def test_relay_payload_ends_what_another_replica_revoked(
    kind: str, value: str, ended: Ended
) -> None:
    hub = Hub()
    mine = dataclasses.replace(BOT, session_id="ses_1")
    other = Listener("agt_other", "usr_2", "key_2", "dashboard", session_id="ses_2")
    with hub.subscribe(mine) as live, hub.subscribe(other) as bystander:
        revocation = {"revoke": kind, "id": value}
        assert not relay_payload(hub, "me", json.dumps({**revocation, "origin": "me"}))
        assert live.ended is None  # this replica ended its own subscriptions already
        assert not relay_payload(hub, "me", json.dumps({**revocation, "origin": "other"}))
        assert (live.ended, bystander.ended) == (ended, None)
        assert not relay_payload(hub, "me", json.dumps({"origin": "x", "revoke": "all", "id": 1}))
        assert bystander.ended is None


async def _notify(url: str, payload: str) -> None:
    def send() -> None:
        with psycopg.connect(url, autocommit=True) as db:
            db.execute("SELECT pg_notify(%s, %s)", (FANOUT_CHANNEL, payload))

    await trio.to_thread.run_sync(send)


async def _terminate_listeners(url: str) -> int:
    def terminate() -> int:
        with psycopg.connect(url, autocommit=True) as db:
            rows = db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'e2a-fanout' AND datname = current_database()"
            ).fetchall()
        return len(rows)

    return await trio.to_thread.run_sync(terminate)


async def _allow_connections(url: str, allowed: bool) -> None:
    """Let clients connect to the database of `url` again, or refuse them all."""
    name = urlsplit(url).path.lstrip("/")

    def alter() -> None:
        with psycopg.connect(require_postgres(), autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}')

    await trio.to_thread.run_sync(alter)


async def test_fanout_listening_at_last_after_a_failed_start_makes_clients_re_drain(
    database: str,
) -> None:
    """A fan-out whose first LISTEN failed reports started all the same (sockets open), but
    they hear nothing other replicas commit until it listens: then, as after a reconnection,
    their subscriptions end (their clients reconnect and re-drain) and the workers are woken."""
    storage = PostgresStorage.open(database)
    hub = Hub()
    jobs = JobQueue()
    fanout = PostgresFanout(storage, hub, jobs, keepalive_seconds=0.5, max_backoff_seconds=0.2)
    await _allow_connections(database, False)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(fanout.run)
            with hub.subscribe(BOT) as live:
                woken = jobs.added("webhook")
                await _allow_connections(database, True)
                with trio.fail_after(NOTIFY_SECONDS):
                    async for _ in live:
                        pass
                    await woken.wait()
            assert live.ended is Ended.BEHIND
            nursery.cancel_scope.cancel()
    finally:
        await storage.close()


async def test_fanout_says_when_another_replica_listens_under_its_name(
    database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Two replicas given the same `database.replica_id`: the second to listen logs an error
    naming the setting (their restarts leave each other's leases alone, test_storage)."""
    first = PostgresStorage.open(database, "host-a/8080")
    second = PostgresStorage.open(database, "host-a/8080")
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(PostgresFanout(first, Hub(), JobQueue()).run)
            assert "database.replica_id" not in caplog.text
            await nursery.start(PostgresFanout(second, Hub(), JobQueue()).run)
            nursery.cancel_scope.cancel()
    finally:
        await first.close()
        await second.close()
    (told,) = [record for record in caplog.records if "database.replica_id" in record.message]
    assert told.levelname == "ERROR"
    assert "under this replica's name 'host-a/8080'" in told.message


async def test_fanout_listening_to_another_database_refuses_to_start(database: str) -> None:
    """A `database.listen_url` that does not lead to the database the pool NOTIFYs on would
    hear no other replica: the fan-out does not start, and says which setting to fix."""
    with fresh_postgres_database() as elsewhere:
        storage = PostgresStorage.open(database, listen_url=elsewhere)
        fanout = PostgresFanout(storage, Hub(), JobQueue())
        try:
            with pytest.raises(StorageUnavailable) as refused:
                await fanout.run()
        finally:
            await storage.close()
    message = str(refused.value)
    assert message.startswith("database.listen_url: the LISTEN connection to ")
    assert "it is not the database of database.url" in message


async def test_fanout_relays_notifications_and_recovers_from_a_lost_connection(
    database: str,
) -> None:
    storage = PostgresStorage.open(database)
    await storage.migrate()
    hub = Hub()
    jobs = JobQueue()
    fanout = PostgresFanout(storage, hub, jobs, keepalive_seconds=0.5, max_backoff_seconds=0.2)
    frame = json.dumps(
        {
            "origin": "another-replica",
            "agent_id": "agt_bot",
            "agent": "bot@agents.test",
            "id": "msg_1",
            "from": "a@example.org",
            "subject": "hi",
            "received_at": "2026-01-01T00:00:00Z",
            "conversation_id": "conv_1",
        }
    )
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(fanout.run)
            with hub.subscribe(BOT) as live:
                signal = jobs.added("webhook")
                await _notify(database, '{"jobs": true}')
                await _notify(database, frame)
                with trio.fail_after(NOTIFY_SECONDS):
                    await signal.wait()
                    received = await live.receive()
                assert received is not None
                assert received["message_id"] == "msg_1"
                assert received["conversation_id"] == "conv_1"
                await trio.sleep(1.2)  # idle past the keepalive: pings keep the connection

                assert await _terminate_listeners(database) == 1
                # Once listening again, local subscriptions end so their clients re-drain.
                with trio.fail_after(NOTIFY_SECONDS):
                    async for _ in live:
                        pass
            with hub.subscribe(BOT) as live:
                with trio.fail_after(NOTIFY_SECONDS):
                    while True:  # the fresh LISTEN may still be on its way
                        await _notify(database, frame)
                        with trio.move_on_after(0.2):
                            again = await live.receive()
                            assert again is not None and again["message_id"] == "msg_1"
                            break
            nursery.cancel_scope.cancel()
    finally:
        await storage.close()


async def test_mail_erased_through_a_is_not_served_by_b_that_read_it(
    tmp_path: Path, database: str
) -> None:
    """Replica B reads two messages (it keeps their parsed bodies in memory); replica A deletes
    one for good out of the trash and the other with its agent. B keeps those bodies (nothing
    tells it of the erasure), yet none of its requests serves them: every read gets the raw
    bytes from the database, scoped to the caller, before it looks for the body kept of them."""
    async with two_replicas(tmp_path, database) as (a, b):
        key = await bootstrap(a)
        keeper = await create_agent(a, key, {"slug": "keeper", "agent_mode": "local"})
        leaver = await create_agent(a, key, {"slug": "leaver", "agent_mode": "local"})
        for agent in (keeper, leaver):
            await trio.to_thread.run_sync(send_erasable, a.smtp_port, agent)
        async with httpx.AsyncClient(
            timeout=10, headers=dict(authorization=f"Bearer {key}")
        ) as http:
            paths = {}
            for agent in (keeper, leaver):
                mailbox = f"/v1/agents/{quote(agent, safe='')}/messages"
                listed = await http.get(f"{b.http_url}{mailbox}")
                assert listed.status_code == 200, listed.text
                (message_id,) = [item["id"] for item in listed.json()["items"]]
                paths[agent] = [
                    f"{mailbox}/{message_id}",
                    f"/api/v1/agents/{quote(agent, safe='')}/messages/{message_id}",
                ]
                for path in paths[agent]:
                    read = await http.get(f"{b.http_url}{path}")
                    assert read.status_code == 200, read.text
                    assert "ERASED-MARKER" in read.text

            trashed = await http.delete(f"{a.http_url}{paths[keeper][0]}")
            assert trashed.status_code == 200, trashed.text
            purged = await http.delete(
                f"{a.http_url}{paths[keeper][0]}", params={"permanent": "true", "confirm": "DELETE"}
            )
            assert purged.status_code == 200, purged.text
            gone = await http.delete(
                f"{a.http_url}/api/v1/agents/{quote(leaver, safe='')}", params={"permanent": "true"}
            )
            assert gone.status_code == 200, gone.text

            for path in paths[keeper] + paths[leaver]:
                answer = await http.get(f"{b.http_url}{path}")
                assert answer.status_code == 404, (path, answer.text)
                assert "ERASED-MARKER" not in answer.text


def send_erasable(smtp_port: int, recipient: str) -> None:
    """Send `recipient` one message whose text says ERASED-MARKER (blocking)."""
    raw = (
        f"From: a@example.org\r\nTo: {recipient}\r\nSubject: erasable\r\n\r\nERASED-MARKER\r\n"
    ).encode()
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
        assert client.sendmail("a@example.org", [recipient], raw) == {}
