"""The caller's account on `/v1`: its API keys (account or agent scope)."""

from __future__ import annotations

from typing import Any, Literal

from quart import Blueprint

from e2a.api.v1.auth import requires_caller
from e2a.api.v1.bodies import QueryParams, read_json, read_query
from e2a.api.v1.idempotent import idempotent
from e2a.api.v1.pages import PageQuery, keyset_page
from e2a.api.v1.views import api_key_view
from e2a.operations import keys
from e2a.operations.caller import Caller
from e2a.operations.keys import CreateScopedApiKey
from e2a.storage.base import ApiKey
from e2a.web.context import current_gateway

blueprint = Blueprint("v1_account", __name__)


class Confirmation(QueryParams):
    """`?confirm=DELETE`, which every irreversible delete requires."""

    confirm: Literal["DELETE"]


@blueprint.get("/account/api-keys")
@requires_caller
async def list_api_keys(caller: Caller) -> dict[str, Any]:
    """listApiKeys: the live keys, newest first (metadata only)."""
    query = read_query(PageQuery)
    gateway = current_gateway()

    async def fetch(limit: int, after: tuple[Any, ...] | None) -> list[ApiKey]:
        return await keys.api_key_page(gateway, caller, limit, after)

    return await keyset_page("api-keys", query, fetch, _position, api_key_view)


@blueprint.post("/account/api-keys")
@requires_caller
@idempotent
async def create_api_key(caller: Caller) -> tuple[dict[str, Any], int]:
    """createApiKey: a new account key, or one bound to an agent; the key is in this answer
    only (and in its replays to the same Idempotency-Key)."""
    body = await read_json(CreateScopedApiKey)
    issued = await keys.new_scoped_api_key(current_gateway(), caller, body)
    return {**api_key_view(issued.key), "key": issued.plaintext}, 201


@blueprint.delete("/account/api-keys/<key_id>")
@requires_caller
async def delete_api_key(caller: Caller, key_id: str) -> dict[str, Any]:
    """deleteApiKey: revoke the key; it is refused from now on."""
    read_query(Confirmation)
    await keys.revoke_api_key(current_gateway(), caller, key_id)
    return {"deleted": True, "id": key_id}


def _position(key: ApiKey) -> tuple[str, str]:
    return key.created_at, key.id
