"""The MCP tools of webhook subscribers (`/v1/webhooks`) under e2a's names and arguments:
list, read, create, change, delete, rotate the signing secret, send a test event, and list a
webhook's deliveries. The signing secret is in the answers of create and rotate only."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from e2a_gateway.mcp.answers import listed
from e2a_gateway.mcp.mailbox_tools import present
from e2a_gateway.mcp.toolkit import Arguments, Confirm, PageArguments, ToolCaller, ToolSpec

WEBHOOK_ID = Field(min_length=1, description="The webhook's id (wh_…).")


class WebhookFilters(Arguments):
    """Which events of the subscribed types a webhook receives; absent keys: no constraint."""

    agent_emails: list[str] | None = Field(default=None, description="Only these agents'.")
    conversation_ids: list[str] | None = Field(
        default=None, description="Only these conversations'."
    )
    labels: list[str] | None = Field(default=None, description="Only messages with a label.")


class WebhookArguments(Arguments):
    """One webhook."""

    id: str = WEBHOOK_ID


class CreateWebhookArguments(Arguments):
    """Arguments of create_webhook."""

    url: str = Field(min_length=1, description="The HTTPS URL events are posted to.")
    events: list[str] = Field(
        min_length=1, description="The event types to receive, e.g. email.received."
    )
    description: str | None = Field(
        default=None, description="A free-form label: one line, at most 200 characters."
    )
    filters: WebhookFilters | None = None


class UpdateWebhookArguments(WebhookArguments):
    """Arguments of update_webhook: what is given replaces."""

    url: str | None = None
    events: list[str] | None = None
    filters: WebhookFilters | None = None
    description: str | None = None
    enabled: bool | None = Field(
        default=None,
        description="false pauses deliveries; true resumes them (refused with "
        "webhook_cooldown for 5 minutes after an auto-disable).",
    )


class DeleteWebhookArguments(WebhookArguments):
    """Arguments of delete_webhook."""

    confirm: Confirm = Field(description="Must be true: you confirm the deletion.")


class TestWebhookArguments(WebhookArguments):
    """Arguments of test_webhook."""

    type: str | None = Field(
        default=None, description="The synthetic event's type; email.received unless given."
    )


class DeliveriesArguments(PageArguments):
    """Arguments of list_webhook_deliveries."""

    id: str = WEBHOOK_ID
    status: Literal["pending", "delivered", "failed"] | None = Field(
        default=None, description="Only deliveries in this state."
    )


def _fields(arguments: Arguments, *names: str) -> dict[str, Any]:
    """The request body: the given arguments among `names`, filters as given."""
    fields = present(arguments, *names)
    filters = fields.get("filters")
    if isinstance(filters, WebhookFilters):
        fields["filters"] = filters.model_dump(exclude_none=True)
    return fields


async def list_webhooks(caller: ToolCaller, arguments: PageArguments) -> dict[str, Any]:
    """One page of the caller's webhooks."""
    page = await caller.port.list_webhooks(present(arguments, "cursor", "limit"))
    return listed("webhooks", page["items"], page.get("next_cursor"))


async def get_webhook(caller: ToolCaller, arguments: WebhookArguments) -> dict[str, Any]:
    """One webhook, without its secret."""
    return await caller.port.get_webhook(arguments.id)


async def create_webhook(caller: ToolCaller, arguments: CreateWebhookArguments) -> dict[str, Any]:
    """A new webhook with its signing secret (shown this once)."""
    fields = _fields(arguments, "url", "events", "description", "filters")
    return await caller.port.create_webhook(fields)


async def update_webhook(caller: ToolCaller, arguments: UpdateWebhookArguments) -> dict[str, Any]:
    """A webhook changed: the webhook after."""
    fields = _fields(arguments, "url", "events", "filters", "description", "enabled")
    return await caller.port.update_webhook(arguments.id, fields)


async def delete_webhook(caller: ToolCaller, arguments: DeleteWebhookArguments) -> dict[str, Any]:
    """A webhook deleted for good."""
    return await caller.port.delete_webhook(arguments.id)


async def rotate_webhook_secret(caller: ToolCaller, arguments: WebhookArguments) -> dict[str, Any]:
    """A new signing secret (shown this once); the previous one signs for 24 hours more."""
    return await caller.port.rotate_webhook_secret(arguments.id)


async def test_webhook(caller: ToolCaller, arguments: TestWebhookArguments) -> dict[str, Any]:
    """A synthetic event queued to the webhook: its delivery id."""
    return await caller.port.test_webhook(arguments.id, present(arguments, "type"))


async def list_webhook_deliveries(
    caller: ToolCaller, arguments: DeliveriesArguments
) -> dict[str, Any]:
    """One page of a webhook's deliveries, newest first."""
    query = present(arguments, "status", "cursor", "limit")
    page = await caller.port.list_webhook_deliveries(arguments.id, query)
    return listed("deliveries", page["items"], page.get("next_cursor"))


WEBHOOK_TOOLS: tuple[ToolSpec[Any], ...] = (
    ToolSpec(
        "list_webhooks",
        "List webhook subscribers",
        "Your webhooks, enabled and disabled, with their events and filters; never their "
        "secrets. auto_disabled_at marks one the gateway turned off after it failed "
        "chronically. Pass next_cursor back as `cursor` while it is present.",
        PageArguments,
        list_webhooks,
    ),
    ToolSpec(
        "get_webhook",
        "Show one webhook subscriber",
        "One webhook by id, without its secret (rotate_webhook_secret if it was lost).",
        WebhookArguments,
        get_webhook,
    ),
    ToolSpec(
        "create_webhook",
        "Create a webhook subscriber",
        "Subscribe an HTTPS URL to event types (email.received, email.sent, …), optionally "
        "filtered by agents, conversations or labels. The answer's signing_secret is shown "
        "this once: keep it to verify signatures.",
        CreateWebhookArguments,
        create_webhook,
        read_only=False,
    ),
    ToolSpec(
        "update_webhook",
        "Update a webhook subscriber",
        "Change a webhook: url, events, filters and description replace when given; enabled: "
        "false pauses it, true resumes it. A webhook auto-disabled for chronic failures (10 "
        "deliveries failed for good and none delivered in 72 h) can be enabled again 5 "
        "minutes after (webhook_cooldown before): fix the endpoint first.",
        UpdateWebhookArguments,
        update_webhook,
        read_only=False,
    ),
    ToolSpec(
        "delete_webhook",
        "Delete a webhook subscriber (DESTRUCTIVE)",
        "Delete a webhook for good: nothing is posted to it any more. Requires confirm: true.",
        DeleteWebhookArguments,
        delete_webhook,
        read_only=False,
        destructive=True,
    ),
    ToolSpec(
        "rotate_webhook_secret",
        "Rotate a webhook's signing secret",
        "A new signing secret, shown this once; the previous one keeps signing for 24 hours "
        "so the receiver can switch over.",
        WebhookArguments,
        rotate_webhook_secret,
        read_only=False,
    ),
    ToolSpec(
        "test_webhook",
        "Send a test event to a webhook",
        "Queue a synthetic event to one enabled webhook (not logged as an event); answers "
        "the delivery's id, to follow with list_webhook_deliveries. A disabled webhook is "
        "refused (webhook_disabled).",
        TestWebhookArguments,
        test_webhook,
        read_only=False,
    ),
    ToolSpec(
        "list_webhook_deliveries",
        "List a webhook's deliveries",
        "A webhook's delivery attempts, newest first, optionally one status. Pass next_cursor "
        "back as `cursor` while it is present.",
        DeliveriesArguments,
        list_webhook_deliveries,
    ),
)
