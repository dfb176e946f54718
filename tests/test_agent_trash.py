"""What happens to an agent's mail in flight when the agent goes to the trash, over real SMTP
and HTTP on both faces: its held drafts and inbound holds leave the review queue (no review,
no expiry) and come back on restore with their deadlines moved on by the time spent in the
trash; its queued sends are cancelled (`failed`, `agent_deleted`, an `email.failed` event) and
stay cancelled after a restore."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from e2a_gateway.app import RunningGateway
from e2a_gateway.clock import utc_now
from e2a_gateway.config import Settings
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.signing.magic_links import issue_token, link_key
from e2a_gateway.workers.approvals import ApprovalWorker
from e2a_gateway.workers.outbound import OutboundWorker
from tests.conftest import Account, make_settings
from tests.databases import query, run_out_leases
from tests.delivery_support import create_agent, open_account, quiet_gateway, wait_until
from tests.relay_support import Sink, relay_port, sink
from tests.test_approvals import OWNER, add_pending, hitl_owner, job_kinds, relay_settings
from tests.test_v1_reviews import ZONE, draft, letter, protect, protection, queue, send

__all__ = ["relay_port", "sink"]  # fixtures

BOT = "bot@agents.test"
CAROL = "carol@example.org"
HOUR = 3600.0


@pytest.fixture
def resolver() -> FixtureResolver:
    return FixtureResolver(ZONE)


@pytest.fixture
def settings(tmp_path: Path, relay_port: int) -> Settings:
    relay = {"host": "127.0.0.1", "port": relay_port, "tls": "none", "timeout_seconds": 10}
    return make_settings(tmp_path, outbound_smtp=relay)


@pytest.fixture
async def owner(make_account: Any) -> Account:
    account: Account = await make_account("owner@example.com")
    await create_agent(account, "bot")
    return account


def refused(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    return str(error["message"])


def deadlines(running: RunningGateway, *message_ids: str) -> list[float]:
    """Each message's review deadline as stored (an outbound draft's or an inbound hold's)."""
    database = running.gateway.settings.database.url
    return [
        float(
            query(
                database,
                "SELECT coalesce(approval_expires_at, hold_expires_at) FROM messages WHERE id = ?",
                (message_id,),
            )[0][0]
        )
        for message_id in message_ids
    ]


async def test_held_mail_of_a_trashed_agent_leaves_the_queue_and_returns_on_restore(
    running: RunningGateway, owner: Account, anonymous: httpx.AsyncClient
) -> None:
    gate = {"policy": "allowlist", "allowlist": ["trusted@example.org"], "action": "review"}
    await protect(owner, BOT, protection(inbound=gate, outbound_action="review"))
    held_draft = await draft(owner, BOT, "Held draft")
    await send(running, "alice@example.org", letter("alice@example.org", "Held inbound"))
    (inbound_item, draft_item) = await queue(owner)
    held_inbound = inbound_item["id"]
    assert draft_item["id"] == held_draft and inbound_item["subject"] == "Held inbound"
    before = deadlines(running, held_draft, held_inbound)
    token = issue_token(
        link_key(running.gateway.server_key), held_draft, "approve", int(time.time()) + 600
    )

    trashed_from = time.time()
    trashed = await owner.http.delete(f"/v1/agents/{BOT}", params={"confirm": "DELETE"})
    assert trashed.status_code == 200, trashed.text
    trashed_until = time.time()

    assert await queue(owner) == []
    pending = await owner.http.get("/api/v1/messages", params={"status": "pending_approval"})
    assert pending.status_code == 200 and pending.json()["messages"] == []
    for message_id in (held_draft, held_inbound):
        refused(await owner.http.get(f"/v1/reviews/{message_id}"), 404, "not_found")
        for action in ("approve", "reject"):
            message = refused(
                await owner.http.post(f"/v1/reviews/{message_id}/{action}", json={}),
                404,
                "not_found",
            )
            assert "trash" in message and "restore" in message
    for action in ("approve", "reject"):
        message = refused(
            await owner.http.post(f"/api/v1/messages/{held_draft}/{action}", json={}),
            404,
            "not_found",
        )
        assert "trash" in message
    refused(await owner.http.get(f"/api/v1/messages/{held_draft}"), 404, "not_found")
    assert (await anonymous.post("/v1/approve", params={"t": token})).status_code == 404
    assert (await anonymous.get("/v1/approve", params={"t": token})).status_code == 404

    # Their deadlines pass while the agent is in the trash: nothing is decided for it.
    storage = running.gateway.storage
    assert await storage.expire_outbound(time.time() + 8 * 24 * HOUR) == []
    assert (await storage.expire_inbound_holds(time.time() + 8 * 24 * HOUR)).resolved == 0
    database = running.gateway.settings.database.url
    assert query(database, "SELECT status, hold FROM messages WHERE id = ?", (held_draft,)) == [
        ("pending_approval", None)
    ]
    assert query(database, "SELECT hold FROM messages WHERE id = ?", (held_inbound,)) == [
        ("pending_review",)
    ]

    restored_from = time.time()
    restored = await owner.http.post(f"/v1/agents/{BOT}/restore")
    assert restored.status_code == 200, restored.text
    restored_until = time.time()
    assert [item["id"] for item in await queue(owner)] == [held_inbound, held_draft]
    for earlier, later in zip(before, deadlines(running, held_draft, held_inbound), strict=True):
        # moved on by the time spent in the trash (bounded by the times around both calls)
        assert (
            restored_from - trashed_until - 1
            <= later - earlier
            <= restored_until - trashed_from + 1
        )
    approved = await owner.http.post(f"/v1/reviews/{held_inbound}/approve", json={})
    assert approved.status_code == 200, approved.text
    assert (await anonymous.post("/v1/approve", params={"t": token})).status_code == 200


