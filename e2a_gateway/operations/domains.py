"""Custom domains: register, list, verify (by the TXT record at the apex; on `/v1` the MX
pointing at the gateway too), delete.

A domain is the caller's once verified; the gateway's own names (the shared domain, the SMTP
host name, the public URL's host) and IP addresses can never be registered.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Collection
from urllib.parse import urlsplit

from e2a_gateway.addresses import (
    AddressError,
    a_label_domain,
    check_u_labels,
    normalise_domain,
)
from e2a_gateway.clock import utc_now
from e2a_gateway.gateway import Gateway
from e2a_gateway.mailauth.dns_answers import DnsTemporaryError
from e2a_gateway.mailauth.resolver import fresh_answers, lookup_txt
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.domain_probe import FOUND, DomainProbe, probe_domain
from e2a_gateway.operations.errors import (
    Conflict,
    Invalid,
    NotFound,
    PreconditionUnmet,
    Unavailable,
)
from e2a_gateway.operations.requests import RequestBody
from e2a_gateway.storage.base import AlreadyExists, Domain, InUse
from e2a_gateway.webhook_targets import ends_in_a_number

log = logging.getLogger("e2a.operations")


class CreateDomain(RequestBody):
    """POST /domains (the name's length is the name check's to judge: 253 characters, and
    one trailing dot besides)."""

    domain: str


def _named_domain(raw: str) -> str:
    """Normalise a domain naming one of the caller's (NotFound when it cannot be one)."""
    try:
        return normalise_domain(raw)
    except AddressError:
        raise NotFound.of("domain") from None


async def list_domains(gateway: Gateway, caller: Caller) -> list[Domain]:
    """Every domain of the caller."""
    caller.require_account("manage domains")
    return await gateway.storage.list_domains(caller.user_id)


async def domain_page(
    gateway: Gateway, caller: Caller, limit: int, after: tuple[str, str] | None
) -> list[Domain]:
    """Up to `limit` of the caller's domains, newest first by (created_at, domain), after
    `after`: that page read alone."""
    caller.require_account("manage domains")
    return await gateway.storage.domain_page(caller.user_id, limit, after)


async def register_domain(
    gateway: Gateway, caller: Caller, raw_name: str, *, again_is_kept: bool = False
) -> Domain:
    """Register a domain for the caller, with the TXT token that will prove ownership: a name
    whose labels beyond ASCII are valid IDNA U-labels (as a recipient's must be), none of the
    gateway's own.
    `again_is_kept`: registering one the caller has already answers it as it stands (same
    token), as e2a's registerDomain does, instead of Conflict; but not once another user
    holds it verified (the caller's registration can then never be verified: Conflict)."""
    caller.require_account("manage domains")
    try:
        name = normalise_domain(raw_name)
        check_u_labels(raw_name, raw_name.strip())  # as a recipient's domain is checked
    except AddressError as exc:
        raise Invalid("invalid_domain", str(exc)) from None
    if gateway.is_shared_domain(name):
        raise Invalid(
            "domain_reserved",
            f"{name} is this deployment's shared domain; register agents on it by slug",
        )
    if ends_in_a_number(name):
        raise Invalid(
            "invalid_domain",
            f"{name} is an IP address, not a domain name; register a domain name you own",
        )
    owner = _gateway_name_holding(gateway, name)
    if owner is not None:
        raise Invalid(
            "domain_reserved",
            f"{name} is one of this gateway's own names ({owner}); register a domain you own",
        )
    domain = Domain(
        user_id=caller.user_id,
        domain=name,
        verification_token=f"e2a-verify={secrets.token_hex(16)}",
        verified=False,
        created_at=utc_now(),
        verified_at=None,
    )
    try:
        await gateway.storage.add_domain(domain)
    except AlreadyExists:
        kept = await gateway.storage.get_domain(caller.user_id, name)
        taken = kept is None or (not kept.verified and await gateway.storage.is_served_domain(name))
        if taken:
            raise Conflict("domain_exists", f"{name} is verified by another user") from None
        if again_is_kept and kept is not None:
            return kept
        raise Conflict(
            "domain_exists", f"you have registered {name} already (GET /domains lists it)"
        ) from None
    return domain


async def verify_domain(gateway: Gateway, caller: Caller, name: str) -> Domain:
    """Check the TXT record of the caller's domain and mark it verified (PreconditionUnmet,
    saying which record to add, while it is missing): `/api/v1`'s verification, which the
    TXT record alone decides."""
    caller.require_account("manage domains")
    domain = await get_domain(gateway, caller, name)
    if domain.verified:
        return domain
    domain = await _looking_up(gateway, caller, domain)
    if not await _txt_proves_ownership(gateway, domain):
        raise PreconditionUnmet(
            "verification_record_missing",
            f"add a TXT record at {domain.domain} with the value "
            f"'{domain.verification_token}', wait for DNS to update, then verify again",
        )
    return await _mark_verified(gateway, caller, domain)


