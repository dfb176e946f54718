"""The official SDK of e2a's current API (`e2a==5.8.1`) against the gateway's core `/v1`
resources: the account (whoami, export, delete), agents (create, get, rename, list, test,
trash and restore) and domains (register, get, list, verify, delete), with what an account key
and an agent key may each do. Every answer parses into the SDK's own typed models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from e2a_gateway.app import RunningGateway
from tests.conftest import SHARED_DOMAIN, Account
from tests.sdk_v1 import error, run_sdk, sdk5_python, value

pytestmark = pytest.mark.slow

__all__ = ["sdk5_python"]  # a fixture

BOT = f"bot@{SHARED_DOMAIN}"
OTHER = f"other@{SHARED_DOMAIN}"


async def test_agents_from_create_to_trash_and_back(
    running: RunningGateway, make_account: Any, sdk5_python: Path
) -> None:
    alice: Account = await make_account("alice@example.com")
    url = running.addresses.http_url
    made = await run_sdk(
        sdk5_python,
        url,
        {"default": alice.key},
        [
            {"do": "agents.create", "args": [{"email": BOT, "name": "Bot"}]},
            {"do": "agents.create", "args": [{"email": "other"}]},
            {"do": "agents.create", "args": [{"email": BOT}]},
            {"do": "agents.get", "args": [BOT]},
            {"do": "agents.update", "args": [BOT, {"name": "Renamed"}]},
            {"do": "agents.list", "kwargs": {"limit": 1}},
            {"do": "agents.test", "args": [BOT]},
            {
                "do": "account.api_keys.create",
                "args": [{"name": "bot", "scope": "agent", "agent_email": BOT}],
                "as": "bot_key",
            },
            {"do": "agents.delete", "args": [BOT]},
            {"do": "agents.get", "args": [BOT]},
            {"do": "agents.list"},
            {"do": "agents.list", "kwargs": {"deleted": True}},
            {"do": "agents.create", "args": [{"email": BOT}]},
            {"do": "agents.restore", "args": [BOT]},
            {"do": "agents.restore", "args": [BOT]},
            {"do": "agents.get", "args": [BOT]},
        ],
    )
    created = value(made[0], "AgentView")
    assert created["email"] == BOT and created["name"] == "Bot"
    assert created["domain"] == created["registered_domain"] == SHARED_DOMAIN
    assert created["domain_verified"] is True and "deleted_at" not in created
    assert value(made[1], "AgentView")["email"] == OTHER  # a bare slug: the shared domain
    error(made[2], "E2AConflictError", "agent_taken", 409)
    assert value(made[3], "AgentView")["name"] == "Bot"
    assert value(made[4], "AgentView")["name"] == "Renamed"
    listed = value(made[5], ["AgentView", "AgentView"])  # pages of one, walked by the pager
    assert [agent["email"] for agent in listed] == [OTHER, BOT]  # newest first
    tested = value(made[6], "SendResultView")
    assert tested["status"] == "sent" and tested["message_id"]
    bot_key = value(made[7])["key"]
    deleted = value(made[8], "DeleteAgentResult")
    assert (deleted["deleted"], deleted["email"]) == (True, BOT)
    error(made[9], "E2ANotFoundError", "not_found", 404)
    assert [agent["email"] for agent in value(made[10])] == [OTHER]
    trash = value(made[11], ["AgentView"])
    assert trash[0]["email"] == BOT and trash[0]["deleted_at"]
    refused = error(made[12], "E2AConflictError", "address_in_trash", 409)
    assert "restore" in refused["message"]
    restored = value(made[13], "AgentView")
    assert restored["email"] == BOT and "deleted_at" not in restored
    error(made[14], "E2AConflictError", "not_in_trash", 409)
    assert value(made[15], "AgentView")["name"] == "Renamed"  # settings intact

    # The key bound to the agent works again after the restore, and reaches its agent only.
    bound = await run_sdk(
        sdk5_python,
        url,
        {"default": bot_key},
        [
            {"do": "agents.get", "args": [BOT]},
            {"do": "agents.list"},
            {"do": "agents.get", "args": [OTHER]},
            {"do": "agents.test", "args": [BOT]},
            {"do": "agents.update", "args": [BOT, {"name": "mine"}]},
            {"do": "agents.delete", "args": [BOT]},
            {"do": "agents.create", "args": [{"email": "third"}]},
            {"do": "domains.list"},
            {"do": "account.get"},
            {"do": "account.export"},
        ],
    )
    assert value(bound[0], "AgentView")["email"] == BOT
    assert [agent["email"] for agent in value(bound[1])] == [BOT]
    assert BOT in error(bound[2], "E2APermissionError", "forbidden", 403)["message"]
    value(bound[3], "SendResultView")
    for refusal in bound[4:8]:
        error(refusal, "E2APermissionError", "forbidden", 403)
    whoami = value(bound[8], "AccountView")
    assert (whoami["scope"], whoami["agent_email"]) == ("agent", BOT)
    assert whoami["usage"]["agents"] == 2  # the account's, BOT and OTHER: e2a counts so for any key
    error(bound[9], "E2APermissionError", "forbidden", 403)


async def test_domains_with_their_dns_records(
    running: RunningGateway, make_account: Any, sdk5_python: Path
) -> None:
    alice: Account = await make_account("alice@example.com")
    made = await run_sdk(
        sdk5_python,
        running.addresses.http_url,
        {"default": alice.key},
        [
            {"do": "domains.create", "args": [{"domain": "Example.NET"}]},
            {"do": "agents.create", "args": [{"email": "bob@example.net"}]},
            {"do": "domains.verify", "args": ["example.net"]},
            {"do": "agents.create", "args": [{"email": "bob@example.net", "name": "Bob"}]},
            {"do": "domains.get", "args": ["example.net"]},
            {"do": "domains.create", "args": [{"domain": "example.org"}]},
            {"do": "domains.list", "kwargs": {"limit": 1}},
            {"do": "domains.create", "args": [{"domain": "example.net"}]},
            {"do": "domains.create", "args": [{"domain": SHARED_DOMAIN}]},
            {"do": "domains.delete", "args": ["example.net"]},
            {"do": "agents.delete", "args": ["bob@example.net"]},
            {"do": "domains.delete", "args": ["example.net"]},
            {"do": "agents.create", "args": [{"email": "bob@example.net"}]},
            {"do": "domains.get", "args": ["example.net"]},
            {"do": "domains.delete", "args": ["example.org"]},
            {"do": "domains.delete", "args": ["example.org"]},
        ],
    )
    registered = value(made[0], "DomainView")
    assert (registered["domain"], registered["verified"]) == ("example.net", False)
    records = {record["purpose"]: record for record in registered["dns_records"]}
    assert set(records) == {"ownership", "inbound_mx"}
    assert records["ownership"]["type"] == "TXT"
    assert records["ownership"]["value"] == registered["verification_token"]
    assert records["inbound_mx"]["type"] == "MX" and records["inbound_mx"]["priority"] == 10
    assert {record["status"] for record in records.values()} == {"pending"}
    assert registered["agent_count"] == 0
    refused = error(made[1], "E2AValidationError", "domain_not_verified", 400)
    assert "verify" in refused["message"]
    verified = value(made[2], "VerifyDomainView")  # development mode: the TXT proof is waived
    assert (verified["domain"], verified["verified"]) == ("example.net", True)
    bob = value(made[3], "AgentView")
    assert (bob["email"], bob["domain"], bob["domain_verified"]) == (
        "bob@example.net",
        "example.net",
        True,
    )
    got = value(made[4], "DomainView")
    assert got["agent_count"] == 1 and got["verified_at"]
    assert {record["status"] for record in got["dns_records"]} == {"verified"}
    value(made[5], "DomainView")
    assert [domain["domain"] for domain in value(made[6])] == ["example.org", "example.net"]
    again = value(made[7], "DomainView")  # registered again: answered as it stands
    assert (again["domain"], again["verified"], again["agent_count"]) == ("example.net", True, 1)
    assert again["verification_token"] == registered["verification_token"]
    error(made[8], "E2AValidationError", "reserved_domain", 400)
    error(made[9], "E2AValidationError", "domain_has_agents", 400)
    value(made[10], "DeleteAgentResult")
    # The agent in the trash still holds its address, and so its domain.
    error(made[11], "E2AValidationError", "domain_has_agents", 400)
    error(made[12], "E2AConflictError", "address_in_trash", 409)
    assert value(made[13], "DomainView")["agent_count"] == 1
    assert value(made[14], "DeleteDomainResult") == {"deleted": True, "domain": "example.org"}
    error(made[15], "E2ANotFoundError", "not_found", 404)


async def test_a_domain_deletion_retried_with_its_idempotency_key(
    running: RunningGateway, make_account: Any, sdk5_python: Path
) -> None:
    """The SDK's `domains.delete` sends an Idempotency-Key (the caller's, or one it mints and
    reuses on its own retries): a retry after an answer that was lost gets the first receipt
    again, not 404, and never deletes the domain registered anew meanwhile."""
    alice: Account = await make_account("alice@example.com")
    made = await run_sdk(
        sdk5_python,
        running.addresses.http_url,
        {"default": alice.key},
        [
            {"do": "domains.create", "args": [{"domain": "example.net"}]},
            {"do": "domains.delete", "args": ["example.net"], "kwargs": {"idempotency_key": "d1"}},
            {"do": "domains.delete", "args": ["example.net"], "kwargs": {"idempotency_key": "d1"}},
            {"do": "domains.create", "args": [{"domain": "example.net"}]},
            {"do": "domains.delete", "args": ["example.net"], "kwargs": {"idempotency_key": "d1"}},
            {"do": "domains.get", "args": ["example.net"]},
            {"do": "domains.create", "args": [{"domain": "example.org"}]},
            {"do": "domains.delete", "args": ["example.org"], "kwargs": {"idempotency_key": "d1"}},
            {"do": "domains.get", "args": ["example.org"]},
            {"do": "domains.delete", "args": ["example.net"]},
            {"do": "domains.get", "args": ["example.net"]},
        ],
    )
    value(made[0], "DomainView")
    receipt = {"deleted": True, "domain": "example.net"}
    assert value(made[1], "DeleteDomainResult") == receipt
    assert value(made[2], "DeleteDomainResult") == receipt  # replayed
    value(made[3], "DomainView")
    assert value(made[4], "DeleteDomainResult") == receipt  # replayed: the new one is kept
    assert value(made[5], "DomainView")["domain"] == "example.net"
    value(made[6], "DomainView")
    error(made[7], "E2AIdempotencyError", "idempotency_key_reuse", 422)
    assert value(made[8], "DomainView")["domain"] == "example.org"
    assert value(made[9], "DeleteDomainResult") == receipt  # a fresh key: deleted
    error(made[10], "E2ANotFoundError", "not_found", 404)


async def test_the_account_whoami_export_and_erasure(
    running: RunningGateway, make_account: Any, sdk5_python: Path
) -> None:
    alice: Account = await make_account("alice@example.com")
    bob: Account = await make_account("bob@example.com")
    made = await run_sdk(
        sdk5_python,
        running.addresses.http_url,
        {"default": alice.key, "bob": bob.key},
        [
            {"do": "agents.create", "args": [{"email": BOT, "name": "Bot"}]},
            {"do": "agents.test", "args": [BOT]},
            {"do": "account.get"},
            {"do": "account.export"},
            {"do": "account.delete"},
            {"do": "account.get"},
            {"do": "account.get", "key": "bob"},
        ],
    )
    value(made[0], "AgentView")
    value(made[1], "SendResultView")
    whoami = value(made[2], "AccountView")
    assert whoami["user"]["email"] == "alice@example.com" and whoami["scope"] == "account"
    assert "agent_email" not in whoami
    assert whoami["usage"]["agents"] == 1 and whoami["plan_code"] == "self_hosted"
    assert whoami["limits"]["max_agents"] == 1_000_000  # no cap: room left, as e2a self-hosted
    exported = value(made[3], "UserExport")
    assert exported["schema_version"] == "4" and exported["user"]["email"] == "alice@example.com"
    assert [agent["email"] for agent in exported["agents"]] == [BOT]
    assert exported["agents"][0]["outbound_7d"] >= 1
    assert {message["agent_email"] for message in exported["messages"]} == {BOT}
    assert all("key_hash" not in key for key in exported["api_keys"])
    receipt = value(made[4], "DeleteUserDataResult")
    assert receipt["deleted"] is True and receipt["user_deleted"] is True
    assert receipt["agents_deleted"] == 1 and receipt["api_keys_deleted"] >= 1
    assert receipt["messages_deleted"] >= 1
    error(made[5], "E2AAuthError", "unauthorized", 401)
    assert value(made[6], "AccountView")["user"]["email"] == "bob@example.com"  # untouched
