"""Custom domains: register, list, verify by DNS TXT record, delete."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from e2a_gateway.api.auth import requires_caller
from e2a_gateway.api.requests import read_body
from e2a_gateway.operations import domains
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.domains import CreateDomain
from e2a_gateway.storage.base import Domain
from e2a_gateway.web.context import current_gateway
from e2a_gateway.web.views import domain_view

blueprint = Blueprint("domains", __name__)


def render_domain(domain: Domain) -> dict[str, Any]:
    """The Domain object with the MX host and DKIM key of this deployment."""
    gateway = current_gateway()
    return domain_view(
        domain,
        gateway.settings.smtp.hostname,
        gateway.dkim_record(domain.domain),
        gateway.dkim_next_record(domain.domain),
    )


@blueprint.get("/domains")
@requires_caller
async def list_domains(caller: Caller) -> dict[str, Any]:
    """GET /domains."""
    found = await domains.list_domains(current_gateway(), caller)
    return {"domains": [render_domain(domain) for domain in found]}


@blueprint.post("/domains")
@requires_caller
async def create_domain(caller: Caller) -> tuple[dict[str, Any], int]:
    """POST /domains: register a domain and get the TXT record that proves ownership."""
    body = await read_body(CreateDomain)
    return render_domain(await domains.register_domain(current_gateway(), caller, body.domain)), 201


@blueprint.post("/domains/<name>/verify")
@requires_caller
async def verify_domain(caller: Caller, name: str) -> dict[str, Any]:
    """POST /domains/{domain}/verify: check the TXT record at the apex."""
    return render_domain(await domains.verify_domain(current_gateway(), caller, name))


@blueprint.delete("/domains/<name>")
@requires_caller
async def delete_domain(caller: Caller, name: str) -> Response:
    """DELETE /domains/{domain}: refused while agents use it."""
    await domains.remove_domain(current_gateway(), caller, name)
    return Response(b"", status=204)
