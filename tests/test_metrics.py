"""GET /metrics on a running gateway: the counters move with real SMTP, webhook, WebSocket and
HTTP traffic, queue depth comes from storage, and labels never carry addresses or ids."""

from __future__ import annotations

import json
import re
import smtplib
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import ConnectionClosed, open_websocket_url

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from e2a_gateway.metrics import PER_REPLICA, SHARED, Metrics, QueueReading
from e2a_gateway.storage.base import JobQueueState, StorageUnavailable
from tests.conftest import Account, agent_path, make_settings
from tests.databases import reported_backend
from tests.delivery_support import SENDER, create_agent, mail, wait_until
from tests.http_receiver import Answer, HttpReceiver
from tests.test_websocket import ws_url

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Metrics on; webhooks may go to the loopback receivers of these tests."""
    return make_settings(tmp_path, metrics={"enabled": True}, webhooks={"allow_private": True})


async def serving(nursery: trio.Nursery, status: int) -> HttpReceiver:
    receiver = HttpReceiver(lambda _: Answer(status))
    await nursery.start(receiver.serve)
    return receiver


def samples_of(text: str) -> Samples:
    """Every sample of Prometheus text, keyed by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(anonymous: httpx.AsyncClient) -> Samples:
    """Every sample of GET /metrics."""
    response = await anonymous.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples_of(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def send_refusing(port: int, recipients: list[str], message: bytes | None = None) -> dict[str, Any]:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("mail.example.org")
        return dict(client.sendmail(SENDER, recipients, message or mail("Counted")))


async def test_counters_move_with_smtp_deliveries_and_requests(
    running: RunningGateway,
    make_account: Any,
    anonymous: httpx.AsyncClient,
    nursery: trio.Nursery,
) -> None:
    alice: Account = await make_account("alice@example.com")
    happy = await create_agent(alice, "happy", (await serving(nursery, 200)).url)
    failing = await create_agent(alice, "failing", (await serving(nursery, 500)).url)
    before = await scrape(anonymous)
    assert value(before, "e2a_smtp_messages_accepted_total") == 0
    assert value(before, "e2a_storage_up") == 1
    assert value(before, "e2a_inbound_commit_seconds_count") == 0

    refused = await trio.to_thread.run_sync(
        send_refusing,
        running.addresses.smtp_port,
        [happy, failing, "nobody@agents.test", "someone@elsewhere.example"],
    )
    assert set(refused) == {"nobody@agents.test", "someone@elsewhere.example"}
    # A message read to its end and refused for what it holds (a line over 1,000 octets).
    too_long = mail("Refused", body="x" * 1200)
    with pytest.raises(smtplib.SMTPDataError, match=r"5\.5\.2"):
        await trio.to_thread.run_sync(send_refusing, running.addresses.smtp_port, [happy], too_long)

    async def settled() -> bool:
        now = await scrape(anonymous)
        return (
            value(now, "e2a_deliveries_total", channel="webhook", outcome="delivered") == 1
            and value(now, "e2a_deliveries_total", channel="webhook", outcome="retrying") == 1
            and value(now, "e2a_smtp_sessions_active") == 0
        )

    await wait_until(settled)
    after = await scrape(anonymous)
    assert value(after, "e2a_smtp_messages_accepted_total") == 1
    assert value(after, "e2a_smtp_rejected_total", reason="unknown_user") == 1
    assert value(after, "e2a_smtp_rejected_total", reason="relay_denied") == 1
    assert value(after, "e2a_smtp_rejected_total", reason="not_stored") == 0
    assert value(after, "e2a_smtp_rejected_total", reason="message_refused") == 1
    assert value(after, "e2a_smtp_sessions_total") == 2
    # One group commit stored the DATA's two copies, one per agent.
    assert value(after, "e2a_inbound_commit_seconds_count") == 1
    assert 0 < value(after, "e2a_inbound_commit_seconds_sum") < 60
    assert value(after, "e2a_inbound_commit_transactions_sum") == 1
    assert value(after, "e2a_inbound_commit_transactions_bucket", le="1.0") == 1
    assert value(after, "e2a_inbound_messages_stored_total") == 2
    assert value(after, "e2a_deliveries_total", channel="webhook", outcome="failed") == 0
    # The 500 left its job waiting for a retry: queue depth is read from storage.
    assert value(after, "e2a_queue_jobs", kind="webhook") == 1
    assert value(after, "e2a_queue_jobs", kind="outbound") == 0
    # Waiting for its retry, not due: no lag.
    assert ("e2a_queue_oldest_age_seconds", (("queue", "webhook"),)) in after
    assert value(after, "e2a_queue_oldest_age_seconds", queue="webhook") == 0

    assert (await alice.http.get(agent_path(happy))).status_code == 200
    assert (await alice.http.get(agent_path("missing@agents.test"))).status_code == 404
    assert (await alice.http.get("/no/such/page/x@y.example")).status_code == 404
    final = await scrape(anonymous)
    route = {"method": "GET", "route": "/api/v1/agents/<email>"}
    assert value(final, "e2a_http_request_duration_seconds_count", **route) == 2
    assert value(final, "e2a_http_responses_total", **route, status="200") == 1
    assert value(final, "e2a_http_responses_total", **route, status="404") == 1
    assert value(final, "e2a_http_request_duration_seconds_bucket", **route, le="+Inf") == 2
    assert value(final, "e2a_http_responses_total", method="GET", route="unmatched", status="404")
    assert (await alice.http.get(f"/v1/agents/{happy}")).status_code == 200
    assert (await alice.http.get("/v1/agents/missing@agents.test")).status_code == 404
    final = await scrape(anonymous)
    # e2a's names for the same facts, as its SLO queries read them.
    assert value(final, "e2a_smtp_inbound_total", outcome="accepted") == 1
    assert value(final, "e2a_smtp_inbound_total", outcome="rejected_unknown_recipient") == 1
    assert value(final, "e2a_smtp_inbound_total", outcome="rejected_unverified_domain") == 1
    assert value(final, "e2a_smtp_inbound_total", outcome="tempfail") == 0
    v1_route = {"method": "GET", "route": "/v1/agents/{email}"}
    assert value(final, "e2a_http_requests_total", **v1_route, status_class="2xx") == 1
    assert value(final, "e2a_http_requests_total", **v1_route, status_class="4xx") == 1
    legacy = {"method": "GET", "route": "/legacy", "status_class": "4xx"}
    assert value(final, "e2a_http_requests_total", **legacy) == 2  # /api/v1 and unmatched
    labels = {label for (_, pairs) in final for _, label in pairs}
    assert not any("@" in label or "msg_" in label for label in labels), labels


async def test_websocket_deliveries_are_counted(
    running: RunningGateway, make_account: Any, anonymous: httpx.AsyncClient
) -> None:
    alice: Account = await make_account("alice@example.com")
    agent = await create_agent(alice, "local-bot")
    async with open_websocket_url(ws_url(running, agent, alice.key)) as ws:
        await trio.to_thread.run_sync(send_refusing, running.addresses.smtp_port, [agent])
        with trio.fail_after(10):
            frame = json.loads(await ws.get_message())
        await ws.send_message(json.dumps({"type": "ack", "message_id": frame["message_id"]}))

        async def acked() -> bool:
            now = await scrape(anonymous)
            return value(now, "e2a_deliveries_total", channel="websocket", outcome="acked") == 1

        await wait_until(acked)
    samples = await scrape(anonymous)
    assert value(samples, "e2a_deliveries_total", channel="websocket", outcome="sent") == 1


async def test_metrics_are_off_unless_enabled(
    running: RunningGateway, anonymous: httpx.AsyncClient
) -> None:
    running.gateway.settings.metrics.enabled = False
    response = await anonymous.get("/metrics")
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "code": "not_found",
            "message": "metrics are off; set metrics.enabled = true to serve /metrics",
        }
    }
    head = await anonymous.head("/metrics")
    assert (head.status_code, head.headers["content-type"]) == (404, "application/json")


