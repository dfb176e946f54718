"""The MCP tools of this gateway: e2a's tool names (its first server's and its current one's,
`tests/data/e2a/tool-names.v1.json`), this gateway's own `wait_for_email`, and its earlier
names as deprecated aliases.

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
from e2a_gateway.mcp.protection_tools import PROTECTION_TOOLS
from e2a_gateway.mcp.review_tools import REVIEW_TOOLS
from e2a_gateway.mcp.template_tools import TEMPLATE_TOOLS
from e2a_gateway.mcp.toolkit import ToolCaller, ToolSpec, call_tool, input_schema
from e2a_gateway.mcp.webhook_tools import WEBHOOK_TOOLS

__all__ = ["TOOLS", "TOOLS_BY_NAME", "ToolCaller", "call_tool", "tool_schema"]

TOOLS: tuple[ToolSpec[Any], ...] = (
    ACCOUNT_TOOLS
    + MAIL_TOOLS
    + MAILBOX_TOOLS
    + EVENT_TOOLS
    + WEBHOOK_TOOLS
    + PROTECTION_TOOLS
    + REVIEW_TOOLS
    + TEMPLATE_TOOLS
    + LEGACY_TOOLS
)
TOOLS_BY_NAME = {tool.name: tool for tool in TOOLS}


def tool_schema(name: str) -> dict[str, Any] | None:
    """The input schema of tool `name`, or None for an unknown tool."""
    tool = TOOLS_BY_NAME.get(name)
    return None if tool is None else input_schema(tool.arguments)


SHOWN_NAME_CHARS = 100
"""How much of a tool name an error quotes: the caller sent it, and it may be any length
(the message stays within MAX_ERROR_MESSAGE_CHARS)."""


def _quoted(name: str) -> str:
    """`name` quoted as an error shows it, cut to SHOWN_NAME_CHARS characters."""
    shown = repr(name[: SHOWN_NAME_CHARS + 1])
    return shown if len(shown) <= SHOWN_NAME_CHARS else shown[:SHOWN_NAME_CHARS] + "…"


def unknown_tool(name: str) -> str:
    """Why `name` cannot be called: there is no such tool."""
    return f"unknown tool {_quoted(name)}; tools/list names the {len(TOOLS)} tools"


def unavailable_tool(name: str) -> str:
    """Why `name` cannot be called with an agent-scoped key: it is an account tool."""
    return (
        f"unknown tool {_quoted(name)} for an agent-scoped API key: it is an account tool (an "
        "account key sees it); tools/list names the tools of this key"
    )
