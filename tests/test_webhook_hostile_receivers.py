"""Webhook receivers that misbehave, on purpose or not, against real sockets on 127.0.0.1: one
that redirects elsewhere, answers that trickle, break off or ask for a retry in a very long
time (a name whose DNS answer changes after the check: tests/test_webhook_targets.py). Every
attempt stays bounded in time, is recorded with its reason, and nothing reaches a host the
SSRF rules refuse or that the URL does not name."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import trio

from e2a_gateway.workers.subscribers import SubscriberWorker
from e2a_gateway.workers.webhook_connections import WebhookConnections
from e2a_gateway.workers.webhook_policy import delivery_id
from e2a_gateway.workers.webhooks import WebhookWorker
from tests.conftest import Account
from tests.delivery_support import (
    QuietGateway,
    accept,
    create_agent,
    delivery_status,
    mail,
    recorded_attempts,
)
from tests.http_receiver import Answer, HttpReceiver, Trickle
from tests.webhook_support import FakeClock, alice, job_due_at, quiet, receiver, settings

__all__ = ["alice", "quiet", "receiver", "settings"]  # fixtures

WAIT = 10.0
DELIVERY_WINDOW = 24 * 3600.0


@pytest.fixture
async def connections() -> AsyncIterator[WebhookConnections]:
    async with WebhookConnections() as connections:
        yield connections


@pytest.fixture
async def elsewhere(nursery: trio.Nursery) -> HttpReceiver:
    """A second receiver on 127.0.0.1, where a redirect points: it must never be reached."""
    started = HttpReceiver()
    await nursery.start(started.serve)
    return started


async def accept_now(quiet: QuietGateway, agent: str) -> tuple[str, FakeClock]:
    """Accept one message for `agent`; its id, and a fake clock at the time it was stored."""
    message_id = await accept(quiet.gateway, [agent], mail())
    return message_id, FakeClock(time.time())


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_not_followed_nor_its_signature_sent_elsewhere(
    quiet: QuietGateway,
    alice: Account,
    receiver: HttpReceiver,
    elsewhere: HttpReceiver,
    connections: WebhookConnections,
    status: int,
) -> None:
    """A redirect, to another host or to an internal address, is the receiver's answer: a
    final failure of a `webhook_url` delivery (contract/delivery.md), a retry of a `/v1` one
    (any non-2xx), and in both cases the signed request goes nowhere else."""
    receiver.reply = lambda _: Answer(status, {"Location": elsewhere.url + "/stolen"})
    agent = await create_agent(alice, "redirected", receiver.url)
    made = await alice.http.post(
        "/v1/webhooks", json={"url": receiver.url + "/v1", "events": ["email.received"]}
    )
    assert made.status_code == 201, made.text
    message_id, clock = await accept_now(quiet, agent)

    with trio.fail_after(WAIT):
        assert await WebhookWorker(quiet.gateway, connections, clock=clock).deliver_due(clock.now)
        subscribers = SubscriberWorker(quiet.gateway, connections, clock=clock)
        assert await subscribers.deliver_due(clock.now) == 1
    (attempt,) = await recorded_attempts(quiet.gateway, message_id)
    assert (attempt.status_code, attempt.error) == (status, None)
    assert await delivery_status(alice, agent, message_id) == "failed"
    (delivery,) = (await alice.http.get(f"/v1/webhooks/{made.json()['id']}/deliveries")).json()[
        "items"
    ]
    assert (delivery["status"], delivery["last_status_code"]) == ("pending", status)
    assert len(receiver.requests) == 2
    assert elsewhere.requests == []


async def test_an_answer_whose_head_trickles_is_cut_at_the_timeout_and_retried(
    quiet: QuietGateway,
    alice: Account,
    receiver: HttpReceiver,
    connections: WebhookConnections,
) -> None:
    receiver.reply = lambda _: Trickle(0.05)
    agent = await create_agent(alice, "slowloris", receiver.url)
    message_id, clock = await accept_now(quiet, agent)
    worker = WebhookWorker(quiet.gateway, connections, clock=clock, attempt_timeout=1.0)

    started = trio.current_time()
    with trio.fail_after(WAIT):
        assert await worker.deliver_due(clock.now) == 1
    assert trio.current_time() - started < 3.0
    await receiver.wait_in_flight(0)  # the worker hung up on it
    (attempt,) = await recorded_attempts(quiet.gateway, message_id)
    assert (attempt.status_code, attempt.error) == (None, "timeout after 1 s")
    assert await delivery_status(alice, agent, message_id) == "retrying"
    assert job_due_at(quiet.gateway.settings, message_id) is not None


async def test_a_2xx_that_breaks_off_mid_body_is_delivered_once(
    quiet: QuietGateway,
    alice: Account,
    receiver: HttpReceiver,
    connections: WebhookConnections,
) -> None:
    receiver.reply = lambda _: Answer(200, body=b"ok", broken=True)
    agent = await create_agent(alice, "abrupt", receiver.url)
    message_id, clock = await accept_now(quiet, agent)
    worker = WebhookWorker(quiet.gateway, connections, clock=clock, attempt_timeout=5.0)

    with trio.fail_after(WAIT):
        assert await worker.deliver_due(clock.now) == 1
    (attempt,) = await recorded_attempts(quiet.gateway, message_id)
    assert (attempt.status_code, attempt.error) == (200, None)
    assert await delivery_status(alice, agent, message_id) == "delivered"
    assert await worker.deliver_due(clock.now + DELIVERY_WINDOW) == 0
    assert len(receiver.requests) == 1


@pytest.mark.parametrize("retry_after", ["9" * 400, "31536000", "Fri, 31 Dec 9999 23:59:59 GMT"])
async def test_a_huge_retry_after_waits_at_most_until_the_window_ends(
    quiet: QuietGateway,
    alice: Account,
    receiver: HttpReceiver,
    connections: WebhookConnections,
    retry_after: str,
) -> None:
    """A receiver asking for a retry in a year or more is tried again at the end of the 24
    hours, and another agent's delivery on the same host goes on meanwhile."""
    receiver.reply = lambda request: (
        Answer(503, {"Retry-After": retry_after}) if "/busy" in request.target else Answer(200)
    )
    busy = await create_agent(alice, "busy", receiver.url + "/busy")
    calm = await create_agent(alice, "calm", receiver.url + "/calm")
    busy_message, clock = await accept_now(quiet, busy)
    worker = WebhookWorker(quiet.gateway, connections, clock=clock, attempt_timeout=5.0)
    assert await worker.deliver_due(clock.now) == 1
    due = job_due_at(quiet.gateway.settings, busy_message)
    assert due is not None and clock.now + 3600 < due <= clock.now + DELIVERY_WINDOW + 1

    calm_message = await accept(quiet.gateway, [calm], mail())
    assert await worker.deliver_due(clock.now + 1) == 1
    assert await delivery_status(alice, calm, calm_message) == "delivered"
    clock.now = due
    assert await worker.deliver_due(due) == 1
    assert await delivery_status(alice, busy, busy_message) == "failed"