async def test_a_metrics_token_is_asked_of_every_scrape(
    running: RunningGateway, anonymous: httpx.AsyncClient
) -> None:
    running.gateway.settings.metrics.token = "scrape-" + "7f" * 16
    refused = {
        "none": await anonymous.get("/metrics"),
        "wrong": await anonymous.get("/metrics", headers={"Authorization": "Bearer scrape-"}),
        "basic": await anonymous.get("/metrics", auth=("prometheus", "scrape-" + "7f" * 16)),
    }
    for how, response in refused.items():
        assert response.status_code == 401, how
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="e2a"', how
        assert response.json()["error"] == {
            "code": "unauthorized",
            "message": "GET /metrics needs Authorization: Bearer <metrics.token>",
        }, how
        assert "e2a_" not in response.text, how
    allowed = await anonymous.get(
        "/metrics", headers={"Authorization": "Bearer scrape-" + "7f" * 16}
    )
    assert allowed.status_code == 200, allowed.text
    assert value(samples_of(allowed.text), "e2a_storage_up") == 1.0


async def test_health_reports_storage_down(
    running: RunningGateway, anonymous: httpx.AsyncClient
) -> None:
    up = await anonymous.get("/api/health")
    assert up.json()["storage"] == {"backend": reported_backend(), "state": "up"}
    await running.gateway.storage.close()
    down = await anonymous.get("/api/health")
    assert down.status_code == 503
    body = down.json()
    assert body["status"] == "degraded"
    assert body["storage"]["backend"] == reported_backend()
    assert body["storage"]["state"] == "down"
    assert value(await scrape(anonymous), "e2a_storage_up") == 0


