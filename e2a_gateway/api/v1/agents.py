"""Agents on `/v1`: register `{email, name}`, list (cursor pages, `?deleted=true` for the
trash), get, rename, delete to the trash (or for good with `?permanent=true`), restore from it,
and send a test message to the agent itself."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from quart import Blueprint, request

from e2a_gateway.api.auth import requires_caller
from e2a_gateway.api.v1.account import Confirmation
from e2a_gateway.api.v1.bodies import read_json, read_query
from e2a_gateway.api.v1.errors import invalid
from e2a_gateway.api.v1.pages import PageQuery, keyset_page
from e2a_gateway.api.v1.rate_headers import rate_limited
from e2a_gateway.api.v1.views import present
from e2a_gateway.gateway import Gateway
from e2a_gateway.operations import agents, sending
from e2a_gateway.operations.agents import AgentEntry, CreateAgent, UpdateAgent
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.requests import RequestBody
from e2a_gateway.web.context import current_gateway
from e2a_gateway.web.views import submission_view

blueprint = Blueprint("v1_agents", __name__)

HELD = "pending_review"
"""e2a's status of a message held for review (the gateway's `pending_approval`)."""


class CreateAgentBody(RequestBody):
    """CreateAgentRequest: the address (on the shared domain, or on a domain the caller has
    verified; a bare slug means the shared domain) and a display name."""

    email: str = Field(max_length=320)
    name: str | None = Field(default=None, max_length=200)


class UpdateAgentBody(RequestBody):
    """UpdateAgentRequest: the display name only."""

    name: str | None = Field(default=None, max_length=200)


class AgentsQuery(PageQuery):
    """`?cursor=&limit=&deleted=`: `deleted=true` lists the trash."""

    deleted: bool = False


class DeleteQuery(Confirmation):
    """`?confirm=DELETE&permanent=`: `permanent=true` skips the trash."""

    permanent: bool = False


def agent_view(entry: AgentEntry) -> dict[str, Any]:
    """AgentView."""
    agent = entry.agent
    return present(
        email=agent.email,
        name=agent.name,
        domain=agent.domain,
        registered_domain=agent.domain,
        domain_verified=entry.domain_verified,
        created_at=agent.created_at,
        deleted_at=agent.deleted_at,
    )


@blueprint.get("/agents")
@requires_caller
async def list_agents(caller: Caller) -> dict[str, Any]:
    """listAgents: the caller's agents newest first (an agent key sees its own only)."""
    query = read_query(AgentsQuery)
    return await agent_listing(current_gateway(), caller, query)


async def agent_listing(gateway: Gateway, caller: Caller, query: AgentsQuery) -> dict[str, Any]:
    """One page of the caller's agents, or of its trash (listAgents' answer), for `/v1` and
    the MCP tools alike."""

    async def fetch(limit: int, after: tuple[Any, ...] | None) -> list[AgentEntry]:
        position = (str(after[0]), str(after[1])) if after else None
        return await agents.agent_page(gateway, caller, limit, position, trashed=query.deleted)

    view = "agents:trash" if query.deleted else "agents"
    return await keyset_page(view, query, fetch, _position, agent_view, gateway)


@blueprint.post("/agents")
@rate_limited
@requires_caller
async def create_agent(caller: Caller) -> tuple[dict[str, Any], int]:
    """createAgent: a new agent, receiving by the WebSocket or the account's webhooks."""
    body = await read_json(CreateAgentBody)
    address = body.email if "@" in body.email else None
    wanted = CreateAgent(
        email=address,
        slug=None if address else body.email,
        name=body.name or "",  # e2a keeps no name as none (`/api/v1` names it by its address)
        agent_mode="local",
    )
    entry = await agents.register_agent(current_gateway(), caller, wanted, request.remote_addr)
    return agent_view(entry), 201


@blueprint.get("/agents/<email>")
@requires_caller
async def get_agent(caller: Caller, email: str) -> dict[str, Any]:
    """getAgent."""
    return agent_view(await agents.get_agent(current_gateway(), caller, email))


@blueprint.patch("/agents/<email>")
@requires_caller
async def update_agent(caller: Caller, email: str) -> dict[str, Any]:
    """updateAgent: rename it (account keys only); a body without `name` changes nothing and
    is 400, as e2a answers it."""
    body = await read_json(UpdateAgentBody, allow_empty=True)
    if body.name is None:
        caller.require_account("change agents")
        await agents.get_agent(current_gateway(), caller, email)  # 404 before 400, as e2a's
        raise invalid(400, "no recognized fields in request", ("body.name", "required"))
    changed = await agents.change_agent(
        current_gateway(), caller, email, UpdateAgent(name=body.name)
    )
    return agent_view(changed)


@blueprint.delete("/agents/<email>")
@requires_caller
async def delete_agent(caller: Caller, email: str) -> dict[str, Any]:
    """deleteAgent: to the trash (restorable for agents.TRASH_DAYS, its address kept, its
    messages with it), or with `permanent=true` for good with its messages; `messages_deleted`
    counts the messages removed for good, zero for the trash (as e2a defines it)."""
    query = read_query(DeleteQuery)
    gateway = current_gateway()
    if query.permanent:
        address = agents.agent_address(email)
        deleted = await agents.remove_agent(gateway, caller, address)
        return {"deleted": True, "email": address, "messages_deleted": deleted}
    trashed = await agents.trash_agent(gateway, caller, email)
    return {"deleted": True, "email": trashed.email, "messages_deleted": 0}


@blueprint.post("/agents/<email>/restore")
@requires_caller
async def restore_agent(caller: Caller, email: str) -> dict[str, Any]:
    """restoreAgent: back from the trash, messages and settings intact."""
    return agent_view(await agents.restore_agent(current_gateway(), caller, email))


@blueprint.post("/agents/<email>/test")
@requires_caller
async def test_agent(caller: Caller, email: str) -> tuple[dict[str, Any], int]:
    """testAgent: a test message from the agent to itself (200 sent, 202 held for review)."""
    submission = await sending.send_test(current_gateway(), caller, email, new_conversation=True)
    view = submission_view(submission)
    if submission.held:
        return {**view, "status": HELD}, 202
    return view, 200


def _position(entry: AgentEntry) -> tuple[str, str]:
    return entry.agent.created_at, entry.agent.email
