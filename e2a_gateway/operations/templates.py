"""`/v1` email templates (e2a's, beta): an account's templates created from source or copied
from a starter, listed, read, changed and deleted; source checked without being stored; the
starter catalog; and a template rendered for a send.

Managing templates takes an account key; a send may name a template of the key's account
whatever the key's scope. Every part is parsed before it is stored, so only sources that
parse are kept; a send renders them again with its `template_data` (docs/templates.md).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from e2a_gateway.clock import format_timestamp
from e2a_gateway.gateway import Gateway
from e2a_gateway.ids import new_id
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.errors import Conflict, Invalid, NotFound
from e2a_gateway.operations.requests import RequestBody, Verbatim
from e2a_gateway.storage.base import AlreadyExists, EmailTemplate, LimitReached, TemplateChanges
from e2a_gateway.templates.engine import TemplateError, parse, render, suggest
from e2a_gateway.templates.starters import STARTERS, Starter, starter

MAX_TEMPLATES = 10
"""Templates per account (e2a's default `template_limit_reached` cap)."""
MAX_NAME_BYTES = 200
"""e2a's bound on a template's name, in UTF-8 bytes."""
ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,127}")
MAX_SUBJECT_CHARS = 2000
"""The longest subject a send may give (e2a's `maxSubjectLen`), and so the longest a template's
subject may render to."""
PARTS = (("subject", False), ("text", False), ("html", True))
"""Each part's name and whether a `{{x}}` in it is HTML-escaped (only the HTML part's is)."""


class CreateTemplate(RequestBody):
    """createTemplate: the source of each part, or `from_starter` to copy a starter."""

    name: Verbatim | None = None
    alias: Verbatim | None = None
    subject: Verbatim | None = None
    text: Verbatim | None = None
    html: Verbatim | None = None
    from_starter: str | None = None


class UpdateTemplate(RequestBody):
    """updateTemplate: the fields to change; an empty `alias` or `html` removes it."""

    name: Verbatim | None = None
    alias: Verbatim | None = None
    subject: Verbatim | None = None
    text: Verbatim | None = None
    html: Verbatim | None = None


class ValidateTemplate(RequestBody):
    """validateTemplate: the source to check and the data to preview it with."""

    subject: Verbatim | None = None
    text: Verbatim | None = None
    html: Verbatim | None = None
    test_data: dict[str, Any] | None = None


@dataclass(frozen=True)
class Rendered:
    """A template rendered for a send."""

    subject: str
    text: str
    html: str | None


async def create_template(
    gateway: Gateway, caller: Caller, request: CreateTemplate
) -> EmailTemplate:
    """Store a new template of the caller's account, from its source or copied verbatim from
    a starter (whose name and alias it takes unless others are given)."""
    caller.require_account("manage templates")
    name, alias = request.name or "", request.alias or ""
    subject, text, html = request.subject or "", request.text or "", request.html or ""
    origin: Starter | None = None
    if request.from_starter:
        if subject or text or html:
            raise Invalid(
                "invalid_request",
                "from_starter is mutually exclusive with subject, text and html: the starter "
                "is copied as it is; edit the template after creating it",
            )
        origin = starter_template(caller, request.from_starter)
        subject, text, html = origin.subject, origin.text, origin.html
        name, alias = name or origin.name, alias or origin.alias
    _check(name, alias, subject, text, html)
    now = format_timestamp(time.time())
    template = EmailTemplate(
        id=new_id("tmpl"),
        user_id=caller.user_id,
        name=name,
        alias=alias or None,
        subject=subject,
        text=text,
        html=html or None,
        created_at=now,
        updated_at=now,
        from_starter_alias=origin.alias if origin else None,
        from_starter_version=origin.version if origin else None,
    )
    try:
        await gateway.storage.add_template(template, MAX_TEMPLATES)
    except LimitReached:
        raise Invalid(
            "template_limit_reached",
            f"an account has at most {MAX_TEMPLATES} templates; delete one first",
        ) from None
    except AlreadyExists:
        raise _alias_taken(alias) from None
    return template


async def template_page(
    gateway: Gateway, caller: Caller, limit: int, before_seq: int | None
) -> list[EmailTemplate]:
    """Up to `limit` of the account's templates, newest first, before `before_seq`."""
    caller.require_account("manage templates")
    return await gateway.storage.template_page(caller.user_id, limit, before_seq)


async def get_template(gateway: Gateway, caller: Caller, template_id: str) -> EmailTemplate:
    """One template of the account; NotFound when it is not theirs."""
    caller.require_account("manage templates")
    found = await gateway.storage.get_template(caller.user_id, template_id)
    if found is None:
        raise NotFound.of("template")
    return found


async def update_template(
    gateway: Gateway, caller: Caller, template_id: str, request: UpdateTemplate
) -> EmailTemplate:
    """Change a template of the account; the parts it would have are checked as on create."""
    current = await get_template(gateway, caller, template_id)
    _check(
        current.name if request.name is None else request.name,
        current.alias or "" if request.alias is None else request.alias,
        current.subject if request.subject is None else request.subject,
        current.text if request.text is None else request.text,
        current.html or "" if request.html is None else request.html,
    )
    changes = TemplateChanges(
        name=request.name,
        alias=request.alias,
        subject=request.subject,
        text=request.text,
        html=request.html,
    )
    if changes == TemplateChanges():
        return current  # nothing to change: `updated_at` stays, as e2a keeps it
    try:
        updated = await gateway.storage.update_template(
            caller.user_id, template_id, changes, format_timestamp(time.time())
        )
    except AlreadyExists:
        raise _alias_taken(request.alias or "") from None
    if updated is None:
        raise NotFound.of("template")
    return updated


