"""e2a's auto-disable of `/v1` webhooks failing chronically: the rule in storage on both
backends (deliveries failed for good, none delivered, in the window; once across replicas),
and end to end over HTTP: a receiver on 127.0.0.1 that keeps failing, the delivery worker and
the sweep driven at times the test chooses, the view, the re-enable cooldown through the 5.8.1
SDK, and deliveries that stop and resume. The MCP tools show the same."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import trio

from e2a_gateway.app import RunningGateway
from e2a_gateway.clock import format_timestamp
from e2a_gateway.ids import new_id
from e2a_gateway.operations.caller import authenticate
from e2a_gateway.operations.webhooks import (
    AUTO_DISABLE_FAILED,
    AUTO_DISABLE_WINDOW_SECONDS,
    REENABLE_COOLDOWN_SECONDS,
)
from e2a_gateway.storage import open_storage
from e2a_gateway.storage.base import (
    CoolingDown,
    Storage,
    SubscriberAttempt,
    SubscriberStatus,
    Webhook,
    WebhookChanges,
)
from e2a_gateway.storage.sql.subscribers import CHRONICALLY_FAILING
from e2a_gateway.workers.subscribers import SubscriberWorker
from e2a_gateway.workers.webhook_auto_disable import AutoDisableSweep
from e2a_gateway.workers.webhook_connections import WebhookConnections
from tests.conftest import Account
from tests.databases import fresh_postgres_database
from tests.delivery_support import QuietGateway, through_a_failing_database
from tests.http_receiver import Answer, HttpReceiver, Received
from tests.mcp_support import call, failure
from tests.sdk_v1 import error, run_sdk, sdk5_python, value
from tests.test_mcp_names import TRANSPORTS, opener
from tests.test_storage import make_webhook, storage, storage_url
from tests.webhook_support import FakeClock, alice, quiet, settings

__all__ = ["alice", "quiet", "sdk5_python", "settings", "storage", "storage_url"]  # fixtures

NOW = 1_800_000_000.0
WINDOW_START = NOW - AUTO_DISABLE_WINDOW_SECONDS
FROZEN_DELAYS = [60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 8 * 3600.0, 16 * 3600.0]
"""e2a's retry steps: after the last, a delivery has failed for good."""


# --- the rule, in storage, on both backends ------------------------------------------------


async def new_user(storage: Storage, name: str) -> str:
    user, _ = await storage.ensure_user(
        f"usr_{name}", f"{name}@example.com", "2026-01-01T00:00:00Z"
    )
    return user.id


async def new_webhook(storage: Storage, user_id: str, name: str) -> Webhook:
    webhook = make_webhook(user_id, name, f"https://hooks.example.com/{name}")
    await storage.add_webhook(webhook, 20)
    return webhook


async def settle(
    storage: Storage, webhook: Webhook, outcomes: list[SubscriberStatus], at: float
) -> list[str]:
    """Queue one delivery to `webhook` per outcome at `at`, attempt each and leave it so:
    `failed` (for good), `delivered`, or `pending` (an attempt failed, a retry due later)."""
    queued = [
        await storage.add_test_delivery(
            webhook.user_id, webhook.id, new_id("evt"), "email.received", b"{}", at
        )
        for _ in outcomes
    ]
    claimed = await storage.claim_subscriber_deliveries(at, None, 60.0, {}, 1000)
    assert sorted(item.delivery.id for item in claimed) == sorted(queued)
    await storage.finish_subscriber_attempts(
        [
            SubscriberAttempt(
                str(delivery_id),
                1,
                at,
                200 if outcome == "delivered" else 500,
                None if outcome == "delivered" else "HTTP 500",
                3,
                outcome,
                at + 10 * 86_400 if outcome == "pending" else None,
                claimed[0].leased_until,
            )
            for delivery_id, outcome in zip(queued, outcomes, strict=True)
        ]
    )
    return [str(delivery_id) for delivery_id in queued]


async def sweep(storage: Storage, now: float) -> list[Webhook]:
    return await storage.disable_failing_webhooks(
        now, now - AUTO_DISABLE_WINDOW_SECONDS, AUTO_DISABLE_FAILED
    )


