"""Reviews racing each other over real HTTP: approve against reject, a double-clicked approve,
an edited approval against a plain one, and an approval against the expiry sweep at the
deadline. Exactly one review wins, the others get 409, and the relay (an aiosmtpd sink on
127.0.0.1) receives the held message at most once, as the winner left it."""

from __future__ import annotations

import email
import email.policy
import time
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from e2a_gateway.storage.base import NotPending
from tests.conftest import Account
from tests.delivery_support import expiry_sweeps_paused, wait_until
from tests.relay_support import Sink, relay_port, sink
from tests.test_approvals import (
    OWNER,
    Owner,
    add_pending,
    hitl_owner,
    job_kinds,
    relay_settings,
    stored_row,
)

__all__ = ["relay_port", "sink"]  # fixtures

ROUNDS = 4
RECIPIENT = "alice@example.org"
MakeAccount = Callable[[str], Awaitable[Account]]


@pytest.fixture
def settings(tmp_path: Path, relay_port: int) -> Settings:
    """The running gateway relays through the sink."""
    return relay_settings(tmp_path, relay_port)


@pytest.fixture
async def owner(running: RunningGateway, make_account: MakeAccount) -> Owner:
    return await hitl_owner(running.gateway, await make_account(OWNER))


def copies_sent(sink: Sink) -> list[EmailMessage]:
    """The held messages the relay accepted (the notices to the owner left out)."""
    return [
        email.message_from_bytes(data, _class=EmailMessage, policy=email.policy.default)
        for _, recipients, data in sink.received
        if RECIPIENT in recipients
    ]


Request = tuple[str, dict[str, Any], dict[str, str]]
"""A POST to make: its path, JSON body and headers."""


