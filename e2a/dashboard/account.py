"""Dashboard pages for the account: signing secrets, API keys and domains."""

from __future__ import annotations

from collections.abc import Mapping

from quart import Response, request

from e2a.accounts import issue_api_key
from e2a.api.account import new_signing_secret, remove_signing_secret, revoke_key
from e2a.api.auth import gateway
from e2a.api.domains import register_domain, remove_domain, render_domain, verify_domain_of
from e2a.api.errors import ApiError
from e2a.api.views import api_key_view
from e2a.api.views import signing_secret_view as secret_view
from e2a.dashboard.auth import Session, requires_session
from e2a.dashboard.site import blueprint, done, page


async def _credentials_page(
    session: Session,
    status: int = 200,
    error: str | None = None,
    created: dict[str, str] | None = None,
) -> Response:
    storage = gateway().storage
    return await page(
        "credentials.html",
        session,
        status=status,
        error=error,
        created=created,
        secrets=[
            secret_view(secret) for secret in await storage.list_signing_secrets(session.user.id)
        ],
        keys=[api_key_view(key) for key in await storage.list_api_keys(session.user.id)],
    )


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
    try:
        issued = await new_signing_secret(session.user, _name(await request.form))
    except ApiError as exc:
        return await _credentials_page(session, exc.status, exc.message)
    created = {"kind": "signing secret", "name": issued.secret.name, "value": issued.plaintext}
    return await _credentials_page(session, 201, created=created)


@blueprint.post("/credentials/signing-secrets/<secret_id>/delete")
@requires_session
async def delete_signing_secret(session: Session, secret_id: str) -> Response:
    """Delete a signing secret (never the last one)."""
    try:
        await remove_signing_secret(session.user, secret_id)
    except ApiError as exc:
        if exc.status == 404:
            raise
        return await _credentials_page(session, exc.status, exc.message)
    return done("dashboard.credentials", "secret_deleted")


@blueprint.post("/credentials/api-keys")
@requires_session
async def create_api_key(session: Session) -> Response:
    """Create an API key and show it, once."""
    issued = await issue_api_key(
        gateway().storage, session.user.id, _name(await request.form) or "unnamed"
    )
    created = {"kind": "API key", "name": issued.key.name, "value": issued.plaintext}
    return await _credentials_page(session, 201, created=created)


@blueprint.post("/credentials/api-keys/<key_id>/revoke")
@requires_session
async def revoke_api_key(session: Session, key_id: str) -> Response:
    """Revoke an API key (revoking the one signed in with ends this session too)."""
    await revoke_key(session.user, key_id)
    return done("dashboard.credentials", "key_revoked")


# -- domains ---------------------------------------------------------------------------------


async def _domains_page(session: Session, status: int = 200, error: str | None = None) -> Response:
    domains = await gateway().storage.list_domains(session.user.id)
    return await page(
        "domains.html",
        session,
        status=status,
        error=error,
        domains=[render_domain(domain) for domain in domains],
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
    try:
        await register_domain(session.user, (await request.form).get("domain", "").strip())
    except ApiError as exc:
        return await _domains_page(session, exc.status, exc.message)
    return done("dashboard.domains", "domain_added")


@blueprint.post("/domains/<name>/verify")
@requires_session
async def verify_domain(session: Session, name: str) -> Response:
    """Check a domain's TXT record."""
    try:
        await verify_domain_of(session.user, name)
    except ApiError as exc:
        if exc.status == 404:
            raise
        return await _domains_page(session, exc.status, exc.message)
    return done("dashboard.domains", "domain_verified")


@blueprint.post("/domains/<name>/delete")
@requires_session
async def delete_domain(session: Session, name: str) -> Response:
    """Delete a domain no agent uses."""
    try:
        await remove_domain(session.user, name)
    except ApiError as exc:
        if exc.status == 404:
            raise
        return await _domains_page(session, exc.status, exc.message)
    return done("dashboard.domains", "domain_deleted")
