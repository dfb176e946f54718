"""Agent keys reach one agent: they act as it (its inbox, its sends) and nothing else — never
another agent, the account's keys, domains or agents, and never the review queue: an agent
cannot approve its own held mail, over `/api/v1` or `/mcp`. Account keys, every key made
before scopes existed among them, reach what they always did."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from e2a_gateway.accounts import issue_api_key
from e2a_gateway.app import RunningGateway
from e2a_gateway.signing.credentials import hash_api_key
from tests.conftest import Account, agent_path
from tests.delivery_support import create_agent
from tests.mcp_support import call, mcp_client
from tests.test_dashboard import sign_in
from tests.test_mcp_v1_tools import not_for_agent_keys


@dataclass
class Scoped:
    """An account with two local agents, `bot` holding its mail for review, and a key bound
    to `bot` with an HTTP client for it."""

    account: Account
    bot: str
    other: str
    key: str
    http: httpx.AsyncClient


async def agent_key(running: RunningGateway, account: Account, address: str) -> str:
    """A new key of `account` bound to its agent at `address`."""
    storage = running.gateway.storage
    holder = await storage.key_holder(hash_api_key(account.key))
    agent = await storage.find_agent(address)
    assert holder is not None and agent is not None
    issued = await issue_api_key(storage, holder.user.id, "bot key", agent=agent)
    return issued.plaintext


@pytest.fixture
async def scoped(running: RunningGateway, make_account: Any) -> Any:
    account: Account = await make_account("alice@example.com")
    bot = await create_agent(account, "bot")
    other = await create_agent(account, "other")
    held = await account.http.put(agent_path(bot), json={"hitl_enabled": True})
    assert held.status_code == 200, held.text
    key = await agent_key(running, account, bot)
    async with httpx.AsyncClient(
        base_url=running.addresses.http_url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    ) as http:
        yield Scoped(account, bot, other, key, http)


def refused(response: httpx.Response) -> str:
    """The message of a 403 `forbidden` answer."""
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["code"] == "forbidden"
    return str(error["message"])


async def test_an_agent_key_acts_as_its_agent_only(scoped: Scoped) -> None:
    http = scoped.http
    assert (await http.get(agent_path(scoped.bot))).status_code == 200
    inbox = await http.get(agent_path(scoped.bot, "/messages"), params={"status": "all"})
    assert inbox.status_code == 200, inbox.text
    message = refused(await http.get(agent_path(scoped.other, "/messages")))
    assert scoped.bot in message and scoped.other in message and "cannot act as" in message
    refused(await http.get(agent_path(scoped.other)))
    refused(await http.post(agent_path(scoped.other, "/test")))
    # Sending from its agent works (without `from`, its own agent is the sender).
    sent = await http.post(
        "/api/v1/send", json={"to": ["dave@example.org"], "subject": "Hi", "body": "Hello"}
    )
    assert sent.status_code == 202, sent.text
    refused(
        await http.post(
            "/api/v1/send",
            json={"from": scoped.other, "to": ["d@example.org"], "subject": "s", "body": "b"},
        )
    )


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/agents", None),
        ("POST", "/api/v1/agents", {"slug": "third", "agent_mode": "local"}),
        ("PUT", "/api/v1/agents/bot@agents.test", {"name": "renamed"}),
        ("DELETE", "/api/v1/agents/bot@agents.test", None),
        ("GET", "/api/v1/users/me/api-keys", None),
        ("POST", "/api/v1/users/me/api-keys", {"name": "wider"}),
        ("GET", "/api/v1/users/me/signing-secrets", None),
        ("GET", "/api/v1/domains", None),
        ("POST", "/api/v1/domains", {"domain": "example.net"}),
        ("GET", "/api/v1/users/me/export", None),
        ("DELETE", "/api/v1/users/me?confirm=DELETE", None),
        ("GET", "/api/v1/messages", None),
    ],
)
async def test_an_agent_key_cannot_administer_the_account(
    scoped: Scoped, method: str, path: str, body: dict[str, Any] | None
) -> None:
    message = refused(await scoped.http.request(method, path, json=body))
    assert "Use an account key" in message
    # The account key still reaches all of it (the account is not deleted: nothing was).
    assert (await scoped.account.http.get("/api/v1/agents")).status_code == 200


async def test_an_agent_cannot_approve_its_own_held_mail_over_rest(scoped: Scoped) -> None:
    http = scoped.http
    held = await http.post(
        "/api/v1/send", json={"to": ["dave@example.org"], "subject": "Deal", "body": "Yes"}
    )
    assert held.status_code == 202 and held.json()["status"] == "pending_approval", held.text
    message_id = held.json()["message_id"]
    for action in ("approve", "reject"):
        refused(await http.post(f"/api/v1/messages/{message_id}/{action}"))
    refused(await http.get(f"/api/v1/messages/{message_id}"))
    refused(await http.get("/api/v1/messages", params={"agent": scoped.bot}))
    # The person with the account key decides.
    queue = await scoped.account.http.get("/api/v1/messages")
    assert [m["id"] for m in queue.json()["messages"]] == [message_id]
    approved = await scoped.account.http.post(f"/api/v1/messages/{message_id}/approve")
    assert approved.status_code == 200, approved.text


async def test_an_agent_cannot_approve_its_own_held_mail_over_mcp(
    running: RunningGateway, scoped: Scoped
) -> None:
    async with mcp_client(running, scoped.key, agent=scoped.bot) as client:
        held = await call(
            client, "send_message", {"to": ["dave@example.org"], "subject": "Deal", "text": "Yes"}
        )
        assert held["status"] == "pending_review"
        message_id = held["message_id"]
        listed = {tool.name for tool in (await client.list_tools()).tools}
        for tool, arguments in [
            ("list_reviews", {}),
            ("get_review", {"message_id": message_id}),
            ("approve_review", {"message_id": message_id}),
            ("reject_review", {"message_id": message_id}),
            ("approve_pending_message", {"message_id": message_id}),
            ("list_pending_messages", {}),
        ]:
            assert tool not in listed  # as e2a: an agent key sees its runtime tools only
            await not_for_agent_keys(client, tool, arguments)
    async with mcp_client(running, scoped.account.key) as client:
        reviews = await call(client, "list_reviews")
        assert [m["id"] for m in reviews["reviews"]] == [message_id]


async def test_a_key_bound_to_a_deleted_agent_is_refused(scoped: Scoped) -> None:
    deleted = await scoped.account.http.delete(agent_path(scoped.bot))
    assert deleted.status_code == 200, deleted.text
    recreated = await scoped.account.http.post(
        "/api/v1/agents", json={"slug": "bot", "agent_mode": "local"}
    )
    assert recreated.status_code == 201, recreated.text
    answer = await scoped.http.get(agent_path(scoped.bot))
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"] == {
        "code": "unauthorized",
        "message": "unknown or revoked API key",
    }


async def test_the_dashboard_takes_account_keys_only(
    scoped: Scoped, running: RunningGateway
) -> None:
    async with httpx.AsyncClient(base_url=running.addresses.http_url, timeout=10) as browser:
        answer = await sign_in(browser, scoped.key)
        assert answer.status_code == 403
        assert "bound to one agent" in answer.text and "account key" in answer.text
        assert "e2a_session" not in answer.cookies
        assert (await sign_in(browser, scoped.account.key)).status_code == 303
