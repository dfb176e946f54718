"""Agents, domains and the account on `/v1` over plain HTTP: the trash (an agent deleted keeps
its address, receives no mail and its keys stop until it is restored; the retention sweep
purges it after 30 days, told the time), and every malformed request refused in e2a's terms."""

from __future__ import annotations

import smtplib
import time
from typing import Any

import httpx
import pytest

from e2a_gateway.app import RunningGateway
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.operations.agents import TRASH_DAYS
from e2a_gateway.storage.base import Domain
from e2a_gateway.workers.retention import RetentionWorker
from tests.conftest import SHARED_DOMAIN, Account
from tests.delivery_support import mail, smtp_send
from tests.test_postmaster import verified_domain

BOT = f"bot@{SHARED_DOMAIN}"
DAY = 86_400


async def new_agent(account: Account, email: str = BOT) -> dict[str, Any]:
    """Register `email` on /v1."""
    created = await account.http.post("/v1/agents", json={"email": email})
    assert created.status_code == 201, created.text
    answer: dict[str, Any] = created.json()
    return answer


async def bound_key(account: Account, email: str) -> httpx.AsyncClient:
    """A client with a new key of `account` bound to its agent `email`."""
    made = await account.http.post(
        "/v1/account/api-keys", json={"name": "bot", "scope": "agent", "agent_email": email}
    )
    assert made.status_code == 201, made.text
    return httpx.AsyncClient(
        base_url=str(account.http.base_url),
        headers={"Authorization": f"Bearer {made.json()['key']}"},
        timeout=10,
    )