def ws_counts(samples: Samples) -> dict[str, float]:
    """The WebSocket gauges and counters of one scrape, ended connections by reason."""
    counts = {
        "active": value(samples, "e2a_ws_connections_active"),
        "connects": value(samples, "e2a_ws_connects_total"),
        "drained": value(samples, "e2a_ws_drained_messages_total"),
        "send_failures": value(samples, "e2a_ws_send_failures_total"),
    }
    for (name, labels), count in samples.items():
        if name == "e2a_ws_disconnects_total" and count:
            counts[dict(labels)["reason"]] = count
    return counts


async def test_websocket_connections_are_counted_with_why_they_ended(
    running: RunningGateway, make_account: Any, anonymous: httpx.AsyncClient
) -> None:
    alice: Account = await make_account("alice@example.com")
    agent = await create_agent(alice, "local-bot")
    doomed = await create_agent(alice, "doomed-bot")
    await trio.to_thread.run_sync(send_refusing, running.addresses.smtp_port, [agent])
    quiet = ws_counts(await scrape(anonymous))
    assert quiet == {"active": 0, "connects": 0, "drained": 0, "send_failures": 0}

    async def counts_become(expected: dict[str, float]) -> None:
        async def reached() -> bool:
            return ws_counts(await scrape(anonymous)) == expected

        await wait_until(reached)

    # /api/v1: the unread message is pushed as the socket connects; then the client leaves.
    async with open_websocket_url(ws_url(running, agent, alice.key)) as ws:
        with trio.fail_after(10):
            drained = json.loads(await ws.get_message())
        assert drained["recipient"] == agent
        await counts_become({"active": 1, "connects": 1, "drained": 1, "send_failures": 0})
    await counts_become(
        {"active": 0, "connects": 1, "drained": 1, "send_failures": 0, "client_close": 1}
    )

    # Its agent deleted: the gateway closes the socket (1008), counted as revoked.
    async with open_websocket_url(ws_url(running, doomed, alice.key)) as ws:
        await counts_become(
            {"active": 1, "connects": 2, "drained": 1, "send_failures": 0, "client_close": 1}
        )
        assert (await alice.http.delete(agent_path(doomed))).status_code == 200
        with pytest.raises(ConnectionClosed) as closed, trio.fail_after(10):
            while True:
                await ws.get_message()
        assert closed.value.reason.code == 1008
    await counts_become(
        {"active": 0, "connects": 2, "drained": 1, "send_failures": 0, "client_close": 1}
        | {"revoked": 1}
    )

    # /v1: a second connection for the agent replaces the first (4000), still unread mail
    # drained to each.
    base = running.addresses.http_url.replace("http://", "ws://")
    v1_url = f"{base}/v1/agents/{agent}/ws"
    bearer = [(b"Authorization", f"Bearer {alice.key}".encode())]
    async with open_websocket_url(v1_url, extra_headers=bearer) as first:
        with trio.fail_after(10):
            assert json.loads(await first.get_message())["type"] == "email.received"
        async with open_websocket_url(v1_url, extra_headers=bearer) as second:
            with pytest.raises(ConnectionClosed) as closed, trio.fail_after(10):
                while True:
                    await first.get_message()
            assert closed.value.reason.code == 4000
            with trio.fail_after(10):
                assert json.loads(await second.get_message())["type"] == "email.received"
            await counts_become(
                {"active": 1, "connects": 4, "drained": 3, "send_failures": 0}
                | {"client_close": 1, "revoked": 1, "replaced": 1}
            )
    await counts_become(
        {"active": 0, "connects": 4, "drained": 3, "send_failures": 0}
        | {"client_close": 2, "revoked": 1, "replaced": 1}
    )


