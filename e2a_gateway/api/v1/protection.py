"""An agent's protection config on `/v1` (beta in e2a): read it, or replace it wholesale.
Account keys only."""

from __future__ import annotations

from typing import Any

from quart import Blueprint

from e2a_gateway.api.auth import requires_caller
from e2a_gateway.api.v1.bodies import read_json
from e2a_gateway.api.v1.review_views import protection_view
from e2a_gateway.operations import protection
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.protection import ProtectionConfig
from e2a_gateway.web.context import current_gateway

blueprint = Blueprint("v1_protection", __name__)


@blueprint.get("/agents/<email>/protection")
@requires_caller
async def get_agent_protection(caller: Caller, email: str) -> dict[str, Any]:
    """getAgentProtection: the agent's gates and holds."""
    agent = await protection.protected_agent(current_gateway(), caller, email)
    return protection_view(agent)


@blueprint.put("/agents/<email>/protection")
@requires_caller
async def put_agent_protection(caller: Caller, email: str) -> dict[str, Any]:
    """putAgentProtection: replace the agent's gates and holds; the config as it stands now."""
    config = await read_json(ProtectionConfig)
    agent = await protection.replace_protection(current_gateway(), caller, email, config)
    return protection_view(agent)
