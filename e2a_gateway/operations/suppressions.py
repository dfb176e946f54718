"""Recipient suppressions as a caller manages them: the account's list (filled by hard bounces,
lifted by hand) and each agent's own (added and lifted by hand), both with account keys only.
Sends to a suppressed address are refused (`operations.sending`)."""

from __future__ import annotations

import time

from e2a_gateway.addresses import AddressError, normalise_recipient
from e2a_gateway.gateway import Gateway
from e2a_gateway.operations.agents import owned_agent
from e2a_gateway.operations.caller import Caller, owner_still_there
from e2a_gateway.operations.errors import Invalid, NotFound
from e2a_gateway.storage.base import Agent, Suppression


def _address(raw: str) -> str:
    """`raw` as a suppression stores it and a send compares it: any address e2a sends to
    (`normalise_recipient`, an internationalised one too), lowercased."""
    try:
        return normalise_recipient(raw).lower()
    except AddressError as exc:
        raise Invalid("invalid_request", f"address must be a valid email address: {exc}") from None


def _named_address(raw: str) -> str:
    """The address a suppression to lift is stored under (as `_address` stores it: an
    internationalised domain in its A-label form); one that is no address is only lowered,
    and will name none."""
    try:
        return _address(raw)
    except Invalid:
        return raw.strip().lower()


async def _managed_agent(gateway: Gateway, caller: Caller, agent_email: str) -> Agent:
    """The caller's agent whose suppression list is managed: account keys only, so an agent
    never lifts a block on its own sending (e2a's rule)."""
    caller.require_account("manage an agent's suppression list")
    return await owned_agent(gateway, caller, agent_email)


async def account_page(
    gateway: Gateway, caller: Caller, limit: int, before_seq: int | None
) -> list[Suppression]:
    """The account-wide suppressions, newest first."""
    caller.require_account("manage the account's suppression list")
    return await gateway.storage.suppression_page(caller.user_id, None, limit, before_seq)


async def lift_account(gateway: Gateway, caller: Caller, address: str) -> str:
    """Lift an account-wide suppression; NotFound when there is none."""
    caller.require_account("manage the account's suppression list")
    named = _named_address(address)
    if not await gateway.storage.delete_suppression(caller.user_id, None, named):
        raise NotFound.of("suppression")
    return named


async def agent_page(
    gateway: Gateway, caller: Caller, agent_email: str, limit: int, before_seq: int | None
) -> list[Suppression]:
    """The agent's own suppressions, newest first."""
    agent = await _managed_agent(gateway, caller, agent_email)
    return await gateway.storage.suppression_page(caller.user_id, agent.email, limit, before_seq)


async def add_for_agent(
    gateway: Gateway, caller: Caller, agent_email: str, address: str, reason: str | None
) -> Suppression:
    """Suppress `address` for the agent (idempotent)."""
    agent = await _managed_agent(gateway, caller, agent_email)
    with owner_still_there():
        return await gateway.storage.add_suppression(
            caller.user_id, agent.email, _address(address), reason, time.time()
        )


async def lift_for_agent(gateway: Gateway, caller: Caller, agent_email: str, address: str) -> str:
    """Lift the agent's suppression of `address`; NotFound when there is none."""
    agent = await _managed_agent(gateway, caller, agent_email)
    named = _named_address(address)
    if not await gateway.storage.delete_suppression(caller.user_id, agent.email, named):
        raise NotFound.of("suppression")
    return named