async def test_webhook_attempts_and_settled_sends_carry_e2a_names(
    running: RunningGateway,
    make_account: Any,
    anonymous: httpx.AsyncClient,
    nursery: trio.Nursery,
) -> None:
    alice: Account = await make_account("alice@example.com")
    agent = await create_agent(alice, "local-bot")
    peer = await create_agent(alice, "peer-bot")
    for status in (200, 500):
        hook = {"url": (await serving(nursery, status)).url, "events": ["email.received"]}
        made = await alice.http.post("/v1/webhooks", json=hook)
        assert made.status_code == 201, made.text
    await trio.to_thread.run_sync(send_refusing, running.addresses.smtp_port, [agent])

    # Delivered here; refused for good (no relay is configured for mail beyond this gateway).
    for recipient, status in ((peer, 200), ("someone@elsewhere.example", 422)):
        body = {"from": agent, "to": [recipient], "subject": "Hi", "body": "Hello"}
        sent = await alice.http.post("/api/v1/send", json=body)
        assert sent.status_code == status, sent.text

    async def settled() -> bool:
        now = await scrape(anonymous)
        return (
            value(now, "e2a_outbound_terminal_total", outcome="sent") == 1
            and value(now, "e2a_outbound_terminal_total", outcome="failed_provider") == 1
            and value(now, "e2a_webhook_attempt_duration_seconds_count") >= 4
        )

    await wait_until(settled)
    samples = await scrape(anonymous)
    attempts = {
        dict(labels)["outcome"] + " " + dict(labels)["status_class"]: count
        for (name, labels), count in samples.items()
        if name == "e2a_webhook_attempts_total"
    }
    # Two events (the SMTP mail and the local send), each to both webhooks: 200 delivers,
    # 500 is retried later.
    assert attempts == {"delivered 2xx": 2, "retryable_failure 5xx": 2}, attempts
    for outcome in ("failed_local_retries", "failed_cancelled", "failed_invalid"):
        assert value(samples, "e2a_outbound_terminal_total", outcome=outcome) == 0
    # Each send was one hand-off attempt, timed, after a wait for a worker.
    assert value(samples, "e2a_outbound_attempts_total", outcome="success") == 1
    assert value(samples, "e2a_outbound_attempts_total", outcome="permanent_failure") == 1
    assert value(samples, "e2a_outbound_attempts_total", outcome="temporary_failure") == 0
    assert value(samples, "e2a_outbound_attempt_duration_seconds_count") == 2
    assert value(samples, "e2a_outbound_queue_wait_seconds_count") == 2
    assert value(samples, "e2a_outbound_queue_wait_seconds_bucket", le="+Inf") == 2


