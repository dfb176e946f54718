"""The `/v1` account export holds every record of the account, in e2a's `UserExport` shape:
its suppressions (account-wide and an agent's, as e2a's `SuppressionExportEntry`), and also the
account's webhook subscribers (never their secrets) and its events log; the seed-era
`/api/v1` export keeps its documented keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from tests.conftest import Account, make_settings
from tests.databases import query
from tests.delivery_support import create_agent, mail, smtp_send
from tests.test_data_rights import EXPORT_KEYS
from tests.test_v1_reviews import conforms, protect, protection


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, webhooks={"allow_private": True})


async def test_the_export_holds_suppressions_webhooks_and_events_and_no_secret(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    bob: Account = await make_account("bob@example.com")
    bot = await create_agent(alice, "bot")
    await create_agent(bob, "bobbot")
    path = f"/v1/agents/{quote(bot, safe='')}/suppressions"
    blocked = await alice.http.post(path, json={"address": "eve@example.org", "reason": "asked"})
    assert blocked.status_code in (200, 201), blocked.text
    bob_blocked = await bob.http.post(
        f"/v1/agents/{quote('bobbot@agents.test', safe='')}/suppressions",
        json={"address": "bob-only@example.org"},
    )
    assert bob_blocked.status_code in (200, 201), bob_blocked.text
    hooked = await alice.http.post(
        "/v1/webhooks",
        json={
            "url": "http://127.0.0.1:9/hook",
            "events": ["email.received"],
            "description": "inbox",
            "filters": {"agent_emails": [bot]},
        },
    )
    assert hooked.status_code == 201, hooked.text
    webhook = hooked.json()
    source = {"name": "Note", "alias": "note", "subject": "{{a}}", "text": "{{b}}"}
    template = (await alice.http.post("/v1/templates", json=source)).json()
    assert (await bob.http.post("/v1/templates", json=source | {"name": "Bob's"})).is_success
    await smtp_send(running.addresses.smtp_port, [bot], mail("Exported"))
    (received,) = (await alice.http.get("/v1/events", params={"type": "email.received"})).json()[
        "items"
    ]

    response = await alice.http.get("/v1/account/export")
    assert response.status_code == 200, response.text
    export = response.json()
    conforms(export, "UserExport")
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="e2a-export-{export["user"]["id"]}.json"'
    )
    (suppression,) = export["suppressions"]
    conforms(suppression, "SuppressionExportEntry")
    assert suppression["address"] == "eve@example.org" and suppression["agent_email"] == bot
    assert (suppression["source"], suppression["reason"]) == ("manual", "asked")
    (exported_hook,) = export["webhooks"]
    assert exported_hook["id"] == webhook["id"] and exported_hook["url"] == webhook["url"]
    assert exported_hook["events"] == ["email.received"] and exported_hook["enabled"] is True
    assert exported_hook["filters"]["agent_emails"] == [bot]
    assert exported_hook["description"] == "inbox"
    assert export["templates"] == [template]  # as TemplateView shows it; not bob's
    (event,) = [item for item in export["events"] if item["type"] == "email.received"]
    assert event["id"] == received["id"] and event["data"] == received["data"]
    assert event["agent_email"] == bot and event["message_id"] == received["message_id"]

    text = response.text
    ((seed,),) = query(
        running.gateway.settings.database.url,
        "SELECT seed FROM webhooks WHERE id = ?",
        (webhook["id"],),
    )
    assert webhook["signing_secret"].startswith("whsec_")
    for secret in (webhook["signing_secret"], seed):
        assert secret not in text
    assert "secret" not in json.dumps(export["webhooks"])
    assert "bob-only@example.org" not in text and "bobbot" not in text

    legacy = await alice.http.get("/api/v1/users/me/export")
    assert legacy.status_code == 200 and set(legacy.json()) == EXPORT_KEYS


async def test_the_exported_agents_carry_their_gates_as_protection_shows_them(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    guarded = await create_agent(alice, "guarded")
    plain = await create_agent(alice, "plain")
    inbound = {"policy": "allowlist", "allowlist": ["boss@example.org"], "action": "review"}
    shown = await protect(alice, guarded, protection(inbound=inbound, outbound_action="review"))

    export = (await alice.http.get("/v1/account/export")).json()
    agents = {agent["email"]: agent for agent in export["agents"]}
    for agent in agents.values():
        conforms(agent, "AgentIdentity")
    gates = agents[guarded]
    assert (gates["inbound_policy"], gates["inbound_policy_action"]) == ("allowlist", "review")
    assert gates["inbound_allowlist"] == shown["inbound"]["gate"]["allowlist"]
    outbound = shown["outbound"]["gate"]
    assert (gates["outbound_policy"], gates["outbound_policy_action"]) == ("allowlist", "review")
    assert (outbound["policy"], outbound["action"]) == ("allowlist", "review")
    assert gates["outbound_allowlist"] == outbound["allowlist"] == []
    for scan in ("inbound_scan", "outbound_scan"):  # off, with e2a's thresholds for `off`
        assert gates[scan] == "off" and gates[f"{scan}_sensitivity"] == "off"
        assert (gates[f"{scan}_review_threshold"], gates[f"{scan}_block_threshold"]) == (0.5, 0.9)
    open_gates = agents[plain]
    assert (open_gates["inbound_policy"], open_gates["inbound_policy_action"]) == ("open", "flag")
    assert (open_gates["outbound_policy"], open_gates["outbound_policy_action"]) == (
        "open",
        "flag",
    )


async def test_the_exported_messages_keep_their_labels_and_the_trash(
    running: RunningGateway, make_account: Any
) -> None:
    """What the owner did to their mail is theirs too: each exported message carries its
    labels (as getMessage shows them) and, when it is in the trash, when it went there; the
    `/api/v1` export keeps its documented keys."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    for subject in ("Labelled", "Trashed", "Plain"):
        await smtp_send(running.addresses.smtp_port, [bot], mail(subject))
    listed = (await alice.http.get(f"/v1/agents/{bot}/messages")).json()["items"]
    ids = {item["subject"]: item["id"] for item in listed}
    labelled = await alice.http.patch(
        f"/v1/agents/{bot}/messages/{ids['Labelled']}", json={"add_labels": ["urgent", "billing"]}
    )
    assert labelled.status_code == 200, labelled.text
    trashed = await alice.http.delete(f"/v1/agents/{bot}/messages/{ids['Trashed']}")
    assert trashed.status_code == 200, trashed.text
    opened = (await alice.http.get(f"/v1/agents/{bot}/messages/{ids['Trashed']}")).json()

    export = (await alice.http.get("/v1/account/export")).json()
    conforms(export, "UserExport")
    messages = {message["subject"]: message for message in export["messages"]}
    assert messages["Labelled"]["labels"] == ["billing", "urgent"]
    assert "deleted_at" not in messages["Labelled"]
    assert messages["Trashed"]["labels"] == []
    assert messages["Trashed"]["deleted_at"] == opened["deleted_at"]
    assert messages["Plain"]["labels"] == [] and "deleted_at" not in messages["Plain"]
    assert set(export) >= EXPORT_KEYS and "mailbox" not in export

    legacy = (await alice.http.get("/api/v1/users/me/export")).json()
    assert set(legacy) == EXPORT_KEYS
    assert all("labels" not in message for message in legacy["messages"])


async def test_both_exports_say_what_each_key_reaches_and_until_when(
    running: RunningGateway, make_account: Any
) -> None:
    """A key's scope, the agent it is bound to and its expiry are the account's records as
    much as its name: the exports carry them, still without the key or its hash."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    made = await alice.http.post(
        "/v1/account/api-keys",
        json={"scope": "agent", "agent_email": bot, "expires_at": "2999-01-01T00:00:00Z"},
    )
    assert made.status_code == 201, made.text
    bound = made.json()
    for path in ("/api/v1/users/me/export", "/v1/account/export"):
        answer = await alice.http.get(path)
        assert answer.status_code == 200, answer.text
        assert bound["key"] not in answer.text
        exported = {key["id"]: key for key in answer.json()["api_keys"]}
        assert len(exported) == 2, path
        entry = exported[bound["id"]]
        assert entry["scope"] == "agent" and entry["agent_email"] == bot, path
        assert entry["expires_at"] == "2999-01-01T00:00:00Z", path
        (account_key,) = (key for key in exported.values() if key["id"] != bound["id"])
        assert account_key["scope"] == "account", path
        assert account_key.get("agent_email") is None and account_key.get("expires_at") is None
