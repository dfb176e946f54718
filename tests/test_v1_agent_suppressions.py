"""An agent's own suppression list on `/v1` (listAgentSuppressions, createAgentSuppression,
deleteAgentSuppression): account keys manage it; an agent key, even the agent's own, gets 403
and changes nothing (an agent never lifts a block on its own sending); a bad address is 400
`invalid_request`; a new block is told once as the beta event `agent.suppression_added`."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import httpx

from e2a_gateway.app import RunningGateway
from tests.conftest import Account
from tests.delivery_support import create_agent
from tests.test_v1_reviews import agent_key, conforms


def suppressions_path(agent: str, address: str = "") -> str:
    path = f"/v1/agents/{quote(agent, safe='')}/suppressions"
    return f"{path}/{quote(address, safe='')}" if address else path


async def listed(http: httpx.AsyncClient, agent: str) -> list[str]:
    response = await http.get(suppressions_path(agent))
    assert response.status_code == 200, response.text
    return [item["address"] for item in response.json()["items"]]


async def test_only_account_keys_manage_an_agents_suppressions(
    running: RunningGateway, make_account: Any
) -> None:
    owner: Account = await make_account("owner@example.com")
    bot = await create_agent(owner, "bot")
    added = await owner.http.post(
        suppressions_path(bot), json={"address": "Blocked@Example.org", "reason": "asked"}
    )
    assert added.status_code in (200, 201), added.text
    assert added.json()["address"] == "blocked@example.org"

    key = await agent_key(owner, bot)
    async with httpx.AsyncClient(
        base_url=running.addresses.http_url, headers={"Authorization": f"Bearer {key}"}
    ) as as_agent:
        attempts = [
            await as_agent.get(suppressions_path(bot)),
            await as_agent.post(suppressions_path(bot), json={"address": "more@example.org"}),
            await as_agent.delete(
                suppressions_path(bot, "blocked@example.org"), params={"confirm": "DELETE"}
            ),
        ]
    for refused in attempts:
        assert refused.status_code == 403, refused.text
        error = refused.json()["error"]
        assert error["code"] == "forbidden" and "suppression list" in error["message"]
    assert await listed(owner.http, bot) == ["blocked@example.org"]

    for bad in ("not an address", "a@", "<>"):
        invalid = await owner.http.post(suppressions_path(bot), json={"address": bad})
        assert invalid.status_code == 400, (bad, invalid.text)
        assert invalid.json()["error"]["code"] == "invalid_request"
    assert await listed(owner.http, bot) == ["blocked@example.org"]

    lifted = await owner.http.delete(
        suppressions_path(bot, "blocked@example.org"), params={"confirm": "DELETE"}
    )
    assert lifted.status_code == 200 and lifted.json() == {
        "deleted": True,
        "address": "blocked@example.org",
    }
    assert await listed(owner.http, bot) == []


async def test_a_new_block_is_told_once_as_agent_suppression_added(make_account: Any) -> None:
    owner: Account = await make_account("owner@example.com")
    bot = await create_agent(owner, "bot")
    hook = await owner.http.post(
        "/v1/webhooks",
        json={"url": "https://hooks.example.org/e2a", "events": ["agent.suppression_added"]},
    )
    assert hook.status_code == 201, hook.text
    for _ in range(2):  # adding it again changes nothing, and tells nothing
        added = await owner.http.post(suppressions_path(bot), json={"address": "Gone@Example.org"})
        assert added.status_code == 200, added.text

    logged = await owner.http.get("/v1/events", params={"type": "agent.suppression_added"})
    (event,) = logged.json()["items"]
    conforms(event, "EventView")
    conforms(event["data"], "AgentSuppressionAddedData")
    assert event["data"] == {"agent_email": bot, "address": "gone@example.org", "source": "manual"}
    assert event["agent_email"] == bot
    deliveries = await owner.http.get(f"/v1/webhooks/{hook.json()['id']}/deliveries")
    assert [item["type"] for item in deliveries.json()["items"]] == ["agent.suppression_added"]


async def test_a_block_on_an_international_address_is_lifted_by_the_name_it_was_given(
    running: RunningGateway, make_account: Any
) -> None:
    """Stored with its domain's A-label, a block is found again by the Unicode name, on the
    agent's list and on the account's."""
    owner: Account = await make_account("owner@example.com")
    bot = await create_agent(owner, "bot")
    added = await owner.http.post(suppressions_path(bot), json={"address": "Kim@Bücher.example"})
    assert added.status_code in (200, 201), added.text
    stored = added.json()["address"]
    assert stored == "kim@xn--bcher-kva.example"
    lifted = await owner.http.delete(
        suppressions_path(bot, "Kim@Bücher.example"), params={"confirm": "DELETE"}
    )
    assert lifted.status_code == 200, lifted.text
    assert lifted.json() == {"deleted": True, "address": stored}
    assert await listed(owner.http, bot) == []

    storage = running.gateway.storage
    user_id = (await owner.http.get("/v1/account")).json()["user"]["id"]
    await storage.add_suppression(user_id, None, stored, None, time.time())
    path = f"/v1/account/suppressions/{quote('kim@bücher.example', safe='')}"
    lifted = await owner.http.delete(path, params={"confirm": "DELETE"})
    assert lifted.status_code == 200, lifted.text
    assert (await owner.http.get("/v1/account/suppressions")).json()["items"] == []


async def test_a_block_on_an_address_holding_a_slash_is_lifted_sent_as_2f(
    running: RunningGateway, make_account: Any
) -> None:
    """`/` is legal in a local part (RFC 5322 atext); sent as `%2F`, it names the block, on the
    agent's list and on the account's, instead of splitting the path."""
    owner: Account = await make_account("owner@example.com")
    bot = await create_agent(owner, "bot")
    added = await owner.http.post(suppressions_path(bot), json={"address": "Sales/EU@example.org"})
    assert added.status_code in (200, 201), added.text
    assert added.json()["address"] == "sales/eu@example.org"
    path = suppressions_path(bot, "sales/eu@example.org")
    assert "%2F" in path
    lifted = await owner.http.delete(path, params={"confirm": "DELETE"})
    assert lifted.status_code == 200, lifted.text
    assert lifted.json() == {"deleted": True, "address": "sales/eu@example.org"}
    assert await listed(owner.http, bot) == []

    user_id = (await owner.http.get("/v1/account")).json()["user"]["id"]
    await running.gateway.storage.add_suppression(
        user_id, None, "sales/eu@example.org", None, time.time()
    )
    path = f"/v1/account/suppressions/{quote('sales/eu@example.org', safe='')}"
    lifted = await owner.http.delete(path, params={"confirm": "DELETE"})
    assert lifted.status_code == 200, lifted.text
    assert lifted.json() == {"deleted": True, "address": "sales/eu@example.org"}
    assert (await owner.http.get("/v1/account/suppressions")).json()["items"] == []


async def test_the_deletion_receipt_counts_the_agents_suppressions(make_account: Any) -> None:
    """deleteAccount's receipt counts the blocks on the account's agents it erased
    (`agent_suppressions_deleted`, e2a's audit of them)."""
    owner: Account = await make_account("owner@example.com")
    bot, aide = await create_agent(owner, "bot"), await create_agent(owner, "aide")
    for agent, address in ((bot, "one@example.org"), (bot, "two@example.org"), (aide, "x@y.org")):
        added = await owner.http.post(suppressions_path(agent), json={"address": address})
        assert added.status_code in (200, 201), added.text

    erased = await owner.http.delete("/v1/account", params={"confirm": "DELETE"})
    assert erased.status_code == 200, erased.text
    assert erased.json()["agent_suppressions_deleted"] == 3
    assert erased.json()["agents_deleted"] == 2