def test_queue_lag_is_how_long_the_oldest_due_job_has_waited() -> None:
    metrics = Metrics()
    reading = QueueReading(
        1000.0,
        [
            JobQueueState("outbound", "available", 2, 940.0),
            JobQueueState("outbound", "running", 1, 900.0),
            JobQueueState("webhook", "retryable", 1, 1060.0),
        ],
    )
    samples = samples_of(metrics.render(reading, storage_up=True).decode())
    assert value(samples, "e2a_queue_oldest_age_seconds", queue="outbound") == 60
    assert value(samples, "e2a_queue_jobs", kind="outbound") == 3
    assert value(samples, "e2a_queue_depth", queue="outbound", state="available") == 2
    assert value(samples, "e2a_queue_depth", queue="outbound", state="running") == 1
    assert value(samples, "e2a_queue_depth", queue="webhook", state="retryable") == 1
    assert ("e2a_queue_depth", (("queue", "webhook"), ("state", "available"))) in samples
    assert value(samples, "e2a_queue_depth", queue="webhook", state="available") == 0
    assert ("e2a_queue_oldest_age_seconds", (("queue", "webhook"),)) in samples  # 0: none due
    assert value(samples, "e2a_queue_oldest_age_seconds", queue="webhook") == 0
    assert value(samples, "e2a_storage_up") == 1


