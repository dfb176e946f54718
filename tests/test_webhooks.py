"""Webhook delivery against a real HTTP receiver on 127.0.0.1.

Most tests drive `WebhookWorker.deliver_due(now)` with a fake wall clock on a gateway that runs
no worker of its own, so retry timing is exact and instant; the rest run the worker's own loop
(or the whole gateway) on real time with every wait bounded.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import logging
import socket
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio
import trustme

from e2a_gateway.app import RunningGateway
from e2a_gateway.clock import format_timestamp, parse_timestamp
from e2a_gateway.config import Settings
from e2a_gateway.ids import new_id
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.storage.base import (
    AgentChanges,
    FinishedAttempt,
    SigningSecret,
    StorageUnavailable,
)
from e2a_gateway.workers.webhook_connections import WebhookConnections
from e2a_gateway.workers.webhook_policy import delivery_id
from e2a_gateway.workers.webhooks import MAX_PER_HOST, WebhookWorker
from tests.conftest import Account, make_settings
from tests.databases import fresh_postgres_database, gateway_backend, query, run_out_leases
from tests.delivery_support import (
    QuietGateway,
    accept,
    create_agent,
    delivery_status,
    mail,
    new_signing_secret,
    open_account,
    quiet_gateway,
    recorded_attempts,
    smtp_send,
    wait_for_status,
    wait_until,
)
from tests.http_receiver import CLOSE, HANG, Answer, HttpReceiver, Received, answer_in_turn
from tests.test_signing_identity import sdk_verifies
from tests.webhook_support import (
    FakeClock,
    alice,
    job_due_at,
    quiet,
    receiver,
    settings,
    store_received,
)

__all__ = ["alice", "quiet", "receiver", "settings"]  # fixtures

WAIT = 10.0
DELIVERY_WINDOW = 24 * 3600.0
"""Retries stop this long after receipt (contract/delivery.md)."""
LEASE = 60.0
"""`webhooks.lease_seconds` by default: with a 5 s attempt timeout, the lease of a claim."""


@pytest.fixture
async def connections() -> AsyncIterator[WebhookConnections]:
    async with WebhookConnections() as connections:
        yield connections


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(time.time())


@pytest.fixture
def worker(quiet: QuietGateway, connections: WebhookConnections, clock: FakeClock) -> WebhookWorker:
    return WebhookWorker(quiet.gateway, connections, clock=clock, attempt_timeout=5.0)


async def accept_at(quiet: QuietGateway, clock: FakeClock, agent: str, subject: str = "Hi") -> str:
    """Accept one message for `agent` and move the fake clock to the time it was stored."""
    message_id = await accept(quiet.gateway, [agent], mail(subject))
    clock.now = time.time()
    return message_id


async def test_a_200_delivers_once_with_the_signed_body_and_headers(
    quiet: QuietGateway,
    alice: Account,
    receiver: HttpReceiver,
    worker: WebhookWorker,
    clock: FakeClock,
) -> None:
    agent = await create_agent(alice, "hooked", receiver.url)
    secret = await new_signing_secret(alice)
    message_id = await accept_at(quiet, clock, agent)
    assert await delivery_status(alice, agent, message_id) == "pending"

    assert await worker.deliver_due(clock.now) == 1
    (request,) = receiver.requests
    assert request.method == "POST" and request.target == "/hook"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["host"] == f"127.0.0.1:{receiver.port}"
    assert request.headers["x-e2a-delivery-id"] == delivery_id(message_id)
    assert request.headers["x-e2a-delivery-attempt"] == "1"
    body = json.loads(request.body)
    assert body["message_id"] == message_id and body["recipient"] == agent
    raw = base64.b64decode(body["raw_message"], validate=True)
    assert raw.endswith(mail("Hi"))
    auth = body["auth_headers"]
    assert {name: request.headers[name.lower()] for name in auth} == auth
    assert auth["X-E2A-Auth-Timestamp"] == format_timestamp(clock.now)
    assert sdk_verifies(auth, raw, secret, clock.now)

    assert await delivery_status(alice, agent, message_id) == "delivered"
    (attempt,) = await recorded_attempts(quiet.gateway, message_id)
    assert (attempt.attempt, attempt.status_code, attempt.error) == (1, 200, None)
    assert await quiet.gateway.storage.webhook_attempts("usr_someone_else", message_id) == []
    assert attempt.attempted_at == format_timestamp(clock.now)
    clock.now += 2 * DELIVERY_WINDOW
    assert await worker.deliver_due(clock.now) == 0
    assert len(receiver.requests) == 1


async def signed_at(account: Account) -> dict[str, str | None]:
    """Each signing secret's `last_signed_at`, by name."""
    listed = await account.http.get("/api/v1/users/me/signing-secrets")
    return {secret["name"]: secret["last_signed_at"] for secret in listed.json()["secrets"]}


async def test_a_from_address_with_a_line_break_or_control_character_is_delivered_signed(
    quiet: QuietGateway,
    alice: Account,
    receiver: HttpReceiver,
    worker: WebhookWorker,
    clock: FakeClock,
) -> None:
    # A quoted local part may be folded across lines or hold an obsolete control character;
    # the signed sender is an HTTP header, where neither may go.
    agent = await create_agent(alice, "hooked", receiver.url)
    secret = await new_signing_secret(alice)
    froms = {
        b'"Odd\\\r\n Name"@example.org': '"odd name"@example.org',
        b'"nul\x00byte"@example.org': '"nulbyte"@example.org',
    }
    for written, signed in froms.items():
        data = b"From: " + written + b"\r\nTo: hooked@agents.test\r\nSubject: Hi\r\n\r\nHi.\r\n"
        message_id = await accept(quiet.gateway, [agent], data)
        clock.now = time.time()
        assert await worker.deliver_due(clock.now) == 1
        assert await delivery_status(alice, agent, message_id) == "delivered"
        body = json.loads(receiver.requests[-1].body)
        auth = body["auth_headers"]
        assert auth["X-E2A-Auth-Sender"] == signed == body["from"]
        raw = base64.b64decode(body["raw_message"], validate=True)
        assert sdk_verifies(auth, raw, secret, clock.now)


