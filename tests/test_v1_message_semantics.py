"""Where the values of `/v1` message fields mean what they mean on e2a's server (220fe0a7:
internal/identity/store.go, internal/webhook/store.go, internal/httpapi/messages.go), over real
HTTP: which requests mark mail received read, and what `webhook_status` / `webhook_error` say
while a cloud agent's webhook is retried."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from e2a_gateway.app import RunningGateway
from e2a_gateway.workers.webhook_connections import WebhookConnections
from e2a_gateway.workers.webhooks import WebhookWorker
from tests.conftest import Account
from tests.delivery_support import QuietGateway, accept, create_agent, mail
from tests.http_receiver import Answer, HttpReceiver, answer_in_turn
from tests.webhook_support import FakeClock, alice, quiet, receiver, settings

__all__ = ["alice", "quiet", "receiver", "settings"]  # fixtures


def messages(agent: str, suffix: str = "") -> str:
    return f"/v1/agents/{quote(agent, safe='')}/messages{suffix}"


async def unread(account: Account, agent: str) -> list[str]:
    """The ids of the agent's unread mail, as an SDK's default `messages.list` polls it."""
    listed = await account.http.get(messages(agent))
    assert listed.status_code == 200, listed.text
    return [item["id"] for item in listed.json()["items"]]


async def test_a_reply_or_forward_leaves_the_original_unread(
    running: RunningGateway, make_account: Any
) -> None:
    """e2a reads the message a reply or forward refers to without marking it read
    (GetRepliableMessage): only getMessage, getAttachment and restoreMessage do. An agent that
    answers from a webhook and leaves the mail for a later poll still finds it unread."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    pal = await create_agent(alice, "pal")
    answered = await accept(running.gateway, [bot], mail("Answer me"))
    passed_on = await accept(running.gateway, [bot], mail("Pass me on"))

    replied = await alice.http.post(messages(bot, f"/{answered}/reply"), json={"text": "Thanks"})
    assert replied.status_code == 202, replied.text
    forwarded = await alice.http.post(
        messages(bot, f"/{passed_on}/forward"), json={"to": [pal], "text": "FYI"}
    )
    assert forwarded.status_code == 202, forwarded.text
    assert sorted(await unread(alice, bot)) == sorted([answered, passed_on])

    shown = await alice.http.get(messages(bot, f"/{answered}"))
    assert shown.status_code == 200 and shown.json()["read_status"] == "read", shown.text
    assert await unread(alice, bot) == [passed_on]


async def test_restore_marks_the_message_read_and_says_so(
    running: RunningGateway, make_account: Any
) -> None:
    """e2a's restoreMessage answers the message as getMessage reads it (marked read), so the
    answer's `read_status` is the one a later list shows."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    message_id = await accept(running.gateway, [bot], mail("Trashed unread"))
    deleted = await alice.http.delete(messages(bot, f"/{message_id}"))
    assert deleted.status_code == 200, deleted.text

    restored = await alice.http.post(messages(bot, f"/{message_id}/restore"))
    assert restored.status_code == 200, restored.text
    assert restored.json()["read_status"] == "read"
    assert await unread(alice, bot) == []


async def test_webhook_status_reads_pending_while_retried_with_the_last_error(
    quiet: QuietGateway, alice: Account, receiver: HttpReceiver
) -> None:
    """e2a keeps a webhook delivery `pending` while it is retried, with the last attempt's
    error in `webhook_error`, `delivered` (no error) once it lands, `failed` when given up:
    never a status of its own for a retry."""
    receiver.reply = answer_in_turn(Answer(500), Answer(200))
    agent = await create_agent(alice, "hooked", receiver.url)
    message_id = await accept(quiet.gateway, [agent], mail("Hooked"))
    clock = FakeClock(time.time())

    async def views() -> tuple[dict[str, Any], dict[str, Any]]:
        listed = await alice.http.get(messages(agent), params={"read_status": "all"})
        assert listed.status_code == 200, listed.text
        (item,) = listed.json()["items"]
        shown = await alice.http.get(messages(agent, f"/{message_id}"))
        assert shown.status_code == 200, shown.text
        return item, shown.json()

    item, shown = await views()
    assert item["webhook_status"] == shown["webhook_status"] == "pending"
    assert "webhook_error" not in shown

    async with WebhookConnections() as connections:
        worker = WebhookWorker(quiet.gateway, connections, clock=clock, attempt_timeout=5.0)
        assert await worker.deliver_due(clock.now) == 1
        item, shown = await views()
        assert item["webhook_status"] == shown["webhook_status"] == "pending"
        assert "500" in shown["webhook_error"], shown

        clock.now += 3600
        assert await worker.deliver_due(clock.now) == 1
        item, shown = await views()
        assert item["webhook_status"] == shown["webhook_status"] == "delivered"
        assert "webhook_error" not in shown
