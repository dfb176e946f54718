"""Custom domains on `/v1`: list (cursor pages), register, get, verify (by the TXT record at
the apex and the MX pointing at the gateway, with a live probe of the records listed) and
delete (`?confirm=DELETE`), each shown with the DNS records it needs."""

from __future__ import annotations

from typing import Any

from quart import Blueprint

from e2a_gateway.api.auth import requires_caller
from e2a_gateway.api.v1.account import Confirmation
from e2a_gateway.api.v1.bodies import read_json, read_query
from e2a_gateway.api.v1.idempotent import idempotent
from e2a_gateway.api.v1.pages import PageQuery, keyset_page
from e2a_gateway.api.v1.views import present
from e2a_gateway.gateway import Gateway
from e2a_gateway.operations import domains
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.requests import RequestBody
from e2a_gateway.storage.base import Domain
from e2a_gateway.web.context import current_gateway

blueprint = Blueprint("v1_domains", __name__)

MX_PRIORITY = 10
SENDING_RAMP = {
    "status": "exempt",
    "daily_recipient_limit": 0,
    "recipients_used_today": 0,
    "active_days": 0,
    "ramp_days": 0,
}
"""The gateway hands mail to its relay as it comes: no sending ramp applies."""


class RegisterDomainBody(RequestBody):
    """RegisterDomainRequest (an over-long name is the name check's 400 `invalid_domain`)."""

    domain: str


def domain_view(gateway: Gateway, domain: Domain, agent_count: int) -> dict[str, Any]:
    """DomainView: the domain, its verification state and the records it needs: the ownership
    TXT and the MX pointing at this gateway (both checked to verify the domain on `/v1`; their
    status follows the domain's) and, when outbound mail is DKIM-signed, the key record at
    `<selector>._domainkey.<domain>` (purpose `dkim`; no state is kept for it, so `pending`
    rather than a claim; verifyDomain's live probe reports both as DNS has them) and, while
    a key rotation is under way, the next key's record (purpose `dkim_next`, `pending`: a
    second `dkim` would be taken for the signing key by e2a's 5.x CLI, whose doctor keeps the
    last record of each purpose). Sending
    needs no provisioning here (`sending_status` none): mail goes out through the gateway's
    relay."""
    status = "verified" if domain.verified else "pending"
    records = [
        {
            "type": "TXT",
            "name": domain.domain,
            "value": domain.verification_token,
            "priority": None,
            "purpose": "ownership",
            "status": status,
        },
        {
            "type": "MX",
            "name": domain.domain,
            "value": gateway.settings.smtp.hostname,
            "priority": MX_PRIORITY,
            "purpose": "inbound_mx",
            "status": status,
        },
    ]
    keys = (("dkim", gateway.dkim_record), ("dkim_next", gateway.dkim_next_record))
    for purpose, record_of in keys:
        if (dkim := record_of(domain.domain)) is not None:
            records.append(
                {
                    "type": "TXT",
                    "name": dkim.name,
                    "value": dkim.value,
                    "priority": None,
                    "purpose": purpose,
                    "status": "pending",
                }
            )
    return present(
        domain=domain.domain,
        verified=domain.verified,
        verification_token=domain.verification_token,
        dns_records=records,
        created_at=domain.created_at,
        verified_at=domain.verified_at,
        last_checked_at=domain.last_checked_at,
        agent_count=agent_count,
        sending_status="none",
        sending_ramp=SENDING_RAMP,
        capabilities={"inbound": status, "outbound": "none"},
    )


@blueprint.get("/domains")
@requires_caller
async def list_domains(caller: Caller) -> dict[str, Any]:
    """listDomains: the caller's domains, newest first (account keys only)."""
    query = read_query(PageQuery)
    gateway = current_gateway()
    counts: dict[str, int] = {}

    async def fetch(limit: int, after: tuple[Any, ...] | None) -> list[Domain]:
        position = (str(after[0]), str(after[1])) if after else None
        rows = await domains.domain_page(gateway, caller, limit, position)
        counts.update(await domains.agents_on_domains(gateway, caller, [d.domain for d in rows]))
        return rows

    def render(domain: Domain) -> dict[str, Any]:
        return domain_view(gateway, domain, counts.get(domain.domain, 0))

    return await keyset_page("domains", query, fetch, _position, render)


@blueprint.post("/domains")
@requires_caller
async def register_domain(caller: Caller) -> tuple[dict[str, Any], int]:
    """registerDomain: the domain with the records to publish before verifying it; one the
    caller has registered already is answered as it stands (same token)."""
    body = await read_json(RegisterDomainBody)
    gateway = current_gateway()
    domain = await domains.register_domain(gateway, caller, body.domain, again_is_kept=True)
    agents = (await domains.agents_on_domains(gateway, caller, [domain.domain])).get(
        domain.domain, 0
    )
    return domain_view(gateway, domain, agents), 201


@blueprint.get("/domains/<name>")
@requires_caller
async def get_domain(caller: Caller, name: str) -> dict[str, Any]:
    """getDomain."""
    gateway = current_gateway()
    domain = await domains.get_domain(gateway, caller, name)
    counts = await domains.agents_on_domains(gateway, caller, [domain.domain])
    return domain_view(gateway, domain, counts.get(domain.domain, 0))


@blueprint.post("/domains/<name>/verify")
@requires_caller
async def verify_domain(caller: Caller, name: str) -> dict[str, Any]:
    """verifyDomain: probe the MX and, when the gateway signs, the DKIM key record (`mx`,
    `dkim`: found, missing, mismatch or deferred), and the next key's while a rotation is under
    way (`dkim_next`, absent otherwise); `verified` turns true once the TXT record proves
    ownership and the MX points at this gateway. No `spf`: the gateway lists no SPF record."""
    domain, probe = await domains.verify_inbound(current_gateway(), caller, name)
    return present(
        domain=domain.domain,
        verified=domain.verified,
        verified_at=domain.verified_at,
        mx=probe.mx,
        dkim=probe.dkim,
        dkim_next=probe.dkim_next,
    )


@blueprint.delete("/domains/<name>")
@requires_caller
@idempotent
async def delete_domain(caller: Caller, name: str) -> dict[str, Any]:
    """deleteDomain (`?confirm=DELETE`): refused while agents use it. An Idempotency-Key (the
    e2a SDKs send one) replays the first receipt, so a retry after a lost answer is not 404 and
    never deletes the domain registered anew meanwhile."""
    read_query(Confirmation)
    domain = await domains.get_domain(current_gateway(), caller, name)
    await domains.remove_domain(current_gateway(), caller, domain.domain)
    return {"deleted": True, "domain": domain.domain}


def _position(domain: Domain) -> tuple[str, str]:
    return domain.created_at, domain.domain
