"""The newest published e2a 2.x SDK (2.5.0) reading an agent's inbox on `/api/v1`:
`get_messages` passes `sort`, `from_`, `subject_contains`, `conversation_id`, `since` and
`until` as query parameters, and a script that narrows its inbox with them gets only the mail
they name, in the order it asked, page after page; a bad value is refused (400), never
ignored. The SDK runs in its own virtualenv, in a subprocess in isolated mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from e2a_gateway.app import RunningGateway
from tests.conftest import Account
from tests.delivery_support import accept, create_agent, mail, store_with_conversation
from tests.test_sdk2_retries import sdk25_python
from tests.test_sdk_compat import run_sdk_calls

pytestmark = pytest.mark.slow

__all__ = ["sdk25_python"]  # a fixture

LIST = """
import dataclasses, json, sys
import e2a
from e2a.v1 import E2AClient
from e2a.v1.api import E2AApiError

request = json.load(sys.stdin)
client = E2AClient(api_key=request["key"], agent_email=request["agent"], base_url=request["url"])
results = []
for call in request["calls"]:
    earlier = call.pop("token_of", None)
    if earlier is not None:
        call["token"] = results[earlier]["next_token"]
    try:
        page = client.get_messages(**call)
    except E2AApiError as exc:
        results.append({"raised": exc.status_code, "text": exc.message})
        continue
    results.append({
        "subjects": [summary.subject for summary in page.messages],
        "next_token": page.next_token,
    })
print(json.dumps({"sdk": e2a.__file__, "results": results}))
"""


async def listings(
    python: Path, running: RunningGateway, account: Account, agent: str, *made: dict[str, Any]
) -> list[dict[str, Any]]:
    """Run `get_messages(**call)` for each call of `made` in order (`token_of: i` passes the
    `next_token` of the i-th); per call, the subjects and next token, or what was raised."""
    return await run_sdk_calls(python, LIST, running, account, agent, made)


async def test_get_messages_applies_the_filters_and_the_order_it_is_given(
    running: RunningGateway, make_account: Any, sdk25_python: Path
) -> None:
    owner: Account = await make_account("owner@example.com")
    agent = await create_agent(owner, "bot")
    gateway = running.gateway
    await accept(gateway, [agent], mail("Invoice 1"))
    await accept(gateway, [agent], mail("Lunch?"))
    await store_with_conversation(gateway, agent, "conv-42", subject="Re: the contract")
    await accept(gateway, [agent], mail("INVOICE 2"))
    oldest_first = ["Invoice 1", "Lunch?", "Re: the contract", "INVOICE 2"]

    (
        default,
        asc,
        desc,
        invoices,
        thread,
        stranger,
        future,
        past,
        everything_until_2999,
    ) = await listings(
        sdk25_python,
        running,
        owner,
        agent,
        {},
        {"sort": "asc"},
        {"sort": "desc"},
        {"subject_contains": "invoice"},
        {"conversation_id": "conv-42", "status": "all"},
        {"from_": "nobody@"},
        {"since": "2999-01-01T00:00:00Z"},
        {"until": "2000-01-01T00:00:00+00:00"},
        {"since": "2000-01-01T00:00:00Z", "until": "2999-01-01T00:00:00Z"},
    )

    assert default["subjects"] == oldest_first, default
    assert asc["subjects"] == oldest_first, asc
    assert desc["subjects"] == oldest_first[::-1], desc
    assert invoices["subjects"] == ["Invoice 1", "INVOICE 2"], invoices
    assert thread["subjects"] == ["Re: the contract"], thread
    assert stranger["subjects"] == [], stranger
    assert future["subjects"] == [] and past["subjects"] == [], (future, past)
    assert everything_until_2999["subjects"] == oldest_first, everything_until_2999
    assert all(
        page["next_token"] is None
        for page in (default, asc, desc, invoices, thread, stranger, future, past)
    )


async def test_a_filtered_listing_pages_through_the_same_mail_in_the_same_order(
    running: RunningGateway, make_account: Any, sdk25_python: Path
) -> None:
    owner: Account = await make_account("owner@example.com")
    agent = await create_agent(owner, "bot")
    for number in range(5):
        await accept(running.gateway, [agent], mail(f"Invoice {number}"))
    await accept(running.gateway, [agent], mail("Lunch?"))
    newest = {"sort": "desc", "subject_contains": "invoice", "page_size": 2}

    first, second, third, switched, other_filter = await listings(
        sdk25_python,
        running,
        owner,
        agent,
        newest,
        {**newest, "token_of": 0},
        {**newest, "token_of": 1},
        {**newest, "sort": "asc", "token_of": 0},
        {**newest, "subject_contains": "lunch", "token_of": 0},
    )

    assert first["subjects"] == ["Invoice 4", "Invoice 3"], first
    assert second["subjects"] == ["Invoice 2", "Invoice 1"], second
    assert third == {"subjects": ["Invoice 0"], "next_token": None}, third
    for refused in (switched, other_filter):
        assert refused.get("raised") == 400 and "start without it" in refused["text"], refused


async def test_a_filter_it_cannot_apply_is_refused_not_ignored(
    running: RunningGateway, make_account: Any, sdk25_python: Path
) -> None:
    owner: Account = await make_account("owner@example.com")
    agent = await create_agent(owner, "bot")
    await accept(running.gateway, [agent], mail("Invoice"))

    sideways, not_a_time, backwards, too_long = await listings(
        sdk25_python,
        running,
        owner,
        agent,
        {"sort": "sideways"},
        {"since": "yesterday"},
        {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        {"subject_contains": "x" * 201},
    )

    assert sideways.get("raised") == 400 and "sort" in sideways["text"], sideways
    assert not_a_time.get("raised") == 400 and "since" in not_a_time["text"], not_a_time
    assert backwards.get("raised") == 400 and "earlier" in backwards["text"], backwards
    assert too_long.get("raised") == 400 and "subject_contains" in too_long["text"], too_long
