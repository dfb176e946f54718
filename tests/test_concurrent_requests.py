"""Requests racing each other on one resource over real HTTP, several at once: whichever
commits first wins, and each of the others gets the answer it would have had a moment later
(404, 409), never a 500. tests/test_review_races.py races reviews of held mail."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio

from e2a_gateway.app import RunningGateway
from tests.conftest import Account
from tests.delivery_support import accept, agent_id, create_agent, mail

ROUNDS = 4
Call = Callable[[], Awaitable[httpx.Response]]


async def at_once(*calls: Call) -> list[httpx.Response]:
    """Make `calls` concurrently; their answers in the order given."""
    answers: dict[int, httpx.Response] = {}

    async def one(index: int, call: Call) -> None:
        answers[index] = await call()

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for index, call in enumerate(calls):
                nursery.start_soon(one, index, call)
    return [answers[index] for index in range(len(calls))]


def refused_as_gone(answer: httpx.Response) -> bool:
    """Whether `answer` is the refusal of a request for an agent that is no more (`from`
    naming none, on `/api/v1/send`), or of a send stored just before its agent went to the
    trash, which cancelled it while the request waited for its first attempt."""
    error = answer.json().get("error", {})
    if (answer.status_code, error.get("code")) == (422, "send_failed"):
        return "agent_deleted" in error["message"]
    return (answer.status_code, error.get("code")) in ((404, "not_found"), (400, "invalid_from"))


@pytest.mark.parametrize("permanent", ["true", "false"])
async def test_sends_racing_the_deletion_of_their_agent_are_made_or_not_found(
    running: RunningGateway, make_account: Any, permanent: str
) -> None:
    """Sends and replies (on both APIs) made while the agent is deleted, for good or to the
    trash: each either went in before the deletion (and went with the agent, or was
    cancelled with it) or is refused 404; never a 500."""
    alice: Account = await make_account("alice@example.com")
    http = alice.http
    for round_ in range(ROUNDS):
        agent = await create_agent(alice, f"goes{round_}")
        path = quote(agent, safe="")
        received = await accept(running.gateway, [agent], mail("Question"))
        outgoing = {"to": ["bob@example.org"], "subject": "Hi", "text": "Hello"}
        legacy = {"to": ["bob@example.org"], "subject": "Hi", "body": "Hello"}
        legacy_path, v1_path = f"/api/v1/agents/{path}", f"/v1/agents/{path}"
        deleted, *sends = await at_once(
            partial(http.delete, v1_path, params={"confirm": "DELETE", "permanent": permanent}),
            partial(http.post, f"{v1_path}/messages", json=outgoing),
            partial(http.post, "/api/v1/send", json={"from": agent, **legacy}),
            partial(http.post, f"{legacy_path}/messages/{received}/reply", json={"body": "x"}),
            partial(http.post, f"{v1_path}/messages/{received}/reply", json={"text": "x"}),
        )
        assert deleted.status_code == 200, deleted.text
        for answer in sends:
            made = answer.status_code in (200, 202) or attempted_without_a_relay(answer)
            assert made or refused_as_gone(answer), answer.text
        assert (await http.get(legacy_path)).status_code == 404


def attempted_without_a_relay(answer: httpx.Response) -> bool:
    """Whether `answer` is that of a send made before the deletion and handed to the send
    worker at once, which has no relay to hand it to in these tests."""
    error = answer.json().get("error", {})
    failed = (answer.status_code, error.get("code")) == (422, "send_failed")
    return failed and "outbound_smtp.host is not set" in error["message"]


def refused_as_unknown(answer: httpx.Response) -> bool:
    """Whether `answer` is what a request gets once its account or agent is gone: its key no
    longer works (401), or what it names is not there (404)."""
    code = answer.json().get("error", {}).get("code")
    return (answer.status_code, code) in ((401, "unauthorized"), (404, "not_found"))


async def test_agents_created_while_their_account_is_deleted_are_made_or_refused_401(
    running: RunningGateway, make_account: Any
) -> None:
    """Agents registered while their account is deleted: each is made before the deletion (and
    goes with the account) or refused as the key's next request would be, 401; never 409
    `agent_exists` (the address is not taken) nor a 500. No agent outlives the account."""
    for round_ in range(ROUNDS):
        owner: Account = await make_account(f"leaving{round_}@example.com")
        http = owner.http
        slugs = [f"late{round_}x{index}" for index in range(4)]
        deleted, *created = await at_once(
            partial(http.delete, "/v1/account", params={"confirm": "DELETE"}),
            *(
                partial(http.post, "/api/v1/agents", json={"slug": slug, "agent_mode": "local"})
                for slug in slugs
            ),
        )
        assert deleted.status_code == 200, deleted.text
        for answer in created:
            assert answer.status_code == 201 or refused_as_unknown(answer), answer.text
        for slug in slugs:
            assert await running.gateway.storage.find_agent(f"{slug}@agents.test") is None


@pytest.mark.parametrize("permanent", ["true", "false"])
async def test_suppressions_and_keys_made_while_their_agent_is_deleted_leave_nothing(
    running: RunningGateway, make_account: Any, permanent: str
) -> None:
    """Suppressions and agent keys made for an agent as it is deleted: each is made before the
    deletion (and goes with the agent, or stays with it in the trash) or refused 404; never a
    500. An agent registered later at the address starts with no suppression of the old
    one's, and no key of the old one still works."""
    alice: Account = await make_account("alice@example.com")
    http = alice.http
    storage = running.gateway.storage
    for round_ in range(ROUNDS):
        agent = await create_agent(alice, f"gone{round_}")
        old_id = await agent_id(running.gateway, agent)
        path = quote(agent, safe="")
        v1_path = f"/v1/agents/{path}"
        deleted, *made = await at_once(
            partial(http.delete, v1_path, params={"confirm": "DELETE", "permanent": permanent}),
            *(
                partial(http.post, f"{v1_path}/suppressions", json={"address": f"x{n}@example.org"})
                for n in range(3)
            ),
            *(
                partial(
                    http.post,
                    "/v1/account/api-keys",
                    json={"scope": "agent", "agent_email": agent, "name": f"k{n}"},
                )
                for n in range(2)
            ),
        )
        assert deleted.status_code == 200, deleted.text
        for answer in made:
            assert answer.status_code in (200, 201) or refused_as_unknown(answer), answer.text
        keys = [answer.json()["key"] for answer in made[3:] if answer.status_code in (200, 201)]
        if permanent == "false":
            continue
        await create_agent(alice, f"gone{round_}")
        listed = await http.get(f"{v1_path}/suppressions")
        assert listed.status_code == 200, listed.text
        assert listed.json()["items"] == [], listed.text
        for key in keys:
            whoami = await http.get("/v1/account", headers={"Authorization": f"Bearer {key}"})
            assert whoami.status_code == 401, whoami.text
        user_id = (await http.get("/v1/account")).json()["user"]["id"]
        bound = [
            key
            for key in await storage.api_key_page(user_id, 100, None, revoked=True)
            if key.agent_id == old_id
        ]
        assert all(key.revoked_at for key in bound), bound