async def test_last_signed_at_says_when_a_secret_last_signed_a_delivery(
    quiet: QuietGateway,
    alice: Account,
    receiver: HttpReceiver,
    worker: WebhookWorker,
    clock: FakeClock,
) -> None:
    receiver.reply = answer_in_turn(Answer(500), Answer(200))
    agent = await create_agent(alice, "stamped", receiver.url)
    assert await signed_at(alice) == {"default": None}

    await accept_at(quiet, clock, agent)
    (stamp,) = (await signed_at(alice)).values()
    assert stamp is not None and abs(parse_timestamp(stamp).timestamp() - clock.now) <= 2

    # Deliveries after a rotation are signed with the new secret; the old one keeps its time.
    await new_signing_secret(alice)
    assert await worker.deliver_due(clock.now) == 1
    assert await signed_at(alice) == {"test": format_timestamp(clock.now), "default": stamp}
    clock.now += 3600
    assert await worker.deliver_due(clock.now) == 1
    assert await signed_at(alice) == {"test": format_timestamp(clock.now), "default": stamp}


async def test_a_500_is_retried_with_doubling_backoff_until_delivered(
    quiet: QuietGateway,
    alice: Account,
    receiver: HttpReceiver,
    worker: WebhookWorker,
    clock: FakeClock,
) -> None:
    receiver.reply = answer_in_turn(Answer(500), Answer(503), Answer(200))
    agent = await create_agent(alice, "flaky", receiver.url)
    message_id = await accept_at(quiet, clock, agent)
    received_at = clock.now

    assert await worker.deliver_due(clock.now) == 1
    assert await delivery_status(alice, agent, message_id) == "retrying"
    first_retry = job_due_at(quiet.gateway.settings, message_id)
    assert first_retry is not None and 24 <= first_retry - clock.now <= 36
    assert await worker.deliver_due(first_retry - 0.5) == 0

    clock.now = first_retry
    assert await worker.deliver_due(clock.now) == 1
    assert await delivery_status(alice, agent, message_id) == "retrying"
    second_retry = job_due_at(quiet.gateway.settings, message_id)
    assert second_retry is not None and 48 <= second_retry - clock.now <= 72

    clock.now = second_retry
    assert await worker.deliver_due(clock.now) == 1
    assert await delivery_status(alice, agent, message_id) == "delivered"
    assert job_due_at(quiet.gateway.settings, message_id) is None

    attempts = await recorded_attempts(quiet.gateway, message_id)
    assert [(a.attempt, a.status_code) for a in attempts] == [(1, 500), (2, 503), (3, 200)]
    assert [a.attempted_at for a in attempts] == [
        format_timestamp(t) for t in (received_at, first_retry, second_retry)
    ]
    headers = [request.headers for request in receiver.requests]
    assert [h["x-e2a-delivery-attempt"] for h in headers] == ["1", "2", "3"]
    assert {h["x-e2a-delivery-id"] for h in headers} == {delivery_id(message_id)}
    assert len({h["x-e2a-auth-signature"] for h in headers}) == 3


