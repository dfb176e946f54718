"""An agent of another account that an agent wrote to in a conversation may continue it: a new
message it sends there (not a reply) with that `conversation_id` joins the conversation in the
first agent's inbox, as its reply would. An agent never written to there cannot name its way in.
Over a real gateway and database, between agents of three accounts."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from e2a_gateway.workers.outbound import OutboundWorker
from tests.conftest import Account
from tests.delivery_support import QuietGateway, create_agent, open_account
from tests.test_local_delivery_gate import bob, resolver
from tests.webhook_support import alice, quiet, settings

__all__ = ["alice", "bob", "quiet", "resolver", "settings"]


async def send(quiet: QuietGateway, account: Account, sender: str, body: dict[str, Any]) -> None:
    sent = await account.http.post(f"/v1/agents/{quote(sender, safe='')}/messages", json=body)
    assert sent.status_code == 202, sent.text
    assert await OutboundWorker(quiet.gateway).deliver_due(time.time()) == 1


async def received(account: Account, agent: str) -> dict[str, str | None]:
    """Subject → conversation of the agent's inbound mail."""
    listing = await account.http.get(
        f"/v1/agents/{quote(agent, safe='')}/messages", params={"direction": "inbound"}
    )
    assert listing.status_code == 200, listing.text
    return {item["subject"]: item.get("conversation_id") for item in listing.json()["items"]}


async def test_an_agent_written_to_in_a_conversation_may_send_into_it(
    quiet: QuietGateway, alice: Account, bob: Account
) -> None:
    writer = await create_agent(alice, "writer")
    partner = await create_agent(bob, "partner")
    copied = await create_agent(bob, "copied")
    carol = await open_account(quiet.gateway, quiet.http_url, "carol@example.org")
    async with carol.http:
        stranger = await create_agent(carol, "stranger")
        await send(
            quiet, alice, writer, {"to": [partner], "bcc": [copied], "subject": "Deal", "text": "1"}
        )
        (conversation,) = (await received(bob, partner)).values()
        assert conversation is not None

        body = {"to": [writer], "text": "2", "conversation_id": conversation}
        await send(quiet, bob, partner, {**body, "subject": "Follow-up"})
        await send(quiet, bob, copied, {**body, "subject": "From the Bcc"})
        await send(quiet, carol, stranger, {**body, "subject": "Intrusion"})
        assert await received(alice, writer) == {
            "Follow-up": conversation,
            "From the Bcc": conversation,
            "Intrusion": None,
        }