async def test_queued_sends_of_a_trashed_agent_are_cancelled_for_good(
    running: RunningGateway, owner: Account, sink: Sink
) -> None:
    sink.rcpt_answers[CAROL] = "451 4.3.0 try again later"
    sent = await owner.http.post(
        "/api/v1/send", json={"from": BOT, "to": [CAROL], "subject": "Later", "body": "Hello"}
    )
    assert sent.status_code in (200, 202), sent.text
    message_id = sent.json()["message_id"]
    database = running.gateway.settings.database.url

    def state() -> tuple[Any, ...]:
        return query(
            database, "SELECT status, send_error FROM messages WHERE id = ?", (message_id,)
        )[0]

    await wait_until(lambda: state()[1] is not None)  # deferred: queued, retry scheduled
    assert state()[0] == "queued"
    assert query(database, "SELECT kind FROM jobs WHERE message_id = ?", (message_id,)) == [
        ("outbound",)
    ]

    trashed = await owner.http.delete(f"/v1/agents/{BOT}", params={"confirm": "DELETE"})
    assert trashed.status_code == 200, trashed.text
    status, error = state()
    assert status == "failed" and error.startswith("agent_deleted")
    assert query(database, "SELECT kind FROM jobs WHERE message_id = ?", (message_id,)) == []
    events = await owner.http.get("/v1/events", params={"type": "email.failed"})
    (failed,) = events.json()["items"]
    assert failed["message_id"] == message_id
    assert failed["data"]["reason_code"] == "agent_deleted"
    assert "trash" in failed["data"]["reason"]

    restored = await owner.http.post(f"/v1/agents/{BOT}/restore")
    assert restored.status_code == 200, restored.text
    sink.rcpt_answers.clear()
    worker = OutboundWorker(running.gateway)
    assert await worker.deliver_due(time.time() + 48 * HOUR) == 0
    assert sink.received == []
    shown = await owner.http.get(f"/api/v1/messages/{message_id}")
    assert shown.status_code == 200, shown.text
    assert shown.json()["status"] == "failed"
    assert json.dumps(shown.json()).count("agent_deleted") >= 1


async def test_a_send_job_claimed_after_the_trash_is_failed_as_agent_deleted(
    running: RunningGateway, owner: Account, sink: Sink
) -> None:
    """A send in flight when the agent was trashed (its job leased) is left to the worker;
    retried later, it is failed with the same reason, and nothing goes out."""
    sink.rcpt_answers[CAROL] = "451 4.3.0 try again later"
    sent = await owner.http.post(
        "/api/v1/send", json={"from": BOT, "to": [CAROL], "subject": "Racing", "body": "Hi"}
    )
    message_id = sent.json()["message_id"]
    database = running.gateway.settings.database.url
    await wait_until(
        lambda: (
            query(database, "SELECT send_error FROM messages WHERE id = ?", (message_id,))[0][0]
            is not None
        )
    )
    # as if a worker held the job right now
    query(
        database,
        "UPDATE jobs SET locked_until = ? WHERE message_id = ?",
        (time.time() + HOUR, message_id),
    )
    trashed = await owner.http.delete(
        f"/v1/agents/{quote(BOT, safe='')}", params={"confirm": "DELETE"}
    )
    assert trashed.status_code == 200, trashed.text
    assert query(database, "SELECT status FROM messages WHERE id = ?", (message_id,)) == [
        ("queued",)
    ]
    sink.rcpt_answers.clear()
    run_out_leases(database, 2 * HOUR)
    worker = OutboundWorker(running.gateway)
    assert await worker.deliver_due(time.time() + 2 * HOUR) == 1
    assert sink.received == []
    ((status, error),) = query(
        database, "SELECT status, send_error FROM messages WHERE id = ?", (message_id,)
    )
    assert status == "failed" and error.startswith("agent_deleted")