async def test_the_sweep_turns_off_only_webhooks_failing_for_good_without_success(
    storage: Storage,
) -> None:
    alice = await new_user(storage, "alice")
    bob = await new_user(storage, "bob")
    recent = NOW - 3600
    chronic = await new_webhook(storage, alice, "chronic")
    await settle(storage, chronic, ["failed"] * 10, recent)
    bobs = await new_webhook(storage, bob, "bobs")  # the sweep serves every account
    await settle(storage, bobs, ["failed"] * 12 + ["pending"] * 3, recent)
    recovered = await new_webhook(storage, alice, "recovered")
    await settle(storage, recovered, ["failed"] * 10 + ["delivered"], recent)
    nine = await new_webhook(storage, alice, "nine")
    await settle(storage, nine, ["failed"] * 9 + ["pending"] * 5, recent)
    retrying = await new_webhook(storage, alice, "retrying")  # attempts failed, not for good
    await settle(storage, retrying, ["pending"] * 12, recent)
    old = await new_webhook(storage, alice, "old")  # made when the window opens: not after it
    await settle(storage, old, ["failed"] * 10, WINDOW_START)
    await settle(storage, old, ["failed"] * 9, recent)
    success_long_ago = await new_webhook(storage, alice, "success_long_ago")
    await settle(storage, success_long_ago, ["delivered"], WINDOW_START - 1)
    await settle(storage, success_long_ago, ["failed"] * 10, recent)
    paused = await new_webhook(storage, alice, "paused")  # turned off by hand: left alone
    await settle(storage, paused, ["failed"] * 10, recent)
    await storage.update_webhook(alice, paused.id, WebhookChanges(enabled=False), NOW)

    disabled = await sweep(storage, NOW)

    assert sorted(webhook.id for webhook in disabled) == [bobs.id, chronic.id, success_long_ago.id]
    assert all(not item.enabled and item.auto_disabled_at == NOW for item in disabled)
    assert await sweep(storage, NOW + 300) == []  # each is turned off once
    shown = await storage.get_webhook(alice, chronic.id)
    assert shown is not None and (shown.enabled, shown.auto_disabled_at) == (False, NOW)
    for untouched in (recovered, nine, retrying, old):
        left = await storage.get_webhook(alice, untouched.id)
        assert left is not None and (left.enabled, left.auto_disabled_at) == (True, None)
    by_hand = await storage.get_webhook(alice, paused.id)
    assert by_hand is not None and (by_hand.enabled, by_hand.auto_disabled_at) == (False, None)


async def test_enabling_waits_out_the_cooldown_then_clears_the_mark(storage: Storage) -> None:
    alice = await new_user(storage, "alice")
    chronic = await new_webhook(storage, alice, "chronic")
    await settle(storage, chronic, ["failed"] * 10, NOW - 60)
    await sweep(storage, NOW)
    cooling = NOW + REENABLE_COOLDOWN_SECONDS - 1  # 4 min 59 s after

    with pytest.raises(CoolingDown):
        await storage.update_webhook(
            alice,
            chronic.id,
            WebhookChanges(enabled=True, description="fixed"),
            cooling - REENABLE_COOLDOWN_SECONDS,
        )
    unchanged = await storage.get_webhook(alice, chronic.id)
    assert unchanged is not None
    assert (unchanged.enabled, unchanged.description, unchanged.auto_disabled_at) == (
        False,
        "",
        NOW,
    )
    described = await storage.update_webhook(
        alice, chronic.id, WebhookChanges(description="fixing"), cooling - REENABLE_COOLDOWN_SECONDS
    )
    assert described is not None and (described.enabled, described.auto_disabled_at) == (False, NOW)

    resumed = await storage.update_webhook(  # 5 minutes to the second: cooled (e2a: `<`)
        alice, chronic.id, WebhookChanges(enabled=True), NOW
    )
    assert resumed is not None and (resumed.enabled, resumed.auto_disabled_at) == (True, None)
    assert (
        await storage.update_webhook(alice, "wh_missing", WebhookChanges(enabled=True), NOW) is None
    )


async def test_a_disabled_webhooks_deliveries_wait_until_it_is_enabled(storage: Storage) -> None:
    alice = await new_user(storage, "alice")
    chronic = await new_webhook(storage, alice, "chronic")
    await settle(storage, chronic, ["failed"] * 10, NOW - 60)
    waiting = await storage.add_test_delivery(
        alice, chronic.id, new_id("evt"), "email.received", b"{}", NOW - 1
    )
    assert [item.id for item in await sweep(storage, NOW)] == [chronic.id]

    assert await storage.claim_subscriber_deliveries(NOW + 86_400, None, 60.0, {}, 1000) == []
    await storage.update_webhook(alice, chronic.id, WebhookChanges(enabled=True), NOW)
    claimed = await storage.claim_subscriber_deliveries(NOW + 1, None, 60.0, {}, 1000)
    assert [(item.delivery.id, item.delivery.attempts) for item in claimed] == [(waiting, 0)]


