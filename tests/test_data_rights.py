"""Data rights over real HTTP: export everything of a user, erase everything of a user."""

from __future__ import annotations

import json
from typing import Any

from e2a_gateway.app import RunningGateway
from e2a_gateway.signing.credentials import hash_api_key
from tests.conftest import Account, agent_path
from tests.test_inbound_e2e import new_agent, smtp_send

EXPORT_KEYS = {
    "schema_version",
    "generated_at",
    "user",
    "agents",
    "domains",
    "api_keys",
    "signing_secrets",
    "messages",
}


async def held_send(account: Account, agent: str) -> str:
    """Make `agent` hold its mail for approval, then send one message (kept pending)."""
    updated = await account.http.put(
        agent_path(agent), json={"hitl_enabled": True, "hitl_ttl_seconds": 3600}
    )
    assert updated.status_code == 200, updated.text
    sent = await account.http.post(
        "/api/v1/send",
        json={"to": ["someone@example.org"], "subject": "Quote", "body": "Outbound draft body"},
    )
    assert sent.status_code == 202, sent.text
    return str(sent.json()["message_id"])


async def populate(running: RunningGateway, account: Account, slug: str, domain: str) -> str:
    """One agent with an inbound and an outbound message, a domain, a second signing secret."""
    agent = await new_agent(account, slug)
    assert await smtp_send(running, [agent]) == {}
    await held_send(account, agent)
    added = await account.http.post("/api/v1/domains", json={"domain": domain})
    assert added.status_code == 201, added.text
    return agent


async def test_export_holds_the_users_data_and_no_secrets(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    bob: Account = await make_account("bob@example.com")
    alice_bot = await populate(running, alice, "alicebot", "alice.example")
    bob_bot = await populate(running, bob, "bobbot", "bob.example")
    created = await alice.http.post("/api/v1/users/me/signing-secrets", json={})
    assert created.status_code == 201, created.text
    plaintext_secret = created.json()["secret"]

    response = await alice.http.get("/api/v1/users/me/export")
    assert response.status_code == 200, response.text
    export = response.json()
    assert set(export) == EXPORT_KEYS
    assert export["schema_version"] == "1" and export["generated_at"].endswith("Z")
    assert export["user"]["email"] == "alice@example.com"
    assert [agent["email"] for agent in export["agents"]] == [alice_bot]
    assert [domain["domain"] for domain in export["domains"]] == ["alice.example"]
    assert len(export["api_keys"]) == 1 and alice.key.startswith(
        export["api_keys"][0]["key_prefix"]
    )
    assert len(export["signing_secrets"]) == 2
    inbound, outbound = export["messages"]
    assert inbound["direction"] == "inbound" and inbound["agent_email"] == alice_bot
    assert inbound["subject"] == "Café order" and inbound["size_bytes"] > 0
    assert outbound["direction"] == "outbound" and outbound["status"] == "pending_approval"
    assert outbound["to"] == ["someone@example.org"] and outbound["subject"] == "Quote"

    text = response.text
    assert bob_bot not in text and "bob.example" not in text and "bob@example.com" not in text
    seeds = await running.gateway.storage.list_signing_secrets(export["user"]["id"])
    forbidden = [alice.key, hash_api_key(alice.key), plaintext_secret] + [s.seed for s in seeds]
    for secret in forbidden:
        assert secret not in text
    assert "key_hash" not in text and "seed" not in text
    assert "Outbound draft body" not in json.dumps(export)  # metadata only, no bodies


async def test_delete_needs_confirmation_and_deletes_nothing_without_it(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    await populate(running, alice, "alicebot", "alice.example")
    before = (await alice.http.get("/api/v1/users/me/export")).json()
    for query in ("", "?confirm=yes", "?confirm=delete"):
        refused = await alice.http.delete(f"/api/v1/users/me{query}")
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["code"] == "confirmation_required"
        assert "confirm=DELETE" in error["message"]
    after = (await alice.http.get("/api/v1/users/me/export")).json()
    before.pop("generated_at")
    after.pop("generated_at")
    assert after == before


async def test_delete_erases_the_user_and_nobody_else(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    bob: Account = await make_account("bob@example.com")
    alice_bot = await populate(running, alice, "alicebot", "alice.example")
    await populate(running, bob, "bobbot", "bob.example")
    bob_before = (await bob.http.get("/api/v1/users/me/export")).json()

    response = await alice.http.delete("/api/v1/users/me?confirm=DELETE")
    assert response.status_code == 200, response.text
    deleted = response.json()["deleted"]
    assert deleted["users"] == 1 and deleted["agents"] == 1 and deleted["domains"] == 1
    assert deleted["messages"] == 2 and deleted["api_keys"] == 1
    assert deleted["signing_secrets"] == 1  # jobs: whatever the workers had not finished yet
    assert set(deleted) == {
        "agents",
        "messages",
        "domains",
        "api_keys",
        "signing_secrets",
        "jobs",
        "webhook_attempts",
        "users",
    }

    assert (await alice.http.get("/api/v1/users/me/export")).status_code == 401
    assert (await alice.http.delete("/api/v1/users/me?confirm=DELETE")).status_code == 401
    assert await running.gateway.storage.find_agent(alice_bot) is None

    carol: Account = await make_account("carol@example.com")
    assert await new_agent(carol, "alicebot") == alice_bot  # the address is free again

    bob_after = (await bob.http.get("/api/v1/users/me/export")).json()
    for name in ("user", "agents", "domains", "api_keys", "signing_secrets", "messages"):
        assert bob_after[name] == bob_before[name]