@pytest.fixture
def far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The gateway's process in a time zone 13 hours 45 minutes from UTC, as a server set to
    local time may run."""
    monkeypatch.setenv("TZ", "Pacific/Chatham")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("retry_after", ["600", "GMT", "-0000", "+0000"])
async def test_429_waits_at_least_retry_after(
    quiet: QuietGateway,
    alice: Account,
    receiver: HttpReceiver,
    worker: WebhookWorker,
    clock: FakeClock,
    far_from_utc: None,
    retry_after: str,
) -> None:
    """Retry-After in seconds or as an HTTP date, whatever zone the date is written in (RFC
    5322's `-0000` is UTC too) and whatever the server's own zone."""
    agent = await create_agent(alice, "limited", receiver.url)
    message_id = await accept_at(quiet, clock, agent)
    if not retry_after.isdigit():
        moment = time.gmtime(clock.now + 600)
        retry_after = time.strftime(f"%a, %d %b %Y %H:%M:%S {retry_after}", moment)
    receiver.reply = answer_in_turn(Answer(429, {"Retry-After": retry_after}), Answer(200))

    assert await worker.deliver_due(clock.now) == 1
    assert await delivery_status(alice, agent, message_id) == "retrying"
    due = job_due_at(quiet.gateway.settings, message_id)
    assert due is not None and 599 <= due - clock.now <= 601
    assert await worker.deliver_due(clock.now + 590) == 0
    assert await worker.deliver_due(clock.now + 601) == 1
    assert await delivery_status(alice, agent, message_id) == "delivered"
    statuses = [a.status_code for a in await recorded_attempts(quiet.gateway, message_id)]
    assert statuses == [429, 200]


@pytest.mark.parametrize(
    "final", [Answer(410), Answer(400), Answer(302, {"Location": "http://127.0.0.1:9/elsewhere"})]
)
async def test_other_4xx_and_redirects_are_final(
    quiet: QuietGateway,
    alice: Account,
    receiver: HttpReceiver,
    worker: WebhookWorker,
    clock: FakeClock,
    final: Answer,
) -> None:
    receiver.reply = lambda _: final
    agent = await create_agent(alice, "gone", receiver.url)
    message_id = await accept_at(quiet, clock, agent)

    assert await worker.deliver_due(clock.now) == 1
    assert await delivery_status(alice, agent, message_id) == "failed"
    (attempt,) = await recorded_attempts(quiet.gateway, message_id)
    assert attempt.status_code == final.status
    assert job_due_at(quiet.gateway.settings, message_id) is None
    assert await worker.deliver_due(clock.now + DELIVERY_WINDOW) == 0
    assert len(receiver.requests) == 1


async def test_a_hanging_receiver_times_out_and_is_retried(
    quiet: QuietGateway,
    alice: Account,
    receiver: HttpReceiver,
    connections: WebhookConnections,
    clock: FakeClock,
) -> None:
    receiver.reply = answer_in_turn(HANG, Answer(200))
    worker = WebhookWorker(quiet.gateway, connections, clock=clock, attempt_timeout=0.5)
    agent = await create_agent(alice, "slow", receiver.url)
    message_id = await accept_at(quiet, clock, agent)

    with trio.fail_after(WAIT):
        assert await worker.deliver_due(clock.now) == 1
    await receiver.wait_in_flight(0)  # the worker hung up on it
    (attempt,) = await recorded_attempts(quiet.gateway, message_id)
    assert attempt.status_code is None and attempt.error == "timeout after 0.5 s"
    assert 500 <= attempt.duration_ms < 5000
    assert await delivery_status(alice, agent, message_id) == "retrying"

    due = job_due_at(quiet.gateway.settings, message_id)
    assert due is not None
    assert await worker.deliver_due(due) == 1
    assert await delivery_status(alice, agent, message_id) == "delivered"


async def test_a_closed_connection_and_a_refused_one_are_retried(
    quiet: QuietGateway,
    alice: Account,
    receiver: HttpReceiver,
    worker: WebhookWorker,
    clock: FakeClock,
) -> None:
    receiver.reply = lambda _: CLOSE
    closing_agent = await create_agent(alice, "closer", receiver.url)
    refusing_agent = await create_agent(alice, "nobody-home", "http://127.0.0.1:9/hook")
    closed = await accept_at(quiet, clock, closing_agent)
    refused = await accept_at(quiet, clock, refusing_agent)

    assert await worker.deliver_due(clock.now) == 2
    (closed_attempt,) = await recorded_attempts(quiet.gateway, closed)
    (refused_attempt,) = await recorded_attempts(quiet.gateway, refused)
    assert closed_attempt.status_code is None
    assert closed_attempt.error is not None and "RemoteProtocolError" in closed_attempt.error
    assert refused_attempt.status_code is None
    assert refused_attempt.error is not None and "ConnectError" in refused_attempt.error
    assert await delivery_status(alice, closing_agent, closed) == "retrying"
    assert await delivery_status(alice, refusing_agent, refused) == "retrying"


async def test_a_receiver_whose_tls_certificate_is_not_trusted_is_told_why(
    quiet: QuietGateway,
    alice: Account,
    resolver: FixtureResolver,
    worker: WebhookWorker,
    clock: FakeClock,
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A certificate no public CA signed is refused before anything is sent, and the attempt's
    error (in the dead letters, the log) says so, not just `ConnectError`."""
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("tls.hooks.test").configure_cert(tls)
    requests: list[bytes] = []

    async def serve(stream: trio.SSLStream[trio.SocketStream]) -> None:
        with contextlib.suppress(trio.BrokenResourceError):
            requests.append(await stream.receive_some(65536))

    listeners = await nursery.start(partial(trio.serve_ssl_over_tcp, serve, 0, tls))
    port = listeners[0].transport_listener.socket.getsockname()[1]
    resolver.load_zone({"tls.hooks.test": {"A": ["127.0.0.1"]}})
    agent = await create_agent(alice, "self-signed", f"https://tls.hooks.test:{port}/hook")
    message_id = await accept_at(quiet, clock, agent)

    caplog.set_level(logging.INFO, logger="e2a.webhooks")
    assert await worker.deliver_due(clock.now) == 1
    (attempt,) = await recorded_attempts(quiet.gateway, message_id)
    assert attempt.status_code is None and attempt.error is not None
    assert attempt.error.startswith(
        "the TLS certificate of tls.hooks.test was not accepted "
        "(certificate verify failed: unable to get local issuer certificate)"
    )
    assert "intermediate" in attempt.error  # how to mend it
    assert attempt.error in caplog.text
    assert await delivery_status(alice, agent, message_id) == "retrying"
    assert requests == []


async def test_an_endless_answer_is_not_read_past_the_limit(
    quiet: QuietGateway,
    alice: Account,
    receiver: HttpReceiver,
    worker: WebhookWorker,
    clock: FakeClock,
) -> None:
    receiver.reply = lambda _: Answer(200, body=b"x" * 4096, endless=True)
    agent = await create_agent(alice, "chatty", receiver.url)
    message_id = await accept_at(quiet, clock, agent)

    with trio.fail_after(WAIT):
        assert await worker.deliver_due(clock.now) == 1
    (attempt,) = await recorded_attempts(quiet.gateway, message_id)
    assert (attempt.status_code, attempt.error) == (200, None)
    assert attempt.duration_ms < 4000  # well inside the 5 s attempt timeout
    assert await delivery_status(alice, agent, message_id) == "delivered"


async def test_retries_stop_24_hours_after_receipt(
    quiet: QuietGateway,
    alice: Account,
    receiver: HttpReceiver,
    worker: WebhookWorker,
    clock: FakeClock,
) -> None:
    receiver.reply = lambda _: Answer(500)
    agent = await create_agent(alice, "doomed", receiver.url)
    message_id = await accept_at(quiet, clock, agent)

    times: list[float] = []
    for _ in range(100):
        due = job_due_at(quiet.gateway.settings, message_id)
        if due is None:
            break
        clock.now = due
        times.append(due)
        assert await worker.deliver_due(due) == 1
    assert await delivery_status(alice, agent, message_id) == "failed"
    assert times[-1] == times[0] + DELIVERY_WINDOW  # the first was due on receipt
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    for index, gap in enumerate(gaps[:-1]):
        expected = min(30 * 2**index, 3600)
        assert 0.8 * expected <= gap <= 1.2 * expected, (index, gap)
    attempts = await recorded_attempts(quiet.gateway, message_id)
    assert [a.attempt for a in attempts] == list(range(1, len(times) + 1))
    assert {a.status_code for a in attempts} == {500}
    assert len(receiver.requests) == len(times)


async def test_a_restart_in_the_middle_of_the_schedule_resumes_it(
    settings: Settings,
    resolver: FixtureResolver,
    receiver: HttpReceiver,
    connections: WebhookConnections,
    clock: FakeClock,
) -> None:
    receiver.reply = answer_in_turn(Answer(500), Answer(200))
    async with quiet_gateway(settings, resolver) as first:
        account = await open_account(first.gateway, first.http_url, "alice@example.com")
        async with account.http:
            agent = await create_agent(account, "durable", receiver.url)
            message_id = await accept_at(first, clock, agent)
            worker = WebhookWorker(first.gateway, connections, clock=clock)
            assert await worker.deliver_due(clock.now) == 1
    due = job_due_at(settings, message_id)
    assert due is not None

    async with quiet_gateway(settings, resolver) as second:
        account = await open_account(second.gateway, second.http_url, "alice@example.com")
        async with account.http:
            worker = WebhookWorker(second.gateway, connections, clock=clock)
            assert await delivery_status(account, agent, message_id) == "retrying"
            assert await worker.deliver_due(due - 1) == 0
            assert await worker.deliver_due(due) == 1
            assert await delivery_status(account, agent, message_id) == "delivered"
            attempts = await recorded_attempts(second.gateway, message_id)
    assert [(a.attempt, a.status_code) for a in attempts] == [(1, 500), (2, 200)]
    assert [r.headers["x-e2a-delivery-attempt"] for r in receiver.requests] == ["1", "2"]


async def test_a_crash_during_an_attempt_delivers_again_after_restart(
    settings: Settings, resolver: FixtureResolver, receiver: HttpReceiver
) -> None:
    receiver.reply = answer_in_turn(HANG, Answer(200))
    async with quiet_gateway(settings, resolver) as first:
        account = await open_account(first.gateway, first.http_url, "alice@example.com")
        async with (
            account.http,
            WebhookConnections() as connections,
            trio.open_nursery() as nursery,
        ):
            agent = await create_agent(account, "crashy", receiver.url)
            message_id = await accept(first.gateway, [agent], mail())
            nursery.start_soon(WebhookWorker(first.gateway, connections).run)
            await receiver.wait_in_flight(1)
            nursery.cancel_scope.cancel()  # the process dies mid-attempt: nothing is recorded

    async with quiet_gateway(settings, resolver) as second:
        account = await open_account(second.gateway, second.http_url, "alice@example.com")
        async with (
            account.http,
            WebhookConnections() as connections,
            trio.open_nursery() as nursery,
        ):
            await second.gateway.storage.release_leases()  # as `e2a serve` does at start
            nursery.start_soon(WebhookWorker(second.gateway, connections).run)
            await receiver.wait_for(2)
            await wait_for_status(account, agent, message_id, "delivered")
            nursery.cancel_scope.cancel()
        (attempt,) = await recorded_attempts(second.gateway, message_id)
    assert (attempt.attempt, attempt.status_code) == (1, 200)
    ids = {request.headers["x-e2a-delivery-id"] for request in receiver.requests}
    assert ids == {delivery_id(message_id)}  # the receiver can tell it is the same delivery


async def test_a_receiver_down_for_an_hour_gets_every_message_once_back(
    quiet: QuietGateway,
    alice: Account,
    worker: WebhookWorker,
    clock: FakeClock,
    nursery: trio.Nursery,
) -> None:
    receiver = HttpReceiver()
    async with trio.open_nursery() as first_life:
        await first_life.start(receiver.serve)
        first_life.cancel_scope.cancel()  # the port is known, and nothing listens on it now
    agent = await create_agent(alice, "patient", receiver.url)
    message_ids = [await accept_at(quiet, clock, agent, f"Order {n}") for n in range(20)]
    down_since = clock.now

    while clock.now < down_since + 3600:
        clock.now += 60
        await worker.deliver_due(clock.now)
    for message_id in message_ids:
        attempts = await recorded_attempts(quiet.gateway, message_id)
        assert len(attempts) >= 6 and all("ConnectError" in (a.error or "") for a in attempts)
        assert await delivery_status(alice, agent, message_id) == "retrying"

    await nursery.start(receiver.serve)
    for _ in range(200):
        if all(job_due_at(quiet.gateway.settings, m) is None for m in message_ids):
            break
        clock.now += 60
        await worker.deliver_due(clock.now)
    delivered = [json.loads(request.body)["message_id"] for request in receiver.requests]
    assert sorted(delivered) == sorted(message_ids)
    for message_id in message_ids:
        assert await delivery_status(alice, agent, message_id) == "delivered"


async def test_a_hanging_host_does_not_delay_another_host(
    quiet: QuietGateway,
    alice: Account,
    resolver: FixtureResolver,
    nursery: trio.Nursery,
) -> None:
    slow, fast = HttpReceiver(lambda _: HANG), HttpReceiver()
    await nursery.start(slow.serve)
    await nursery.start(fast.serve)
    resolver.load_zone({"slow.hooks.test": {"A": ["127.0.0.1"]}})
    resolver.load_zone({"fast.hooks.test": {"A": ["127.0.0.1"]}})
    slow_agent = await create_agent(alice, "stuck", f"http://slow.hooks.test:{slow.port}/hook")
    fast_agent = await create_agent(alice, "quick", f"http://fast.hooks.test:{fast.port}/hook")
    for n in range(40):
        await accept(quiet.gateway, [slow_agent], mail(f"slow {n}"))
    fast_message = await accept(quiet.gateway, [fast_agent], mail("fast"))

    async with WebhookConnections() as connections, trio.open_nursery() as workers:
        workers.start_soon(WebhookWorker(quiet.gateway, connections, attempt_timeout=60).run)
        await slow.wait_in_flight(MAX_PER_HOST)
        with trio.fail_after(2):
            (request,) = await fast.wait_for(1)
        assert json.loads(request.body)["message_id"] == fast_message
        assert request.headers["host"] == f"fast.hooks.test:{fast.port}"
        await trio.sleep(0.2)
        assert slow.in_flight == slow.max_in_flight == MAX_PER_HOST
        workers.cancel_scope.cancel()
    assert await delivery_status(alice, fast_agent, fast_message) == "delivered"


async def test_a_job_that_waited_out_most_of_its_lease_is_posted_once(
    quiet: QuietGateway,
    alice: Account,
    worker: WebhookWorker,
    connections: WebhookConnections,
    clock: FakeClock,
    nursery: trio.Nursery,
) -> None:
    """The ninth job for a host waits for a slot until its lease is nearly gone: it is renewed
    as its POST starts, so another replica claiming after the first lease would have ended
    finds nothing to send again."""
    receiver = HttpReceiver(answer_in_turn(*[HANG] * (MAX_PER_HOST + 1), Answer(200)))
    await nursery.start(receiver.serve)
    agent = await create_agent(alice, "patient", receiver.url)
    message_ids = [
        await accept(quiet.gateway, [agent], mail(f"Number {n}")) for n in range(MAX_PER_HOST + 1)
    ]
    clock.now = time.time()
    database = quiet.gateway.settings.database.url

    def first_eight_recorded() -> bool:
        return query(database, "SELECT count(*) FROM webhook_attempts")[0][0] == MAX_PER_HOST

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as running:
            running.start_soon(worker.deliver_due, clock.now)
            await receiver.wait_in_flight(MAX_PER_HOST)  # the ninth waits for a slot
            clock.now += LEASE - 2
            receiver.release()  # the first eight end without answer; the ninth goes
            await wait_until(first_eight_recorded)
            await receiver.wait_in_flight(1)
            clock.now += 3  # the claim's own lease is over, its POST is not
            other = WebhookWorker(quiet.gateway, connections, clock=clock, attempt_timeout=5.0)
            assert await other.deliver_due(clock.now) == 0
            receiver.release()
    posted = Counter(json.loads(request.body)["message_id"] for request in receiver.requests)
    assert posted == Counter(message_ids)
    for message_id in message_ids:
        assert await delivery_status(alice, agent, message_id) == "retrying"


async def test_a_post_that_outlasts_the_configured_lease_is_made_once(
    quiet: QuietGateway,
    alice: Account,
    connections: WebhookConnections,
    clock: FakeClock,
    nursery: trio.Nursery,
) -> None:
    """A slow receiver keeps the POST going past `webhooks.lease_seconds` (the worker's attempt
    timeout is longer than it): the claim is leased for the timeout + 1 s instead, so another
    replica claiming once the configured lease would have ended finds nothing to send again."""
    receiver = HttpReceiver(lambda _: HANG)
    await nursery.start(receiver.serve)
    agent = await create_agent(alice, "slow", receiver.url)
    message_id = await accept_at(quiet, clock, agent)
    worker = WebhookWorker(quiet.gateway, connections, clock=clock, attempt_timeout=2 * LEASE)
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as running:
            running.start_soon(worker.deliver_due, clock.now)
            await receiver.wait_in_flight(1)
            clock.now += LEASE + 10  # the configured lease is over, the attempt's timeout is not
            other = WebhookWorker(quiet.gateway, connections, clock=clock, attempt_timeout=5.0)
            assert await other.deliver_due(clock.now) == 0
            receiver.release()
    assert [json.loads(r.body)["message_id"] for r in receiver.requests] == [message_id]
    (attempt,) = await recorded_attempts(quiet.gateway, message_id)
    assert attempt.attempt == 1


WAITING_JOB_CHANGES = {
    "agent deleted": ("DELETE", "/api/v1/agents/{agent}", None),
    "agent trashed": ("DELETE", "/v1/agents/{agent}?confirm=DELETE", None),
    "account deleted": ("DELETE", "/v1/account?confirm=DELETE", None),
    "webhook moved": ("PUT", "/api/v1/agents/{agent}", {"webhook_url": "{url}/moved"}),
}


@pytest.mark.parametrize("change", WAITING_JOB_CHANGES)
async def test_a_job_waiting_for_its_host_is_not_posted_once_its_agent_is_gone(
    quiet: QuietGateway,
    alice: Account,
    worker: WebhookWorker,
    clock: FakeClock,
    nursery: trio.Nursery,
    change: str,
) -> None:
    """alice's message is claimed behind eight hanging POSTs (bob's) to the same host, and
    waits for a slot; meanwhile its agent is deleted or trashed, alice's account deleted, or
    the agent's webhook pointed elsewhere. When the slot frees, the message is not POSTed to
    the URL it was claimed for."""
    receiver = HttpReceiver(answer_in_turn(*[HANG] * MAX_PER_HOST, Answer(200)))
    await nursery.start(receiver.serve)
    bob = await open_account(quiet.gateway, quiet.http_url, "bob@example.com")
    async with bob.http:
        busy = await create_agent(bob, "busy", receiver.url + "/busy")
        for n in range(MAX_PER_HOST):
            await accept(quiet.gateway, [busy], mail(f"Busy {n}"))
        clock.now = time.time()
        agent = await create_agent(alice, "doomed", receiver.url)
        method, path, body = WAITING_JOB_CHANGES[change]
        if body is not None:
            body = {name: value.format(url=receiver.url) for name, value in body.items()}
        with trio.fail_after(WAIT):
            async with trio.open_nursery() as running:
                running.start_soon(worker.deliver_due, clock.now)
                await receiver.wait_in_flight(MAX_PER_HOST)
                message_id = await accept_at(quiet, clock, agent)
                running.start_soon(worker.deliver_due, clock.now)
                await wait_until(lambda: worker._in_flight() == MAX_PER_HOST + 1)
                # alice's is claimed, and waits for a slot
                changed = await alice.http.request(method, path.format(agent=agent), json=body)
                assert changed.status_code == 200, changed.text
                receiver.release()
    assert [request.target for request in receiver.requests] == ["/hook/busy"] * MAX_PER_HOST
    posted = [json.loads(request.body)["message_id"] for request in receiver.requests]
    assert message_id not in posted
    if change == "webhook moved":  # left to its lease, then sent where it now goes
        run_out_leases(quiet.gateway.settings.database.url, LEASE + 1)
        await worker.deliver_due(clock.now + LEASE + 1)
        moved = [request for request in receiver.requests if request.target == "/hook/moved"]
        assert [json.loads(request.body)["message_id"] for request in moved] == [message_id]


async def test_a_name_resolving_to_loopback_is_refused_at_delivery(
    tmp_path: Path, resolver: FixtureResolver, receiver: HttpReceiver, clock: FakeClock
) -> None:
    # At registration both names are public; by delivery time DNS points them inward
    # (rebinding), which the check at each attempt must catch.
    resolver.load_zone(
        {
            "internal.hooks.test": {"A": ["93.184.215.14"]},
            "mixed.hooks.test": {"A": ["93.184.215.14"]},
        }
    )
    strict = make_settings(tmp_path)
    assert strict.webhooks.allow_private is False
    async with quiet_gateway(strict, resolver) as quiet:
        account = await open_account(quiet.gateway, quiet.http_url, "alice@example.com")
        async with account.http, WebhookConnections() as connections:
            internal = await create_agent(
                account, "internal", f"http://internal.hooks.test:{receiver.port}/hook"
            )
            mixed = await create_agent(
                account, "mixed", f"http://mixed.hooks.test:{receiver.port}/hook"
            )
            resolver.load_zone(
                {
                    "internal.hooks.test": {"A": ["127.0.0.1"]},
                    "mixed.hooks.test": {"A": ["127.0.0.1"], "AAAA": ["2001:4860:4860::8888"]},
                }
            )
            internal_message = await accept_at(quiet, clock, internal)
            mixed_message = await accept_at(quiet, clock, mixed)
            worker = WebhookWorker(quiet.gateway, connections, clock=clock)
            assert await worker.deliver_due(clock.now) == 2
            assert await delivery_status(account, internal, internal_message) == "failed"
            assert await delivery_status(account, mixed, mixed_message) == "failed"
            (refused,) = await recorded_attempts(quiet.gateway, internal_message)
            (mixed_refused,) = await recorded_attempts(quiet.gateway, mixed_message)
    assert refused.status_code is None
    assert refused.error is not None and mixed_refused.error is not None
    assert refused.error.startswith("target refused: webhook_url host internal.hooks.test ")
    assert mixed_refused.error.startswith("target refused: webhook_url host mixed.hooks.test ")
    for error in (refused.error, mixed_refused.error):
        assert "resolves to a private, loopback or link-local address" in error
        assert "127.0.0.1" not in error
    assert receiver.requests == []


async def test_a_loopback_target_is_refused_once_private_targets_are_disallowed(
    tmp_path: Path,
    resolver: FixtureResolver,
    receiver: HttpReceiver,
    clock: FakeClock,
    connections: WebhookConnections,
) -> None:
    receiver.reply = lambda _: Answer(500)
    lenient = make_settings(tmp_path, webhooks={"allow_private": True})
    async with quiet_gateway(lenient, resolver) as quiet:
        account = await open_account(quiet.gateway, quiet.http_url, "alice@example.com")
        async with account.http:
            agent = await create_agent(account, "was-allowed", receiver.url)
            message_id = await accept_at(quiet, clock, agent)
            assert await WebhookWorker(quiet.gateway, connections, clock=clock).deliver_due(
                clock.now
            )
    due = job_due_at(lenient, message_id)
    assert due is not None
    strict = make_settings(tmp_path, database={"url": lenient.database.url})  # same database
    async with quiet_gateway(strict, resolver) as quiet:
        worker = WebhookWorker(quiet.gateway, connections, clock=clock)
        assert await worker.deliver_due(due) == 1
        attempts = await recorded_attempts(quiet.gateway, message_id)
    assert [a.status_code for a in attempts] == [500, None]
    assert attempts[1].error is not None and attempts[1].error.startswith("target refused: ")
    assert len(receiver.requests) == 1


async def test_a_message_deleted_during_its_attempt_is_let_go(
    quiet: QuietGateway,
    alice: Account,
    receiver: HttpReceiver,
    worker: WebhookWorker,
    clock: FakeClock,
) -> None:
    receiver.reply = lambda _: HANG
    agent = await create_agent(alice, "ephemeral", receiver.url)
    message_id = await accept_at(quiet, clock, agent)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker.deliver_due, clock.now)
        await receiver.wait_in_flight(1)
        assert (await alice.http.delete(f"/api/v1/agents/{agent}")).status_code == 200
        receiver.release()
    database = quiet.gateway.settings.database.url
    assert (
        query(database, "SELECT id FROM webhook_attempts WHERE message_id = ?", (message_id,)) == []
    )
    assert job_due_at(quiet.gateway.settings, message_id) is None


