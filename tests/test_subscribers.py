"""The `/v1` delivery worker under load and faults, against a receiver on 127.0.0.1 and a fake
wall clock: a delivery that waited long for its host's slot is POSTed under a renewed lease, so
no other claimer sends it too; deliveries that overfill a host are given back at once; and a
record that storage fails to commit costs only its own delivery."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections import Counter

import pytest
import trio

from e2a_gateway.storage.base import StorageUnavailable, SubscriberAttempt
from e2a_gateway.workers.subscribers import SubscriberWorker
from e2a_gateway.workers.webhook_connections import WebhookConnections
from e2a_gateway.workers.webhooks import MAX_PER_HOST, MAX_QUEUED_PER_HOST
from tests.conftest import Account
from tests.databases import run_out_leases
from tests.delivery_support import QuietGateway, open_account, wait_until
from tests.http_receiver import HANG, Answer, HttpReceiver, Received, answer_in_turn
from tests.test_webhook_auto_disable import deliveries, make_hook, queue_tests
from tests.webhook_support import FakeClock, alice, quiet, settings

__all__ = ["alice", "quiet", "settings"]  # fixtures

LEASE = 60.0
"""`webhooks.lease_seconds` by default: with a 5 s attempt timeout, the lease of a claim."""


def event_ids(receiver: HttpReceiver) -> Counter[str]:
    """How many times each event was POSTed."""
    return Counter(json.loads(request.body)["id"] for request in receiver.requests)


async def test_a_delivery_that_waited_out_most_of_its_lease_is_posted_once(
    quiet: QuietGateway, alice: Account, nursery: trio.Nursery
) -> None:
    """The ninth delivery to a host waits for a slot until its lease is nearly gone: it is
    renewed as its POST starts, so another replica claiming after the first lease would have
    ended finds nothing to send again."""
    receiver = HttpReceiver(answer_in_turn(*[HANG] * (MAX_PER_HOST + 1), Answer(200)))
    await nursery.start(receiver.serve)
    hook = await make_hook(alice, receiver.url)
    await queue_tests(alice, hook, MAX_PER_HOST + 1)
    clock = FakeClock(time.time())
    with trio.fail_after(10):
        async with WebhookConnections() as connections, trio.open_nursery() as running:
            worker = SubscriberWorker(quiet.gateway, connections, clock=clock, attempt_timeout=5)
            running.start_soon(worker.deliver_due, clock.now)
            await receiver.wait_in_flight(MAX_PER_HOST)  # the ninth waits for a slot
            clock.now += LEASE - 2
            receiver.release()  # the first eight end without answer; the ninth goes

            async def first_eight_recorded() -> bool:
                pending = await deliveries(alice, hook, "pending")
                return sum(item["attempts"] for item in pending) == MAX_PER_HOST

            await wait_until(first_eight_recorded)
            await receiver.wait_in_flight(1)
            clock.now += 3  # the claim's own lease is over, its POST is not
            other = SubscriberWorker(quiet.gateway, connections, clock=clock, attempt_timeout=5)
            assert await other.deliver_due(clock.now) == 0
            receiver.release()
    assert list(event_ids(receiver).values()) == [1] * (MAX_PER_HOST + 1)
    pending = await deliveries(alice, hook, "pending")
    assert [item["attempts"] for item in pending] == [1] * (MAX_PER_HOST + 1)


async def test_deliveries_overfilling_a_host_are_given_back_untouched(
    quiet: QuietGateway, alice: Account, nursery: trio.Nursery
) -> None:
    """Three webhooks on one host: the claim takes each URL's share, the host queues at most
    MAX_QUEUED_PER_HOST and the rest are free again at once, not left leased behind its
    slots."""
    receiver = HttpReceiver()
    await nursery.start(receiver.serve)
    per_hook = MAX_QUEUED_PER_HOST // 2
    for path in ("/a", "/b", "/c"):
        await queue_tests(alice, await make_hook(alice, receiver.url + path), per_hook)
    clock = FakeClock(time.time())
    with trio.fail_after(10):
        async with WebhookConnections() as connections:
            worker = SubscriberWorker(quiet.gateway, connections, clock=clock, attempt_timeout=5)
            assert await worker.deliver_due(clock.now) == 3 * per_hook
            assert len(receiver.requests) == MAX_QUEUED_PER_HOST
            assert await worker.deliver_due(clock.now) == 3 * per_hook - MAX_QUEUED_PER_HOST
    assert list(event_ids(receiver).values()) == [1] * (3 * per_hook)


async def test_a_record_storage_fails_costs_only_its_delivery(
    quiet: QuietGateway,
    alice: Account,
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The commit of one delivery's record fails while another's POST is in flight: the other
    is answered and recorded, and the failed one is left to its lease, then sent again."""

    def reply(request: Received) -> Answer:
        return Answer(200, delay=0.3 if request.target.endswith("/slow") else 0.0)

    receiver = HttpReceiver(reply)
    await nursery.start(receiver.serve)
    fast = await make_hook(alice, receiver.url + "/fast")
    slow = await make_hook(alice, receiver.url + "/slow")
    (unrecorded,) = await queue_tests(alice, fast, 1)
    await queue_tests(alice, slow, 1)
    storage = quiet.gateway.storage
    finish = storage.finish_subscriber_attempts

    async def disk_fails_for_one(finished: list[SubscriberAttempt]) -> None:
        if any(item.delivery_id == unrecorded for item in finished):
            raise StorageUnavailable("sqlite: disk I/O error")
        await finish(finished)

    monkeypatch.setattr(storage, "finish_subscriber_attempts", disk_fails_for_one)
    clock = FakeClock(time.time())
    with trio.fail_after(10), caplog.at_level(logging.ERROR, "e2a.webhooks"):
        async with WebhookConnections() as connections:
            worker = SubscriberWorker(quiet.gateway, connections, clock=clock, attempt_timeout=5)
            assert await worker.deliver_due(clock.now) == 2
            assert len(receiver.requests) == 2
            assert [item["attempts"] for item in await deliveries(alice, slow, "delivered")] == [1]
            assert await worker.deliver_due(clock.now) == 0  # still leased
            monkeypatch.setattr(storage, "finish_subscriber_attempts", finish)
            run_out_leases(quiet.gateway.settings.database.url, LEASE + 1)
            assert await worker.deliver_due(clock.now + LEASE + 1) == 1
    assert f"webhook delivery {unrecorded}: attempt not recorded" in caplog.text
    assert [item["attempts"] for item in await deliveries(alice, fast, "delivered")] == [1]
    assert len(receiver.requests) == 3
    repeats = [request.body for request in receiver.requests if request.target.endswith("/fast")]
    assert len(repeats) == 2 and repeats[0] == repeats[1]  # the same event id: dropped as seen


