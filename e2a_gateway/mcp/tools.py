"""The MCP tools of this gateway: e2a's tool names (its first server's and its current one's,
`tests/data/e2a/tool-names.v1.json`), this gateway's own `wait_for_email`, and its earlier
names as deprecated aliases; and the e2a names not served yet, each with why.

Each tool works through a `GatewayPort` (e2a_gateway.mcp.port) for its caller, so ownership is
checked where it always is (the operations). To add a tool: an arguments model, a function of
(ToolCaller, arguments) and a ToolSpec in one of the groups below.
"""

from __future__ import annotations

from typing import Any

from e2a_gateway.mcp.account_tools import ACCOUNT_TOOLS
from e2a_gateway.mcp.event_tools import EVENT_TOOLS
from e2a_gateway.mcp.legacy_tools import LEGACY_TOOLS
from e2a_gateway.mcp.mail_tools import MAIL_TOOLS
from e2a_gateway.mcp.mailbox_tools import MAILBOX_TOOLS
from e2a_gateway.mcp.review_tools import REVIEW_TOOLS
from e2a_gateway.mcp.toolkit import ToolCaller, ToolSpec, call_tool, input_schema

__all__ = ["MISSING", "TOOLS", "TOOLS_BY_NAME", "ToolCaller", "call_tool", "tool_schema"]

TOOLS: tuple[ToolSpec[Any], ...] = (
    ACCOUNT_TOOLS + MAIL_TOOLS + MAILBOX_TOOLS + EVENT_TOOLS + REVIEW_TOOLS + LEGACY_TOOLS
)
TOOLS_BY_NAME = {tool.name: tool for tool in TOOLS}

_V1 = "the /v1 API being built now"
_TEMPLATES = "email templates are not in the gateway yet (" + _V1 + ")"
_WEBHOOKS = (
    "webhook subscriptions are not in the gateway yet (" + _V1 + "); today each cloud agent "
    "has one webhook_url (create_agent, or PUT /api/v1/agents/{email})"
)
_EVENTS = "the event log is not in the gateway yet (" + _V1 + ")"
_TRASH = (
    "the gateway keeps no trash yet (" + _V1 + "): delete_agent deletes for good, and messages "
    "stay until retention removes them"
)
_CONVERSATIONS = (
    "conversation views are not in the gateway yet (" + _V1 + "); every message carries its "
    "conversation_id"
)
_PROTECTION = (
    "protection settings are not in the gateway yet (" + _V1 + "); today an agent's outgoing "
    "mail waits for approval when its hitl_enabled is set (PUT /api/v1/agents/{email})"
)

MISSING: dict[str, str] = {
    "create_api_key": "e2a mints agent-scoped keys only, which the gateway does not issue yet "
    "(" + _V1 + "); a key minted today would reach the whole account",
    "create_template": _TEMPLATES,
    "delete_template": _TEMPLATES,
    "get_template": _TEMPLATES,
    "list_templates": _TEMPLATES,
    "update_template": _TEMPLATES,
    "validate_template": _TEMPLATES,
    "get_starter_template": _TEMPLATES,
    "list_starter_templates": _TEMPLATES,
    "create_webhook": _WEBHOOKS,
    "delete_webhook": _WEBHOOKS,
    "get_webhook": _WEBHOOKS,
    "list_webhooks": _WEBHOOKS,
    "update_webhook": _WEBHOOKS,
    "rotate_webhook_secret": _WEBHOOKS,
    "test_webhook": _WEBHOOKS,
    "list_webhook_deliveries": _WEBHOOKS,
    "forward_message": "forwarding is not in the gateway yet (" + _V1 + "): send_message "
    "with the original's text and attachments (get_attachment) does it by hand",
    "get_message_lifecycle": "per-message delivery events are not in the gateway yet ("
    + _V1
    + "); get_review shows an outbound message's status",
    "get_protection": _PROTECTION,
    "update_protection": _PROTECTION,
}
"""e2a's tool names this gateway does not serve yet, each with why: an unknown-tool error for
one of them says so."""


def tool_schema(name: str) -> dict[str, Any] | None:
    """The input schema of tool `name`, or None for an unknown tool."""
    tool = TOOLS_BY_NAME.get(name)
    return None if tool is None else input_schema(tool.arguments)


def unknown_tool(name: str) -> str:
    """Why `name` cannot be called: not served yet (with why), or no such tool."""
    if name in MISSING:
        return f"e2a's tool {name!r} is not available on this gateway yet: {MISSING[name]}"
    return f"unknown tool {name!r}; tools/list names the {len(TOOLS)} tools"
