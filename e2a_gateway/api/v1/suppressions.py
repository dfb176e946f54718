"""Recipient suppressions on `/v1`: the account's list (listSuppressions, deleteSuppression)
and each agent's (listAgentSuppressions, createAgentSuppression, deleteAgentSuppression)."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from quart import Blueprint

from e2a_gateway.api.auth import requires_caller
from e2a_gateway.api.v1.account import Confirmation
from e2a_gateway.api.v1.bodies import read_json, read_query
from e2a_gateway.api.v1.pages import PageQuery, keyset_page
from e2a_gateway.api.v1.views import present
from e2a_gateway.operations import suppressions
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.webhooks import OmitNotNull
from e2a_gateway.storage.base import Suppression
from e2a_gateway.web.context import current_gateway

blueprint = Blueprint("v1_suppressions", __name__)


class CreateAgentSuppression(OmitNotNull):
    """`POST /v1/agents/{email}/suppressions`."""

    address: str = Field(max_length=320)
    reason: str | None = Field(default=None, max_length=2000)


def suppression_view(item: Suppression) -> dict[str, Any]:
    """SuppressionView, or AgentSuppressionView for an agent's."""
    return present(
        address=item.address,
        source=item.source,
        created_at=item.created_at,
        reason=item.reason,
        source_message_id=item.source_message_id,
        agent_email=item.agent_email,
    )


def _before(after: tuple[Any, ...] | None) -> int | None:
    return int(after[0]) if after else None


@blueprint.get("/account/suppressions")
@requires_caller
async def list_suppressions(caller: Caller) -> dict[str, Any]:
    """listSuppressions: newest first."""
    query = read_query(PageQuery)
    gateway = current_gateway()

    async def fetch(limit: int, after: tuple[Any, ...] | None) -> list[Suppression]:
        return await suppressions.account_page(gateway, caller, limit, _before(after))

    return await keyset_page(
        "suppressions", query, fetch, lambda item: (item.seq,), suppression_view
    )


@blueprint.delete("/account/suppressions/<path:address>")
@requires_caller
async def delete_suppression(caller: Caller, address: str) -> dict[str, Any]:
    """deleteSuppression (`?confirm=DELETE`): sends to the address are allowed again."""
    read_query(Confirmation)
    lifted = await suppressions.lift_account(current_gateway(), caller, address)
    return {"deleted": True, "address": lifted}


@blueprint.get("/agents/<email>/suppressions")
@requires_caller
async def list_agent_suppressions(caller: Caller, email: str) -> dict[str, Any]:
    """listAgentSuppressions: newest first."""
    query = read_query(PageQuery)
    gateway = current_gateway()

    async def fetch(limit: int, after: tuple[Any, ...] | None) -> list[Suppression]:
        return await suppressions.agent_page(gateway, caller, email, limit, _before(after))

    view = f"agent-suppressions:{email.lower()}"
    return await keyset_page(view, query, fetch, lambda item: (item.seq,), suppression_view)


@blueprint.post("/agents/<email>/suppressions")
@requires_caller
async def create_agent_suppression(caller: Caller, email: str) -> dict[str, Any]:
    """createAgentSuppression: idempotent."""
    body = await read_json(CreateAgentSuppression)
    added = await suppressions.add_for_agent(
        current_gateway(), caller, email, body.address, body.reason
    )
    return suppression_view(added)


@blueprint.delete("/agents/<email>/suppressions/<path:address>")
@requires_caller
async def delete_agent_suppression(caller: Caller, email: str, address: str) -> dict[str, Any]:
    """deleteAgentSuppression (`?confirm=DELETE`)."""
    read_query(Confirmation)
    lifted = await suppressions.lift_for_agent(current_gateway(), caller, email, address)
    return {"deleted": True, "address": lifted}