def refusal(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The error of an answer that must be `status` `code` in e2a's envelope."""
    assert response.status_code == status, response.text
    found: dict[str, Any] = response.json()["error"]
    assert found["code"] == code, found
    assert found["request_id"] == response.headers["X-Request-Id"]
    return found


async def test_an_agent_in_the_trash_receives_nothing_and_its_keys_wait(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    await new_agent(alice)
    port = running.addresses.smtp_port
    await smtp_send(port, [BOT], mail("before"))
    async with await bound_key(alice, BOT) as bot:
        assert (await bot.get(f"/v1/agents/{BOT}")).status_code == 200
        trashed = await alice.http.delete(f"/v1/agents/{BOT}", params={"confirm": "DELETE"})
        assert trashed.json() == {"deleted": True, "email": BOT, "messages_deleted": 0}
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            await smtp_send(port, [BOT], mail("while trashed"))
        refusal(await bot.get(f"/v1/agents/{BOT}"), 401, "unauthorized")
        refusal(await alice.http.patch(f"/v1/agents/{BOT}", json={"name": "x"}), 404, "not_found")
        refusal(await alice.http.post(f"/v1/agents/{BOT}/test"), 404, "not_found")
        # The /api/v1 face does not see it either, and cannot take its address.
        assert (await alice.http.get(f"/api/v1/agents/{BOT}")).status_code == 404
        taken = await alice.http.post("/api/v1/agents", json={"slug": "bot", "agent_mode": "local"})
        assert taken.status_code == 409 and taken.json()["error"]["code"] == "address_in_trash"

        restored = await alice.http.post(f"/v1/agents/{BOT}/restore")
        assert restored.status_code == 200, restored.text
        assert (await bot.get(f"/v1/agents/{BOT}")).status_code == 200
        await smtp_send(port, [BOT], mail("after"))
        inbox = await alice.http.get(f"/api/v1/agents/{BOT}/messages", params={"status": "all"})
        subjects = sorted(message["subject"] for message in inbox.json()["messages"])
        assert subjects == ["after", "before"]  # kept through the trash


async def test_the_retention_sweep_purges_the_trash_after_30_days(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    await new_agent(alice)
    await smtp_send(running.addresses.smtp_port, [BOT], mail("kept a while"))
    async with await bound_key(alice, BOT) as bot:
        await alice.http.delete(f"/v1/agents/{BOT}", params={"confirm": "DELETE"})
        trashed_at = time.time()
        sweeper = RetentionWorker(running.gateway, pause=0)
        early = await sweeper.sweep(trashed_at + (TRASH_DAYS - 1) * DAY)
        assert early.trashed_agents == 0
        trash = await alice.http.get("/v1/agents", params={"deleted": "true"})
        assert [agent["email"] for agent in trash.json()["items"]] == [BOT]

        late = await sweeper.sweep(trashed_at + (TRASH_DAYS + 1) * DAY)
        assert late.trashed_agents == 1
        assert (await alice.http.get("/v1/agents", params={"deleted": "true"})).json() == {
            "items": [],
            "next_cursor": None,
        }
        refusal(await alice.http.post(f"/v1/agents/{BOT}/restore"), 404, "not_found")
        # The address is free again; the key bound to the purged agent is not reborn with it.
        again = await new_agent(alice)
        assert "deleted_at" not in again
        refusal(await bot.get(f"/v1/agents/{BOT}"), 401, "unauthorized")
        inbox = await alice.http.get(f"/api/v1/agents/{BOT}/messages", params={"status": "all"})
        assert inbox.json()["messages"] == []


async def test_permanent_delete_takes_trashed_and_live_agents(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    await new_agent(alice)
    await new_agent(alice, f"other@{SHARED_DOMAIN}")
    await smtp_send(running.addresses.smtp_port, [BOT], mail("one"))
    await smtp_send(running.addresses.smtp_port, [BOT], mail("two"))
    confirm = {"confirm": "DELETE"}
    await alice.http.delete(f"/v1/agents/{BOT}", params=confirm)
    for address, messages in ((BOT, 2), (f"other@{SHARED_DOMAIN}", 0)):
        gone = await alice.http.delete(
            f"/v1/agents/{address}", params={**confirm, "permanent": "true"}
        )
        assert gone.status_code == 200, gone.text
        assert gone.json() == {"deleted": True, "email": address, "messages_deleted": messages}
    refusal(await alice.http.post(f"/v1/agents/{BOT}/restore"), 404, "not_found")
    await new_agent(alice)  # the address is free at once


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code", "location"),
    [
        ("POST", "/v1/agents", {"email": BOT, "webhook_url": "https://x"}, 422, "invalid_request",
         "body.webhook_url"),
        ("POST", "/v1/agents", {"name": "no address"}, 422, "invalid_request", "body.email"),
        ("POST", "/v1/agents", {"email": BOT, "name": 5}, 422, "invalid_request", "body.name"),
        ("POST", "/v1/agents", {"email": "a b@@"}, 400, "invalid_request", None),
        ("POST", "/v1/agents", {"email": f"admin@{SHARED_DOMAIN}"}, 400, "invalid_slug", None),
        ("POST", "/v1/agents", {"email": "x@unregistered.example"}, 400,
         "domain_not_registered", None),
        ("POST", "/v1/agents", {"email": f"test@{SHARED_DOMAIN}"}, 400, "invalid_slug", None),
        ("PATCH", f"/v1/agents/{BOT}", {}, 400, "invalid_request", "body.name"),
        ("PATCH", f"/v1/agents/nobody@{SHARED_DOMAIN}", {}, 404, "not_found", None),
        ("PATCH", f"/v1/agents/{BOT}", {"hitl_enabled": True}, 422, "invalid_request",
         "body.hitl_enabled"),
        ("GET", "/v1/agents?cursor=forged", None, 400, "invalid_cursor", None),
        ("GET", "/v1/agents?limit=0", None, 422, "invalid_request", "query.limit"),
        ("GET", "/v1/agents?deleted=maybe", None, 422, "invalid_request", "query.deleted"),
        ("GET", "/v1/domains?cursor=forged.AAAA", None, 400, "invalid_cursor", None),
        ("DELETE", f"/v1/agents/{BOT}", None, 422, "invalid_request", "query.confirm"),
        ("DELETE", f"/v1/agents/{BOT}?confirm=yes", None, 422, "invalid_request",
         "query.confirm"),
        ("DELETE", "/v1/account", None, 422, "invalid_request", "query.confirm"),
        ("DELETE", "/v1/domains/example.net", None, 422, "invalid_request", "query.confirm"),
        ("POST", "/v1/domains", {"domain": "example.net", "x": 1}, 422, "invalid_request",
         "body.x"),
        ("POST", "/v1/domains", {"domain": "10.0.0.1"}, 400, "invalid_domain", None),
        ("GET", f"/v1/agents/nobody@{SHARED_DOMAIN}", None, 404, "not_found", None),
        ("GET", "/v1/domains/example.com", None, 404, "not_found", None),
        ("POST", "/v1/domains/example.com/verify", None, 404, "not_found", None),
        ("POST", f"/v1/agents/{BOT}/restore", None, 409, "not_in_trash", None),
    ],
)  # fmt: skip
async def test_malformed_requests_are_refused_in_e2as_terms(
    make_account: Any,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    status: int,
    code: str,
    location: str | None,
) -> None:
    alice: Account = await make_account("alice@example.com")
    await new_agent(alice)
    found = refusal(await alice.http.request(method, path, json=body), status, code)
    if location is not None:
        fields = [field["location"] for field in found["details"]["fields"]]
        assert location in fields, found
    # Nothing was changed by the refused request: the agent and the account are as they were.
    agent = await alice.http.get(f"/v1/agents/{BOT}")
    assert agent.status_code == 200 and agent.json()["name"] == ""  # e2a keeps no name as none


async def test_a_cursor_of_one_listing_is_refused_by_another(make_account: Any) -> None:
    alice: Account = await make_account("alice@example.com")
    await new_agent(alice)
    await new_agent(alice, f"other@{SHARED_DOMAIN}")
    first = (await alice.http.get("/v1/agents", params={"limit": 1})).json()
    assert first["next_cursor"]
    message = refusal(
        await alice.http.get(
            "/v1/agents", params={"deleted": "true", "cursor": first["next_cursor"]}
        ),
        400,
        "invalid_cursor",
    )["message"]
    assert "another listing" in message
    second = await alice.http.get("/v1/agents", params={"limit": 1, "cursor": first["next_cursor"]})
    assert [agent["email"] for agent in second.json()["items"]] == [BOT]
    assert second.json()["next_cursor"] is None


async def test_an_empty_update_is_refused_after_the_callers_rights(make_account: Any) -> None:
    alice: Account = await make_account("alice@example.com")
    await new_agent(alice)
    async with await bound_key(alice, BOT) as bot:
        refusal(await bot.patch(f"/v1/agents/{BOT}", json={}), 403, "forbidden")
    renamed = await alice.http.patch(f"/v1/agents/{BOT}", json={"name": "Bot"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Bot"
    refusal(await alice.http.patch(f"/v1/agents/{BOT}", json={}), 400, "invalid_request")
    assert (await alice.http.get(f"/v1/agents/{BOT}")).json()["name"] == "Bot"


async def test_an_agent_is_not_made_on_a_domain_its_owner_deletes_meanwhile(
    running: RunningGateway,
    make_account: Any,
    resolver: FixtureResolver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The owner deletes corp.example after a registration on it found it verified and
    before the agent is stored: the registration is refused as on a domain never registered,
    rather than leaving an agent on a domain nobody holds (whose mail would reach it once
    somebody else verified the domain)."""
    alice: Account = await make_account("alice@example.com")
    await verified_domain(alice, resolver, "corp.example")
    storage = running.gateway.storage
    get_domain = storage.get_domain
    deleted: list[bool] = []

    async def read_then_deleted(user_id: str, domain: str) -> Domain | None:
        found = await get_domain(user_id, domain)
        if not deleted:
            deleted.append(await storage.delete_domain(user_id, domain))
        return found

    monkeypatch.setattr(storage, "get_domain", read_then_deleted)
    refused = await alice.http.post("/v1/agents", json={"email": "bot@corp.example"})
    assert deleted == [True]
    refusal(refused, 400, "domain_not_registered")
    monkeypatch.undo()
    refusal(await alice.http.get("/v1/agents/bot@corp.example"), 404, "not_found")
    assert await storage.find_agent("bot@corp.example") is None


async def test_a_test_message_and_its_arrival_make_one_conversation(
    running: RunningGateway, make_account: Any
) -> None:
    """As e2a anchors testAgent's message in a new conversation, the copy the agent receives
    joins it: the round trip reads as one thread of two messages."""
    alice: Account = await make_account("alice@example.com")
    await new_agent(alice)
    tested = await alice.http.post(f"/v1/agents/{BOT}/test")
    assert tested.status_code == 200, tested.text
    sent = (await alice.http.get(f"/v1/agents/{BOT}/messages/{tested.json()['message_id']}")).json()
    assert sent["conversation_id"].startswith("conv_"), sent
    listed = await alice.http.get(f"/v1/agents/{BOT}/conversations")
    (thread,) = listed.json()["items"]
    assert thread["id"] == sent["conversation_id"]
    assert (thread["inbound_count"], thread["outbound_count"]) == (1, 1), thread


async def test_an_address_with_a_line_break_before_its_at_names_no_agent(
    make_account: Any, resolver: FixtureResolver
) -> None:
    """`bot\n@corp.example` is refused on both faces, not stored as an agent whose address
    holds the line break (no mail could ever reach it, and it would be a second `bot`)."""
    alice: Account = await make_account("alice@example.com")
    await verified_domain(alice, resolver, "corp.example")
    new = await alice.http.post("/v1/agents", json={"email": "bot\n@corp.example"})
    refusal(new, 400, "invalid_request")
    old = await alice.http.post(
        "/api/v1/agents", json={"email": "bot\n@corp.example", "agent_mode": "local"}
    )
    for refused in (new, old):
        assert refused.status_code == 400 and "not a valid email address" in refused.text
    assert (await alice.http.get("/v1/agents")).json()["items"] == []
