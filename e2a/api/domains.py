"""Custom domains: register, list, verify by DNS TXT record, delete."""

from __future__ import annotations

import logging
import secrets
from typing import Any
from urllib.parse import urlsplit

from quart import Blueprint, Response

from e2a.addresses import AddressError, a_label_domain, normalise_domain
from e2a.api.auth import gateway, requires_user
from e2a.api.errors import ApiError, not_found
from e2a.api.requests import CreateDomain, read_body
from e2a.api.views import domain_view
from e2a.clock import utc_now
from e2a.mailauth.resolver import DnsTemporaryError, lookup_txt
from e2a.storage.base import AlreadyExists, Domain, InUse, User
from e2a.webhook_targets import ends_in_a_number

blueprint = Blueprint("domains", __name__)
log = logging.getLogger("e2a.api")


def _path_domain(raw: str) -> str:
    try:
        return normalise_domain(raw)
    except AddressError:
        raise not_found("domain") from None


def render_domain(domain: Domain) -> dict[str, Any]:
    """The Domain object with the MX host of this deployment."""
    return domain_view(domain, gateway().settings.smtp.hostname)


@blueprint.get("/domains")
@requires_user
async def list_domains(user: User) -> dict[str, Any]:
    """GET /domains."""
    return {
        "domains": [
            render_domain(domain) for domain in await gateway().storage.list_domains(user.id)
        ]
    }


def _gateway_name_holding(name: str) -> str | None:
    """Which of the gateway's own host names `name` is, or lies under (described by its
    setting); None when it is none of them."""
    settings = gateway().settings
    own = {
        "shared_domain": settings.shared_domain,
        "smtp.hostname": settings.smtp.hostname,
        "the host of http.public_url": urlsplit(settings.http.public_url).hostname or "",
    }
    hosts: dict[str, str] = {}
    for what, host in own.items():
        try:
            hosts[what] = a_label_domain(host) if host else ""
        except ValueError:
            continue  # not a domain name (an address, say): nothing to register under it
    for what, host in hosts.items():
        if host and name == host:
            return what
    for what, host in hosts.items():
        if host and name.endswith(f".{host}"):
            return f"under {what} {host}"
    return None


async def register_domain(user: User, raw_name: str) -> Domain:
    """Register a domain for the caller, with the TXT token that will prove ownership."""
    try:
        name = normalise_domain(raw_name)
    except AddressError as exc:
        raise ApiError(400, "invalid_domain", str(exc)) from None
    if gateway().is_shared_domain(name):
        raise ApiError(
            400,
            "domain_reserved",
            f"{name} is this deployment's shared domain; register agents on it by slug",
        )
    if ends_in_a_number(name):
        raise ApiError(
            400,
            "invalid_domain",
            f"{name} is an IP address, not a domain name; register a domain name you own",
        )
    owner = _gateway_name_holding(name)
    if owner is not None:
        raise ApiError(
            400,
            "domain_reserved",
            f"{name} is one of this gateway's own names ({owner}); register a domain you own",
        )
    domain = Domain(
        user_id=user.id,
        domain=name,
        verification_token=f"e2a-verify={secrets.token_hex(16)}",
        verified=False,
        created_at=utc_now(),
        verified_at=None,
    )
    try:
        await gateway().storage.add_domain(domain)
    except AlreadyExists:
        raise ApiError(
            409,
            "domain_exists",
            f"{name} is already registered (by you, or verified by another user)",
        ) from None
    return domain


@blueprint.post("/domains")
@requires_user
async def create_domain(user: User) -> tuple[dict[str, Any], int]:
    """POST /domains: register a domain and get the TXT record that proves ownership."""
    body = await read_body(CreateDomain)
    return render_domain(await register_domain(user, body.domain)), 201


async def _txt_proves_ownership(domain: Domain) -> bool:
    """True when the apex TXT records hold the token; in development, absent proof is waived."""
    development = not gateway().settings.is_production
    try:
        records = await lookup_txt(gateway().resolver, domain.domain)
    except DnsTemporaryError as exc:
        if development:
            log.warning("development mode: %s verified without DNS (%s)", domain.domain, exc)
            return True
        raise ApiError(
            503, "dns_unavailable", f"could not look up TXT {domain.domain}: {exc}; try again"
        ) from None
    if domain.verification_token in (record.strip() for record in records):
        return True
    if development:
        log.warning("development mode: %s verified without its TXT record", domain.domain)
        return True
    return False


async def verify_domain_of(user: User, name: str) -> Domain:
    """Check the TXT record of the caller's domain and mark it verified (412 when missing)."""
    domain = await gateway().storage.get_domain(user.id, _path_domain(name))
    if domain is None:
        raise not_found("domain")
    if not domain.verified and not await _txt_proves_ownership(domain):
        raise ApiError(
            412,
            "verification_record_missing",
            f"add a TXT record at {domain.domain} with the value "
            f"'{domain.verification_token}', wait for DNS to update, then verify again",
        )
    try:
        verified = await gateway().storage.mark_domain_verified(user.id, domain.domain, utc_now())
    except AlreadyExists:
        raise ApiError(
            409, "domain_exists", f"{domain.domain} is verified by another user"
        ) from None
    if verified is None:
        raise not_found("domain")
    return verified


async def remove_domain(user: User, name: str) -> None:
    """Delete the caller's domain: refused (409) while agents use it; 404 when not theirs."""
    try:
        deleted = await gateway().storage.delete_domain(user.id, _path_domain(name))
    except InUse:
        raise ApiError(
            409, "domain_in_use", "agents still use this domain; delete them first"
        ) from None
    if not deleted:
        raise not_found("domain")


@blueprint.post("/domains/<name>/verify")
@requires_user
async def verify_domain(user: User, name: str) -> dict[str, Any]:
    """POST /domains/{domain}/verify: check the TXT record at the apex."""
    return render_domain(await verify_domain_of(user, name))


@blueprint.delete("/domains/<name>")
@requires_user
async def delete_domain(user: User, name: str) -> Response:
    """DELETE /domains/{domain}: refused while agents use it."""
    await remove_domain(user, name)
    return Response(b"", status=204)
