"""Mail trashed on `/v1` is gone from the seed-era `/api/v1` face too, over real SMTP and HTTP:
not listed, not readable by id (404, as `/v1` lists hide it), not marked read, not a reply
target, not in the outbound lists nor the dead letters; `/v1` still opens it by id, and a
restore brings it back everywhere. The MCP `list_messages` tool, which reads the `/api/v1`
inbox, no longer shows it."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from e2a_gateway.app import RunningGateway
from tests.conftest import Account, agent_path
from tests.databases import query
from tests.delivery_support import create_agent, mail, smtp_send
from tests.mcp_support import call
from tests.test_mcp_names import TRANSPORTS, opener


def v1_messages(agent: str, suffix: str = "") -> str:
    return f"/v1/agents/{quote(agent, safe='')}/messages{suffix}"


async def inbox(account: Account, agent: str) -> list[str]:
    listed = await account.http.get(agent_path(agent, "/messages"), params={"status": "all"})
    assert listed.status_code == 200, listed.text
    return [message["subject"] for message in listed.json()["messages"]]


async def message_ids(account: Account, agent: str) -> dict[str, str]:
    listed = await account.http.get(v1_messages(agent), params={"read_status": "all"})
    assert listed.status_code == 200, listed.text
    return {item["subject"]: item["id"] for item in listed.json()["items"]}


async def test_mail_trashed_on_v1_is_gone_from_api_v1_until_restored(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    peer = await create_agent(alice, "peer")
    for subject in ("Keep", "Trash me"):
        await smtp_send(running.addresses.smtp_port, [bot], mail(subject))
    sent = await alice.http.post(
        "/api/v1/send", json={"from": bot, "to": [peer], "subject": "Sent", "body": "Hi peer."}
    )
    assert sent.status_code == 200, sent.text
    outbound_id = sent.json()["message_id"]
    ids = await message_ids(alice, bot)
    trashed_id = ids["Trash me"]
    for message_id in (trashed_id, outbound_id):
        deleted = await alice.http.delete(v1_messages(bot, f"/{message_id}"))
        assert deleted.status_code in (200, 204), deleted.text

    assert await inbox(alice, bot) == ["Keep"]
    unread = await alice.http.get(agent_path(bot, "/messages"))
    assert [message["subject"] for message in unread.json()["messages"]] == ["Keep"]
    hidden = await alice.http.get(agent_path(bot, f"/messages/{trashed_id}"))
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "not_found"
    reply = await alice.http.post(
        agent_path(bot, f"/messages/{trashed_id}/reply"), json={"body": "Too late."}
    )
    assert reply.status_code == 404, reply.text
    storage = running.gateway.storage
    assert not await storage.mark_read(user_of(running, alice), bot, trashed_id)
    sent_list = await alice.http.get("/api/v1/messages", params={"status": "sent"})
    assert sent_list.status_code == 200, sent_list.text
    assert outbound_id not in [message["id"] for message in sent_list.json()["messages"]]
    outbound = await alice.http.get(f"/api/v1/messages/{outbound_id}")
    assert outbound.status_code == 404 and outbound.json()["error"]["code"] == "not_found"
    # /v1 still opens trashed mail by id, and it was never marked read by the reads above
    opened = await alice.http.get(v1_messages(bot, f"/{trashed_id}"))
    assert opened.status_code == 200 and opened.json()["deleted_at"]

    for message_id in (trashed_id, outbound_id):
        restored = await alice.http.post(v1_messages(bot, f"/{message_id}/restore"))
        assert restored.status_code == 200, restored.text
    assert sorted(await inbox(alice, bot)) == ["Keep", "Trash me"]
    assert (await alice.http.get(agent_path(bot, f"/messages/{trashed_id}"))).status_code == 200
    assert (await alice.http.get(f"/api/v1/messages/{outbound_id}")).status_code == 200


def user_of(running: RunningGateway, account: Account) -> str:
    """The user id behind `account` (its API key's owner)."""
    ((user_id,),) = query(
        running.gateway.settings.database.url,
        "SELECT id FROM users WHERE email = ?",
        (account.email,),
    )
    return str(user_id)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_list_messages_leaves_out_mail_trashed_on_v1(
    transport: str, running: RunningGateway, make_account: Any
) -> None:
    account: Account = await make_account(f"mcp-trash-{transport}@example.com")
    agent = await create_agent(account, f"mcp-trash-{transport}")
    for subject in ("Stays", "Goes"):
        await smtp_send(running.addresses.smtp_port, [agent], mail(subject))
    goes = (await message_ids(account, agent))["Goes"]
    deleted = await account.http.delete(v1_messages(agent, f"/{goes}"))
    assert deleted.status_code in (200, 204), deleted.text
    async with opener(transport, running)(account.key, agent) as client:
        listed = await call(client, "list_messages", {"status": "all"})
    assert [message["subject"] for message in listed["messages"]] == ["Stays"]


async def test_a_dead_letter_trashed_on_v1_is_not_listed(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    await smtp_send(running.addresses.smtp_port, [bot], mail("Undelivered"))
    (message_id,) = (await message_ids(alice, bot)).values()
    # as the webhook worker leaves a message it gave up on: failed, no job left
    query(
        running.gateway.settings.database.url,
        "UPDATE messages SET delivery_status = 'failed' WHERE id = ?",
        (message_id,),
    )
    letters = await alice.http.get(agent_path(bot, "/dead-letters"))
    assert [letter["message_id"] for letter in letters.json()["dead_letters"]] == [message_id]

    deleted = await alice.http.delete(v1_messages(bot, f"/{message_id}"))
    assert deleted.status_code in (200, 204), deleted.text
    letters = await alice.http.get(agent_path(bot, "/dead-letters"))
    assert letters.json()["dead_letters"] == []  # redelivery takes what this lists, no more