async def test_a_v1_claim_that_cannot_be_announced_closes_1013_and_is_released(
    running: RunningGateway,
    make_account: Any,
    anonymous: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The other replicas cannot be told of a new `/v1` connection (storage unreachable for
    the announcement, as when NOTIFY fails on PostgreSQL): the socket is closed with 1013 and
    counted as `error`, and the claim is let go, so the agent's next connection is served."""
    alice: Account = await make_account("alice@example.com")
    agent = await create_agent(alice, "claiming-bot")
    await trio.to_thread.run_sync(send_refusing, running.addresses.smtp_port, [agent])

    async def unreachable(news: Any) -> None:
        raise StorageUnavailable("database unreachable")

    base = running.addresses.http_url.replace("http://", "ws://")
    v1_url = f"{base}/v1/agents/{agent}/ws"
    bearer = [(b"Authorization", f"Bearer {alice.key}".encode())]
    with monkeypatch.context() as patch:
        patch.setattr(running.gateway.storage, "announce", unreachable)
        async with open_websocket_url(v1_url, extra_headers=bearer) as ws:
            with pytest.raises(ConnectionClosed) as closed, trio.fail_after(10):
                await ws.get_message()  # nothing is pushed before the claim is announced
    assert closed.value.reason.code == 1013
    assert "reconnect" in (closed.value.reason.reason or "")

    async def counted() -> bool:
        counts = ws_counts(await scrape(anonymous))
        return counts.get("error") == 1 and counts["active"] == 0

    await wait_until(counted)
    async with open_websocket_url(v1_url, extra_headers=bearer) as ws:
        with trio.fail_after(10):
            assert json.loads(await ws.get_message())["type"] == "email.received"


async def test_request_methods_outside_http_share_one_label(
    running: RunningGateway, anonymous: httpx.AsyncClient
) -> None:
    """Any client may name any method; each made-up one would be a new series in every HTTP
    metric, kept until the gateway stops. They are all counted as `OTHER`."""
    for n in range(50):
        response = await anonymous.request(f"MADEUP{n}", "/v1/health")
        assert response.status_code in (404, 405)
    assert (await anonymous.request("PATCH", "/no/such/page")).status_code == 404
    samples = await scrape(anonymous)
    methods = {
        dict(pairs)["method"]
        for (name, pairs) in samples
        if name.startswith(("e2a_http_request", "e2a_http_responses")) and dict(pairs)
    }
    assert methods - {"GET"} == {"PATCH", "OTHER"}  # GET: the scrapes
    other = {"method": "OTHER", "route": "/legacy", "status_class": "4xx"}
    assert value(samples, "e2a_http_requests_total", **other) == 50


EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The media type of the text format /metrics writes (0.0.4: Prometheus's classic names)."""

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_COMMENT = re.compile(r"# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)")
_SUFFIXES = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def exposition_faults(text: str) -> list[str]:
    """What in `text` breaks the Prometheus text format (0.0.4) or its naming conventions:
    a family's HELP or TYPE missing, repeated or after its samples; its samples apart; a
    counter not named `_total`; a time not in `_seconds`; a histogram's buckets not ascending
    to a `+Inf` equal to its `_count`, or without `_sum`. Parsed by the reference parser too."""
    faults: list[str] = []
    helps: dict[str, int] = {}
    types: dict[str, str] = {}
    sampled: set[str] = set()
    finished: set[str] = set()
    current: str | None = None

    def now_in(family: str, number: int) -> None:
        nonlocal current
        if family != current:
            if family in finished:
                faults.append(f"{number}: {family} apart from the rest of it")
            if current is not None:
                finished.add(current)
            current = family

    for number, line in enumerate(text.splitlines(), 1):
        if comment := _COMMENT.fullmatch(line):
            kind, name, rest = comment.groups()
            now_in(name, number)
            if name in sampled:
                faults.append(f"{number}: {kind} of {name} after its samples")
            if kind == "HELP":
                helps[name] = helps.get(name, 0) + 1
            elif name in types:
                faults.append(f"{number}: a second TYPE for {name}")
            else:
                types[name] = rest
            continue
        name_match = _NAME.match(line)
        assert name_match is not None, f"{number}: not a sample: {line!r}"
        sample = name_match.group()
        family = next(
            (
                name
                for name, kind in types.items()
                if any(sample == name + suffix for suffix in _SUFFIXES.get(kind, ("",)))
            ),
            None,
        )
        if family is None:
            faults.append(f"{number}: {sample} has no TYPE before it")
            continue
        now_in(family, number)
        sampled.add(family)
    faults += [f"{name}: HELP without TYPE" for name in helps if name not in types]
    faults += [f"{name}: no HELP" for name in types if name not in helps]
    faults += [f"{name}: {count} HELP lines" for name, count in helps.items() if count != 1]
    for name, kind in types.items():
        if kind == "counter" and not name.endswith("_total"):
            faults.append(f"{name}: a counter not named _total")
        if re.search(r"duration|latency|_age|wait|timestamp|_seconds", name) and not (
            name.endswith("_seconds")
        ):
            faults.append(f"{name}: a time not in _seconds")
        if re.search(r"_ms$|milli|_minutes|_hours|_kb$|_mb$", name):
            faults.append(f"{name}: not in base units")
    for family in text_string_to_metric_families(text):
        if family.type != "histogram":
            continue
        series: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
            seen = series.setdefault(labels, {"le": [], "counts": []})
            if sample.name.endswith("_bucket"):
                seen["le"].append(float(sample.labels["le"]))
                seen["counts"].append(sample.value)
            else:
                seen[sample.name.rsplit("_", 1)[1]] = sample.value
        for labels, seen in series.items():
            where = f"{family.name}{dict(labels)}"
            if seen["le"] != sorted(set(seen["le"])) or seen["le"][-1:] != [float("inf")]:
                faults.append(f"{where}: buckets {seen['le']} not ascending to +Inf")
            if seen["counts"] != sorted(seen["counts"]):
                faults.append(f"{where}: bucket counts not cumulative")
            if "sum" not in seen or seen.get("count") != seen["counts"][-1]:
                faults.append(f"{where}: +Inf bucket, _count and _sum disagree: {seen}")
    return faults


async def test_the_exposition_follows_the_prometheus_text_format(
    running: RunningGateway,
    make_account: Any,
    anonymous: httpx.AsyncClient,
    nursery: trio.Nursery,
) -> None:
    """Every family once, HELP and TYPE before its samples, counters `_total`, times in
    seconds, histograms whole; served as text 0.0.4 to GET and HEAD alike."""
    alice: Account = await make_account("alice@example.com")
    agent = await create_agent(alice, "hooked", (await serving(nursery, 200)).url)
    await trio.to_thread.run_sync(send_refusing, running.addresses.smtp_port, [agent])

    async def delivered() -> bool:
        now = await scrape(anonymous)
        return value(now, "e2a_deliveries_total", channel="webhook", outcome="delivered") == 1

    await wait_until(delivered)
    response = await anonymous.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == EXPOSITION_CONTENT_TYPE
    assert exposition_faults(response.text) == []
    assert "e2a_inbound_commit_seconds_bucket" in response.text  # histograms with samples
    head = await anonymous.head("/metrics")
    assert head.status_code == 200
    assert head.headers["content-type"] == EXPOSITION_CONTENT_TYPE
    assert head.content == b""


def test_the_format_check_finds_what_breaks_the_format() -> None:
    """`exposition_faults` is not vacuous: each fault it looks for is found."""
    good = (
        "# HELP a_total A.\n# TYPE a_total counter\na_total 1.0\n"
        '# HELP h_seconds H.\n# TYPE h_seconds histogram\nh_seconds_bucket{le="1.0"} 1.0\n'
        'h_seconds_bucket{le="+Inf"} 2.0\nh_seconds_count 2.0\nh_seconds_sum 3.0\n'
    )
    assert exposition_faults(good) == []
    broken = {
        "# TYPE a_total counter\na_total 1.0\n": "no HELP",
        "# HELP a A.\n# TYPE a counter\na 1.0\n": "a counter not named _total",
        "# HELP a_total A.\n# HELP a_total A.\n# TYPE a_total counter\na_total 1\n": "2 HELP",
        "# HELP a_total A.\n# TYPE a_total counter\n# TYPE a_total counter\n": "second TYPE",
        "# HELP a_total A.\na_total 1.0\n# TYPE a_total counter\n": "no TYPE before",
        "# TYPE a_total counter\na_total 1.0\n# HELP a_total A.\n": "after its samples",
        "# HELP a_ms A.\n# TYPE a_ms gauge\na_ms 1.0\n": "base units",
        "# HELP wait A.\n# TYPE wait gauge\nwait 1.0\n": "_seconds",
        good.replace('le="1.0"} 1.0', 'le="1.0"} 3.0'): "cumulative",
        good.replace("h_seconds_count 2.0", "h_seconds_count 1.0"): "disagree",
        good.replace('h_seconds_bucket{le="+Inf"} 2.0\n', ""): "to +Inf",
        good.replace("h_seconds_sum 3.0\n", ""): "disagree",
        good + "a_total 2.0\n": "apart",
    }
    for text, fault in broken.items():
        found = exposition_faults(text)
        assert any(fault in each for each in found), (text, found)


def refused_by_rcpt(port: int, recipient: str) -> None:
    """One SMTP session whose only recipient is refused, so no message is sent."""
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send_refusing(port, [recipient])


def moved(before: Samples, after: Samples) -> dict[str, float]:
    """The series that changed from `before` to `after`, as `name{labels}` → change, leaving
    out what timing decides (a histogram's `_sum` and bounded buckets) and `/metrics`'s own
    requests."""
    changes = {}
    for key in before.keys() | after.keys():
        name, pairs = key
        labels = dict(pairs)
        if name.endswith("_sum") or labels.get("le", "+Inf") != "+Inf":
            continue
        if labels.get("route") == "/metrics":
            continue
        change = after.get(key, 0.0) - before.get(key, 0.0)
        if change:
            shown = ",".join(f"{k}={v}" for k, v in pairs)
            changes[f"{name}{{{shown}}}"] = change
    return changes


async def test_traffic_moves_each_counter_by_its_amount_and_gauges_come_to_rest(
    running: RunningGateway,
    make_account: Any,
    anonymous: httpx.AsyncClient,
    nursery: trio.Nursery,
) -> None:
    """A message accepted, one refused, an API call, a webhook attempt on each API: every
    series moves by exactly what happened, nothing else moves, and the gauges of work in
    progress (SMTP sessions, queued jobs, their age, WebSockets) are back at rest after."""
    alice: Account = await make_account("alice@example.com")
    agent = await create_agent(alice, "hooked", (await serving(nursery, 200)).url)
    hook = {"url": (await serving(nursery, 200)).url, "events": ["email.received"]}
    assert (await alice.http.post("/v1/webhooks", json=hook)).status_code == 201
    before = await scrape(anonymous)
    port = running.addresses.smtp_port
    await trio.to_thread.run_sync(send_refusing, port, [agent])
    await trio.to_thread.run_sync(refused_by_rcpt, port, "nobody@agents.test")
    assert (await alice.http.get(agent_path(agent))).status_code == 200

    async def at_rest() -> bool:
        now = await scrape(anonymous)
        return (
            value(now, "e2a_deliveries_total", channel="webhook", outcome="delivered") == 1
            and value(now, "e2a_webhook_attempts_total", outcome="delivered", status_class="2xx")
            == 1
            and value(now, "e2a_smtp_sessions_active") == 0
            and not any(v for (name, _), v in now.items() if name.startswith("e2a_queue_"))
        )

    await wait_until(at_rest)
    after = await scrape(anonymous)
    scrapes = value(
        after, "e2a_http_responses_total", method="GET", route="/metrics", status="200"
    ) - value(before, "e2a_http_responses_total", method="GET", route="/metrics", status="200")
    agent_route = "method=GET,route=/api/v1/agents/<email>"
    assert moved(before, after) == {
        "e2a_smtp_sessions_total{}": 2,
        "e2a_smtp_messages_accepted_total{}": 1,
        "e2a_smtp_rejected_total{reason=unknown_user}": 1,
        "e2a_smtp_inbound_total{outcome=accepted}": 1,
        "e2a_smtp_inbound_total{outcome=rejected_unknown_recipient}": 1,
        "e2a_inbound_commit_seconds_count{}": 1,
        "e2a_inbound_commit_seconds_bucket{le=+Inf}": 1,
        "e2a_inbound_commit_transactions_count{}": 1,
        "e2a_inbound_commit_transactions_bucket{le=+Inf}": 1,
        "e2a_inbound_messages_stored_total{}": 1,
        "e2a_deliveries_total{channel=webhook,outcome=delivered}": 1,
        "e2a_deliveries_total{channel=webhook_v1,outcome=delivered}": 1,
        "e2a_webhook_attempts_total{outcome=delivered,status_class=2xx}": 1,
        "e2a_webhook_attempt_duration_seconds_count{}": 1,
        "e2a_webhook_attempt_duration_seconds_bucket{le=+Inf}": 1,
        f"e2a_http_request_duration_seconds_count{{{agent_route}}}": 1,
        f"e2a_http_request_duration_seconds_bucket{{le=+Inf,{agent_route}}}": 1,
        f"e2a_http_responses_total{{{agent_route},status=200}}": 1,
        # The API call and the scrapes: e2a files every route outside /v1 under /legacy.
        "e2a_http_requests_total{method=GET,route=/legacy,status_class=2xx}": 1 + scrapes,
    }
    assert value(after, "e2a_smtp_sessions_active") == 0
    assert value(after, "e2a_ws_connections_active") == 0
    assert value(after, "e2a_storage_up") == 1
    for (name, labels), count in after.items():
        if name in ("e2a_queue_jobs", "e2a_queue_depth", "e2a_queue_oldest_age_seconds"):
            assert count == 0, (name, labels)


SHARED_FAMILIES = {"e2a_queue_jobs", "e2a_queue_depth", "e2a_queue_oldest_age_seconds"}
"""The metrics read from the database at each scrape; every other one is the replica's own."""


def test_every_metric_says_whether_it_is_the_replicas_own_or_shared() -> None:
    """With several replicas, a counter must be summed and a queue gauge must not: each HELP
    says which it is."""
    scopes = {
        family.name: family.documentation[-len(SHARED) :]
        if family.name in SHARED_FAMILIES
        else family.documentation[-len(PER_REPLICA) :]
        for family in Metrics().registry.collect()
    }
    assert scopes.keys() >= SHARED_FAMILIES
    assert {
        name: scope
        for name, scope in scopes.items()
        if scope != (SHARED if name in SHARED_FAMILIES else PER_REPLICA)
    } == {}