async def test_an_agent_switched_to_local_stops_its_webhook_deliveries(
    quiet: QuietGateway,
    alice: Account,
    receiver: HttpReceiver,
    worker: WebhookWorker,
    clock: FakeClock,
) -> None:
    receiver.reply = lambda _: Answer(503)
    agent = await create_agent(alice, "switcher", receiver.url)
    message_id = await accept_at(quiet, clock, agent)
    assert await worker.deliver_due(clock.now) == 1
    response = await alice.http.put(f"/api/v1/agents/{agent}", json={"agent_mode": "local"})
    assert response.status_code == 200, response.text

    due = job_due_at(quiet.gateway.settings, message_id)
    assert due is not None and await worker.deliver_due(due) == 1
    assert await delivery_status(alice, agent, message_id) == "failed"
    last = (await recorded_attempts(quiet.gateway, message_id))[-1]
    assert last.error is not None and "no longer a cloud agent" in last.error
    assert len(receiver.requests) == 1
    listing = await alice.http.get(f"/api/v1/agents/{agent}/messages?status=all")
    listed = listing.json()["messages"]
    assert [m["message_id"] for m in listed] == [message_id]


async def test_mail_over_smtp_reaches_the_webhook(
    running: RunningGateway, make_account: object, receiver: HttpReceiver
) -> None:
    alice: Account = await make_account("alice@example.com")  # type: ignore[operator]
    agent = await create_agent(alice, "e2e", receiver.url)
    secret = await new_signing_secret(alice)
    data = mail("Over the wire", "Message-ID: <wire-1@example.org>\r\n")
    await smtp_send(running.addresses.smtp_port, [agent], data)

    (request,) = await receiver.wait_for(1)
    body = json.loads(request.body)
    raw = base64.b64decode(body["raw_message"], validate=True)
    assert raw.endswith(data) and body["subject"] == "Over the wire"
    assert sdk_verifies(body["auth_headers"], raw, secret, time.time())
    await wait_for_status(alice, agent, body["message_id"], "delivered")


