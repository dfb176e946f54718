"""Dead letters on `/api/v1` and the dashboard, against a real HTTP receiver on 127.0.0.1 that
fails and then succeeds: listed per agent with the last error, redelivered by hand (one or
all) and signed afresh, and never another user's."""

from __future__ import annotations

import base64
import json
import time
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio

from e2a_gateway.app import RunningGateway, run_gateway
from e2a_gateway.clock import format_timestamp
from e2a_gateway.config import Settings
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.workers.webhook_connections import WebhookConnections
from e2a_gateway.workers.webhooks import WebhookWorker
from tests.conftest import Account, agent_path, make_settings
from tests.delivery_support import (
    QuietGateway,
    accept,
    create_agent,
    delivery_status,
    mail,
    new_signing_secret,
    open_account,
    recorded_attempts,
    smtp_send,
    wait_for_status,
)
from tests.http_receiver import CLOSE, Answer, HttpReceiver, Received, Reply
from tests.test_dashboard import csrf_token, sign_in
from tests.test_signing_identity import sdk_verifies
from tests.webhook_support import FakeClock, job_due_at, quiet, receiver, settings, store_received

__all__ = ["quiet", "receiver", "settings"]  # fixtures

DAY = 24 * 3600.0


def dead_letters_path(agent: str, suffix: str = "") -> str:
    return agent_path(agent, f"/dead-letters{suffix}")


async def listed(account: Account, agent: str) -> list[dict[str, Any]]:
    answer = await account.http.get(dead_letters_path(agent))
    assert answer.status_code == 200, answer.text
    assert answer.json()["next_token"] is None
    letters: list[dict[str, Any]] = answer.json()["dead_letters"]
    return letters


async def exhaust(worker: WebhookWorker, clock: FakeClock, settings: Settings, message: str) -> int:
    """Run the message's delivery schedule to its end (every due attempt, on the fake clock);
    how many attempts were made."""
    attempts = 0
    while (due := job_due_at(settings, message)) is not None:
        clock.now = due
        assert await worker.deliver_due(due) >= 1
        attempts += 1
        assert attempts < 100
    return attempts


def by_message(answers: dict[str, Reply]) -> Any:
    """A reply for each message id (by the delivery's body); 200 for the others."""

    def reply(request: Received) -> Reply:
        return answers.get(json.loads(request.body)["message_id"], Answer(200))

    return reply


