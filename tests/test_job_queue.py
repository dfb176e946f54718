"""The job workers wake when a commit adds jobs of their kind (e2a_gateway/hub/job_queue.py): no
caller wakes them by hand. Storage writes on the suite's database; each worker's own loop, looking
on its own only once an hour, must still take a job committed behind its back within seconds."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import pytest
import trio
import trio.testing

from e2a_gateway.config import Settings
from e2a_gateway.gateway import Gateway
from e2a_gateway.hub.job_queue import JobQueue
from e2a_gateway.ids import new_id
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.outbound.mime import new_message_id
from e2a_gateway.signing.credentials import hash_api_key
from e2a_gateway.storage.announcements import AccessEnded, JobsAdded
from e2a_gateway.storage.base import AgentChanges, OutboundMessage, OutboundStatus
from e2a_gateway.storage.vocabulary import APPROVAL_NOTICE_JOB, JOB_KINDS, OUTBOUND_JOB, WEBHOOK_JOB
from e2a_gateway.workers.approvals import ApprovalWorker
from e2a_gateway.workers.outbound import OutboundWorker
from e2a_gateway.workers.webhook_connections import WebhookConnections
from e2a_gateway.workers.webhooks import WebhookWorker
from tests.conftest import Account, make_settings
from tests.delivery_support import (
    QuietGateway,
    accept,
    create_agent,
    delivery_status,
    mail,
    new_signing_secret,
    open_account,
    queued_jobs,
    quiet_gateway,
    wait_until,
)
from tests.http_receiver import HttpReceiver

POLL_SECONDS = 3600.0
"""How rarely the workers under test look for work on their own."""
WAKE_SECONDS = 10.0
"""How soon a committed job must be taken: far below POLL_SECONDS."""


# -- the queue itself ---------------------------------------------------------------------------


def test_jobs_added_sets_the_events_of_those_kinds_only() -> None:
    jobs = JobQueue()
    webhook, outbound = jobs.added(WEBHOOK_JOB), jobs.added(OUTBOUND_JOB)
    assert jobs.added(WEBHOOK_JOB) is webhook  # one event per kind until it is set
    jobs.jobs_added({OUTBOUND_JOB})
    assert outbound.is_set() and not webhook.is_set()
    assert not jobs.added(OUTBOUND_JOB).is_set()  # the next wake-up is a fresh event
    jobs.jobs_added()
    assert webhook.is_set()


def test_a_commit_wakes_the_kinds_of_job_it_announced() -> None:
    jobs = JobQueue()
    events = {kind: jobs.added(kind) for kind in JOB_KINDS}
    jobs.committed([AccessEnded("key", "hash")])
    assert not any(event.is_set() for event in events.values())
    jobs.committed([JobsAdded(APPROVAL_NOTICE_JOB), JobsAdded(APPROVAL_NOTICE_JOB)])
    assert [kind for kind, event in events.items() if event.is_set()] == [APPROVAL_NOTICE_JOB]


async def test_wake_on_jobs_calls_back_each_time_jobs_of_its_kind_are_added() -> None:
    jobs = JobQueue()
    calls: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(jobs.wake_on_jobs, OUTBOUND_JOB, lambda: calls.append("woken"))
        await trio.testing.wait_all_tasks_blocked()
        jobs.jobs_added({WEBHOOK_JOB})
        await trio.testing.wait_all_tasks_blocked()
        assert calls == []
        for expected in (1, 2):
            jobs.jobs_added({OUTBOUND_JOB})
            await trio.testing.wait_all_tasks_blocked()
            assert len(calls) == expected
        nursery.cancel_scope.cancel()


# -- storage's writes wake the queue on commit ------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """No relay (a send beyond the deployment fails at once, notices are dropped); webhook
    targets on loopback allowed."""
    return make_settings(tmp_path, webhooks={"allow_private": True})


@pytest.fixture
async def quiet(settings: Settings) -> AsyncIterator[QuietGateway]:
    """A gateway running no worker of its own."""
    async with quiet_gateway(settings, FixtureResolver()) as opened:
        yield opened


@pytest.fixture
async def owner(quiet: QuietGateway) -> AsyncIterator[Account]:
    account = await open_account(quiet.gateway, quiet.http_url, "owner@example.com")
    async with account.http:
        await new_signing_secret(account)
        yield account


async def outbound(
    gateway: Gateway, account: Account, agent: str, status: OutboundStatus
) -> OutboundMessage:
    """Store an outbound message of `agent` to someone beyond the deployment, as sending does
    (without waking anyone)."""
    user = await gateway.storage.user_for_key_hash(hash_api_key(account.key))
    assert user is not None
    now = time.time()
    message = OutboundMessage(
        id=new_id("msg"),
        user_id=user.id,
        agent_email=agent,
        kind="send",
        to=["carol@example.org"],
        cc=[],
        bcc=[],
        subject="Hello",
        body_text="Hi.\n",
        body_html=None,
        attachments=None,
        conversation_id=None,
        in_reply_to=None,
        references=[],
        email_message_id=new_message_id("agents.test"),
        status=status,
        approval_expires_at=now + 3600 if status == "pending_approval" else None,
        created_at="2026-01-01T00:00:00Z",
        created_epoch=now,
    )
    await gateway.storage.add_outbound(message)
    return message


async def held_agent(gateway: Gateway, account: Account, slug: str) -> str:
    """An agent of `account` whose mail waits for approval."""
    agent = await create_agent(account, slug)
    user = await gateway.storage.user_for_key_hash(hash_api_key(account.key))
    assert user is not None
    await gateway.storage.update_agent(user.id, agent, AgentChanges(hitl_enabled=True))
    return agent


def woken(events: dict[str, trio.Event]) -> set[str]:
    return {kind for kind, event in events.items() if event.is_set()}


async def test_every_write_that_adds_a_job_wakes_the_workers_of_its_kind(
    quiet: QuietGateway, owner: Account
) -> None:
    gateway = quiet.gateway
    cloud = await create_agent(owner, "hooked", "http://127.0.0.1:9/hook")
    sender = await create_agent(owner, "sender")
    held = await held_agent(gateway, owner, "held")

    async def wakes(write: Awaitable[object]) -> set[str]:
        events = {kind: gateway.jobs.added(kind) for kind in JOB_KINDS}
        await write
        return woken(events)

    assert await wakes(accept(gateway, [cloud], mail())) == {WEBHOOK_JOB}
    assert await wakes(accept(gateway, [sender], mail())) == set()  # a local agent: no job
    assert await wakes(outbound(gateway, owner, sender, "queued")) == {OUTBOUND_JOB}
    pending = await wakes(outbound(gateway, owner, held, "pending_approval"))
    assert pending == {APPROVAL_NOTICE_JOB}

    message = await outbound(gateway, owner, held, "pending_approval")
    review = gateway.storage.review_outbound(None, message.id, True, None, None, time.time())
    assert await wakes(review) == {OUTBOUND_JOB}
    await outbound(gateway, owner, held, "pending_approval")
    assert await wakes(gateway.storage.expire_outbound(time.time() + 7200)) == set()  # rejected
    assert await wakes(gateway.storage.mark_read(message.user_id, sender, "msg_none")) == set()


# -- each worker takes a job committed behind its back ------------------------------------------


async def test_the_webhook_worker_wakes_when_mail_for_a_cloud_agent_commits(
    quiet: QuietGateway, owner: Account, nursery: trio.Nursery
) -> None:
    receiver = HttpReceiver()
    await nursery.start(receiver.serve)
    agent = await create_agent(owner, "hooked", receiver.url)
    async with WebhookConnections() as connections:
        worker = WebhookWorker(quiet.gateway, connections, poll_seconds=POLL_SECONDS)
        async with trio.open_nursery() as workers:
            await workers.start(worker.run)
            message_id = await accept(quiet.gateway, [agent], mail())

            async def delivered() -> bool:
                return await delivery_status(owner, agent, message_id) == "delivered"

            await wait_until(delivered, WAKE_SECONDS)
            workers.cancel_scope.cancel()
    assert len(receiver.requests) == 1


async def test_the_send_worker_wakes_when_a_send_commits(
    quiet: QuietGateway, owner: Account
) -> None:
    sender = await create_agent(owner, "sender")
    worker = OutboundWorker(quiet.gateway, poll_seconds=POLL_SECONDS)
    async with trio.open_nursery() as workers:
        await workers.start(worker.run)
        message = await outbound(quiet.gateway, owner, sender, "queued")

        async def settled() -> bool:
            stored = await quiet.gateway.storage.get_outbound(None, message.id)
            return stored is not None and stored.status == "failed"  # no relay here

        await wait_until(settled, WAKE_SECONDS)
        workers.cancel_scope.cancel()


async def test_the_approval_worker_wakes_when_a_held_message_commits(
    quiet: QuietGateway, owner: Account
) -> None:
    held = await held_agent(quiet.gateway, owner, "held")
    worker = ApprovalWorker(quiet.gateway, poll_seconds=POLL_SECONDS)
    async with trio.open_nursery() as workers:
        await workers.start(worker.run)
        await outbound(quiet.gateway, owner, held, "pending_approval")

        async def notice_taken() -> bool:  # without a relay the notice job is dropped
            return APPROVAL_NOTICE_JOB not in await queued_jobs(quiet.gateway.storage)

        await wait_until(notice_taken, WAKE_SECONDS)
        workers.cancel_scope.cancel()