@pytest.mark.parametrize(
    ("bad_url", "reason"),
    [
        ("http://loop.x.test:99999/x", "port must be a number from 1 to 65535"),
        pytest.param(
            "http://loop.x.test/x\x00y",
            "control characters (found U+0000",
            marks=pytest.mark.skipif(
                gateway_backend() == "postgres",
                reason="PostgreSQL text cannot hold NUL, so no stored URL can carry one",
            ),
        ),
        ("http://[::1/x", "not a valid URL"),
    ],
    ids=["port-99999", "nul", "unclosed-bracket"],
)
async def test_a_bad_webhook_url_in_the_database_fails_alone(
    running: RunningGateway,
    make_account: Any,
    receiver: HttpReceiver,
    resolver: FixtureResolver,
    bad_url: str,
    reason: str,
) -> None:
    """A URL stored before today's checks (written here straight through storage, as such an
    old row is) must not stop the worker: another user's delivery goes through, and the bad
    job ends failed with the reason recorded."""
    resolver.load_zone({"loop.x.test": {"A": ["127.0.0.1"]}})
    storage = running.gateway.storage
    mallory: Account = await make_account("mallory@example.com")
    broken = await create_agent(mallory, "broken")
    user_id = (await storage.find_agent(broken)).user_id  # type: ignore[union-attr]
    changes = AgentChanges(webhook_url=bad_url, agent_mode="cloud")
    assert await storage.update_agent(user_id, broken, changes) is not None
    bob: Account = await make_account("bob@example.com")
    healthy = await create_agent(bob, "healthy", receiver.url)

    broken_message = await accept(running.gateway, [broken], mail("to the broken agent"))
    healthy_message = await accept(running.gateway, [healthy], mail("to the healthy agent"))

    (request,) = await receiver.wait_for(1)
    assert json.loads(request.body)["message_id"] == healthy_message
    await wait_for_status(bob, healthy, healthy_message, "delivered")
    await wait_for_status(mallory, broken, broken_message, "failed")
    (attempt,) = await storage.webhook_attempts(user_id, broken_message)
    assert attempt.status_code is None
    assert attempt.error is not None and attempt.error.startswith("target refused: webhook_url")
    assert reason in attempt.error


