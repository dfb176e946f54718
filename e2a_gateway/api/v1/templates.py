"""Email templates on `/v1` (beta in e2a): the account's templates (create, list, get, patch,
delete `?confirm=DELETE`), a dry run of template source (validate), and the starter catalog."""

from __future__ import annotations

from typing import Any

from quart import Blueprint

from e2a_gateway.api.auth import requires_caller
from e2a_gateway.api.v1.account import Confirmation
from e2a_gateway.api.v1.bodies import read_json, read_query
from e2a_gateway.api.v1.pages import PageQuery, keyset_page
from e2a_gateway.api.v1.views import present
from e2a_gateway.gateway import Gateway
from e2a_gateway.operations import templates
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.templates import CreateTemplate, UpdateTemplate, ValidateTemplate
from e2a_gateway.storage.base import EmailTemplate
from e2a_gateway.templates.starters import Starter
from e2a_gateway.web.context import current_gateway

blueprint = Blueprint("v1_templates", __name__)


def template_summary_view(template: EmailTemplate) -> dict[str, Any]:
    """TemplateSummaryView: a template without its parts' bodies."""
    return present(
        id=template.id,
        name=template.name,
        alias=template.alias,
        subject=template.subject,
        created_at=template.created_at,
        updated_at=template.updated_at,
    )


def template_view(template: EmailTemplate) -> dict[str, Any]:
    """TemplateView: a template with every part's source."""
    return template_summary_view(template) | present(
        text=template.text,
        html=template.html,
        from_starter_alias=template.from_starter_alias,
        from_starter_version=template.from_starter_version,
    )


def starter_view(starter: Starter) -> dict[str, Any]:
    """StarterTemplateView: a starter's catalog entry (its subject and variables)."""
    return {
        "alias": starter.alias,
        "name": starter.name,
        "description": starter.description,
        "version": starter.version,
        "subject": starter.subject,
        "variables": [
            {
                "name": variable.name,
                "required": variable.required,
                "raw": variable.raw,
                "description": variable.description,
                "example": variable.example,
            }
            for variable in starter.variables
        ],
    }


def starter_detail_view(starter: Starter) -> dict[str, Any]:
    """StarterTemplateDetailView: the entry with its text and HTML sources."""
    return starter_view(starter) | {"text": starter.text, "html": starter.html}


@blueprint.get("/templates")
@requires_caller
async def list_templates(caller: Caller) -> dict[str, Any]:
    """listTemplates: newest first, without the parts' bodies."""
    return await template_listing(current_gateway(), caller, read_query(PageQuery))


async def template_listing(gateway: Gateway, caller: Caller, query: PageQuery) -> dict[str, Any]:
    """One page of the account's templates (listTemplates' answer), for `/v1` and MCP."""

    async def fetch(limit: int, after: tuple[Any, ...] | None) -> list[EmailTemplate]:
        before = int(after[0]) if after else None
        return await templates.template_page(gateway, caller, limit, before)

    return await keyset_page(
        "templates", query, fetch, lambda item: (item.seq,), template_summary_view, gateway
    )


@blueprint.post("/templates")
@requires_caller
async def create_template(caller: Caller) -> tuple[dict[str, Any], int]:
    """createTemplate: 201 with the template."""
    body = await read_json(CreateTemplate)
    return template_view(await templates.create_template(current_gateway(), caller, body)), 201


@blueprint.post("/templates/validate")
@requires_caller
async def validate_template(caller: Caller) -> dict[str, Any]:
    """validateTemplate: a dry run, nothing stored; numbers in `test_data` render as written."""
    body = await read_json(ValidateTemplate, numbers_as_written="test_data")
    return templates.validate_source(caller, body)


@blueprint.get("/templates/<template_id>")
@requires_caller
async def get_template(caller: Caller, template_id: str) -> dict[str, Any]:
    """getTemplate."""
    return template_view(await templates.get_template(current_gateway(), caller, template_id))


@blueprint.patch("/templates/<template_id>")
@requires_caller
async def update_template(caller: Caller, template_id: str) -> dict[str, Any]:
    """updateTemplate: the fields given change; the parts are checked again."""
    body = await read_json(UpdateTemplate)
    changed = await templates.update_template(current_gateway(), caller, template_id, body)
    return template_view(changed)


@blueprint.delete("/templates/<template_id>")
@requires_caller
async def delete_template(caller: Caller, template_id: str) -> dict[str, Any]:
    """deleteTemplate (`?confirm=DELETE`)."""
    read_query(Confirmation)
    await templates.delete_template(current_gateway(), caller, template_id)
    return {"deleted": True, "id": template_id}


@blueprint.get("/starter-templates")
@requires_caller
async def list_starter_templates(caller: Caller) -> dict[str, Any]:
    """listStarterTemplates: by alias, without bodies."""
    return await starter_listing(current_gateway(), caller, read_query(PageQuery))


async def starter_listing(gateway: Gateway, caller: Caller, query: PageQuery) -> dict[str, Any]:
    """One page of the starter catalog (listStarterTemplates' answer), for `/v1` and MCP."""

    async def fetch(limit: int, after: tuple[Any, ...] | None) -> list[Starter]:
        return templates.starter_page(caller, limit, str(after[0]) if after else None)

    return await keyset_page(
        "starter templates", query, fetch, lambda item: (item.alias,), starter_view, gateway
    )


@blueprint.get("/starter-templates/<alias>")
@requires_caller
async def get_starter_template(caller: Caller, alias: str) -> dict[str, Any]:
    """getStarterTemplate: with its text and HTML sources."""
    return starter_detail_view(templates.starter_template(caller, alias))
