"""Which tools a key sees, and the annotation hints each tool carries: both as e2a's MCP server
has them (mcp/src/tools/tiers.ts, and the `annotations` of each tool in mcp/src/tools/*.ts).

An agent-scoped key sees e2a's runtime tier only (its mailbox); an account key sees every tool.
The tier is a narrower menu for the model, not the security boundary: the operations check the
key's scope on every call regardless.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

E2A_ANNOTATIONS: Final = MappingProxyType(
    {
        # tools/messages.ts
        "send_message": {"destructiveHint": False},
        "reply_to_message": {"destructiveHint": False},
        "forward_message": {"destructiveHint": False},
        "update_message_labels": {"idempotentHint": True, "destructiveHint": False},
        "list_conversations": {"readOnlyHint": True},
        "get_conversation": {"readOnlyHint": True},
        "list_messages": {"readOnlyHint": True},
        "restore_message": {"destructiveHint": False, "idempotentHint": False},
        "delete_message": {"destructiveHint": True, "idempotentHint": True},
        "get_message": {"readOnlyHint": False},
        "get_message_lifecycle": {"readOnlyHint": True, "idempotentHint": True},
        "get_attachment": {"readOnlyHint": True},
        # tools/agents.ts
        "list_agents": {"readOnlyHint": True},
        "get_agent": {"readOnlyHint": True},
        "whoami": {"readOnlyHint": True},
        "create_agent": {"destructiveHint": False},
        "update_agent": {"idempotentHint": True, "destructiveHint": False},
        "get_protection": {"readOnlyHint": True},
        "update_protection": {"idempotentHint": True, "destructiveHint": False},
        "restore_agent": {"destructiveHint": False, "idempotentHint": False},
        "delete_agent": {"destructiveHint": True, "idempotentHint": True},
        # tools/domains.ts
        "list_domains": {"readOnlyHint": True},
        "register_domain": {"idempotentHint": True, "destructiveHint": False},
        "get_domain": {"readOnlyHint": True},
        "verify_domain": {"idempotentHint": True, "destructiveHint": False},
        "delete_domain": {"destructiveHint": True, "idempotentHint": True},
        # tools/legacy.ts
        "send_email": {"destructiveHint": False},
        "get_attachment_data": {"readOnlyHint": True},
        "list_pending_messages": {"readOnlyHint": True},
        "get_pending_message": {"readOnlyHint": True},
        "approve_pending_message": {"destructiveHint": False},
        "approve_message": {"destructiveHint": False},
        "reject_pending_message": {"destructiveHint": True},
        "reject_message": {"destructiveHint": True},
        # tools/review.ts
        "list_reviews": {"readOnlyHint": True},
        "get_review": {"readOnlyHint": True},
        "approve_review": {"destructiveHint": False},
        "reject_review": {"destructiveHint": True},
        # tools/webhooks.ts
        "list_webhooks": {"readOnlyHint": True},
        "get_webhook": {"readOnlyHint": True},
        "create_webhook": {"destructiveHint": False},
        "update_webhook": {"idempotentHint": True, "destructiveHint": False},
        "delete_webhook": {"destructiveHint": True, "idempotentHint": True},
        "rotate_webhook_secret": {"destructiveHint": False},
        "test_webhook": {"destructiveHint": False},
        "list_webhook_deliveries": {"readOnlyHint": True},
        # tools/events.ts
        "list_events": {"readOnlyHint": True},
        "get_event": {"readOnlyHint": True},
        "redeliver_event": {"destructiveHint": False},
        # tools/templates.ts
        "list_templates": {"readOnlyHint": True},
        "get_template": {"readOnlyHint": True},
        "create_template": {"destructiveHint": False},
        "update_template": {"idempotentHint": True, "destructiveHint": False},
        "delete_template": {"destructiveHint": True, "idempotentHint": True},
        "validate_template": {"readOnlyHint": True},
        "list_starter_templates": {"readOnlyHint": True},
        "get_starter_template": {"readOnlyHint": True},
        # tools/apikeys.ts
        "list_api_keys": {"readOnlyHint": True},
        "create_api_key": {"destructiveHint": False},
        "delete_api_key": {"destructiveHint": True, "idempotentHint": True},
    }
)
"""Each e2a tool's annotation hints, exactly those e2a sets (a hint e2a leaves out takes the
MCP default: openWorldHint true, destructiveHint true unless readOnlyHint)."""

E2A_RUNTIME_TOOLS: Final = frozenset(
    {
        "whoami",
        "get_agent",
        "list_messages",
        "get_message",
        "get_message_lifecycle",
        "get_attachment",
        "get_attachment_data",
        "delete_message",
        "restore_message",
        "update_message_labels",
        "list_conversations",
        "get_conversation",
        "send_message",
        "send_email",
        "reply_to_message",
        "forward_message",
    }
)
"""e2a's runtime tier (tiers.ts RUNTIME_TOOLS): what an agent-scoped key sees."""

GATEWAY_RUNTIME_TOOLS: Final = frozenset(
    {"wait_for_email", "get_inbox", "read_email", "reply_email", "get_info"}
)
"""This gateway's own tools (and earlier names) that work an agent's mailbox: runtime too."""

RUNTIME_TOOLS: Final = E2A_RUNTIME_TOOLS | GATEWAY_RUNTIME_TOOLS


def allowed_for_scope(name: str, scope: str) -> bool:
    """Whether a key of `scope` sees tool `name`: an account key every tool, any other key
    (agent, or a scope not known: least privilege) the runtime tier only."""
    return scope == "account" or name in RUNTIME_TOOLS
