"""Dashboard pages for the account: signing secrets, API keys and domains."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quart import Response, request

from e2a_gateway.clock import utc_now
from e2a_gateway.dashboard.auth import Session, requires_session
from e2a_gateway.dashboard.site import blueprint, done, page, page_position, position_token
from e2a_gateway.operations import domains as domain_operations
from e2a_gateway.operations import keys
from e2a_gateway.operations.errors import NotFound, OperationError
from e2a_gateway.storage.base import ApiKey
from e2a_gateway.web.context import current_gateway
from e2a_gateway.web.errors import status_of
from e2a_gateway.web.views import api_key_view, domain_view, signing_secret_view

KEYS_PAGE_SIZE = 100
"""API keys on one page of the Keys page (revoked ones included)."""


async def _credentials_page(
    session: Session,
    status: int = 200,
    error: str | None = None,
    created: dict[str, str] | None = None,
) -> Response:
    gateway = current_gateway()
    now = utc_now()
    token = request.args.get("page")
    found = await keys.api_key_page(
        gateway,
        session.caller,
        KEYS_PAGE_SIZE + 1,
        page_position(token) if token else None,
        revoked=True,
    )
    shown = found[:KEYS_PAGE_SIZE]
    return await page(
        "credentials.html",
        session,
        status=status,
        error=error,
        created=created,
        secrets=[
            signing_secret_view(secret)
            for secret in await keys.list_signing_secrets(gateway, session.caller)
        ],
        keys=[_key_row(key, now) for key in shown],
        next_page=(
            position_token(shown[-1].created_at, shown[-1].id)
            if len(found) > KEYS_PAGE_SIZE
            else None
        ),
    )


def _key_row(key: ApiKey, now: str) -> dict[str, Any]:
    """An API key as the Keys page lists it: its metadata (what it reaches and until when
    included) and its `state`: `revoked`, `expired` (refused like a revoked key) or
    `active`."""
    if key.revoked_at:
        state = "revoked"
    elif key.expired(now):
        state = "expired"
    else:
        state = "active"
    return {**api_key_view(key), "state": state}


@blueprint.get("/credentials")
@requires_session
async def credentials(session: Session) -> Response:
    """Signing secrets (for verifying deliveries) and API keys."""
    return await _credentials_page(session)


def _name(form: Mapping[str, str]) -> str | None:
    return form.get("name", "").strip()[:100] or None


@blueprint.post("/credentials/signing-secrets")
@requires_session
async def create_signing_secret(session: Session) -> Response:
    """Create a signing secret and show it, once."""
    name = _name(await request.form)
    try:
        issued = await keys.new_signing_secret(current_gateway(), session.caller, name)
    except OperationError as refused:
        return await _credentials_page(session, status_of(refused), refused.message)
    created = {"kind": "signing secret", "name": issued.secret.name, "value": issued.plaintext}
    return await _credentials_page(session, 201, created=created)


@blueprint.post("/credentials/signing-secrets/<secret_id>/delete")
@requires_session
async def delete_signing_secret(session: Session, secret_id: str) -> Response:
    """Delete a signing secret (never the last one)."""
    try:
        await keys.remove_signing_secret(current_gateway(), session.caller, secret_id)
    except NotFound:
        raise
    except OperationError as refused:
        return await _credentials_page(session, status_of(refused), refused.message)
    return done("dashboard.credentials", "secret_deleted")


@blueprint.post("/credentials/api-keys")
@requires_session
async def create_api_key(session: Session) -> Response:
    """Create an API key and show it, once."""
    name = _name(await request.form)
    issued = await keys.new_api_key(current_gateway(), session.caller, name)
    created = {"kind": "API key", "name": issued.key.name, "value": issued.plaintext}
    return await _credentials_page(session, 201, created=created)


@blueprint.post("/credentials/api-keys/<key_id>/revoke")
@requires_session
async def revoke_api_key(session: Session, key_id: str) -> Response:
    """Revoke an API key (revoking the one signed in with ends this session too)."""
    await keys.revoke_api_key(current_gateway(), session.caller, key_id)
    return done("dashboard.credentials", "key_revoked")


# -- domains ---------------------------------------------------------------------------------


async def _domains_page(session: Session, status: int = 200, error: str | None = None) -> Response:
    gateway = current_gateway()
    found = await domain_operations.list_domains(gateway, session.caller)
    mx_host = gateway.settings.smtp.hostname
    return await page(
        "domains.html",
        session,
        status=status,
        error=error,
        domains=[
            domain_view(
                domain,
                mx_host,
                gateway.dkim_record(domain.domain),
                gateway.dkim_next_record(domain.domain),
            )
            for domain in found
        ],
    )


@blueprint.get("/domains")
@requires_session
async def domains(session: Session) -> Response:
    """Custom domains with the DNS records to publish."""
    return await _domains_page(session)


@blueprint.post("/domains")
@requires_session
async def create_domain(session: Session) -> Response:
    """Register a domain."""
    name = (await request.form).get("domain", "").strip()
    try:
        await domain_operations.register_domain(current_gateway(), session.caller, name)
    except OperationError as refused:
        return await _domains_page(session, status_of(refused), refused.message)
    return done("dashboard.domains", "domain_added")


@blueprint.post("/domains/<name>/verify")
@requires_session
async def verify_domain(session: Session, name: str) -> Response:
    """Check a domain's TXT record."""
    try:
        await domain_operations.verify_domain(current_gateway(), session.caller, name)
    except NotFound:
        raise
    except OperationError as refused:
        return await _domains_page(session, status_of(refused), refused.message)
    return done("dashboard.domains", "domain_verified")


@blueprint.post("/domains/<name>/delete")
@requires_session
async def delete_domain(session: Session, name: str) -> Response:
    """Delete a domain no agent uses."""
    try:
        await domain_operations.remove_domain(current_gateway(), session.caller, name)
    except NotFound:
        raise
    except OperationError as refused:
        return await _domains_page(session, status_of(refused), refused.message)
    return done("dashboard.domains", "domain_deleted")