async def test_dead_letters_are_listed_with_the_last_error_and_redelivered_signed_afresh(
    quiet: QuietGateway, receiver: HttpReceiver
) -> None:
    gateway = quiet.gateway
    alice = await open_account(gateway, quiet.http_url, "alice@example.com")
    mallory = await open_account(gateway, quiet.http_url, "mallory@example.com")
    async with alice.http, mallory.http, WebhookConnections() as connections:
        clock = FakeClock(time.time())
        worker = WebhookWorker(gateway, connections, clock=clock, attempt_timeout=5.0)
        agent = await create_agent(alice, "hooked", receiver.url)
        secret = await new_signing_secret(alice)
        hers = await create_agent(mallory, "hers", receiver.url)
        closed = await accept(gateway, [agent], mail("Dropped"))
        gone = await accept(gateway, [agent], mail("Gone"))
        fine = await accept(gateway, [agent], mail("Fine"))
        clock.now = time.time()
        # The receiver is broken for two of them: one connection closed every time until the
        # schedule's 24 hours are over, one refused for good at once (410).
        receiver.reply = by_message({closed: CLOSE, gone: Answer(410)})
        attempts = await exhaust(worker, clock, gateway.settings, closed)
        assert attempts > 10
        assert await exhaust(worker, clock, gateway.settings, gone) == 0  # done in the first round
        assert [await delivery_status(alice, agent, m) for m in (closed, gone, fine)] == [
            "failed",
            "failed",
            "delivered",
        ]

        first, second = await listed(alice, agent)
        assert (first["message_id"], first["subject"], first["attempts"]) == (
            closed,
            "Dropped",
            attempts,
        )
        assert first["last_status_code"] is None and first["last_error"]
        assert first["from"] == "alice@example.org"
        assert (second["message_id"], second["attempts"]) == (gone, 1)
        assert (second["last_status_code"], second["last_error"]) == (410, None)
        assert second["last_attempt_at"] is not None

        # Another user's dead letter is not there for mallory: neither listed nor redelivered.
        assert (await mallory.http.get(dead_letters_path(agent))).status_code == 404
        assert await listed(mallory, hers) == []
        for path in (
            dead_letters_path(agent, f"/{closed}/redeliver"),
            dead_letters_path(hers, f"/{closed}/redeliver"),
            dead_letters_path(agent, "/redeliver"),
        ):
            refused = await mallory.http.post(path)
            assert refused.status_code == 404, path
            assert refused.json()["error"]["code"] == "not_found"
        redelivered_for_her = await mallory.http.post(dead_letters_path(hers, "/redeliver"))
        assert redelivered_for_her.json()["message_ids"] == []
        assert len(await listed(alice, agent)) == 2

        # The receiver is mended; one redelivery by hand, a day later.
        receiver.reply = lambda _: Answer(200)
        clock.now += DAY
        before = len(receiver.requests)
        one = await alice.http.post(dead_letters_path(agent, f"/{closed}/redeliver"))
        assert one.status_code == 202
        assert one.json() == {"message_id": closed, "delivery_status": "pending"}
        again = await alice.http.post(dead_letters_path(agent, f"/{closed}/redeliver"))
        assert again.status_code == 404  # queued already: no second delivery
        assert await delivery_status(alice, agent, closed) == "pending"
        assert [letter["message_id"] for letter in await listed(alice, agent)] == [gone]
        assert await worker.deliver_due(clock.now) == 1
        (request,) = receiver.requests[before:]
        body = json.loads(request.body)
        assert body["message_id"] == closed
        assert request.headers["x-e2a-delivery-attempt"] == str(attempts + 1)
        auth = body["auth_headers"]
        assert auth["X-E2A-Auth-Timestamp"] == format_timestamp(clock.now)  # signed afresh
        raw = base64.b64decode(body["raw_message"], validate=True)
        assert sdk_verifies(auth, raw, secret, clock.now)
        assert await delivery_status(alice, agent, closed) == "delivered"
        recorded = await recorded_attempts(gateway, closed)
        assert [a.attempt for a in recorded] == list(range(1, attempts + 2))

        # And all the rest at once.
        every = await alice.http.post(dead_letters_path(agent, "/redeliver"))
        assert every.status_code == 202
        assert every.json() == {"message_ids": [gone], "delivery_status": "pending"}
        assert await worker.deliver_due(clock.now) == 1
        assert await delivery_status(alice, agent, gone) == "delivered"
        assert await listed(alice, agent) == []
        assert (await alice.http.post(dead_letters_path(agent, "/redeliver"))).json()[
            "message_ids"
        ] == []
        assert await worker.deliver_due(clock.now + DAY) == 0
        assert job_due_at(gateway.settings, gone) is None


async def test_a_redelivery_that_fails_again_is_retried_from_30_s_for_24_h_numbered_on(
    quiet: QuietGateway, receiver: HttpReceiver
) -> None:
    """A dead letter redelivered while its receiver is still broken (503) is retried on the
    delivery schedule from its start: about 30 s after the redelivery's first attempt, then
    about 60 s, doubling to 1 h, until 24 h after the redelivery; its attempts are numbered on
    from the last one all the while, and it is a dead letter again at the end."""
    gateway = quiet.gateway
    alice = await open_account(gateway, quiet.http_url, "alice@example.com")
    async with alice.http, WebhookConnections() as connections:
        clock = FakeClock(time.time())
        worker = WebhookWorker(gateway, connections, clock=clock, attempt_timeout=5.0)
        agent = await create_agent(alice, "hooked", receiver.url)
        # Received two days ago: its first 24 h of retries ended a day ago.
        clock.now = time.time() - 2 * DAY
        message = await store_received(quiet, agent, clock.now, "Still broken")
        receiver.reply = lambda _: Answer(503)
        first_run = await exhaust(worker, clock, gateway.settings, message)
        assert first_run > 10
        assert await delivery_status(alice, agent, message) == "failed"

        queued = await alice.http.post(dead_letters_path(agent, f"/{message}/redeliver"))
        assert queued.status_code == 202
        clock.now = redelivered_at = time.time()
        before = len(receiver.requests)
        assert await worker.deliver_due(clock.now) == 1
        (request,) = receiver.requests[before:]
        assert request.headers["x-e2a-delivery-attempt"] == str(first_run + 1)
        for expected_delay in (30.0, 60.0, 120.0):
            due = job_due_at(gateway.settings, message)
            assert due is not None
            assert 0.8 * expected_delay <= due - clock.now <= 1.2 * expected_delay
            clock.now = due
            assert await worker.deliver_due(due) == 1
        numbers = [r.headers["x-e2a-delivery-attempt"] for r in receiver.requests[before:]]
        assert numbers == [str(first_run + n) for n in range(1, 5)]

        second_run = 4 + await exhaust(worker, clock, gateway.settings, message)
        assert clock.now == pytest.approx(redelivered_at + DAY, abs=5.0)  # the last, at 24 h
        assert await delivery_status(alice, agent, message) == "failed"
        recorded = await recorded_attempts(gateway, message)
        assert [a.attempt for a in recorded] == list(range(1, first_run + second_run + 1))
        (letter,) = await listed(alice, agent)
        assert (letter["message_id"], letter["attempts"]) == (message, first_run + second_run)