async def test_sweeps_of_two_replicas_turn_each_webhook_off_once() -> None:
    with fresh_postgres_database() as url:
        first, second = open_storage(url, "replica-a"), open_storage(url, "replica-b")
        try:
            await first.migrate()
            alice = await new_user(first, "alice")
            hooks = [await new_webhook(first, alice, f"chronic{n}") for n in range(8)]
            for webhook in hooks:
                await settle(first, webhook, ["failed"] * 10, NOW - 60)
            results: dict[float, list[Webhook]] = {}

            async def sweep_as(storage: Storage, now: float) -> None:
                results[now] = await sweep(storage, now)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(sweep_as, first, NOW)
                nursery.start_soon(sweep_as, second, NOW + 1)
            turned_off = [(item.id, now) for now, items in results.items() for item in items]
            assert sorted(webhook_id for webhook_id, _ in turned_off) == [w.id for w in hooks]
            for webhook_id, now in turned_off:
                shown = await second.get_webhook(alice, webhook_id)
                assert shown is not None and shown.auto_disabled_at == now
        finally:
            await first.close()
            await second.close()


async def test_a_sweep_the_database_fails_is_said_once_and_made_at_the_next_tick(
    quiet: QuietGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """The database fails the sweep (the webhooks are locked): the sweep says so once, as a
    warning without a traceback, is neither ended nor restarted, and its next round turns the
    failing webhook off."""
    gateway = quiet.gateway
    alice = await new_user(gateway.storage, "alice")
    chronic = await new_webhook(gateway.storage, alice, "chronic")
    now = time.time()
    await settle(gateway.storage, chronic, ["failed"] * 10, now - 60)
    sweep = AutoDisableSweep(gateway, clock=lambda: now, interval_seconds=0.1)

    async def turned_off() -> bool:
        shown = await gateway.storage.get_webhook(alice, chronic.id)
        return shown is not None and shown.auto_disabled_at == now

    url = gateway.settings.database.url
    running = ("webhook auto-disable", sweep.run)
    await through_a_failing_database(
        caplog, url, "webhooks", running, "webhook auto-disable", turned_off
    )


def test_the_sweep_reads_only_settled_deliveries_by_their_index(tmp_path: Path) -> None:
    """SQLite uses the partial index of settled deliveries for the sweep's query."""
    database = tmp_path / "plan.db"

    async def migrate() -> None:
        store = open_storage(f"sqlite:///{database}")
        await store.migrate()
        await store.close()

    trio.run(migrate)
    with closing(sqlite3.connect(database)) as connection:
        plan = [
            row[3]
            for row in connection.execute(
                f"EXPLAIN QUERY PLAN {CHRONICALLY_FAILING}", (NOW, AUTO_DISABLE_FAILED)
            )
        ]
    reads = [step for step in plan if "webhook_deliveries" in step]
    assert reads == [
        "SEARCH webhook_deliveries USING INDEX webhook_deliveries_settled (created_epoch>?)"
    ], plan


# --- end to end over HTTP ------------------------------------------------------------------


class Endpoint:
    """A receiver's answer that the test can fix: 500 until `fixed`."""

    def __init__(self) -> None:
        self.fixed = False

    def __call__(self, request: Received) -> Answer:
        return Answer(200 if self.fixed else 500)


async def queue_tests(alice: Account, webhook_id: str, count: int) -> list[str]:
    """Queue `count` test deliveries to the webhook over HTTP; their ids."""
    ids = []
    for _ in range(count):
        tested = await alice.http.post(f"/v1/webhooks/{webhook_id}/test", json={})
        assert tested.status_code == 200, tested.text
        ids.append(tested.json()["delivery_id"])
    return ids


async def fail_for_good(quiet: QuietGateway, count: int) -> None:
    """Attempt the `count` due deliveries on e2a's whole schedule (a fake clock), so that
    against a failing receiver they end `failed`. The receiver's one host takes a share of
    them at a time, and gives the rest back for the next round."""
    clock = FakeClock(time.time())
    async with WebhookConnections() as connections:
        worker = SubscriberWorker(quiet.gateway, connections, clock=clock, attempt_timeout=5.0)
        for delay in [0.0, *FROZEN_DELAYS]:
            clock.now += delay
            assert await worker.deliver_due(clock.now) == count
            while await worker.deliver_due(clock.now):
                pass


async def deliver_due(quiet: QuietGateway, now: float) -> int:
    async with WebhookConnections() as connections:
        worker = SubscriberWorker(quiet.gateway, connections, attempt_timeout=5.0)
        return await worker.deliver_due(now)


async def webhook(alice: Account, webhook_id: str) -> dict[str, Any]:
    shown = await alice.http.get(f"/v1/webhooks/{webhook_id}")
    assert shown.status_code == 200, shown.text
    found: dict[str, Any] = shown.json()
    return found


async def deliveries(alice: Account, webhook_id: str, status: str) -> list[dict[str, Any]]:
    listed = await alice.http.get(f"/v1/webhooks/{webhook_id}/deliveries?status={status}")
    assert listed.status_code == 200, listed.text
    items: list[dict[str, Any]] = listed.json()["items"]
    return items


async def make_hook(alice: Account, url: str) -> str:
    made = await alice.http.post("/v1/webhooks", json={"url": url, "events": ["email.received"]})
    assert made.status_code == 201, made.text
    assert "auto_disabled_at" not in made.json()
    return str(made.json()["id"])


@pytest.mark.slow
async def test_a_failing_webhook_is_turned_off_cools_down_and_comes_back(
    quiet: QuietGateway, alice: Account, sdk5_python: Path, nursery: trio.Nursery
) -> None:
    endpoint = Endpoint()
    receiver = HttpReceiver(endpoint)
    await nursery.start(receiver.serve)
    sweeper = AutoDisableSweep(quiet.gateway)

    # One webhook failed for good ten times, turned off more than 5 minutes ago.
    cooled = await make_hook(alice, receiver.url + "/cooled")
    await queue_tests(alice, cooled, 10)
    await fail_for_good(quiet, 10)
    (left_waiting,) = await queue_tests(alice, cooled, 1)
    assert await sweeper.sweep(time.time() - REENABLE_COOLDOWN_SECONDS - 1)

    # Another failed for good ten times, turned off now; a third only nine times.
    down = await make_hook(alice, receiver.url + "/down")
    nine = await make_hook(alice, receiver.url + "/nine")
    await queue_tests(alice, down, 10)
    await queue_tests(alice, nine, 9)
    await fail_for_good(quiet, 19)
    (waiting,) = await queue_tests(alice, down, 1)
    now = time.time()
    assert [item.id for item in await sweeper.sweep(now)] == [down]

    shown = await webhook(alice, down)
    assert (shown["enabled"], shown["auto_disabled_at"]) == (False, format_timestamp(now))
    assert "auto_disabled_at" not in await webhook(alice, nine)
    listed = (await alice.http.get("/v1/webhooks")).json()["items"]
    assert [item.get("auto_disabled_at") is not None for item in listed] == [False, True, True]
    steps = await run_sdk(
        sdk5_python,
        quiet.http_url,
        {"default": alice.key},
        [
            {"do": "webhooks.get", "args": [down]},
            {"do": "webhooks.update", "args": [down, {"enabled": True, "description": "fixed"}]},
        ],
    )
    assert value(steps[0], "WebhookView")["auto_disabled_at"] is not None
    refused = error(steps[1], "E2AConflictError", "webhook_cooldown", 409)
    assert refused["message"] == (
        "webhook was auto-disabled within the last 5 minutes; wait before re-enabling"
    )
    assert await webhook(alice, down) == shown  # nothing changed

    # Deliveries stop: none is attempted, and none can be tested.
    requests_before = len(receiver.requests)
    assert await deliver_due(quiet, now + 86_400) == 0
    assert len(receiver.requests) == requests_before
    (pending,) = await deliveries(alice, down, "pending")
    assert (pending["id"], pending["attempts"]) == (waiting, 0)
    paused = await alice.http.post(f"/v1/webhooks/{down}/test", json={})
    assert (paused.status_code, paused.json()["error"]["code"]) == (409, "webhook_disabled")

    # Once the cooldown is over, enabling works, clears the mark, and deliveries resume.
    endpoint.fixed = True
    resumed = await alice.http.patch(f"/v1/webhooks/{cooled}", json={"enabled": True})
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["enabled"] is True and "auto_disabled_at" not in resumed.json()
    assert await deliver_due(quiet, time.time()) == 1
    (delivered,) = await deliveries(alice, cooled, "delivered")
    assert delivered["id"] == left_waiting
    assert receiver.requests[-1].target.endswith("/cooled")
    assert await sweeper.sweep(time.time()) == []  # a success in the window keeps it on


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_mcp_tools_show_the_auto_disable_and_its_cooldown(
    transport: str, running: RunningGateway, make_account: Any
) -> None:
    account: Account = await make_account(f"cooling-{transport}@example.com")
    storage = running.gateway.storage
    later = time.time() + 3600  # due after the test: the gateway's own worker leaves them
    user_id = (await authenticate(running.gateway, account.key)).user_id
    async with opener(transport, running)(account.key) as client:
        created = await call(
            client,
            "create_webhook",
            {"url": "https://hooks.example.com/hook", "events": ["email.received"]},
        )
        hook = await storage.get_webhook(user_id, created["id"])
        assert hook is not None
        await settle(storage, hook, ["failed"] * 10, later)
        assert await AutoDisableSweep(running.gateway).sweep(later)

        shown = await call(client, "get_webhook", {"id": hook.id})
        assert (shown["enabled"], shown["auto_disabled_at"]) == (False, format_timestamp(later))
        listed = await call(client, "list_webhooks", {})
        assert listed["webhooks"][0]["auto_disabled_at"] == format_timestamp(later)
        refused = await failure(client, "update_webhook", {"id": hook.id, "enabled": True})
        assert (refused["code"], refused["status"]) == ("webhook_cooldown", 409)
