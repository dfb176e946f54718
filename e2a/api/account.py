"""The caller's own account: signing secrets, API keys, and their data rights (export, erase)."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request

from e2a.accounts import (
    MAX_SIGNING_SECRETS,
    IssuedSigningSecret,
    issue_api_key,
    issue_signing_secret,
)
from e2a.api.auth import gateway, requires_user
from e2a.api.errors import ApiError, not_found
from e2a.api.requests import CreateApiKey, CreateSigningSecret, read_body
from e2a.api.views import api_key_view, signing_secret_view
from e2a.clock import utc_now
from e2a.hub import Revocation
from e2a.storage.base import LastOne, LimitReached, User

blueprint = Blueprint("account", __name__)


@blueprint.get("/users/me/signing-secrets")
@requires_user
async def list_signing_secrets(user: User) -> dict[str, Any]:
    """GET /users/me/signing-secrets, newest first."""
    secrets = await gateway().storage.list_signing_secrets(user.id)
    return {"secrets": [signing_secret_view(secret) for secret in secrets]}


async def new_signing_secret(user: User, name: str | None) -> IssuedSigningSecret:
    """Issue a signing secret for the caller; 400 past the limit."""
    try:
        return await issue_signing_secret(
            gateway().storage, gateway().server_key, user.id, name or "unnamed"
        )
    except LimitReached:
        raise ApiError(
            400,
            "signing_secret_limit",
            f"at most {MAX_SIGNING_SECRETS} signing secrets; delete an old one first",
        ) from None


async def remove_signing_secret(user: User, secret_id: str) -> None:
    """Delete one of the caller's signing secrets: never the last one (400); 404 otherwise."""
    try:
        deleted = await gateway().storage.delete_signing_secret(user.id, secret_id)
    except LastOne:
        raise ApiError(
            400,
            "last_signing_secret",
            "cannot delete your only signing secret; create another first",
        ) from None
    if not deleted:
        raise not_found("signing secret")


async def revoke_key(user: User, key_id: str) -> None:
    """Revoke one of the caller's API keys (it answers 401 from now on, and the WebSockets and
    dashboard streams it opened are closed); 404 otherwise."""
    key_hash = await gateway().storage.revoke_api_key(user.id, key_id, utc_now())
    if key_hash is None:
        raise not_found("API key")
    gateway().hub.revoke(Revocation("key", key_hash))


@blueprint.post("/users/me/signing-secrets")
@requires_user
async def create_signing_secret(user: User) -> tuple[dict[str, Any], int]:
    """POST /users/me/signing-secrets: the secret is in this response only."""
    body = await read_body(CreateSigningSecret, allow_empty=True)
    issued = await new_signing_secret(user, body.name)
    return {**signing_secret_view(issued.secret), "secret": issued.plaintext}, 201


@blueprint.delete("/users/me/signing-secrets/<secret_id>")
@requires_user
async def delete_signing_secret(user: User, secret_id: str) -> Response:
    """DELETE /users/me/signing-secrets/{id}: never the last one."""
    await remove_signing_secret(user, secret_id)
    return Response(b"", status=204)


@blueprint.get("/users/me/api-keys")
@requires_user
async def list_api_keys(user: User) -> dict[str, Any]:
    """GET /users/me/api-keys (prefixes only)."""
    keys = await gateway().storage.list_api_keys(user.id)
    return {"api_keys": [api_key_view(key) for key in keys]}


@blueprint.post("/users/me/api-keys")
@requires_user
async def create_api_key(user: User) -> tuple[dict[str, Any], int]:
    """POST /users/me/api-keys: the plaintext key is in this response only."""
    body = await read_body(CreateApiKey, allow_empty=True)
    issued = await issue_api_key(gateway().storage, user.id, body.name or "unnamed")
    return {**api_key_view(issued.key), "key": issued.plaintext}, 201


@blueprint.delete("/users/me/api-keys/<key_id>")
@requires_user
async def revoke_api_key(user: User, key_id: str) -> Response:
    """DELETE /users/me/api-keys/{id}: revoke (the key answers 401 from now on)."""
    await revoke_key(user, key_id)
    return Response(b"", status=204)


EXPORT_SCHEMA_VERSION = "1"
DELETE_CONFIRMATION = "DELETE"


@blueprint.get("/users/me/export")
@requires_user
async def export_user(user: User) -> dict[str, Any]:
    """GET /users/me/export: everything stored about the caller, never hashes or secrets."""
    exported = await gateway().storage.export_user(user.id)
    return {
        "schema_version": EXPORT_SCHEMA_VERSION,
        "generated_at": utc_now(),
        **exported,
    }


@blueprint.delete("/users/me")
@requires_user
async def delete_user(user: User) -> dict[str, Any]:
    """DELETE /users/me?confirm=DELETE: erase the caller and all they own, in one transaction."""
    if request.args.get("confirm") != DELETE_CONFIRMATION:
        raise ApiError(
            400,
            "confirmation_required",
            "deleting your account erases all its agents, domains, keys and messages for good; "
            f"repeat the request as DELETE /api/v1/users/me?confirm={DELETE_CONFIRMATION}",
        )
    deleted = await gateway().storage.delete_user(user.id)
    gateway().hub.revoke(Revocation("user", user.id))
    return {"deleted": deleted}
