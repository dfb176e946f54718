"""`e2a mcp`: the MCP server over stdio, spawned as a subprocess against a live gateway.

The gateway runs in the test's nursery on 127.0.0.1; the subprocess reaches it through
E2A_BASE_URL with E2A_API_KEY and E2A_AGENT_EMAIL, as an MCP client would configure it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from mcp import Client, StdioServerParameters

from e2a.app import RunningGateway, bind_tcp
from e2a.mcp.tools import TOOLS
from tests.conftest import Account, agent_path
from tests.delivery_support import create_agent, mail, smtp_send
from tests.mcp_support import call, fails

pytestmark = pytest.mark.slow


@asynccontextmanager
async def stdio_client(base_url: str, key: str, agent: str = "") -> AsyncIterator[Client]:
    """`python -m e2a mcp` as a subprocess, connected to with the official stdio client."""
    env = {"E2A_BASE_URL": base_url, "E2A_API_KEY": key, "E2A_AGENT_EMAIL": agent}
    server = StdioServerParameters(command=sys.executable, args=["-m", "e2a", "mcp"], env=env)
    with trio.fail_after(60):
        async with Client(server, mode="legacy") as client:
            yield client


async def test_every_tool_over_stdio(running: RunningGateway, make_account: Any) -> None:
    account: Account = await make_account("stdio-owner@example.com")
    support = await create_agent(account, "stdio-support")
    sales = await create_agent(account, "stdio-sales")
    response = await account.http.put(agent_path(sales), json={"hitl_enabled": True})
    assert response.status_code == 200, response.text
    await smtp_send(running.addresses.smtp_port, [support], mail("Quote", body="Price?"))
    base_url = running.addresses.http_url

    async with stdio_client(base_url, account.key, agent=support) as client:
        assert client.server_info is not None and client.server_info.name == "e2a"
        assert [tool.name for tool in (await client.list_tools()).tools] == [
            tool.name for tool in TOOLS
        ]
        info = await call(client, "get_info")
        assert info["gateway_url"] == base_url
        assert info["default_agent"] == support
        agents = await call(client, "list_agents")
        assert sorted(agent["email"] for agent in agents["agents"]) == sorted([support, sales])

        [summary] = (await call(client, "get_inbox"))["messages"]
        email = await call(client, "read_email", {"message_id": summary["message_id"]})
        assert email["subject"] == "Quote"
        assert email["verification"]["verified"] is False
        assert "UNVERIFIED" in email["verification"]["summary"]

        sent = await call(client, "send_email", {"to": [sales], "subject": "Hi", "body": "Hello"})
        assert sent["method"] == "local"
        got = await call(client, "wait_for_email", {"agent": sales, "timeout_seconds": 10})
        assert got["message"]["subject"] == "Hi"
        assert got["message"]["verification"]["verified"] is True

        # sales needs approval: its reply is held until approved.
        reply_to = got["message"]["message_id"]
        held = await call(
            client, "reply_email", {"agent": sales, "message_id": reply_to, "body": "Hey"}
        )
        assert held["status"] == "pending_approval"
        other = await call(
            client, "send_email", {"agent": sales, "to": [support], "subject": "No", "body": "x"}
        )
        pending = await call(client, "list_pending")
        assert {m["id"] for m in pending["messages"]} == {held["message_id"], other["message_id"]}
        approved = await call(client, "approve_email", {"message_id": held["message_id"]})
        assert approved["status"] != "pending_approval"
        rejected = await call(client, "reject_email", {"message_id": other["message_id"]})
        assert rejected["status"] == "rejected"
        answer = await call(client, "wait_for_email", {"timeout_seconds": 10})
        assert answer["message"]["subject"] == "Re: Hi"
        timed_out = await call(client, "wait_for_email", {"timeout_seconds": 1})
        assert timed_out["timed_out"] is True

        # One error per tool, each a readable sentence.
        assert "extra" in (await fails(client, "list_agents", {"x": 1})).lower()
        assert "extra" in (await fails(client, "get_info", {"x": 1})).lower()
        assert "extra" in (await fails(client, "list_pending", {"x": 1})).lower()
        assert "status" in await fails(client, "get_inbox", {"status": "spam"})
        assert "404" in await fails(client, "read_email", {"message_id": "msg_missing"})
        assert "to" in await fails(client, "send_email", {"to": [], "subject": "s", "body": "b"})
        assert "404" in await fails(client, "reply_email", {"message_id": "msg_x", "body": "b"})
        assert "404" in await fails(client, "approve_email", {"message_id": "out_missing"})
        assert "404" in await fails(client, "reject_email", {"message_id": "out_missing"})
        assert "timeout" in await fails(client, "wait_for_email", {"timeout_seconds": 0})


async def test_another_users_agent_is_out_of_reach(
    running: RunningGateway, make_account: Any
) -> None:
    owner: Account = await make_account("stdio-victim@example.com")
    intruder: Account = await make_account("stdio-intruder@example.com")
    agent = await create_agent(owner, "stdio-private")
    await smtp_send(running.addresses.smtp_port, [agent], mail("Private"))
    # The intruder names the owner's agent as their default: the gateway still says no.
    async with stdio_client(running.addresses.http_url, intruder.key, agent=agent) as client:
        text = await fails(client, "get_inbox")
        assert "404" in text and "Private" not in text
        assert "404" in await fails(client, "wait_for_email", {"timeout_seconds": 1})


async def test_unreachable_gateway_is_a_readable_tool_error(make_account: Any) -> None:
    account: Account = await make_account("stdio-offline@example.com")
    closed = bind_tcp("127.0.0.1", 0, "test", "127.0.0.1:0")
    port = closed.getsockname()[1]
    closed.close()
    async with stdio_client(f"http://127.0.0.1:{port}", account.key) as client:
        text = await fails(client, "list_agents")
    assert text.startswith(f"list_agents: cannot reach the e2a gateway at http://127.0.0.1:{port}")


def test_missing_api_key_exits_1_with_a_clear_message() -> None:
    env = {"PATH": "/usr/bin:/bin", "E2A_BASE_URL": "http://127.0.0.1:9"}
    finished = subprocess.run(
        [sys.executable, "-m", "e2a", "mcp"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == 1
    assert "E2A_API_KEY is not set" in finished.stderr
    assert finished.stdout == ""


def test_e2a_mcp_needs_no_gateway_module() -> None:
    # `pip install 'e2a[mcp]'` has no trio, Quart or hypercorn: nothing of the gateway loads.
    code = (
        "import sys; import e2a.cli.main, e2a.mcp.server; "
        "print([m for m in sys.modules if m.partition('.')[0] in "
        "('quart', 'quart_trio', 'hypercorn', 'trio_websocket', 'psycopg', 'dkim') "
        "or m.startswith(('e2a.api', 'e2a.storage', 'e2a.gateway', 'e2a.app', 'e2a.mcp.http'))])"
    )
    finished = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert finished.stdout.strip() == "[]"
