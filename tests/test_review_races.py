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
from pathlib import Path

import httpx
import pytest
import trio

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from e2a_gateway.storage.base import NotPending
from tests.conftest import Account
from tests.delivery_support import wait_until
from tests.relay_support import Sink, relay_port, sink  # noqa: F401 (fixtures)
from tests.test_approvals import (
    OWNER,
    Owner,
    add_pending,
    hitl_owner,
    job_kinds,
    relay_settings,
    stored_row,
)

ROUNDS = 4
RECIPIENT = "alice@example.org"
MakeAccount = Callable[[str], Awaitable[Account]]


@pytest.fixture
def settings(tmp_path: Path, relay_port: int) -> Settings:  # noqa: F811
    """The running gateway relays through the sink."""
    return relay_settings(tmp_path, relay_port)


@pytest.fixture
async def owner(running: RunningGateway, make_account: MakeAccount) -> Owner:
    return await hitl_owner(running.gateway, await make_account(OWNER))


def copies_sent(sink: Sink) -> list[EmailMessage]:  # noqa: F811
    """The held messages the relay accepted (the notices to the owner left out)."""
    return [
        email.message_from_bytes(data, _class=EmailMessage, policy=email.policy.default)
        for _, recipients, data in sink.received
        if RECIPIENT in recipients
    ]


async def at_once(*requests: Callable[[], Awaitable[httpx.Response]]) -> list[httpx.Response]:
    """Send `requests` concurrently; their answers in the order given."""
    answers: list[httpx.Response | None] = [None] * len(requests)

    async def one(index: int) -> None:
        answers[index] = await requests[index]()

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for index in range(len(requests)):
                nursery.start_soon(one, index)
    return [answer for answer in answers if answer is not None]


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
    reject_path: str,  # noqa: F811
) -> None:
    http = owner.account.http
    sent_before = 0
    for _ in range(ROUNDS):
        message = await add_pending(running.gateway, owner, time.time() + 3600)
        approve, reject = await at_once(
            lambda: http.post(approve_path.format(message.id), json={}),
            lambda: http.post(reject_path.format(message.id), json={}),
        )
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
            await wait_until(lambda: len(copies_sent(sink)) == sent_before + 1, 10)
            sent_before += 1
    await trio.sleep(0.5)  # no late second copy
    assert len(copies_sent(sink)) == sent_before


async def test_a_double_clicked_approval_sends_once(
    running: RunningGateway,
    owner: Owner,
    sink: Sink,  # noqa: F811
) -> None:
    http = owner.account.http
    for round_ in range(ROUNDS):
        message = await add_pending(running.gateway, owner, time.time() + 3600)
        path = f"/api/v1/messages/{message.id}/approve"
        if round_ % 2:  # the same click twice, with the client's Idempotency-Key
            headers = {"Idempotency-Key": f"click-{message.id}"}
            answers = await at_once(
                lambda: http.post(path, json={}, headers=headers),
                lambda: http.post(path, json={}, headers=headers),
            )
            assert [a.status_code for a in answers if a.status_code != 409] != []
            assert all(a.status_code in (200, 409) for a in answers), [a.text for a in answers]
        else:
            answers = await at_once(
                lambda: http.post(path, json={}), lambda: http.post(path, json={})
            )
            assert sorted(a.status_code for a in answers) == [200, 409]
        await settled(running, message.id)
        await wait_until(lambda: len(copies_sent(sink)) == round_ + 1, 10)
    await trio.sleep(0.5)
    assert len(copies_sent(sink)) == ROUNDS


async def test_an_edited_approval_racing_a_plain_one_sends_one_version(
    running: RunningGateway,
    owner: Owner,
    sink: Sink,  # noqa: F811
) -> None:
    http = owner.account.http
    for round_ in range(ROUNDS):
        message = await add_pending(running.gateway, owner, time.time() + 3600)
        path = f"/api/v1/messages/{message.id}/approve"
        edited, plain = await at_once(
            lambda: http.post(path, json={"subject": "Edited by the reviewer"}),
            lambda: http.post(path, json={}),
        )
        assert sorted([edited.status_code, plain.status_code]) == [200, 409]
        winner = edited if edited.status_code == 200 else plain
        assert winner.json()["edited"] is (winner is edited)
        await settled(running, message.id)
        await wait_until(lambda: len(copies_sent(sink)) == round_ + 1, 10)
        subject = copies_sent(sink)[-1]["Subject"]
        assert subject == ("Edited by the reviewer" if winner is edited else message.subject)
    await trio.sleep(0.5)
    assert len(copies_sent(sink)) == ROUNDS


async def test_an_approval_racing_the_expiry_at_the_deadline_resolves_once(
    running: RunningGateway, owner: Owner
) -> None:
    """The reviewer approves a moment before the deadline while the sweep runs a moment after
    it: either the approval wins (the sweep finds nothing) or the sweep does (the approval is
    refused as no longer pending); never both, one send job at most."""
    storage = running.gateway.storage
    for _ in range(ROUNDS * 2):
        deadline = time.time() + 3600
        message = await add_pending(running.gateway, owner, deadline)
        results: dict[str, object] = {}

        async def review() -> None:
            try:
                await storage.review_outbound(
                    owner.user_id, message.id, True, None, None, deadline - 0.001
                )
            except NotPending:
                results["review"] = "conflict"
            else:
                results["review"] = "ok"

        async def sweep() -> None:
            expired = await storage.expire_outbound(deadline + 0.001)
            results["sweep"] = [m.id for m in expired if m.id == message.id]

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(review)
                nursery.start_soon(sweep)
        swept = results["sweep"] == [message.id]
        assert (results["review"] == "ok") != swept, results
        assert job_kinds(running.gateway.settings, message.id).count("outbound") <= 1
        status = stored_row(running.gateway.settings, message.id)[0]
        assert status != "pending_approval"