def await_deadline(settings: Settings, message_id: str) -> float:
    """The review deadline stored for a held draft."""
    ((deadline,),) = query(
        settings.database.url,
        "SELECT approval_expires_at FROM messages WHERE id = ?",
        (message_id,),
    )
    return float(deadline)


async def test_a_draft_of_a_trashed_agent_is_noticed_again_only_once_restored(
    tmp_path: Path, resolver: FixtureResolver, sink: Sink, relay_port: int
) -> None:
    """The notice job of a draft held just before its agent went to the trash is dropped: its
    links would lead nowhere; on restore the draft is in the review queue again."""
    configured = relay_settings(tmp_path, relay_port)
    async with quiet_gateway(configured, resolver) as quiet:
        account = await open_account(quiet.gateway, quiet.http_url, OWNER)
        async with account.http:
            owner = await hitl_owner(quiet.gateway, account)
            message = await add_pending(quiet.gateway, owner, time.time() + HOUR)
            assert job_kinds(configured, message.id) == ["approval_notice"]
            trashed = await quiet.gateway.storage.trash_agent(owner.user_id, owner.agent, utc_now())
            assert trashed is not None
            now = time.time()
            assert await ApprovalWorker(quiet.gateway, clock=lambda: now).send_due_notices(now) == 1
            assert job_kinds(configured, message.id) == []
            assert sink.received == []

            # Restored, the draft's reviewer is mailed a notice whose links reach its new
            # deadline (the one mailed before the trash, if any, expires at the old one).
            restored = await quiet.gateway.storage.restore_agent(
                owner.user_id, owner.agent, now + HOUR
            )
            assert restored is not None
            assert job_kinds(configured, message.id) == ["approval_notice"]
            later = now + HOUR
            worker = ApprovalWorker(quiet.gateway, clock=lambda: later)
            assert await worker.send_due_notices(later) == 1
            again = await quiet.gateway.storage.restore_agent(owner.user_id, owner.agent)
            assert again is None and job_kinds(configured, message.id) == []
    ((_, recipients, notice),) = sink.received
    assert recipients == [OWNER]
    held = await_deadline(configured, message.id)
    assert held > time.time() + HOUR  # moved on by the hour in the trash
    assert b"/api/v1/approve?token=" in notice


async def test_a_send_in_flight_at_the_trash_that_reached_someone_reads_sent(
    running: RunningGateway, owner: Account, sink: Sink
) -> None:
    """A send in flight when the agent was trashed, which the relay took for Dave while
    Carol's copy was deferred, is settled by its next attempt as the trash settles one no
    worker held: `sent` (Dave got it), Carol named with the reason, and no `email.failed`
    (which says that nobody got it)."""
    dave = "dave@example.org"
    sink.rcpt_answers[CAROL] = "451 4.3.0 try again later"
    sent = await owner.http.post(
        "/api/v1/send", json={"from": BOT, "to": [dave, CAROL], "subject": "Racing", "body": "Hi"}
    )
    message_id = sent.json()["message_id"]
    database = running.gateway.settings.database.url
    await wait_until(
        lambda: (
            query(database, "SELECT send_error FROM messages WHERE id = ?", (message_id,))[0][0]
            is not None
        )
    )
    assert [rcpts for _, rcpts, _ in sink.received] == [[dave]]
    # as if a worker held the job right now
    query(
        database,
        "UPDATE jobs SET locked_until = ? WHERE message_id = ?",
        (time.time() + HOUR, message_id),
    )
    trashed = await owner.http.delete(
        f"/v1/agents/{quote(BOT, safe='')}", params={"confirm": "DELETE"}
    )
    assert trashed.status_code == 200, trashed.text
    sink.rcpt_answers.clear()
    run_out_leases(database, 2 * HOUR)
    assert await OutboundWorker(running.gateway).deliver_due(time.time() + 2 * HOUR) == 1
    assert len(sink.received) == 1  # Carol's copy never went
    ((status, error),) = query(
        database, "SELECT status, send_error FROM messages WHERE id = ?", (message_id,)
    )
    assert status == "sent" and error.startswith("agent_deleted"), (status, error)
    events = await owner.http.get("/v1/events", params={"message_id": message_id})
    kinds = [item["type"] for item in events.json()["items"]]
    assert "email.failed" not in kinds and "email.sent" in kinds, kinds
