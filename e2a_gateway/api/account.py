"""The caller's own account: signing secrets, API keys, and their data rights (export, erase)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from quart import Blueprint, Response, current_app, request

from e2a_gateway.api.auth import requires_caller
from e2a_gateway.api.requests import read_body
from e2a_gateway.operations import account, keys
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.errors import Invalid
from e2a_gateway.operations.keys import CreateApiKey, CreateSigningSecret
from e2a_gateway.storage.base import ExportedMessage
from e2a_gateway.web.context import current_gateway
from e2a_gateway.web.streamed_json import json_document, streamed_response
from e2a_gateway.web.views import api_key_view, signing_secret_view

V1_RECORDS = frozenset({"suppressions", "webhooks", "templates", "unsubscribe_links"})
"""Export keys of what only the `/v1` face has (its contract lists them; this one's does not)."""

blueprint = Blueprint("account", __name__)

DELETE_CONFIRMATION = "DELETE"


@blueprint.get("/users/me/signing-secrets")
@requires_caller
async def list_signing_secrets(caller: Caller) -> dict[str, Any]:
    """GET /users/me/signing-secrets, newest first."""
    secrets = await keys.list_signing_secrets(current_gateway(), caller)
    return {"secrets": [signing_secret_view(secret) for secret in secrets]}


@blueprint.post("/users/me/signing-secrets")
@requires_caller
async def create_signing_secret(caller: Caller) -> tuple[dict[str, Any], int]:
    """POST /users/me/signing-secrets: the secret is in this response only."""
    body = await read_body(CreateSigningSecret, allow_empty=True)
    issued = await keys.new_signing_secret(current_gateway(), caller, body.name)
    return {**signing_secret_view(issued.secret), "secret": issued.plaintext}, 201


@blueprint.delete("/users/me/signing-secrets/<secret_id>")
@requires_caller
async def delete_signing_secret(caller: Caller, secret_id: str) -> Response:
    """DELETE /users/me/signing-secrets/{id}: never the last one."""
    await keys.remove_signing_secret(current_gateway(), caller, secret_id)
    return Response(b"", status=204)


@blueprint.get("/users/me/api-keys")
@requires_caller
async def list_api_keys(caller: Caller) -> dict[str, Any]:
    """GET /users/me/api-keys: the keys not revoked, prefixes only."""
    found = await keys.list_api_keys(current_gateway(), caller)
    return {"api_keys": [api_key_view(key) for key in found]}


@blueprint.post("/users/me/api-keys")
@requires_caller
async def create_api_key(caller: Caller) -> tuple[dict[str, Any], int]:
    """POST /users/me/api-keys: the plaintext key is in this response only."""
    body = await read_body(CreateApiKey, allow_empty=True)
    issued = await keys.new_api_key(current_gateway(), caller, body.name)
    return {**api_key_view(issued.key), "key": issued.plaintext}, 201


@blueprint.delete("/users/me/api-keys/<key_id>")
@requires_caller
async def revoke_api_key(caller: Caller, key_id: str) -> Response:
    """DELETE /users/me/api-keys/{id}: revoke (the key answers 401 from now on)."""
    await keys.revoke_api_key(current_gateway(), caller, key_id)
    return Response(b"", status=204)


@blueprint.get("/users/me/export")
@requires_caller
async def export_user(caller: Caller) -> Response:
    """GET /users/me/export: everything stored about the caller, never hashes or secrets, in
    this face's documented keys (the records only `/v1` has are in `/v1/account/export`),
    sent as it is read from one snapshot (web.streamed_json)."""
    gateway = current_gateway()

    async def members() -> AsyncGenerator[tuple[str, Any], None]:
        async with account.export_account(gateway, caller) as exported:
            for name, value in exported.head.items():
                if name not in V1_RECORDS:
                    yield name, value
            yield "messages", _messages(exported.source.messages())

    return await streamed_response(json_document(members(), current_app.json.dumps))


async def _messages(
    pages: AsyncGenerator[list[ExportedMessage], None],
) -> AsyncGenerator[list[dict[str, Any]], None]:
    """The pages of an export's messages, their metadata alone (labels and trash are `/v1`'s)."""
    async with aclosing(pages):
        async for page in pages:
            yield [message for message, _ in page]


@blueprint.delete("/users/me")
@requires_caller
async def delete_user(caller: Caller) -> dict[str, Any]:
    """DELETE /users/me?confirm=DELETE: erase the caller and all they own, in one transaction."""
    if request.args.get("confirm") != DELETE_CONFIRMATION:
        raise Invalid(
            "confirmation_required",
            "deleting your account erases all its agents, domains, keys and messages for good; "
            f"repeat the request as DELETE /api/v1/users/me?confirm={DELETE_CONFIRMATION}",
        )
    deleted = await account.delete_account(current_gateway(), caller)
    for table in ("agent_unsubscribe_tokens", "agent_suppressions"):
        deleted.pop(table, None)  # the 2.x receipt's tables only (`/v1` has them)
    return {"deleted": deleted}
