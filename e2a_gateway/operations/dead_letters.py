"""Dead letters of the caller's cloud agents: inbound mail whose webhook deliveries ran out of
retries, listed with the last error, and redelivered by hand, one or all.

A redelivery queues a new delivery job: the webhook worker signs it afresh at each attempt (a
new timestamp and signature) and retries it on the usual schedule for 24 hours from the
redelivery; its attempts are numbered on from the last one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from e2a_gateway.gateway import Gateway
from e2a_gateway.operations.agents import owned_agent
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.errors import Invalid, NotFound
from e2a_gateway.storage.base import Agent, DeadLetter
from e2a_gateway.storage.vocabulary import CLOUD


@dataclass(frozen=True)
class DeadLetterPage:
    """A page of dead letters, oldest first, and the position after it (None: the last)."""

    letters: list[DeadLetter]
    next_after: int | None


async def dead_letter_page(
    gateway: Gateway, caller: Caller, email: str, page_size: int, after: int | None
) -> DeadLetterPage:
    """The dead letters of the caller's agent at `email`, after position `after`."""
    agent = await owned_agent(gateway, caller, email)
    found = await gateway.storage.dead_letters(caller.user_id, agent.email, page_size + 1, after)
    letters = found[:page_size]
    next_after = letters[-1].seq if len(found) > page_size else None
    return DeadLetterPage(letters, next_after)


async def _webhook_agent(gateway: Gateway, caller: Caller, email: str) -> Agent:
    """The caller's agent at `email`, which must be delivered by webhook to take a redelivery."""
    agent = await owned_agent(gateway, caller, email)
    if agent.agent_mode != CLOUD or not agent.webhook_url:
        raise Invalid(
            "not_cloud_agent",
            "this agent is not delivered by webhook (it is a local agent); its mail is served "
            'over REST and the WebSocket. Set "agent_mode": "cloud" and a webhook_url first',
        )
    return agent


async def redeliver(gateway: Gateway, caller: Caller, email: str, message_id: str) -> str:
    """Queue one dead letter of the caller's agent for delivery again; NotFound when it is no
    dead letter of theirs (another user's, unknown, delivered, or already queued again)."""
    agent = await _webhook_agent(gateway, caller, email)
    queued = await gateway.storage.redeliver_dead_letters(
        caller.user_id, agent.email, [message_id], time.time()
    )
    if not queued:
        raise NotFound.of("dead letter")
    return queued[0]


async def redeliver_all(gateway: Gateway, caller: Caller, email: str) -> list[str]:
    """Queue every dead letter of the caller's agent for delivery again; their ids."""
    agent = await _webhook_agent(gateway, caller, email)
    return await gateway.storage.redeliver_dead_letters(
        caller.user_id, agent.email, None, time.time()
    )