@pytest.mark.parametrize("status", [600, 799, 999])
async def test_a_status_beyond_5xx_is_final(
    quiet: QuietGateway,
    alice: Account,
    receiver: HttpReceiver,
    connections: WebhookConnections,
    status: int,
) -> None:
    """Only 408, 429 and 5xx are retried (contract/delivery.md); a status no HTTP class
    names is final, like other non-2xx answers."""
    receiver.reply = lambda _: Answer(status)
    agent = await create_agent(alice, "odd-status", receiver.url)
    message_id, clock = await accept_now(quiet, agent)
    worker = WebhookWorker(quiet.gateway, connections, clock=clock, attempt_timeout=5.0)

    assert await worker.deliver_due(clock.now) == 1
    (attempt,) = await recorded_attempts(quiet.gateway, message_id)
    assert attempt.status_code == status
    assert await delivery_status(alice, agent, message_id) == "failed"


OVERFLOWING_DATES = [
    "Fri, 31 Dec 99999999999999999999 23:59:59 GMT",
    "Fri, 31 Dec 2030 99999999999999999999:59:59 GMT",
    "Fri, 31 Dec 2030 23:59:59 +99999999999999999999",
]
"""Retry-After dates whose numbers no C integer holds."""


@pytest.mark.parametrize("retry_after", OVERFLOWING_DATES)
async def test_a_retry_after_date_beyond_any_calendar_is_ignored_and_the_worker_goes_on(
    quiet: QuietGateway,
    alice: Account,
    receiver: HttpReceiver,
    connections: WebhookConnections,
    retry_after: str,
) -> None:
    """A receiver's unreadable Retry-After is no Retry-After: its delivery is retried on the
    usual schedule, and the worker, the other deliveries and the `/v1` worker go on."""
    receiver.reply = lambda request: (
        Answer(503, {"Retry-After": retry_after}) if "/odd" in request.target else Answer(200)
    )
    odd = await create_agent(alice, "odd-date", receiver.url + "/odd")
    calm = await create_agent(alice, "calm", receiver.url + "/calm")
    made = await alice.http.post(
        "/v1/webhooks", json={"url": receiver.url + "/odd/v1", "events": ["email.received"]}
    )
    assert made.status_code == 201, made.text
    calm_message = await accept(quiet.gateway, [calm], mail())
    odd_message, clock = await accept_now(quiet, odd)
    worker = WebhookWorker(quiet.gateway, connections, clock=clock, attempt_timeout=5.0)
    subscribers = SubscriberWorker(quiet.gateway, connections, clock=clock, attempt_timeout=5.0)

    with trio.fail_after(WAIT):
        assert await worker.deliver_due(clock.now) == 2
        assert await subscribers.deliver_due(clock.now) == 2
    assert await delivery_status(alice, calm, calm_message) == "delivered"
    assert await delivery_status(alice, odd, odd_message) == "retrying"
    due = job_due_at(quiet.gateway.settings, odd_message)
    assert due is not None and clock.now + 24 <= due <= clock.now + 36  # 30 s ± 20 %
    listed = await alice.http.get(f"/v1/webhooks/{made.json()['id']}/deliveries")
    assert [(item["status"], item["last_status_code"]) for item in listed.json()["items"]] == [
        ("pending", 503)
    ] * 2