async def delete_template(gateway: Gateway, caller: Caller, template_id: str) -> None:
    """Delete a template of the account (sends already made keep what it rendered)."""
    caller.require_account("manage templates")
    if not await gateway.storage.delete_template(caller.user_id, template_id):
        raise NotFound.of("template")


def validate_source(caller: Caller, request: ValidateTemplate) -> dict[str, Any]:
    """validateTemplate's answer: each part's parse or render error, the preview rendered with
    `test_data` (only when every part is sound), and a placeholder for every variable named."""
    caller.require_account("manage templates")
    data = request.test_data or {}
    errors: list[dict[str, str]] = []
    rendered: dict[str, str] = {}
    suggested: dict[str, Any] = {}
    for part, escape_html in PARTS:
        try:
            template = parse(getattr(request, part) or "")
            suggest(template.variables, suggested)
            rendered[part] = render(template, data, escape_html=escape_html)
        except TemplateError as exc:
            errors.append({"part": part, "message": str(exc)})
    answer: dict[str, Any] = {"valid": not errors, "errors": errors}
    if not errors:
        answer["rendered"] = {
            name: value for name, value in rendered.items() if value or name != "html"
        }
    if suggested:
        answer["suggested_data"] = suggested
    return answer


def starter_page(caller: Caller, limit: int, after_alias: str | None) -> list[Starter]:
    """Up to `limit` starters, by alias, after `after_alias`."""
    caller.require_account("read the starter templates")
    return [item for item in STARTERS if after_alias is None or item.alias > after_alias][:limit]


def starter_template(caller: Caller, alias: str) -> Starter:
    """One starter by alias; NotFound (`starter_template_not_found`) otherwise."""
    caller.require_account("read the starter templates")
    found = starter(alias)
    if found is None:
        raise NotFound(
            "starter_template_not_found",
            f"no starter template {alias!r}: GET /v1/starter-templates lists them",
        )
    return found


async def rendered_template(
    gateway: Gateway,
    caller: Caller,
    template_id: str | None,
    alias: str | None,
    data: dict[str, Any],
) -> Rendered:
    """The parts of the account's template named by id or alias, rendered with `data`
    (`{{x}}` escaped in the HTML part only); the subject must not render longer than a send's
    may be, and neither it nor the text empty."""
    storage = gateway.storage
    if template_id:
        template = await storage.get_template(caller.user_id, template_id)
    else:
        template = await storage.template_by_alias(caller.user_id, alias or "")
    if template is None:
        raise NotFound("template_not_found", "template not found: list_templates names them")
    sources = {"subject": template.subject, "text": template.text, "html": template.html or ""}
    out: dict[str, str] = {}
    variables: dict[str, tuple[str, ...]] = {}
    for part, escape_html in PARTS:
        if not sources[part]:
            continue
        try:
            parsed = parse(sources[part])
            variables[part] = parsed.variables
            out[part] = render(parsed, data, escape_html=escape_html)
        except TemplateError as exc:
            raise Invalid(
                "template_render_failed",
                f"template part {part} failed to render: {exc}",
                {"part": part, "message": str(exc)},
            ) from None
    if len(out.get("subject", "")) > MAX_SUBJECT_CHARS:
        problem = f"rendered subject exceeds {MAX_SUBJECT_CHARS} characters"
        raise Invalid(
            "template_render_failed",
            f"template part subject failed to render: {problem}",
            {"part": "subject", "message": problem},
        )
    for part in ("subject", "text"):
        if not out.get(part):
            named = list(variables.get(part, ()))
            raise Invalid(
                "template_rendered_empty",
                f"template part {part} rendered empty: supply values for its variables "
                f"({', '.join(named)}) in template_data",
                {"part": part, "variables": named},
            )
    return Rendered(out["subject"], out["text"], out.get("html"))


def _check(name: str, alias: str, subject: str, text: str, html: str) -> None:
    """Invalid unless the fields make a template: a name, a well-formed alias (if any), a
    subject and a text, and every part given parsing."""
    if not name:
        raise Invalid("invalid_request", "name is required")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise Invalid("invalid_request", f"name too long (at most {MAX_NAME_BYTES} bytes)")
    if alias and not ALIAS.fullmatch(alias):
        raise Invalid("invalid_request", "alias must match [A-Za-z][A-Za-z0-9._-]{0,127}")
    if not subject or not text:
        raise Invalid("invalid_request", "subject and text are required")
    for part, source in (("subject", subject), ("text", text), ("html", html)):
        if not source:
            continue
        try:
            parse(source)
        except TemplateError as exc:
            raise Invalid(
                "invalid_template",
                f"template part {part} failed to parse: {exc}",
                {"part": part, "message": str(exc)},
            ) from None


def _alias_taken(alias: str) -> Conflict:
    return Conflict(
        "alias_taken", f"another template of this account has the alias {alias!r}; choose another"
    )
