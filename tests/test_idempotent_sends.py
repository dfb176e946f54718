"""A send, reply or forward on `/v1` with an Idempotency-Key whose request dies after storing its
message and before its answer is kept: a retry with the same key and body answers that message,
at once and after the claim has gone stale, and stores and sends nothing again; so do
createWebhook with the webhook it made, approveReview with the approval and
rotateWebhookSecret with the rotation.

The death is simulated on a live gateway (SQLite, or PostgreSQL where configured) by dropping
the write of the answer, which is all a process killed in that window leaves undone
(tests/test_idempotent_send_durability.py kills a real `e2a serve` there, on `/api/v1/send`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from e2a_gateway.app import RunningGateway
from e2a_gateway.operations import idempotency
from e2a_gateway.operations.caller import authenticate
from e2a_gateway.signing.webhook_signatures import webhook_secret
from tests.conftest import Account
from tests.delivery_support import create_agent
from tests.webhook_support import settings

__all__ = ["settings"]  # a fixture: webhooks on loopback allowed


def messages_path(agent: str, suffix: str = "") -> str:
    return f"/v1/agents/{quote(agent, safe='')}/messages{suffix}"


async def sent_ids(account: Account, agent: str) -> list[str]:
    """The ids of the messages `agent` has sent."""
    listed = await account.http.get(messages_path(agent), params={"direction": "outbound"})
    assert listed.status_code == 200, listed.text
    return [message["id"] for message in listed.json()["items"]]


async def answer_lost(*_: object) -> None:
    """The process died before it kept the answer."""


@pytest.mark.parametrize("route", ["send", "reply", "forward"])
async def test_a_send_that_died_before_its_answer_was_kept_is_answered_not_made_again(
    running: RunningGateway, make_account: Any, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    pal = await create_agent(alice, "pal")
    hello = {"to": [pal], "subject": "Hello", "text": "Hi."}
    first = await alice.http.post(messages_path(bot), json=hello, params={"wait": "sent"})
    assert first.status_code == 200, first.text
    listed = await alice.http.get(messages_path(pal))
    original = listed.json()["items"][0]["id"]
    path, body = {
        "send": (messages_path(pal), {"to": [bot], "subject": "Once", "text": "Once."}),
        "reply": (messages_path(pal, f"/{original}/reply"), {"text": "Once."}),
        "forward": (messages_path(pal, f"/{original}/forward"), {"to": [bot], "text": "Once."}),
    }[route]
    keyed = {"Idempotency-Key": f"{route}-once"}
    storage = running.gateway.storage
    with monkeypatch.context() as dying:
        dying.setattr(storage, "complete_idempotency_key", answer_lost)
        made = await alice.http.post(path, json=body, headers=keyed)
    assert made.status_code in (200, 202), made.text
    stored = made.json()["message_id"]
    assert await sent_ids(alice, pal) == [stored]

    retried = await alice.http.post(path, json=body, headers=keyed)
    assert retried.status_code in (200, 202), retried.text
    assert retried.json()["message_id"] == stored
    monkeypatch.setattr(idempotency, "STALE_CLAIM_SECONDS", -1)  # every claim is stale now
    later = await alice.http.post(path, json=body, headers=keyed)
    assert later.status_code in (200, 202), later.text
    assert later.json()["message_id"] == stored
    other = await alice.http.post(path, json={**body, "text": "Twice."}, headers=keyed)
    assert other.status_code == 422, other.text
    assert other.json()["error"]["code"] == "idempotency_key_reuse"
    assert await sent_ids(alice, pal) == [stored], "the retry stored and sent it again"


async def test_a_send_refused_for_good_is_not_remembered(
    running: RunningGateway, make_account: Any
) -> None:
    """No relay is configured, so mail to a remote address fails once stored (422
    `send_failed`, nothing sent): a retry with the same key sends again, as documented."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    draft = {"from": bot, "to": ["someone@example.org"], "subject": "No relay", "body": "x"}
    keyed = {"Idempotency-Key": "refused"}
    first = await alice.http.post("/api/v1/send", json=draft, headers=keyed)
    again = await alice.http.post("/api/v1/send", json=draft, headers=keyed)
    for refused in (first, again):
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "send_failed"
    assert first.json()["error"]["message"] != again.json()["error"]["message"]  # two messages
    assert len(await sent_ids(alice, bot)) == 2