async def test_a_2xx_after_the_timeout_is_a_timeout_and_the_retry_is_the_same_delivery(
    quiet: QuietGateway,
    alice: Account,
    receiver: HttpReceiver,
    connections: WebhookConnections,
) -> None:
    """A receiver that answers 200 only after the attempt gave up gets the delivery again
    (the same delivery id, the next attempt number), and it counts as delivered once."""
    receiver.reply = lambda request: Answer(
        200, delay=1.5 if request.headers["x-e2a-delivery-attempt"] == "1" else 0.0
    )
    agent = await create_agent(alice, "late", receiver.url)
    message_id, clock = await accept_now(quiet, agent)
    worker = WebhookWorker(quiet.gateway, connections, clock=clock, attempt_timeout=0.5)

    with trio.fail_after(WAIT):
        assert await worker.deliver_due(clock.now) == 1
        await receiver.wait_in_flight(0)
        due = job_due_at(quiet.gateway.settings, message_id)
        assert due is not None
        clock.now = due
        assert await worker.deliver_due(due) == 1
    attempts = await recorded_attempts(quiet.gateway, message_id)
    assert [(a.attempt, a.status_code, a.error) for a in attempts] == [
        (1, None, "timeout after 0.5 s"),
        (2, 200, None),
    ]
    assert await delivery_status(alice, agent, message_id) == "delivered"
    assert await worker.deliver_due(clock.now + DELIVERY_WINDOW) == 0
    assert {request.headers["x-e2a-delivery-id"] for request in receiver.requests} == {
        delivery_id(message_id)
    }