async def at_once(http: httpx.AsyncClient, *requests: Request) -> list[httpx.Response]:
    """POST `requests` concurrently; their answers in the order given."""
    answers: dict[int, httpx.Response] = {}

    async def one(index: int, path: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        answers[index] = await http.post(path, json=body, headers=headers)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for index, (path, body, headers) in enumerate(requests):
                nursery.start_soon(one, index, path, body, headers)
    return [answers[index] for index in range(len(requests))]


async def copies_arrived(sink: Sink, count: int) -> None:
    """Wait until the relay holds `count` copies of held messages."""
    await wait_until(partial(copies_counted, sink, count), 10)


def copies_counted(sink: Sink, count: int) -> bool:
    """Whether the relay holds `count` copies of held messages."""
    return len(copies_sent(sink)) == count


async def settled(running: RunningGateway, message_id: str) -> str:
    """The message's status once the send worker is done with it (or it was never queued)."""

    def done() -> bool:
        return stored_row(running.gateway.settings, message_id)[0] != "queued"

    await wait_until(done, 15)
    return str(stored_row(running.gateway.settings, message_id)[0])


@pytest.mark.parametrize(
    ("approve_path", "reject_path"),
    [
        ("/api/v1/messages/{}/approve", "/api/v1/messages/{}/reject"),
        ("/v1/reviews/{}/approve", "/v1/reviews/{}/reject"),
    ],
)
async def test_approve_and_reject_at_once_resolve_once(
    running: RunningGateway,
    owner: Owner,
    sink: Sink,
    approve_path: str,
    reject_path: str,
) -> None:
    http = owner.account.http
    sent_before = 0
    for _ in range(ROUNDS):
        message = await add_pending(running.gateway, owner, time.time() + 3600)
        approving: Request = (approve_path.format(message.id), {}, {})
        rejecting: Request = (reject_path.format(message.id), {}, {})
        approve, reject = await at_once(http, approving, rejecting)
        codes = sorted([approve.status_code, reject.status_code])
        assert codes in ([200, 409], [202, 409]), (approve.text, reject.text)
        loser = approve if approve.status_code == 409 else reject
        assert "pending" in loser.json()["error"]["message"], loser.text
        status = await settled(running, message.id)
        if approve.status_code == 409:
            assert status == "rejected"
            assert job_kinds(running.gateway.settings, message.id).count("outbound") == 0
        else:
            assert status in ("sent", "failed"), status
            sent_before += 1
            await copies_arrived(sink, sent_before)
    await trio.sleep(0.5)  # no late second copy
    assert len(copies_sent(sink)) == sent_before


async def test_a_double_clicked_approval_sends_once(
    running: RunningGateway,
    owner: Owner,
    sink: Sink,
) -> None:
    http = owner.account.http
    for round_ in range(ROUNDS):
        message = await add_pending(running.gateway, owner, time.time() + 3600)
        path = f"/api/v1/messages/{message.id}/approve"
        if round_ % 2:  # the same click twice, with the client's Idempotency-Key
            headers = {"Idempotency-Key": f"click-{message.id}"}
            answers = await at_once(http, (path, {}, headers), (path, {}, headers))
            assert [a.status_code for a in answers if a.status_code != 409] != []
            assert all(a.status_code in (200, 409) for a in answers), [a.text for a in answers]
        else:
            answers = await at_once(http, (path, {}, {}), (path, {}, {}))
            assert sorted(a.status_code for a in answers) == [200, 409]
        await settled(running, message.id)
        await copies_arrived(sink, round_ + 1)
    await trio.sleep(0.5)
    assert len(copies_sent(sink)) == ROUNDS


async def test_an_edited_approval_racing_a_plain_one_sends_one_version(
    running: RunningGateway,
    owner: Owner,
    sink: Sink,
) -> None:
    http = owner.account.http
    for round_ in range(ROUNDS):
        message = await add_pending(running.gateway, owner, time.time() + 3600)
        path = f"/api/v1/messages/{message.id}/approve"
        edited, plain = await at_once(
            http, (path, {"subject": "Edited by the reviewer"}, {}), (path, {}, {})
        )
        assert sorted([edited.status_code, plain.status_code]) == [200, 409]
        winner = edited if edited.status_code == 200 else plain
        assert winner.json()["edited"] is (winner is edited)
        await settled(running, message.id)
        await copies_arrived(sink, round_ + 1)
        subject = copies_sent(sink)[-1]["Subject"]
        assert subject == ("Edited by the reviewer" if winner is edited else message.subject)
    await trio.sleep(0.5)
    assert len(copies_sent(sink)) == ROUNDS


@pytest.mark.parametrize("expiration", ["reject", "approve"])
async def test_an_approval_racing_the_expiry_at_the_deadline_resolves_once(
    running: RunningGateway,
    make_account: MakeAccount,
    sink: Sink,
    expiration: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reviewer approves a moment before the deadline while the sweep runs a moment after
    it: either the approval wins (the sweep finds nothing) or the sweep does (the approval is
    refused as no longer pending); never both, and the message is sent at most once (once,
    when the agent's expiration action approves too)."""
    expiry_sweeps_paused(monkeypatch)  # the test runs the sweep
    owner = await hitl_owner(running.gateway, await make_account(OWNER), expiration=expiration)
    approvals = 0
    for _ in range(ROUNDS * 2):
        deadline = time.time() + 0.2  # the send job either review queues is due then
        message = await add_pending(running.gateway, owner, deadline)
        approved, swept = await approve_and_sweep(running, owner, message.id, deadline)
        assert approved != swept, (approved, swept)
        status = await settled(running, message.id)
        if approved or expiration == "approve":
            approvals += 1
            assert status in ("sent", "failed", "expired_approved"), status
        else:
            assert status == "expired_rejected", status
        await copies_arrived(sink, approvals)
    await trio.sleep(0.5)  # no late second copy
    assert len(copies_sent(sink)) == approvals


async def approve_and_sweep(
    running: RunningGateway, owner: Owner, message_id: str, deadline: float
) -> tuple[bool, bool]:
    """Approve `message_id` a moment before `deadline` while the expiry sweep runs a moment
    after it; whether the approval was taken, and whether the sweep expired the message."""
    storage = running.gateway.storage
    results: dict[str, bool] = {}

    async def review() -> None:
        try:
            await storage.review_outbound(
                owner.user_id, message_id, True, None, None, deadline - 0.001
            )
        except NotPending:
            results["review"] = False
        else:
            results["review"] = True

    async def sweep() -> None:
        expired = await storage.expire_outbound(deadline + 0.001)
        results["sweep"] = any(message.id == message_id for message in expired)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(review)
            nursery.start_soon(sweep)
    return results["review"], results["sweep"]
