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
from tests.delivery_support import accept, create_agent, mail

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
            assert answer.status_code in (200, 202) or refused_as_gone(answer), answer.text
        assert (await http.get(legacy_path)).status_code == 404