async def test_a_local_agent_takes_no_redelivery_and_bad_pages_are_refused(
    quiet: QuietGateway,
) -> None:
    alice = await open_account(quiet.gateway, quiet.http_url, "alice@example.com")
    async with alice.http:
        local = await create_agent(alice, "local")
        refused = await alice.http.post(dead_letters_path(local, "/redeliver"))
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "not_cloud_agent"
        for query in ("page_size=0", "page_size=101", "page_size=" + "9" * 5000, "token=nope"):
            bad = await alice.http.get(dead_letters_path(local, f"?{query}"))
            assert bad.status_code == 400, query
        unknown = await alice.http.get(dead_letters_path("nobody@agents.test"))
        assert unknown.status_code == 404


async def test_over_smtp_a_refused_delivery_is_redelivered_from_the_dashboard(
    tmp_path: Path, resolver: FixtureResolver, nursery: trio.Nursery, receiver: HttpReceiver
) -> None:
    """The whole gateway on real time: mail over SMTP, the receiver refuses it (410, final),
    the owner redelivers it from the dashboard, and it arrives; another user gets 404."""
    settings = make_settings(tmp_path, webhooks={"allow_private": True})
    running: RunningGateway = await nursery.start(partial(run_gateway, settings, resolver=resolver))
    alice = await open_account(running.gateway, running.addresses.http_url, "alice@example.com")
    mallory = await open_account(running.gateway, running.addresses.http_url, "m@example.com")
    receiver.reply = lambda _: Answer(410)
    async with alice.http, mallory.http:
        agent = await create_agent(alice, "e2e", receiver.url)
        secret = await new_signing_secret(alice)
        await smtp_send(running.addresses.smtp_port, [agent], mail("Over the wire"))
        (refused,) = await receiver.wait_for(1)
        message = json.loads(refused.body)["message_id"]
        await wait_for_status(alice, agent, message, "failed")

        base = running.addresses.http_url
        async with (
            httpx.AsyncClient(base_url=base) as browser,
            httpx.AsyncClient(base_url=base) as other,
        ):
            await sign_in(browser, alice.key)
            await sign_in(other, mallory.key)
            where = f"/agents/{quote(agent, safe='')}/dead-letters"
            shown = await browser.get(where)
            assert shown.status_code == 200
            assert "Over the wire" in shown.text and "HTTP 410" in shown.text
            assert (await other.get(where)).status_code == 404
            forged = await other.post(
                f"{where}/{message}/redeliver",
                data={"csrf_token": csrf_token((await other.get("/agents")).text)},
            )
            assert forged.status_code == 404

            receiver.reply = lambda _: Answer(200)
            done = await browser.post(
                f"{where}/{message}/redeliver", data={"csrf_token": csrf_token(shown.text)}
            )
            assert done.status_code == 303
            (_, delivered) = await receiver.wait_for(2)
            body = json.loads(delivered.body)
            assert body["message_id"] == message
            assert delivered.headers["x-e2a-delivery-attempt"] == "2"
            raw = base64.b64decode(body["raw_message"], validate=True)
            assert sdk_verifies(body["auth_headers"], raw, secret, time.time())
            await wait_for_status(alice, agent, message, "delivered")
            after = await browser.get(done.headers["Location"])
            assert "Queued for delivery again" in after.text
            assert "No dead letters" in after.text
