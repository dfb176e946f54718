"""e2a's IETF `RateLimit-*` headers on `/v1`, over real HTTP: the seven reads e2a counts as
message polls share one budget per account and say so on every answer (a 404 and the 429
included), createAgent tells the tighter of its two registration limits, and the operations
e2a does not limit, `/api/v1` and refused keys carry none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from tests.conftest import Account, agent_path, make_settings
from tests.delivery_support import create_agent, smtp_send

POLL_LIMIT = 12
RATE_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Webhook targets on loopback are allowed: a webhook is made to be read back."""
    return make_settings(tmp_path, webhooks={"allow_private": True})


def rate_of(answer: httpx.Response) -> tuple[int, int, int]:
    """The answer's RateLimit-Limit, -Remaining and -Reset, each a whole number."""
    values = [answer.headers.get(name, "") for name in RATE_HEADERS]
    assert all(value.isdigit() for value in values), (answer.status_code, values)
    limit, remaining, reset = (int(value) for value in values)
    return limit, remaining, reset


def assert_unstamped(answer: httpx.Response) -> None:
    assert not any(name in answer.headers for name in RATE_HEADERS), answer.headers


async def test_the_reads_e2a_limits_share_one_budget_and_tell_it(
    make_account: Any, running: RunningGateway
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    hook = await alice.http.post(
        "/v1/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": ["email.received"]}
    )
    assert hook.status_code == 201, hook.text
    hook_id = hook.json()["id"]
    running.gateway.settings.limits.message_polls_per_user_per_minute = POLL_LIMIT

    reads = [
        (f"/v1/agents/{bot}/messages", 200),
        (f"/v1/agents/{bot}/messages/msg_missing", 404),
        (f"/v1/agents/{bot}/conversations", 200),
        (f"/v1/agents/{bot}/conversations/conv_missing", 404),
        ("/v1/webhooks", 200),
        (f"/v1/webhooks/{hook_id}", 200),
        (f"/v1/webhooks/{hook_id}/deliveries", 200),
    ]
    told = []
    for path, status in reads:
        answer = await alice.http.get(path)
        assert answer.status_code == status, (path, answer.text)
        told.append(rate_of(answer))
    assert [limit for limit, _, _ in told] == [POLL_LIMIT] * len(reads)
    assert [remaining for _, remaining, _ in told] == list(
        range(POLL_LIMIT - 1, POLL_LIMIT - 1 - len(reads), -1)
    )
    assert all(1 <= reset <= 60 for _, _, reset in told)

    for _ in range(POLL_LIMIT - len(reads)):
        assert (await alice.http.get(f"/v1/agents/{bot}/messages")).status_code == 200
    refused = await alice.http.get(f"/v1/webhooks/{hook_id}")
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "rate_limited"
    limit, remaining, reset = rate_of(refused)
    assert (limit, remaining) == (POLL_LIMIT, 0)
    assert int(refused.headers["Retry-After"]) == reset
    assert refused.json()["error"]["details"]["retry_after_seconds"] == reset

    # Bob has a budget of his own.
    bob: Account = await make_account("bob@example.com")
    assert rate_of(await bob.http.get("/v1/webhooks"))[:2] == (POLL_LIMIT, POLL_LIMIT - 1)


async def test_operations_e2a_does_not_limit_and_refused_keys_carry_no_headers(
    make_account: Any, running: RunningGateway
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    for path in ("/v1/agents", f"/v1/agents/{bot}", "/v1/events", "/v1/account", "/v1/info"):
        answer = await alice.http.get(path)
        assert answer.status_code == 200, (path, answer.text)
        assert_unstamped(answer)
    # The 2.x surface polls the same budget, and is answered as it always was.
    polled = await alice.http.get(agent_path(bot, "/messages"))
    assert polled.status_code == 200
    assert_unstamped(polled)
    # A key that is refused is counted against nobody and told nothing of any budget.
    wrong = await alice.http.get(
        f"/v1/agents/{bot}/messages", headers={"Authorization": "Bearer e2a_" + "0" * 64}
    )
    assert wrong.status_code == 401
    assert_unstamped(wrong)


@pytest.mark.parametrize(
    ("per_address", "per_account"),
    [(3, 5), (5, 3)],
    ids=["the address limit is the tighter", "the account limit is the tighter"],
)
async def test_create_agent_tells_the_tighter_registration_limit(
    make_account: Any, running: RunningGateway, per_address: int, per_account: int
) -> None:
    limits = running.gateway.settings.limits
    limits.agent_registrations_per_ip_per_hour = per_address
    limits.agent_registrations_per_user_per_hour = per_account
    alice: Account = await make_account("alice@example.com")
    # A request refused for its body is still counted, and says so.
    invalid = await alice.http.post("/v1/agents", json={"email": "not an address"})
    assert invalid.status_code in (400, 422), invalid.text
    told = [rate_of(invalid)]
    for number in range(2):
        made = await alice.http.post("/v1/agents", json={"email": f"bot{number}@agents.test"})
        assert made.status_code == 201, made.text
        told.append(rate_of(made))
    assert [(limit, remaining) for limit, remaining, _ in told] == [(3, 2), (3, 1), (3, 0)]
    assert all(1 <= reset <= 3600 for _, _, reset in told)

    refused = await alice.http.post("/v1/agents", json={"email": "bot2@agents.test"})
    assert refused.status_code == 429, refused.text
    assert rate_of(refused)[:2] == (3, 0)
    assert 1 <= int(refused.headers["Retry-After"]) <= 3600
    listed = (await alice.http.get("/v1/agents")).json()["items"]
    assert sorted(agent["email"] for agent in listed) == ["bot0@agents.test", "bot1@agents.test"]


async def test_a_lifecycle_read_leaves_the_message_unread_and_is_no_poll(
    make_account: Any, running: RunningGateway
) -> None:
    """e2a's getMessageLifecycle lists what was recorded of a message: it marks nothing read
    and is not among the reads e2a counts."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    data = f"From: someone@example.org\r\nTo: {bot}\r\nSubject: Track me\r\n\r\nHi.\r\n"
    await smtp_send(running.addresses.smtp_port, [bot], data.encode())
    running.gateway.settings.limits.message_polls_per_user_per_minute = 3
    listed = await alice.http.get(f"/v1/agents/{bot}/messages")
    (message,) = listed.json()["items"]
    for _ in range(5):  # more than the poll budget
        lifecycle = await alice.http.get(f"/v1/agents/{bot}/messages/{message['id']}/lifecycle")
        assert lifecycle.status_code == 200, lifecycle.text
        assert lifecycle.json()["items"][0]["message_id"] == message["id"]
        assert_unstamped(lifecycle)
    unread = await alice.http.get(f"/v1/agents/{bot}/messages", params={"read_status": "unread"})
    assert [item["id"] for item in unread.json()["items"]] == [message["id"]]
    assert rate_of(unread)[:2] == (3, 1)  # the second poll: the lifecycles were none
