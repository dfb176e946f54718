"""An agent's own suppression list on `/v1` (listAgentSuppressions, createAgentSuppression,
deleteAgentSuppression): account keys manage it; an agent key, even the agent's own, gets 403
and changes nothing (an agent never lifts a block on its own sending); a bad address is 400
`invalid_request`."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from e2a_gateway.app import RunningGateway
from tests.conftest import Account
from tests.delivery_support import create_agent
from tests.test_v1_reviews import agent_key


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
