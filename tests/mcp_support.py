"""What the MCP tests share: the official client over `/mcp` and over `e2a mcp` (stdio), and
calling a tool that must succeed, or must fail as e2a's server fails (text and structured)."""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import trio
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, TextContent

from e2a_gateway.app import RunningGateway

INITIALIZE: dict[str, Any] = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "e2a-tests", "version": "1"},
    },
}
"""The first request of an MCP session, as a client sends it."""

ERROR_TEXT = re.compile(r"e2a error \[(?P<code>[a-z0-9_]+)\](?P<retryable> \(retryable\))?: (.+)")


@asynccontextmanager
async def mcp_client(
    running: RunningGateway, key: str, mode: str = "legacy", agent: str | None = None
) -> AsyncIterator[Client]:
    """The official MCP client on `/mcp` with `key` (and optionally a default agent)."""
    headers = {"Authorization": f"Bearer {key}"}
    if agent:
        headers["X-E2A-Agent-Email"] = agent
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        transport = streamable_http_client(f"{running.addresses.http_url}/mcp", http_client=http)
        async with Client(transport, mode=mode) as client:
            yield client


@asynccontextmanager
async def stdio_client(
    base_url: str, key: str, agent: str = "", url_variable: str = "E2A_BASE_URL"
) -> AsyncIterator[Client]:
    """`python -m e2a_gateway mcp` as a subprocess, connected to with the official stdio client;
    `url_variable` is the variable that names the gateway to it."""
    env = {url_variable: base_url, "E2A_API_KEY": key, "E2A_AGENT_EMAIL": agent}
    server = StdioServerParameters(
        command=sys.executable, args=["-m", "e2a_gateway", "mcp"], env=env
    )
    with trio.fail_after(60):
        async with Client(server, mode="legacy") as client:
            yield client


async def call(client: Client, name: str, arguments: dict[str, Any] | None = None) -> Any:
    """Call a tool that must succeed; return its structured answer."""
    result = await client.call_tool(name, arguments or {})
    assert not result.is_error, result.content
    return result.structured_content


def _checked_error(result: CallToolResult) -> tuple[dict[str, Any], str]:
    """A failed call's structured error and text, after checking they say the same in e2a's
    form (`e2a error [code] (retryable): message`), on one line, without a traceback."""
    assert result.is_error, result.structured_content
    error = result.structured_content
    assert isinstance(error, dict) and set(error) >= {"code", "message", "retryable"}, error
    [content] = result.content
    assert isinstance(content, TextContent)
    retryable = " (retryable)" if error["retryable"] else ""
    assert content.text == f"e2a error [{error['code']}]{retryable}: {error['message']}"
    assert ERROR_TEXT.fullmatch(content.text), content.text
    assert "Traceback" not in content.text and "\n" not in content.text
    return error, content.text


async def failure(
    client: Client, name: str, arguments: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Call a tool that must fail; return its structured error: `code`, `message`,
    `retryable`, and `status` when the gateway answered."""
    error, _ = _checked_error(await client.call_tool(name, arguments or {}))
    return error


async def fails(client: Client, name: str, arguments: dict[str, Any] | None = None) -> str:
    """Call a tool that must fail; return its error text."""
    _, text = _checked_error(await client.call_tool(name, arguments or {}))
    return text
