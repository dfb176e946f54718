"""The MCP tools of email templates (`/v1/templates`, `/v1/starter-templates`) under e2a's names
and arguments: list, read, create (from source or a starter), change, delete and dry-run the
account's templates, and read the starter catalog. send_message names a template to send."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from e2a_gateway.mcp.answers import listed
from e2a_gateway.mcp.mailbox_tools import present
from e2a_gateway.mcp.toolkit import Arguments, Confirm, PageArguments, ToolCaller, ToolSpec

TEMPLATE_ID = Field(min_length=1, description="The template's id (tmpl_…).")
SYNTAX = (
    " Template syntax, a flat Mustache subset: {{var}} inserts a value (HTML-escaped in html "
    "only), {{{var}}} inserts it raw everywhere, dot paths reach nested template_data "
    "({{user.name}}). No sections, partials or comments: {{#…}}, {{/…}}, {{^…}}, {{>…}} and "
    "{{!…}} do not parse. A variable left out renders EMPTY, silently. Raw {{{…_html}}} slots "
    "take HTML you build: escape any user content you put in them."
)
LINKS = (
    " approval-request's approve_url and reject_url must lead to pages that ask for a click "
    "before acting, never to links that act when opened: mail scanners open every link."
)


class TemplateArguments(Arguments):
    """One template."""

    id: str = TEMPLATE_ID


class CreateTemplateArguments(Arguments):
    """Arguments of create_template."""

    name: str | None = Field(
        default=None, description="A name for people. Required unless from_starter is given."
    )
    alias: str | None = Field(
        default=None,
        description="A handle unique in the account ([A-Za-z][A-Za-z0-9._-]{0,127}), usable "
        "as send_message's template_alias.",
    )
    subject: str | None = Field(
        default=None, description="The subject's source. Required unless from_starter is given."
    )
    text: str | None = Field(
        default=None,
        description="The plain-text body's source. Required unless from_starter is given.",
    )
    html: str | None = Field(default=None, description="The optional HTML body's source.")
    from_starter: str | None = Field(
        default=None,
        description="A starter's alias to copy as it is (list_starter_templates); not with "
        "subject, text or html.",
    )


class UpdateTemplateArguments(TemplateArguments):
    """Arguments of update_template: what is given changes."""

    name: str | None = None
    alias: str | None = Field(default=None, description='"" removes the alias.')
    subject: str | None = None
    text: str | None = None
    html: str | None = Field(default=None, description='"" removes the HTML part.')


class DeleteTemplateArguments(TemplateArguments):
    """Arguments of delete_template."""

    confirm: Confirm = Field(description="Must be true: you confirm the deletion.")


class ValidateTemplateArguments(Arguments):
    """Arguments of validate_template."""

    subject: str | None = Field(default=None, description="The subject's source.")
    text: str | None = Field(default=None, description="The plain-text body's source.")
    html: str | None = Field(default=None, description="The HTML body's source.")
    test_data: dict[str, Any] | None = Field(
        default=None, description="Values to render the preview with."
    )


class StarterArguments(Arguments):
    """Arguments of get_starter_template."""

    alias: str = Field(min_length=1, description="The starter's alias, e.g. welcome.")


async def list_templates(caller: ToolCaller, arguments: PageArguments) -> dict[str, Any]:
    """One page of the account's templates, newest first."""
    page = await caller.port.list_templates(present(arguments, "cursor", "limit"))
    return listed("templates", page["items"], page.get("next_cursor"))


async def get_template(caller: ToolCaller, arguments: TemplateArguments) -> dict[str, Any]:
    """One template with its sources."""
    return await caller.port.get_template(arguments.id)


async def create_template(caller: ToolCaller, arguments: CreateTemplateArguments) -> dict[str, Any]:
    """A new template."""
    fields = present(arguments, "name", "alias", "subject", "text", "html", "from_starter")
    return await caller.port.create_template(fields)