WAITING_DELIVERY_CHANGES = {
    "webhook deleted": ("DELETE", "/v1/webhooks/{hook}?confirm=DELETE", None),
    "webhook disabled": ("PATCH", "/v1/webhooks/{hook}", {"enabled": False}),
    "account deleted": ("DELETE", "/v1/account?confirm=DELETE", None),
    "webhook moved": ("PATCH", "/v1/webhooks/{hook}", {"url": "{url}/moved"}),
}


@pytest.mark.parametrize("change", WAITING_DELIVERY_CHANGES)
async def test_a_delivery_waiting_for_its_host_is_not_posted_once_its_webhook_is_gone(
    quiet: QuietGateway, alice: Account, nursery: trio.Nursery, change: str
) -> None:
    """alice's delivery is claimed behind eight hanging POSTs (bob's) to the same host, and
    waits for a slot; meanwhile her webhook is deleted, disabled or pointed elsewhere, or her
    account deleted. When the slot frees, the delivery is not POSTed to the URL it was claimed
    for."""
    receiver = HttpReceiver(answer_in_turn(*[HANG] * MAX_PER_HOST, Answer(200)))
    await nursery.start(receiver.serve)
    bob = await open_account(quiet.gateway, quiet.http_url, "bob@example.com")
    clock = FakeClock(time.time())
    method, path, body = WAITING_DELIVERY_CHANGES[change]
    async with bob.http, WebhookConnections() as connections:
        await queue_tests(bob, await make_hook(bob, receiver.url + "/busy"), MAX_PER_HOST)
        hook = await make_hook(alice, receiver.url)
        clock.now = time.time()
        worker = SubscriberWorker(quiet.gateway, connections, clock=clock, attempt_timeout=5)
        with trio.fail_after(10):
            async with trio.open_nursery() as running:
                running.start_soon(worker.deliver_due, clock.now)
                await receiver.wait_in_flight(MAX_PER_HOST)
                (waiting,) = await queue_tests(alice, hook, 1)
                clock.now = time.time()
                running.start_soon(worker.deliver_due, clock.now)
                await wait_until(lambda: worker._in_flight() == MAX_PER_HOST + 1)
                # alice's is claimed, and waits for a slot
                if body is not None:
                    body = {
                        name: value.format(url=receiver.url) if isinstance(value, str) else value
                        for name, value in body.items()
                    }
                changed = await alice.http.request(method, path.format(hook=hook), json=body)
                assert changed.status_code == 200, changed.text
                receiver.release()
        assert [request.target for request in receiver.requests] == ["/hook/busy"] * MAX_PER_HOST
        if change == "webhook moved":  # left to its lease, then sent where it now goes
            run_out_leases(quiet.gateway.settings.database.url, LEASE + 1)
            await worker.deliver_due(clock.now + LEASE + 1)
            moved = [request for request in receiver.requests if request.target == "/hook/moved"]
            assert len(moved) == 1
            assert [item["id"] for item in await deliveries(alice, hook, "delivered")] == [waiting]