async def test_an_attempt_that_raises_is_recorded_and_the_others_go_on(
    quiet: QuietGateway,
    alice: Account,
    receiver: HttpReceiver,
    worker: WebhookWorker,
    clock: FakeClock,
) -> None:
    """Whatever a job's data does to an attempt, the worker records it and goes on: here the
    owner's newest signing seed, written straight through storage after the mail was stored,
    is unreadable (not ASCII)."""
    storage = quiet.gateway.storage
    bob = await open_account(quiet.gateway, quiet.http_url, "bob@example.com")
    async with bob.http:
        bobs_agent = await create_agent(bob, "unsignable", receiver.url)
        alices_agent = await create_agent(alice, "fine", receiver.url)
        bobs_message = await accept_at(quiet, clock, bobs_agent)
        alices_message = await accept_at(quiet, clock, alices_agent)
        user_id = (await storage.find_agent(bobs_agent)).user_id  # type: ignore[union-attr]
        unreadable = SigningSecret(
            id=new_id("wsec"),
            user_id=user_id,
            name="corrupt",
            seed="s\u00e9ed",
            secret_prefix="corrupt",
            created_at=format_timestamp(clock.now),
            last_signed_at=None,
        )
        await storage.add_signing_secret(unreadable, 100)

        assert await worker.deliver_due(clock.now) == 2
        (request,) = receiver.requests
        assert json.loads(request.body)["message_id"] == alices_message
        assert await delivery_status(alice, alices_agent, alices_message) == "delivered"
        assert await delivery_status(bob, bobs_agent, bobs_message) == "retrying"
        (attempt,) = await storage.webhook_attempts(user_id, bobs_message)
    assert attempt.error is not None
    assert attempt.error.startswith("internal error: UnicodeEncodeError")
    assert job_due_at(quiet.gateway.settings, bobs_message) is not None


