"""Agents: register, list, read, update and delete the caller's inboxes."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, request

from e2a_gateway.api.auth import requires_caller
from e2a_gateway.api.requests import read_body
from e2a_gateway.operations import agents
from e2a_gateway.operations.agents import CreateAgent, UpdateAgent
from e2a_gateway.operations.caller import Caller
from e2a_gateway.web.context import current_gateway
from e2a_gateway.web.views import agent_view

blueprint = Blueprint("agents", __name__)


@blueprint.get("/agents")
@requires_caller
async def list_agents(caller: Caller) -> dict[str, Any]:
    """GET /agents."""
    entries = await agents.list_agents(current_gateway(), caller)
    return {"agents": [agent_view(entry) for entry in entries]}


@blueprint.post("/agents")
@requires_caller
async def create_agent(caller: Caller) -> tuple[dict[str, Any], int]:
    """POST /agents."""
    body = await read_body(CreateAgent)
    entry = await agents.register_agent(current_gateway(), caller, body, request.remote_addr)
    return agent_view(entry), 201


@blueprint.get("/agents/<email>")
@requires_caller
async def get_agent(caller: Caller, email: str) -> dict[str, Any]:
    """GET /agents/{email}."""
    return agent_view(await agents.get_agent(current_gateway(), caller, email))


@blueprint.put("/agents/<email>")
@requires_caller
async def update_agent(caller: Caller, email: str) -> dict[str, Any]:
    """PUT /agents/{email}: apply any subset of the settings."""
    body = await read_body(UpdateAgent)
    return agent_view(await agents.change_agent(current_gateway(), caller, email, body))


@blueprint.delete("/agents/<email>")
@requires_caller
async def delete_agent(caller: Caller, email: str) -> dict[str, Any]:
    """DELETE /agents/{email}: the agent and its messages."""
    await agents.remove_agent(current_gateway(), caller, email)
    return {"status": "deleted"}
