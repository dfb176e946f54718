"""Request limits over real HTTP: agent registrations per IP per hour, message polls per user
per minute (429 `rate_limited` with `Retry-After`, counted in the database)."""

from __future__ import annotations

from typing import Any

import httpx

from e2a.app import RunningGateway
from tests.conftest import Account, agent_path


def assert_limited(response: httpx.Response, window_seconds: int) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "rate_limited"
    retry_after = response.headers["Retry-After"]
    assert retry_after.isdigit() and 1 <= int(retry_after) <= window_seconds
    assert f"retry in {retry_after} seconds" in response.json()["error"]["message"]


async def register(account: Account, slug: str) -> httpx.Response:
    return await account.http.post("/api/v1/agents", json={"slug": slug, "agent_mode": "local"})


async def test_fourth_registration_in_the_hour_is_refused(
    make_account: Any, running: RunningGateway
) -> None:
    running.gateway.settings.limits.agent_registrations_per_ip_per_hour = 3
    alice: Account = await make_account("alice@example.com")
    for n in range(3):
        assert (await register(alice, f"bot-{n}")).status_code == 201
    limited = await register(alice, "bot-3")
    assert_limited(limited, 3600)
    listed = (await alice.http.get("/api/v1/agents")).json()["agents"]
    assert sorted(agent["name"] for agent in listed) == ["bot-0", "bot-1", "bot-2"]


async def test_registration_limit_is_per_address_not_per_user(
    make_account: Any, running: RunningGateway
) -> None:
    """Every test client connects from 127.0.0.1, so a second user shares the first's count;
    and a failed attempt that passed authentication counts too."""
    running.gateway.settings.limits.agent_registrations_per_ip_per_hour = 3
    alice: Account = await make_account("alice@example.com")
    bob: Account = await make_account("bob@example.com")
    assert (await register(alice, "a-1")).status_code == 201
    invalid = await alice.http.post("/api/v1/agents", json={"agent_mode": "local"})
    assert invalid.status_code == 400
    assert (await register(bob, "b-1")).status_code == 201
    assert_limited(await register(bob, "b-2"), 3600)
    assert (await bob.http.get("/api/v1/agents")).json()["agents"][0]["name"] == "b-1"


async def test_unauthenticated_registrations_are_not_counted(
    make_account: Any, running: RunningGateway
) -> None:
    running.gateway.settings.limits.agent_registrations_per_ip_per_hour = 1
    alice: Account = await make_account("alice@example.com")
    async with httpx.AsyncClient(base_url=running.addresses.http_url, timeout=10) as anonymous:
        for _ in range(3):
            refused = await anonymous.post("/api/v1/agents", json={"slug": "x"})
            assert refused.status_code == 401
    assert (await register(alice, "first")).status_code == 201
    assert_limited(await register(alice, "second"), 3600)


async def test_message_polling_is_limited_per_user(
    make_account: Any, running: RunningGateway
) -> None:
    alice: Account = await make_account("alice@example.com")
    bob: Account = await make_account("bob@example.com")
    alice_bot = (await register(alice, "alice-bot")).json()["email"]
    bob_bot = (await register(bob, "bob-bot")).json()["email"]
    running.gateway.settings.limits.message_polls_per_user_per_minute = 3

    assert (await alice.http.get(agent_path(alice_bot, "/messages"))).status_code == 200
    assert (await alice.http.get(agent_path(alice_bot, "/messages"))).status_code == 200
    missing = await alice.http.get(agent_path(alice_bot, "/messages/msg_missing"))
    assert missing.status_code == 404
    assert_limited(await alice.http.get(agent_path(alice_bot, "/messages")), 60)
    assert_limited(await alice.http.get(agent_path(alice_bot, "/messages/msg_missing")), 60)

    # Bob polls from the same address but is counted on his own.
    for _ in range(3):
        assert (await bob.http.get(agent_path(bob_bot, "/messages"))).status_code == 200
    assert_limited(await bob.http.get(agent_path(bob_bot, "/messages")), 60)

    # Failed authentication is not counted against anyone; other endpoints are not polls.
    bad = await alice.http.get(
        agent_path(alice_bot, "/messages"), headers={"Authorization": "Bearer e2a_wrong"}
    )
    assert bad.status_code == 401
    assert (await alice.http.get(agent_path(alice_bot))).status_code == 200