async def test_a_record_storage_fails_costs_only_its_job(
    quiet: QuietGateway,
    alice: Account,
    worker: WebhookWorker,
    clock: FakeClock,
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The commit of one job's record fails while another's POST is in flight: the other is
    answered and recorded, and the failed one is left to its lease, then sent again."""

    def reply(request: Received) -> Answer:
        return Answer(200, delay=0.3 if request.target == "/slow" else 0.0)

    receiver = HttpReceiver(reply)
    await nursery.start(receiver.serve)
    fast = await create_agent(alice, "fast", f"http://127.0.0.1:{receiver.port}/fast")
    slow = await create_agent(alice, "slow", f"http://127.0.0.1:{receiver.port}/slow")
    unrecorded = await accept_at(quiet, clock, fast)
    recorded = await accept_at(quiet, clock, slow)
    storage = quiet.gateway.storage
    finish = storage.finish_webhook_attempts

    async def disk_fails_for_one(finished: list[FinishedAttempt]) -> None:
        if any(item.message_id == unrecorded for item in finished):
            raise StorageUnavailable("sqlite: disk I/O error")
        await finish(finished)

    monkeypatch.setattr(storage, "finish_webhook_attempts", disk_fails_for_one)
    with trio.fail_after(WAIT), caplog.at_level(logging.ERROR, "e2a.webhooks"):
        assert await worker.deliver_due(clock.now) == 2
        assert len(receiver.requests) == 2
        assert await delivery_status(alice, slow, recorded) == "delivered"
        assert await delivery_status(alice, fast, unrecorded) == "pending"
        assert await worker.deliver_due(clock.now) == 0  # still leased
        monkeypatch.setattr(storage, "finish_webhook_attempts", finish)
        run_out_leases(quiet.gateway.settings.database.url, LEASE + 1)
        assert await worker.deliver_due(clock.now + LEASE + 1) == 1
    assert f"webhook {unrecorded}: attempt not recorded" in caplog.text
    assert await delivery_status(alice, fast, unrecorded) == "delivered"
    assert len(receiver.requests) == 3
    repeats = [request for request in receiver.requests if request.target == "/fast"]
    assert {
        (request.headers["x-e2a-delivery-id"], request.headers["x-e2a-delivery-attempt"])
        for request in repeats
    } == {(delivery_id(unrecorded), "1")}  # a repeat the receiver can drop
    assert len(repeats) == 2


async def test_an_attempt_the_database_fails_is_left_to_its_lease(
    tmp_path: Path,
    resolver: FixtureResolver,
    receiver: HttpReceiver,
    connections: WebhookConnections,
    clock: FakeClock,
) -> None:
    """The first attempt keeps the message's reading, and that write fails (on PostgreSQL: a
    statement cancelled, a deadlock's victim, a connection lost). No attempt is recorded (its
    error would show the database's address to the account) and nothing is posted; the job is
    left to its lease, then delivered."""
    with fresh_postgres_database() as url:
        settings = make_settings(tmp_path, webhooks={"allow_private": True}, database={"url": url})
        async with quiet_gateway(settings, resolver) as opened:
            account = await open_account(opened.gateway, opened.http_url, "alice@example.com")
            async with account.http:
                agent = await create_agent(account, "hook", receiver.url)
                message_id = await accept_at(opened, clock, agent)
                worker = WebhookWorker(opened.gateway, connections, clock=clock)
                locker = await trio.to_thread.run_sync(psycopg.connect, url)
                try:
                    await trio.to_thread.run_sync(
                        locker.execute,
                        "SELECT 1 FROM messages WHERE id = %s FOR UPDATE",
                        (message_id,),
                    )
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(worker.deliver_due, clock.now)
                        await trio.to_thread.run_sync(cancel_a_lock_waiter, url)
                        await trio.to_thread.run_sync(locker.rollback)
                finally:
                    await trio.to_thread.run_sync(locker.close)
                assert await recorded_attempts(opened.gateway, message_id) == []
                assert receiver.requests == []
                assert await delivery_status(account, agent, message_id) == "pending"
                await trio.to_thread.run_sync(run_out_leases, url, LEASE + 1)
                assert await worker.deliver_due(clock.now + LEASE + 1) == 1
                assert await delivery_status(account, agent, message_id) == "delivered"
    assert len(receiver.requests) == 1


def cancel_a_lock_waiter(url: str) -> None:
    """Cancel the statement of the first session found waiting for a lock on `url`'s
    database."""
    deadline = time.monotonic() + WAIT
    with psycopg.connect(url, autocommit=True) as admin:
        while time.monotonic() < deadline:
            waiting = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            ).fetchone()
            if waiting is not None:
                admin.execute("SELECT pg_cancel_backend(%s)", waiting)
                return
            time.sleep(0.02)  # polling the server: it tells nobody of a waiter
    raise AssertionError("no session waited for the lock")


async def test_held_mail_is_posted_once_when_released_by_review_or_expiry(
    quiet: QuietGateway,
    alice: Account,
    receiver: HttpReceiver,
    worker: WebhookWorker,
    clock: FakeClock,
) -> None:
    """A cloud agent's mail held for review is posted to its webhook once it is released, by a
    reviewer or by its expiry (action approve), once each, days after it arrived: its
    `received_at` is its arrival, and the retry window runs from the release."""
    agent = await create_agent(alice, "hooked", receiver.url)
    stored = await alice.http.put(
        f"/api/v1/agents/{agent}", json={"hitl_expiration_action": "approve"}
    )
    assert stored.status_code == 200, stored.text
    clock.now = time.time()
    arrived = clock.now - 3 * DELIVERY_WINDOW
    held = [
        await store_received(quiet, agent, arrived, subject, hold_expires_at=arrived + waits)
        for subject, waits in (("Reviewed", 4 * DELIVERY_WINDOW), ("Expired", 2 * DELIVERY_WINDOW))
    ]
    assert await worker.deliver_due(clock.now) == 0  # held: nothing to post

    approved = await alice.http.post(f"/v1/reviews/{held[0]}/approve", json={})
    assert approved.status_code == 200, approved.text
    assert (await quiet.gateway.storage.expire_inbound_holds(clock.now)).resolved == 1
    assert await worker.deliver_due(clock.now + 1) == 2
    posted = {json.loads(request.body)["message_id"]: request for request in receiver.requests}
    assert set(posted) == set(held) and len(receiver.requests) == 2
    for message_id in held:
        assert json.loads(posted[message_id].body)["received_at"] == format_timestamp(arrived)
        assert await delivery_status(alice, agent, message_id) == "delivered"
    assert await worker.deliver_due(clock.now + DELIVERY_WINDOW) == 0
    assert len(receiver.requests) == 2


async def test_a_2xx_whose_body_never_ends_is_delivered_and_not_sent_again(
    quiet: QuietGateway,
    alice: Account,
    receiver: HttpReceiver,
    connections: WebhookConnections,
    clock: FakeClock,
) -> None:
    receiver.reply = lambda _: Answer(200, body=b"ok", endless=True)
    worker = WebhookWorker(quiet.gateway, connections, clock=clock, attempt_timeout=1.0)
    agent = await create_agent(alice, "streamer", receiver.url)
    message_id = await accept_at(quiet, clock, agent)

    with trio.fail_after(WAIT):
        assert await worker.deliver_due(clock.now) == 1
    (attempt,) = await recorded_attempts(quiet.gateway, message_id)
    assert (attempt.status_code, attempt.error) == (200, None)
    assert await delivery_status(alice, agent, message_id) == "delivered"
    assert await worker.deliver_due(clock.now + DELIVERY_WINDOW) == 0
    assert len(receiver.requests) == 1


async def test_a_name_with_an_address_that_refuses_is_delivered_through_the_next(
    quiet: QuietGateway,
    alice: Account,
    resolver: FixtureResolver,
    receiver: HttpReceiver,
    worker: WebhookWorker,
    clock: FakeClock,
) -> None:
    # Round-robin DNS: nothing listens on the first address (the receiver is on 127.0.0.1
    # only), the second answers. A dead address must not fail every attempt.
    resolver.load_zone({"rr.hooks.test": {"A": ["127.0.0.2", "127.0.0.1"]}})
    agent = await create_agent(alice, "round-robin", f"http://rr.hooks.test:{receiver.port}/hook")
    message_id = await accept_at(quiet, clock, agent)

    with trio.fail_after(WAIT):
        assert await worker.deliver_due(clock.now) == 1
    (attempt,) = await recorded_attempts(quiet.gateway, message_id)
    assert (attempt.status_code, attempt.error) == (200, None)
    assert await delivery_status(alice, agent, message_id) == "delivered"
    (request,) = receiver.requests
    assert request.headers["host"] == f"rr.hooks.test:{receiver.port}"


@pytest.fixture
def silent_address(receiver: HttpReceiver) -> Iterator[str]:
    """127.0.0.3 at the receiver's port, where a connection is never accepted: the listener's
    backlog is full, so the SYN of a new one is dropped, as a host gone dark drops it."""
    listener = socket.socket()
    listener.bind(("127.0.0.3", receiver.port))
    listener.listen(0)
    waiting = []
    for _ in range(3):
        queued = socket.socket()
        queued.setblocking(False)
        queued.connect_ex(("127.0.0.3", receiver.port))
        waiting.append(queued)
    try:
        yield "127.0.0.3"
    finally:
        for queued in waiting:
            queued.close()
        listener.close()


async def test_a_name_with_a_silent_address_is_delivered_through_the_next_in_time(
    quiet: QuietGateway,
    alice: Account,
    resolver: FixtureResolver,
    receiver: HttpReceiver,
    connections: WebhookConnections,
    clock: FakeClock,
    silent_address: str,
) -> None:
    resolver.load_zone({"dark.hooks.test": {"A": [silent_address, "127.0.0.1"]}})
    worker = WebhookWorker(quiet.gateway, connections, clock=clock, attempt_timeout=2.0)
    agent = await create_agent(alice, "dark", f"http://dark.hooks.test:{receiver.port}/hook")
    message_id = await accept_at(quiet, clock, agent)

    with trio.fail_after(WAIT):
        assert await worker.deliver_due(clock.now) == 1
    (attempt,) = await recorded_attempts(quiet.gateway, message_id)
    assert (attempt.status_code, attempt.error) == (200, None)
    assert 900 <= attempt.duration_ms < 2000  # half the time went to the silent address
    assert len(receiver.requests) == 1


async def test_a_name_whose_aaaa_lookup_fails_is_delivered_to_its_a_address(
    quiet: QuietGateway,
    alice: Account,
    resolver: FixtureResolver,
    receiver: HttpReceiver,
    worker: WebhookWorker,
    clock: FakeClock,
) -> None:
    # Some nameservers time out on AAAA queries for names that have none.
    resolver.load_zone({"v4.hooks.test": {"A": ["127.0.0.1"]}})
    resolver.failing_lookups.add(("v4.hooks.test", "AAAA"))
    agent = await create_agent(alice, "v4", f"http://v4.hooks.test:{receiver.port}/hook")
    message_id = await accept_at(quiet, clock, agent)

    assert await worker.deliver_due(clock.now) == 1
    (attempt,) = await recorded_attempts(quiet.gateway, message_id)
    assert (attempt.status_code, attempt.error) == (200, None)

    resolver.failing_lookups.add(("v4.hooks.test", "A"))  # now neither answers
    second = await accept_at(quiet, clock, agent)
    assert await worker.deliver_due(clock.now) == 1
    (attempt,) = await recorded_attempts(quiet.gateway, second)
    assert attempt.status_code is None
    assert attempt.error is not None and attempt.error.startswith("cannot resolve v4.hooks.test")
    assert await delivery_status(alice, agent, second) == "retrying"
