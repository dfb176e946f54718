"""What the MCP tests share: calling a tool that must succeed, or must fail readably."""

from __future__ import annotations

from typing import Any

from mcp import Client
from mcp_types import TextContent


async def call(client: Client, name: str, arguments: dict[str, Any] | None = None) -> Any:
    """Call a tool that must succeed; return its structured answer."""
    result = await client.call_tool(name, arguments or {})
    assert not result.is_error, result.content
    return result.structured_content


async def fails(client: Client, name: str, arguments: dict[str, Any] | None = None) -> str:
    """Call a tool that must fail; return its error text (one readable line, no traceback)."""
    result = await client.call_tool(name, arguments or {})
    assert result.is_error, result.structured_content
    assert result.structured_content is None
    [content] = result.content
    assert isinstance(content, TextContent)
    assert "Traceback" not in content.text
    return content.text
