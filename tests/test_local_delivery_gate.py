"""Mail one agent sends another agent of this deployment is delivered without SMTP, and still
goes through the recipient's inbound gate as mail over SMTP does: another account's agent cannot
reach a gated agent around its gate. The gateway vouches for the sending agent's From (it
authenticated the key), so an allowlist that names the agent lets it through."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import pytest

from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.workers.outbound import OutboundWorker
from tests.conftest import Account
from tests.delivery_support import QuietGateway, create_agent, open_account
from tests.webhook_support import alice, quiet, settings

__all__ = ["alice", "quiet", "settings"]  # fixtures


@pytest.fixture
def resolver() -> FixtureResolver:
    return FixtureResolver({})


@pytest.fixture
async def bob(quiet: QuietGateway) -> Any:
    account = await open_account(quiet.gateway, quiet.http_url, "bob@example.net")
    async with account.http:
        yield account


async def gate(account: Account, agent: str, allowlist: list[str], action: str) -> None:
    inbound = {"policy": "allowlist", "allowlist": allowlist, "action": action}
    config = {"inbound": {"gate": inbound, "scan": {}}, "outbound": {"gate": {}, "scan": {}}}
    answer = await account.http.put(
        f"/v1/agents/{quote(agent, safe='')}/protection", json={**config, "holds": {}}
    )
    assert answer.status_code == 200, answer.text


async def send(quiet: QuietGateway, account: Account, sender: str, to: str, subject: str) -> None:
    sent = await account.http.post(
        f"/v1/agents/{quote(sender, safe='')}/messages",
        json={"to": [to], "subject": subject, "text": "Hi."},
    )
    assert sent.status_code == 202, sent.text
    assert await OutboundWorker(quiet.gateway).deliver_due(time.time()) == 1


async def inbox(account: Account, agent: str) -> list[str]:
    listing = await account.http.get(f"/api/v1/agents/{quote(agent, safe='')}/messages")
    assert listing.status_code == 200, listing.text
    return [message["subject"] for message in listing.json()["messages"]]


async def events(account: Account, event_type: str) -> list[dict[str, Any]]:
    listing = await account.http.get("/v1/events", params={"type": event_type})
    assert listing.status_code == 200, listing.text
    items: list[dict[str, Any]] = listing.json()["items"]
    return items


async def test_another_accounts_agent_meets_the_recipients_gate(
    quiet: QuietGateway, alice: Account, bob: Account
) -> None:
    writer = await create_agent(alice, "writer")
    guarded = await create_agent(bob, "guarded")
    await gate(bob, guarded, ["boss@example.net"], "block")
    await send(quiet, alice, writer, guarded, "Blocked")
    assert await inbox(bob, guarded) == []
    (blocked,) = await events(bob, "email.blocked")
    assert blocked["data"]["reason"] == f"{writer} is not on the agent's allowlist"
    assert await events(bob, "email.received") == []

    await gate(bob, guarded, ["boss@example.net"], "review")
    await send(quiet, alice, writer, guarded, "Held")
    assert await inbox(bob, guarded) == []
    reviews = (await bob.http.get("/v1/reviews")).json()["items"]
    assert [item["subject"] for item in reviews] == ["Held"]

    await gate(bob, guarded, [writer], "block")
    await send(quiet, alice, writer, guarded, "Allowed")
    assert await inbox(bob, guarded) == ["Allowed"]


async def test_an_agents_note_to_itself_passes_its_own_gate(
    quiet: QuietGateway, alice: Account
) -> None:
    me = await create_agent(alice, "me")
    await gate(alice, me, ["boss@example.com"], "block")
    await send(quiet, alice, me, me, "Note to self")
    assert await inbox(alice, me) == ["Note to self"]