async def test_a_webhook_made_before_the_answer_was_kept_is_answered_not_made_again(
    running: RunningGateway, make_account: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second webhook to the same URL would deliver every event twice."""
    alice: Account = await make_account("alice@example.com")
    body = {"url": "http://127.0.0.1:9/hook", "events": ["email.received"]}
    keyed = {"Idempotency-Key": "hook-once"}
    with monkeypatch.context() as dying:
        dying.setattr(running.gateway.storage, "complete_idempotency_key", answer_lost)
        made = await alice.http.post("/v1/webhooks", json=body, headers=keyed)
    assert made.status_code == 201, made.text
    retried = await alice.http.post("/v1/webhooks", json=body, headers=keyed)
    assert (retried.status_code, retried.json()) == (201, made.json())
    monkeypatch.setattr(idempotency, "STALE_CLAIM_SECONDS", -1)
    later = await alice.http.post("/v1/webhooks", json=body, headers=keyed)
    assert (later.status_code, later.json()) == (201, made.json())
    listed = (await alice.http.get("/v1/webhooks")).json()["items"]
    assert [hook["id"] for hook in listed] == [made.json()["id"]], "a second webhook was made"


async def test_an_approval_made_before_the_answer_was_kept_is_answered_again(
    running: RunningGateway, make_account: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Approving again would be refused (409 `message_not_pending`): the retry gets the
    approval its first request made."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    hitl = await alice.http.put(
        f"/api/v1/agents/{quote(bot, safe='')}", json={"hitl_enabled": True}
    )
    assert hitl.status_code == 200, hitl.text
    held = await alice.http.post(
        messages_path(bot), json={"to": [bot], "subject": "s", "text": "t"}
    )
    assert held.status_code == 202 and held.json()["status"] == "pending_review", held.text
    path = f"/v1/reviews/{held.json()['message_id']}/approve"
    keyed = {"Idempotency-Key": "approve-once"}
    with monkeypatch.context() as dying:
        dying.setattr(running.gateway.storage, "complete_idempotency_key", answer_lost)
        approved = await alice.http.post(path, json={"subject": "edited"}, headers=keyed)
    assert approved.status_code == 202 and approved.json()["edited"] is True, approved.text
    retried = await alice.http.post(path, json={"subject": "edited"}, headers=keyed)
    assert (retried.status_code, retried.json()) == (202, approved.json())
    monkeypatch.setattr(idempotency, "STALE_CLAIM_SECONDS", -1)
    later = await alice.http.post(path, json={"subject": "edited"}, headers=keyed)
    assert (later.status_code, later.json()) == (202, approved.json())


async def test_a_rotation_made_before_the_answer_was_kept_is_answered_not_made_again(
    running: RunningGateway, make_account: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rotating again would end the secret in use before the rotation at once (the first
    rotation's secret, never shown, would become the one still signing for 24 hours)."""
    alice: Account = await make_account("alice@example.com")
    body = {"url": "http://127.0.0.1:9/hook", "events": ["email.received"]}
    hook = await alice.http.post("/v1/webhooks", json=body)
    assert hook.status_code == 201, hook.text
    path = f"/v1/webhooks/{hook.json()['id']}/rotate-secret"
    keyed = {"Idempotency-Key": "rotate-once"}
    with monkeypatch.context() as dying:
        dying.setattr(running.gateway.storage, "complete_idempotency_key", answer_lost)
        rotated = await alice.http.post(path, headers=keyed)
    assert rotated.status_code == 200, rotated.text
    retried = await alice.http.post(path, headers=keyed)
    assert (retried.status_code, retried.json()) == (200, rotated.json())
    monkeypatch.setattr(idempotency, "STALE_CLAIM_SECONDS", -1)
    later = await alice.http.post(path, headers=keyed)
    assert (later.status_code, later.json()) == (200, rotated.json())
    caller = await authenticate(running.gateway, alice.key)
    webhook = await running.gateway.storage.get_webhook(caller.user_id, hook.json()["id"])
    assert webhook is not None
    assert (
        webhook_secret(running.gateway.server_key, webhook.previous_seed or "")
        == (hook.json()["signing_secret"])
    ), "the secret in use before the rotation no longer signs"