async def update_template(caller: ToolCaller, arguments: UpdateTemplateArguments) -> dict[str, Any]:
    """The template as changed."""
    fields = present(arguments, "name", "alias", "subject", "text", "html")
    return await caller.port.update_template(arguments.id, fields)


async def delete_template(caller: ToolCaller, arguments: DeleteTemplateArguments) -> dict[str, Any]:
    """A template deleted for good: `{deleted, id}`."""
    return await caller.port.delete_template(arguments.id)


async def validate_template(
    caller: ToolCaller, arguments: ValidateTemplateArguments
) -> dict[str, Any]:
    """A dry run: errors, the preview, suggested_data."""
    return await caller.port.validate_template(
        present(arguments, "subject", "text", "html", "test_data")
    )


async def list_starter_templates(caller: ToolCaller, arguments: PageArguments) -> dict[str, Any]:
    """One page of the starter catalog, by alias."""
    page = await caller.port.list_starter_templates(present(arguments, "cursor", "limit"))
    return listed("starter_templates", page["items"], page.get("next_cursor"))


async def get_starter_template(caller: ToolCaller, arguments: StarterArguments) -> dict[str, Any]:
    """One starter with its sources."""
    return await caller.port.get_starter_template(arguments.alias)


TEMPLATE_TOOLS: tuple[ToolSpec[Any], ...] = (
    ToolSpec(
        "list_templates",
        "List email templates",
        "The account's stored templates, newest first: id, name, alias, subject, times "
        "(get_template has the sources). Send with one through send_message's template_id "
        "or template_alias. Pass next_cursor back as `cursor` while it is present.",
        PageArguments,
        list_templates,
    ),
    ToolSpec(
        "get_template",
        "Get an email template",
        "One stored template with its subject, text and html sources (and the starter it "
        "was copied from, if any).",
        TemplateArguments,
        get_template,
    ),
    ToolSpec(
        "create_template",
        "Create an email template",
        "Store a template, either from source (name, subject and text; alias and html "
        "optional) or copied from a starter (from_starter; name and alias default to the "
        "starter's; edit the copy with update_template). Every part must parse. An alias "
        "lets send_message name it without its id." + SYNTAX,
        CreateTemplateArguments,
        create_template,
        read_only=False,
    ),
    ToolSpec(
        "update_template",
        "Update an email template",
        "Change a stored template: what is given changes, the rest stays; changed parts must "
        'parse; "" removes the alias or the HTML part. Later sends render the new source.' + SYNTAX,
        UpdateTemplateArguments,
        update_template,
        read_only=False,
    ),
    ToolSpec(
        "delete_template",
        "Delete an email template (DESTRUCTIVE)",
        "Delete a stored template for good: sends naming it fail afterwards (mail already "
        "sent is unchanged). Requires confirm: true.",
        DeleteTemplateArguments,
        delete_template,
        read_only=False,
        destructive=True,
    ),
    ToolSpec(
        "validate_template",
        "Validate template source",
        "Check template source without storing it: each part's errors, a preview rendered "
        "with test_data (when every part is sound), and suggested_data, a placeholder for "
        "every variable named (a start for template_data). Preview with realistic data: a "
        "missing variable renders empty." + SYNTAX,
        ValidateTemplateArguments,
        validate_template,
    ),
    ToolSpec(
        "list_starter_templates",
        "List starter templates",
        "The starter templates this gateway ships, by alias, with their variables (name, "
        "required, raw, description, example); get_starter_template has the sources. Copy "
        "one with create_template's from_starter, then send with its alias. Pass next_cursor "
        "back as `cursor` while it is present." + LINKS,
        PageArguments,
        list_starter_templates,
    ),
    ToolSpec(
        "get_starter_template",
        "Get a starter template",
        "One starter template with its text and HTML sources and its variables (each with "
        "an example usable as test_data). Starters are read-only: copy one with "
        "create_template's from_starter to change it." + LINKS,
        StarterArguments,
        get_starter_template,
    ),
)