def signatures(request: Received, secret: str) -> tuple[int, list[bool]]:
    """The request's signing time, and for each `v1=` of its `X-E2A-Signature` whether it is
    the HMAC-SHA256 of `<t>.<the body bytes received>` keyed by `secret`."""
    fields = [field.partition("=") for field in request.headers["x-e2a-signature"].split(",")]
    (timestamp,) = [value for name, _, value in fields if name == "t"]
    signed = timestamp.encode("ascii") + b"." + request.body
    expected = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    return int(timestamp), [
        hmac.compare_digest(value, expected) for name, _, value in fields if name == "v1"
    ]


async def test_a_rotated_secret_signs_beside_the_old_one_for_24_hours_only(
    quiet: QuietGateway, alice: Account, nursery: trio.Nursery
) -> None:
    """Each delivery is signed over the exact bytes sent at the attempt's own time; after a
    rotation it carries a `v1=` for the new secret and one for the old, and once the 24 hours
    of grace are over, the new one's alone."""
    receiver = HttpReceiver()
    await nursery.start(receiver.serve)
    made = await alice.http.post(
        "/v1/webhooks", json={"url": receiver.url, "events": ["email.received"]}
    )
    assert made.status_code == 201, made.text
    hook, old = made.json()["id"], made.json()["signing_secret"]
    rotated = await alice.http.post(f"/v1/webhooks/{hook}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["signing_secret"]
    start = time.time() + 1
    clock = FakeClock(start)
    async with WebhookConnections() as connections:
        worker = SubscriberWorker(quiet.gateway, connections, clock=clock, attempt_timeout=5)
        for moment in (start, start + 24 * 3600 - 60, start + 24 * 3600 + 60):
            clock.now = moment
            await queue_tests(alice, hook, 1)
            assert await worker.deliver_due(moment) == 1
    during, late, after = await receiver.wait_for(3)
    assert signatures(during, new)[1] == [True, False]
    assert signatures(during, old)[1] == [False, True]
    assert signatures(late, old)[1] == [False, True]
    assert signatures(after, new)[1] == [True]
    assert signatures(after, old)[1] == [False]
    assert signatures(after, new)[0] == int(clock.now)
