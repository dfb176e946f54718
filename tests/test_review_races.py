"""Reviews racing each other over real HTTP: approve against reject, a double-clicked approve,
an edited approval against a plain one, and an approval against the expiry sweep at the
deadline, and the notice's magic link against the API. Exactly one review wins, the others
get 409 (the link's page says the message was already resolved), and the relay (an aiosmtpd
sink on 127.0.0.1) receives the held message at most once, as the winner left it."""

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
from e2a_gateway.signing.magic_links import Action
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
    token_for,
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
    with trio.fail_after(20):
        return await calls_at_once(
            *(
                partial(http.post, path, json=body, headers=headers)
                for path, body, headers in requests
            )
        )


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


@pytest.mark.parametrize(
    ("approve_path", "reject_path"),
    [
        ("/api/v1/messages/{}/approve", "/api/v1/messages/{}/reject"),
        ("/v1/reviews/{}/approve", "/v1/reviews/{}/reject"),
    ],
)
async def test_the_magic_link_racing_the_api_resolves_once(
    running: RunningGateway,
    owner: Owner,
    sink: Sink,
    anonymous: httpx.AsyncClient,
    approve_path: str,
    reject_path: str,
) -> None:
    """The notice's link posted (approve, or reject on alternate rounds) while the owner
    approves and rejects over the API: one of the three wins; the others are refused, the
    API's with 409, the link's with its page saying the message is no longer awaiting
    approval; the message is sent once when an approval won, never otherwise."""
    http = owner.account.http
    sent = 0
    for round_ in range(ROUNDS):
        link_action: Action = "reject" if round_ % 2 else "approve"
        deadline = time.time() + 3600
        message = await add_pending(running.gateway, owner, deadline)
        token = await token_for(running.gateway, owner, message.id, link_action, deadline)
        with trio.fail_after(20):
            link, approve, reject = await calls_at_once(
                partial(anonymous.post, f"/api/v1/{link_action}", data={"token": token}),
                partial(http.post, approve_path.format(message.id), json={}),
                partial(http.post, reject_path.format(message.id), json={}),
            )
        answers = [link, approve, reject]
        winners = [answer for answer in answers if answer.status_code in (200, 202)]
        assert len(winners) == 1, [(a.status_code, a.text[:300]) for a in answers]
        for answer in (approve, reject):
            if answer not in winners:
                assert answer.status_code == 409, answer.text
                assert "pending" in answer.json()["error"]["message"], answer.text
        if link not in winners:
            assert link.status_code == 409, link.text
            assert "Already resolved" in link.text, link.text
        approved = approve in winners or (link in winners and link_action == "approve")
        status = await settled(running, message.id)
        if approved:
            assert status in ("sent", "failed"), status
            sent += 1
            await copies_arrived(sink, sent)
        else:
            assert status == "rejected", status
            assert job_kinds(running.gateway.settings, message.id).count("outbound") == 0
    await trio.sleep(0.5)  # no late second copy
    assert len(copies_sent(sink)) == sent


async def calls_at_once(*calls: Callable[[], Awaitable[httpx.Response]]) -> list[httpx.Response]:
    """Make `calls` concurrently; their answers in the order given."""
    answers: dict[int, httpx.Response] = {}

    async def one(index: int) -> None:
        answers[index] = await calls[index]()

    async with trio.open_nursery() as nursery:
        for index in range(len(calls)):
            nursery.start_soon(one, index)
    return [answers[index] for index in range(len(calls))]


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
