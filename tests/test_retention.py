"""Retention: the sweep deletes what is older than `retention.days`, in batches, on every
backend — and never mail with work pending, mail awaiting approval, or anything recent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from e2a_gateway.clock import format_timestamp
from e2a_gateway.events import RETENTION_SECONDS as EVENT_RETENTION_SECONDS
from e2a_gateway.gateway import Gateway, open_gateway
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.storage.base import (
    AgentChanges,
    AgentPurge,
    Feedback,
    FinishedAttempt,
    SendAttempt,
    Storage,
    SubscriberAttempt,
    SubscriberStatus,
    Webhook,
    WebhookAttempt,
    WebhookChanges,
)
from e2a_gateway.storage.sqlite import SqliteStorage
from e2a_gateway.workers.approvals import ApprovalWorker
from e2a_gateway.workers.retention import RetentionWorker, SweepResult
from tests.conftest import make_settings
from tests.databases import full_scans, query, traced_statements
from tests.delivery_support import queued_jobs, through_a_failing_database, wait_until
from tests.test_storage import (  # noqa: F401  (storage_url is a fixture)
    BIG,
    add_user,
    make_agent,
    make_message,
    make_outbound,
    raw_table,
    storage_url,
)

pytestmark = pytest.mark.backend_independent

NOW = 1_800_000_000.0
DAY = 86_400.0
OLD = NOW - 40 * DAY
RECENT = NOW - DAY


@pytest.fixture
async def gateway(tmp_path: Path, storage_url: str) -> AsyncIterator[Gateway]:  # noqa: F811
    """A gateway on each backend keeping 30 days of mail (no listeners: the test drives it)."""
    settings = make_settings(tmp_path, database={"url": storage_url}, retention={"days": 30})
    async with open_gateway(settings, FixtureResolver()) as opened:
        yield opened


async def store_at(storage: Storage, message_id: str, agent: str, at: float) -> None:
    """Store one inbound message received at `at` (a cloud agent's gets its webhook job)."""
    message = replace(make_message(message_id, agent), received_at=format_timestamp(at))
    await storage.store_inbound([message], at)


async def inbound_ids(storage: Storage, user_id: str, agent: str) -> list[str]:
    page = await storage.list_inbound(user_id, agent, "all", 100, None)
    return [message.id for message in page.messages]


async def deliver(storage: Storage, message_id: str, at: float, outcome: str) -> None:
    """Claim the message's webhook job and record one attempt made at `at`."""
    jobs = await storage.claim_webhook_jobs(at, None, 60, {}, 16)
    (job,) = [job for job in jobs if job.message_id == message_id]
    attempt = WebhookAttempt(
        1, format_timestamp(at), 500 if outcome == "retrying" else 200, None, 5
    )
    retry_at = at + 3600 if outcome == "retrying" else None
    await storage.finish_webhook_attempts(
        [FinishedAttempt(job.id, message_id, attempt, outcome, retry_at, job.leased_until)]  # type: ignore[arg-type]
    )


async def test_old_mail_goes_recent_and_pending_mail_stays(gateway: Gateway) -> None:
    storage = gateway.storage
    alice = await add_user(storage, "alice@example.com")
    bob = await add_user(storage, "bob@example.com")
    await storage.add_agent(make_agent(alice, "local@agents.test"))
    await storage.add_agent(make_agent(alice, "cloud@agents.test", "cloud"))
    await storage.add_agent(make_agent(bob, "bob@agents.test"))
    await store_at(storage, "msg_old", "local@agents.test", OLD)
    await store_at(storage, "msg_recent", "local@agents.test", RECENT)
    await store_at(storage, "msg_delivered", "cloud@agents.test", OLD)
    await deliver(storage, "msg_delivered", OLD + 60, "delivered")
    await store_at(storage, "msg_retrying", "cloud@agents.test", OLD)
    await deliver(storage, "msg_retrying", OLD + 60, "retrying")
    await store_at(storage, "msg_bob", "bob@agents.test", RECENT)
    old_outbound = {"out_sent": "sent", "out_pending": "pending_approval", "out_queued": "queued"}
    for message_id, status in old_outbound.items():
        message = make_outbound(alice, "local@agents.test", message_id, status)
        await storage.add_outbound(replace(message, created_at=format_timestamp(OLD)))
    # The approval notice is sent: only "awaiting approval" protects the pending message now.
    (notice,) = await storage.claim_jobs("approval_notice", NOW, 10, 60)
    await storage.finish_job(notice.id, None)

    swept = await RetentionWorker(gateway, pause=0).sweep(NOW)

    # Events older than 30 days go too: three email.received, one email.review_requested.
    assert swept == SweepResult(messages=3, webhook_attempts=1, events=4)
    assert await inbound_ids(storage, alice, "local@agents.test") == ["msg_recent"]
    assert await inbound_ids(storage, alice, "cloud@agents.test") == ["msg_retrying"]
    assert await storage.webhook_attempts(alice, "msg_delivered") == []
    # The retrying message keeps its job; its old attempt record is gone all the same.
    assert await storage.webhook_attempts(alice, "msg_retrying") == []
    assert await queued_jobs(storage) == {"webhook": 1, "outbound": 1}
    assert await storage.get_outbound(alice, "out_sent") is None
    for kept in ("out_pending", "out_queued"):
        message = await storage.get_outbound(alice, kept)
        assert message is not None and message.body_text == "draft body"
    assert await inbound_ids(storage, bob, "bob@agents.test") == ["msg_bob"]
    assert await storage.read_inbound(bob, "bob@agents.test", "msg_bob") is not None
    assert await RetentionWorker(gateway, pause=0).sweep(NOW) == SweepResult(0, 0)


async def test_an_auto_approval_goes_once_handed_on_not_before(gateway: Gateway) -> None:
    storage = gateway.storage
    alice = await add_user(storage, "alice@example.com")
    await storage.add_agent(make_agent(alice, "keen@agents.test"))
    await storage.update_agent(
        alice, "keen@agents.test", AgentChanges(hitl_expiration_action="approve")
    )
    for message_id in ("out_handed_on", "out_retrying"):
        message = make_outbound(alice, "keen@agents.test", message_id, "pending_approval", OLD)
        await storage.add_outbound(replace(message, created_at=format_timestamp(OLD)))
    for notice in await storage.claim_jobs("approval_notice", NOW, 10, 60):
        await storage.finish_job(notice.id, None)
    await storage.expire_outbound(OLD + 60)
    jobs = {job.message_id: job for job in await storage.claim_jobs("outbound", NOW, 10, 60)}
    await storage.finish_outbound(
        [
            SendAttempt(jobs["out_handed_on"].id, "out_handed_on", "sent", "smtp", None, None),
            SendAttempt(
                jobs["out_retrying"].id, "out_retrying", "retry", "smtp", "451 busy", NOW + 60
            ),
        ]
    )

    swept = await RetentionWorker(gateway, pause=0).sweep(NOW)
    assert (swept.messages, swept.webhook_attempts) == (1, 0)

    assert await storage.get_outbound(alice, "out_handed_on") is None
    retrying = await storage.get_outbound(alice, "out_retrying")
    assert retrying is not None and retrying.status == "expired_approved"
    assert retrying.body_text == "draft body" and retrying.sent_at is None


async def test_the_window_is_retention_days(gateway: Gateway) -> None:
    storage = gateway.storage
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    await store_at(storage, "msg_31_days", "a@agents.test", NOW - 31 * DAY)
    await store_at(storage, "msg_29_days", "a@agents.test", NOW - 29 * DAY)

    assert (await RetentionWorker(gateway, pause=0).sweep(NOW)).messages == 1
    assert await inbound_ids(storage, alice, "a@agents.test") == ["msg_29_days"]
    assert (await RetentionWorker(gateway, pause=0).sweep(NOW + 2 * DAY)).messages == 1
    assert await inbound_ids(storage, alice, "a@agents.test") == []


async def test_mail_held_for_review_counts_its_days_from_its_release(gateway: Gateway) -> None:
    """Released late (its agent sat in the trash, say), held mail is delivered for the whole
    window, not deleted by the next sweep for having arrived long ago."""
    storage = gateway.storage
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    held = replace(
        make_message("msg_held", "a@agents.test"),
        received_at=format_timestamp(NOW - 31 * DAY),
        hold_expires_at=NOW + DAY,
    )
    await storage.store_inbound([held], NOW - 31 * DAY)
    released = await storage.release_inbound(alice, "msg_held", True, NOW)
    assert released is not None
    assert (await RetentionWorker(gateway, pause=0).sweep(NOW + DAY)).messages == 0
    assert await inbound_ids(storage, alice, "a@agents.test") == ["msg_held"]
    assert (await RetentionWorker(gateway, pause=0).sweep(NOW + 31 * DAY)).messages == 1
    assert await inbound_ids(storage, alice, "a@agents.test") == []


async def test_a_large_backlog_goes_in_small_batches(gateway: Gateway) -> None:
    storage = gateway.storage
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    batch = [
        replace(make_message(f"msg_{n}", "a@agents.test"), received_at=format_timestamp(OLD + n))
        for n in range(7)
    ]
    await storage.store_inbound(batch, OLD)
    calls: list[int] = []
    delete = storage.delete_messages_before

    async def counting_delete(cutoff: str, limit: int) -> int:
        deleted = await delete(cutoff, limit)
        calls.append(deleted)
        return deleted

    storage.delete_messages_before = counting_delete  # type: ignore[method-assign]
    swept = await RetentionWorker(gateway, pause=0, batch_size=3).sweep(NOW)

    assert swept.messages == 7 and calls == [3, 3, 1]
    assert await inbound_ids(storage, alice, "a@agents.test") == []
    exposed = gateway.metrics.render(None, storage_up=False).decode()
    assert 'e2a_retention_deleted_total{kind="messages"} 7.0' in exposed


async def test_the_running_worker_sweeps_at_start_with_its_clock(gateway: Gateway) -> None:
    storage = gateway.storage
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    await store_at(storage, "msg_old", "a@agents.test", OLD)
    await store_at(storage, "msg_recent", "a@agents.test", RECENT)

    async def swept() -> bool:
        return await inbound_ids(storage, alice, "a@agents.test") == ["msg_recent"]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(RetentionWorker(gateway, clock=lambda: NOW, pause=0).run)
        await wait_until(swept)
        nursery.cancel_scope.cancel()


async def test_a_sweep_the_database_fails_is_said_once_and_made_at_the_next_tick(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    """The database fails the sweep (another connection holds it): the worker says so once, as
    a warning without a traceback or anything of the mail, is neither ended nor restarted, and
    its next sweep deletes what the failed one could not."""
    storage = gateway.storage
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    await store_at(storage, "msg_old", "a@agents.test", OLD)
    await store_at(storage, "msg_recent", "a@agents.test", RECENT)
    worker = RetentionWorker(gateway, clock=lambda: NOW, pause=0, interval_seconds=0.1)

    async def swept() -> bool:
        return await inbound_ids(storage, alice, "a@agents.test") == ["msg_recent"]

    url = gateway.settings.database.url
    running = ("retention worker", worker.run)
    await through_a_failing_database(caplog, url, "messages", running, "retention", swept)
    assert "msg_old" not in caplog.text


async def test_raw_bytes_shared_by_recipients_go_with_the_last_of_them(
    gateway: Gateway,
    storage_url: str,  # noqa: F811
) -> None:
    """One message to three agents is stored once; the sweep removing two of the rows keeps
    the bytes for the third, which still reads them, and removing the third removes them."""
    storage = gateway.storage
    alice = await add_user(storage)
    agents = [f"a{n}@agents.test" for n in range(3)]
    for agent in agents:
        await storage.add_agent(make_agent(alice, agent))
    received = [OLD, OLD, RECENT]
    await storage.store_inbound(
        [
            replace(make_message(f"msg_{n}", agent, BIG), received_at=format_timestamp(at))
            for n, (agent, at) in enumerate(zip(agents, received, strict=True))
        ],
        OLD,
    )
    assert raw_table(storage_url) == (1, len(BIG))

    assert (await RetentionWorker(gateway, pause=0).sweep(NOW)).messages == 2
    assert raw_table(storage_url) == (1, len(BIG))
    kept = await storage.read_inbound(alice, "a2@agents.test", "msg_2")
    assert kept is not None and kept.raw_message == BIG

    assert (await RetentionWorker(gateway, pause=0).sweep(NOW + 30 * DAY)).messages == 1
    assert raw_table(storage_url) == (0, 0)


async def test_idempotency_keys_go_a_day_after_they_completed(gateway: Gateway) -> None:
    """Whatever `retention.days` says: kept at least 24 hours (e2a's published floor), then
    swept."""
    storage = gateway.storage
    alice = await add_user(storage)
    for key, at in [("yesterday", NOW - DAY - 60), ("today", NOW - DAY + 60)]:
        claim = await storage.claim_idempotency_key(alice, key, "r", at, 0.0)
        assert claim.token is not None
        await storage.complete_idempotency_key(alice, key, claim.token, 200, b"x", at)
    swept = await RetentionWorker(gateway, pause=0).sweep(NOW)
    assert swept == SweepResult(0, 0, idempotency_keys=1)
    assert (await storage.claim_idempotency_key(alice, "today", "r", NOW, 0.0)).outcome == "replay"
    fresh = await storage.claim_idempotency_key(alice, "yesterday", "other", NOW, 0.0)
    assert fresh.outcome == "acquired"


async def test_sign_outs_go_once_their_sessions_have_expired(gateway: Gateway) -> None:
    """Whatever `retention.days` says: a record of a signed-out session is needed only until
    the session would have expired anyway."""
    storage = gateway.storage
    alice = await add_user(storage)
    await storage.sign_out_session(alice, "expired", NOW - 1)
    await storage.sign_out_session(alice, "live", NOW + 60)
    swept = await RetentionWorker(gateway, pause=0).sweep(NOW)
    assert swept == SweepResult(0, 0, signouts=1)
    assert not await storage.session_signed_out(alice, "expired")
    assert await storage.session_signed_out(alice, "live")
    assert (await RetentionWorker(gateway, pause=0).sweep(NOW + 61)).signouts == 1


async def test_feedback_goes_after_retention_days(gateway: Gateway) -> None:
    storage = gateway.storage
    for name, at in [("old", OLD), ("recent", RECENT)]:
        entry = Feedback(f"fbk_{name}", "general", name, None, format_timestamp(at))
        await storage.add_feedback(entry)
    swept = await RetentionWorker(gateway, pause=0).sweep(NOW)
    assert swept == SweepResult(0, 0, feedback=1)
    assert [entry.id for entry in await storage.list_feedback(10)] == ["fbk_recent"]


async def settled_delivery(
    storage: Storage,
    webhook: Webhook,
    at: float,
    outcome: SubscriberStatus,
    retry_at: float = NOW + 3600,
) -> str:
    """Queue one `/v1` delivery to `webhook` at `at` and attempt it once, leaving it `outcome`
    (`pending`: a retry due at `retry_at`, by default after the sweep)."""
    delivery_id = await storage.add_test_delivery(
        webhook.user_id, webhook.id, f"evt_{outcome}_{at}", "email.received", b"{}", at
    )
    assert delivery_id is not None
    (claimed,) = await storage.claim_subscriber_deliveries(at, None, 60.0, {}, 1000)
    code = 200 if outcome == "delivered" else 500
    due = retry_at if outcome == "pending" else None
    await storage.finish_subscriber_attempts(
        [
            SubscriberAttempt(
                claimed.delivery.id, 1, at, code, None, 3, outcome, due, claimed.leased_until
            )
        ]
    )
    return delivery_id


async def test_settled_webhook_deliveries_go_with_the_events_pending_ones_stay(
    gateway: Gateway,
) -> None:
    """A delivery to a `/v1` webhook holds a copy of its event's envelope (sender, recipients,
    subject): delivered or failed for good, it goes when its event does, after 30 days; one
    still pending is left to the delivery worker."""
    storage = gateway.storage
    alice = await add_user(storage)
    webhook = Webhook(
        "wh_1", alice, "https://hooks.example.com/x", "", ["email.received"], [], [], True, "s", ""
    )
    await storage.add_webhook(webhook, 20)
    past_window = NOW - EVENT_RETENTION_SECONDS - 60
    await settled_delivery(storage, webhook, past_window, "delivered")
    await settled_delivery(storage, webhook, past_window, "failed")
    pending = await settled_delivery(storage, webhook, past_window, "pending")
    recent = await settled_delivery(storage, webhook, RECENT, "delivered")

    swept = await RetentionWorker(gateway, pause=0, batch_size=1).sweep(NOW)

    kept = await storage.delivery_page(alice, webhook.id, None, 10, None)
    assert kept is not None and [delivery.id for delivery in kept] == [recent, pending]
    assert swept == SweepResult(0, 0, webhook_deliveries=2)
    exposed = gateway.metrics.render(None, storage_up=False).decode()
    assert 'e2a_retention_deleted_total{kind="webhook_deliveries"} 2.0' in exposed


async def test_deliveries_waiting_for_a_disabled_webhook_go_with_their_events(
    gateway: Gateway,
) -> None:
    """A disabled webhook's deliveries wait unattempted, so they never settle: past 30 days
    once their next attempt has been due for 30 days they go, as their events have (their
    copies of the envelope with them), rather than be kept for as long as the webhook stays
    off, and are not sent months late once it is enabled again. A recent one still waits."""
    storage = gateway.storage
    alice = await add_user(storage)
    webhook = Webhook(
        "wh_1", alice, "https://hooks.example.com/x", "", ["email.received"], [], [], True, "s", ""
    )
    await storage.add_webhook(webhook, 20)
    past_window = NOW - EVENT_RETENTION_SECONDS - 60
    recent = await settled_delivery(storage, webhook, RECENT, "pending", RECENT + 60)
    await settled_delivery(storage, webhook, past_window, "pending", past_window + 30)
    changed = await storage.update_webhook(alice, webhook.id, WebhookChanges(enabled=False), NOW)
    assert changed is not None and not changed.enabled

    swept = await RetentionWorker(gateway, pause=0, batch_size=1).sweep(NOW)

    kept = await storage.delivery_page(alice, webhook.id, None, 10, None)
    assert kept is not None and [delivery.id for delivery in kept] == [recent]
    assert swept == SweepResult(0, 0, webhook_deliveries=1)


async def test_an_agent_with_much_mail_is_purged_over_bounded_transactions(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Purging an agent from the trash holds the database (SQLite's single writer) for as
    long as its transaction takes: an agent that kept more mail than one batch goes over
    several transactions, each deleting at most a batch of rows (its messages first, the
    agent last), with the sweep's pause in between, until nothing of it is left; the next
    agent in the trash goes on in the same transactions."""
    storage = gateway.storage
    alice = await add_user(storage)
    for address, count in (("big@agents.test", 12), ("small@agents.test", 2)):
        await storage.add_agent(make_agent(alice, address, "cloud"))
        for number in range(count):
            await store_at(storage, f"msg_{address[0]}{number}", address, RECENT)
    for at, address in ((OLD, "big@agents.test"), (OLD + 1, "small@agents.test")):
        assert await storage.trash_agent(alice, address, format_timestamp(at)) is not None
    purge = storage.purge_agents_trashed_before
    batches: list[AgentPurge] = []

    async def counted(cutoff: str, limit: int) -> AgentPurge:
        batches.append(await purge(cutoff, limit))
        return batches[-1]

    monkeypatch.setattr(storage, "purge_agents_trashed_before", counted)

    swept = await RetentionWorker(gateway, pause=0, batch_size=5).sweep(NOW)

    assert swept.trashed_agents == 2
    assert batches == [
        AgentPurge(messages=5),
        AgentPurge(messages=5),
        AgentPurge(agents=1, messages=4),  # big's last two, big, then small's two
        AgentPurge(agents=1),
    ]
    assert await storage.list_agents(alice, trashed=True) == []
    url = gateway.settings.database.url
    assert query(url, "SELECT count(*) FROM messages") == [(0,)]
    assert query(url, "SELECT count(*) FROM jobs") == [(0,)]


async def test_a_purge_stopped_half_way_goes_on_where_it_stopped(gateway: Gateway) -> None:
    """A gateway stopped in the middle of purging an agent (its earlier transactions
    committed) keeps the agent in the trash with the mail not yet purged; the next sweep
    purges the rest and then the agent."""
    storage = gateway.storage
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "big@agents.test"))
    for number in range(7):
        await store_at(storage, f"msg_{number}", "big@agents.test", RECENT)
    await storage.trash_agent(alice, "big@agents.test", format_timestamp(OLD))
    cutoff = format_timestamp(NOW - 30 * DAY)

    assert await storage.purge_agents_trashed_before(cutoff, 5) == AgentPurge(messages=5)

    assert [agent.email for agent in await storage.list_agents(alice, trashed=True)] == [
        "big@agents.test"
    ]
    url = gateway.settings.database.url
    assert query(url, "SELECT count(*) FROM messages") == [(2,)]
    swept = await RetentionWorker(gateway, pause=0, batch_size=5).sweep(NOW)
    assert swept.trashed_agents == 1
    assert query(url, "SELECT count(*) FROM messages") == [(0,)]


PARTIAL_INDEXES = frozenset({"messages_held", "messages_outbound_status"})
"""Indexes holding only the rows a sweep is after (mail held or awaiting approval): reading one
whole reads those rows alone."""


async def test_the_sweeps_read_what_they_look_for_not_the_whole_mailbox(tmp_path: Path) -> None:
    """The retention sweep (hourly) and the approval worker's expiry pass (every 15 s) run
    while the mailbox grows, the retention sweep under SQLite's write lock: each statement
    they run finds its rows through an index, never by reading every message or event of the
    gateway. (Finding no old mail in the trash, or no old event, once read them all.)"""
    url = f"sqlite:///{tmp_path / 'e2a.db'}"
    settings = make_settings(tmp_path, database={"url": url}, retention={"days": 30})
    async with open_gateway(settings, FixtureResolver()) as gateway:
        storage = gateway.storage
        assert isinstance(storage, SqliteStorage)
        alice = await add_user(storage)
        await storage.add_agent(make_agent(alice, "local@agents.test"))
        await store_at(storage, "msg_recent", "local@agents.test", RECENT)
        await storage.trash_message(alice, "local@agents.test", "msg_recent", format_timestamp(NOW))
        with traced_statements(storage) as reads:
            await RetentionWorker(gateway, pause=0).sweep(NOW)
            await ApprovalWorker(gateway, clock=lambda: NOW).expire_due(NOW)
    assert any("deleted_at <" in sql for sql in reads) and any(
        "hold_expires_at" in sql for sql in reads
    )
    assert full_scans(tmp_path / "e2a.db", reads, PARTIAL_INDEXES) == []