async def verify_inbound(gateway: Gateway, caller: Caller, name: str) -> tuple[Domain, DomainProbe]:
    """`/v1`'s verification (e2a's verifyDomain): probe the records the domain lists, then
    mark it verified when its TXT record proves ownership and its MX points at this gateway
    (both waived in development). Either missing, or DNS not answering, leaves it as it was
    (e2a reads a failed lookup as a missing record); a verified domain stays verified."""
    domain = await _looking_up(gateway, caller, await get_domain(gateway, caller, name))
    probe = await probe_domain(gateway, domain.domain)
    if domain.verified:
        return domain, probe
    try:
        owned = await _txt_proves_ownership(gateway, domain)
    except Unavailable:
        owned = False
    if owned and _mx_routes_here(gateway, domain, probe):
        domain = await _mark_verified(gateway, caller, domain)
    return domain, probe


async def get_domain(gateway: Gateway, caller: Caller, name: str) -> Domain:
    """The caller's domain `name`, or NotFound."""
    caller.require_account("manage domains")
    domain = await gateway.storage.get_domain(caller.user_id, _named_domain(name))
    if domain is None:
        raise NotFound.of("domain")
    return domain


async def agents_on_domains(
    gateway: Gateway, caller: Caller, domains: Collection[str]
) -> dict[str, int]:
    """How many of the caller's agents (in service or in the trash) each of `domains` holds
    (those holding none are left out)."""
    caller.require_account("manage domains")
    return await gateway.storage.agents_per_domain(caller.user_id, with_trash=True, domains=domains)


async def remove_domain(gateway: Gateway, caller: Caller, name: str) -> None:
    """Delete the caller's domain: Conflict while agents use it; NotFound when not theirs."""
    caller.require_account("manage domains")
    domain = _named_domain(name)
    try:
        deleted = await gateway.storage.delete_domain(caller.user_id, domain)
    except InUse:
        raise Conflict(
            "domain_in_use",
            f"agents still use {domain}, in service or in the trash (a deleted agent keeps its "
            "address until it is purged); delete them permanently first",
        ) from None
    if not deleted:
        raise NotFound.of("domain")


def _gateway_name_holding(gateway: Gateway, name: str) -> str | None:
    """Which of the gateway's own host names `name` is, or lies under (described by its
    setting); None when it is none of them."""
    settings = gateway.settings
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


async def _txt_proves_ownership(gateway: Gateway, domain: Domain) -> bool:
    """True when one of the apex TXT records holds the token (with text around it too, as on
    e2a: the quotes a DNS provider's form kept with the value pasted in, say), as the
    nameservers answer now (not the gateway's cache of answers: the record may have been
    published a moment ago); in development, absent proof is waived."""
    development = not gateway.settings.is_production
    try:
        records = await lookup_txt(fresh_answers(gateway.resolver), domain.domain)
    except DnsTemporaryError as exc:
        if development:
            log.warning("development mode: %s verified without DNS (%s)", domain.domain, exc)
            return True
        raise Unavailable(
            "dns_unavailable", f"could not look up TXT {domain.domain}: {exc}; try again"
        ) from None
    if any(domain.verification_token in record for record in records):
        return True
    if development:
        log.warning("development mode: %s verified without its TXT record", domain.domain)
        return True
    return False


async def _looking_up(gateway: Gateway, caller: Caller, domain: Domain) -> Domain:
    """`domain` as it stands once noted as having its DNS records looked up now."""
    checked = await gateway.storage.record_domain_check(caller.user_id, domain.domain, utc_now())
    if checked is None:
        raise NotFound.of("domain")
    return checked


async def _mark_verified(gateway: Gateway, caller: Caller, domain: Domain) -> Domain:
    """Mark the caller's `domain` verified (Conflict when another user holds it verified)."""
    try:
        verified = await gateway.storage.mark_domain_verified(
            caller.user_id, domain.domain, utc_now()
        )
    except AlreadyExists:
        raise Conflict("domain_exists", f"{domain.domain} is verified by another user") from None
    if verified is None:
        raise NotFound.of("domain")
    return verified


def _mx_routes_here(gateway: Gateway, domain: Domain, probe: DomainProbe) -> bool:
    """True when the probe found an MX of `domain` pointing at this gateway; in development,
    its absence is waived."""
    if probe.mx == FOUND:
        return True
    if gateway.settings.is_production:
        return False
    log.warning("development mode: %s verified without its MX record (%s)", domain.domain, probe.mx)
    return True
