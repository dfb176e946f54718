"""`e2a mcp`: the MCP server over stdio, spawned as a subprocess against a live gateway.

The gateway runs in the test's nursery on 127.0.0.1; the subprocess reaches it through
E2A_BASE_URL with E2A_API_KEY and E2A_AGENT_EMAIL, as an MCP client would configure it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import trio

from e2a_gateway.app import RunningGateway, bind_tcp
from e2a_gateway.mcp.tools import TOOLS
from tests.conftest import Account, agent_path
from tests.delivery_support import create_agent, mail, smtp_send
from tests.mcp_support import INITIALIZE, call, fails, failure, stdio_client

pytestmark = pytest.mark.slow


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
        me = await call(client, "whoami")
        assert me["gateway"]["url"] == base_url
        assert me["default_agent"] == support and me["scope"] == "account"
        assert "agent_email" not in me
        agents = await call(client, "list_agents")
        assert sorted(agent["email"] for agent in agents["agents"]) == sorted([support, sales])

        [summary] = (await call(client, "list_messages"))["messages"]
        email = await call(client, "get_message", {"message_id": summary["message_id"]})
        assert email["subject"] == "Quote" and email["direction"] == "inbound"
        assert email["header_from"] == "alice@example.org" and email["verified_domain"] is None
        assert email["text"].strip() == "Price?"

        sent = await call(client, "send_message", {"to": [sales], "subject": "Hi", "text": "Hello"})
        assert sent["method"] == "loopback"
        got = await call(client, "wait_for_email", {"agent_email": sales, "timeout_seconds": 10})
        assert got["message"]["subject"] == "Hi"
        assert got["message"]["verification"]["verified"] is True

        # sales needs approval: its reply is held until approved.
        reply_to = got["message"]["message_id"]
        held = await call(
            client, "reply_to_message", {"email": sales, "message_id": reply_to, "text": "Hey"}
        )
        assert held["status"] == "pending_review"
        other = await call(
            client, "send_message", {"email": sales, "to": [support], "subject": "No", "text": "x"}
        )
        reviews = await call(client, "list_reviews")
        assert {m["id"] for m in reviews["reviews"]} == {held["message_id"], other["message_id"]}
        approved = await call(client, "approve_review", {"message_id": held["message_id"]})
        assert approved["status"] != "pending_approval"
        rejected = await call(client, "reject_review", {"message_id": other["message_id"]})
        assert rejected == {"status": "review_rejected", "message_id": other["message_id"]}
        answer = await call(client, "wait_for_email", {"timeout_seconds": 10})
        assert answer["message"]["subject"] == "Re: Hi"
        timed_out = await call(client, "wait_for_email", {"timeout_seconds": 1})
        assert timed_out["timed_out"] is True

        # Errors, each e2a's structured error with one readable sentence.
        assert "extra" in (await fails(client, "list_agents", {"x": 1})).lower()
        assert "extra" in (await fails(client, "whoami", {"x": 1})).lower()
        assert "extra" in (await fails(client, "list_reviews", {"x": 1})).lower()
        assert "status" in await fails(client, "list_messages", {"status": "spam"})
        missing = await failure(client, "get_message", {"message_id": "msg_missing"})
        assert missing["status"] == 404 and missing["code"] == "not_found"
        assert "to" in await fails(client, "send_message", {"to": [], "subject": "s", "text": "b"})
        reply = await failure(client, "reply_to_message", {"message_id": "msg_x", "body": "b"})
        assert reply["status"] == 404
        for name in ("approve_review", "reject_review", "get_review"):
            assert (await failure(client, name, {"message_id": "out_missing"}))["status"] == 404
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
        error = await failure(client, "list_messages")
        assert error["status"] == 404 and "Private" not in error["message"]
        assert (await failure(client, "wait_for_email", {"timeout_seconds": 1}))["status"] == 404


async def test_an_argument_too_long_for_a_url_is_an_invalid_request(
    running: RunningGateway, make_account: Any
) -> None:
    """An id or address too long for any URL is the caller's mistake, said as such (not
    retryable), never an internal error of the server."""
    account: Account = await make_account("stdio-long@example.com")
    agent = await create_agent(account, "stdio-long")
    async with stdio_client(running.addresses.http_url, account.key, agent=agent) as client:
        for name, arguments in (
            ("get_message", {"message_id": "m" * 70_000}),
            ("get_agent", {"email": "a" * 70_000}),
        ):
            error = await failure(client, name, arguments)
            assert error["code"] == "invalid_request" and error["retryable"] is False, error
            assert error["message"].startswith(f"{name}: an argument cannot be part of a URL")
        assert (await call(client, "get_agent", {"email": agent}))["email"] == agent


@pytest.mark.parametrize("url_variable", ["E2A_BASE_URL", "E2A_URL", "E2A_API_URL"])
async def test_unreachable_gateway_is_a_readable_tool_error(
    make_account: Any, url_variable: str
) -> None:
    # E2A_API_URL is the name e2a's own MCP server reads: a config written for it reaches
    # this gateway too, and not the hosted service.
    account: Account = await make_account("stdio-offline@example.com")
    closed = bind_tcp("127.0.0.1", 0, "test", "127.0.0.1:0")
    port = closed.getsockname()[1]
    closed.close()
    url = f"http://127.0.0.1:{port}"
    async with stdio_client(url, account.key, url_variable=url_variable) as client:
        error = await failure(client, "list_agents")
    assert error["code"] == "gateway_unreachable"
    assert error["retryable"] is True and error["status"] == 0
    assert error["message"].startswith(f"cannot reach the e2a gateway at http://127.0.0.1:{port}")


NOT_AN_OBJECT = "a JSON-RPC message must be a JSON object"
BAD_ID = 'a JSON-RPC request\'s "id" must be a string or an integer'


async def exchange(lines: list[str], answers: int) -> list[dict[str, Any]]:
    """Write `lines` to a fresh `e2a mcp` (its gateway unreachable: nothing here needs one),
    read `answers` lines back, each JSON, then close its stdin and check it exits 0."""
    env = {"E2A_BASE_URL": "http://127.0.0.1:9", "E2A_API_KEY": "e2a_" + "0" * 64}
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "e2a_gateway", "mcp"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    assert process.stdin is not None and process.stdout is not None
    received = b""
    try:
        with trio.fail_after(30):
            await process.stdin.send_all("".join(f"{line}\n" for line in lines).encode())
            while received.count(b"\n") < answers:
                chunk = await process.stdout.receive_some()
                assert chunk, f"e2a mcp ended its stdout after {received!r}"
                received += chunk
            await process.stdin.aclose()
            received += b"".join([chunk async for chunk in process.stdout])
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    # stdout carries nothing but JSON-RPC messages, one a line.
    return [json.loads(line) for line in received.decode().splitlines()]


async def test_lines_that_hold_no_json_rpc_message_are_answered() -> None:
    lines = [
        json.dumps(INITIALIZE),
        '{"jsonrpc": "2.0", "method": "notifications/initialized"}',
        "this is not json",
        "",
        "42",
        '[{"jsonrpc": "2.0", "id": 2, "method": "ping"}]',
        '{"jsonrpc": "1.0", "id": 3, "method": "ping"}',
        '{"jsonrpc": "2.0", "id": 1.5, "method": "ping"}',
        '{"jsonrpc": "2.0", "id": null, "method": "ping"}',
        '{"jsonrpc": "2.0", "id": true, "method": "ping"}',
        '{"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"}',
        '{"jsonrpc": "2.0", "id": 4, "method": 5}',
        '{"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": [1]}',
        '{"jsonrpc": "2.0", "id": "still-served", "method": "ping"}',
    ]
    answers = await exchange(lines, 12)
    refusals = [answer["error"] for answer in answers if answer["id"] is None]
    # JSON-RPC 2.0 section 5: each is answered, id null; the blank line is skipped.
    assert refusals == [
        {"code": -32700, "message": "Parse error: expected ident at line 1 column 2"},
        {"code": -32600, "message": NOT_AN_OBJECT},
        {
            "code": -32600,
            "message": "JSON-RPC batches are not supported: send one message per line",
        },
        {"code": -32600, "message": 'a JSON-RPC message must carry "jsonrpc": "2.0"'},
        {"code": -32600, "message": BAD_ID},
        {"code": -32600, "message": BAD_ID},
        {"code": -32600, "message": BAD_ID},
        {"code": -32600, "message": BAD_ID},
        {"code": -32600, "message": 'a JSON-RPC "method" must be a string'},
        {"code": -32600, "message": 'MCP "params" must be a JSON object'},
    ]
    served = {answer["id"]: answer for answer in answers if answer["id"] is not None}
    assert served[1]["result"]["serverInfo"]["name"] == "e2a"
    assert served["still-served"]["result"] == {}
    assert len(answers) == 12


def mcp_without_input(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`e2a mcp` run with `env` alone and nothing on its standard input, to its exit."""
    return subprocess.run(
        [sys.executable, "-m", "e2a_gateway", "mcp"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_missing_api_key_exits_1_with_a_clear_message() -> None:
    env = {"PATH": "/usr/bin:/bin", "E2A_BASE_URL": "http://127.0.0.1:9"}
    finished = mcp_without_input(env)
    assert finished.returncode == 1
    assert "E2A_API_KEY is not set" in finished.stderr
    assert finished.stdout == ""


def test_without_a_gateway_url_the_key_is_sent_nowhere() -> None:
    # Not to the SDK's default, e2a's hosted service: the key is this gateway's.
    env = {"PATH": "/usr/bin:/bin", "E2A_API_KEY": "e2a_" + "0" * 64}
    finished = mcp_without_input(env)
    assert finished.returncode == 1
    assert finished.stderr == (
        "e2a mcp: E2A_BASE_URL is not set — set it to your gateway's URL "
        "(http.public_url, e.g. https://mail.example.com)\n"
    )
    assert finished.stdout == ""


@pytest.mark.parametrize(
    "key", ["e2a_sécret", "e2a_secret\u200b", "e2a_sec ret", "e2a_secret\nmore"]
)
def test_an_api_key_no_header_can_carry_exits_1_without_showing_it(key: str) -> None:
    """A key pasted with a zero-width space, an accent or a line break in it cannot be sent in
    an HTTP header: one line says so, naming E2A_API_KEY but never the key, instead of a
    traceback and a client that waits for a server that is gone."""
    env = {"PATH": "/usr/bin:/bin", "E2A_API_KEY": key, "E2A_BASE_URL": "http://127.0.0.1:9"}
    finished = mcp_without_input(env)
    assert finished.returncode == 1
    assert finished.stderr.startswith("e2a mcp: the API key in E2A_API_KEY has a character")
    assert finished.stderr.count("\n") == 1 and "secret" not in finished.stderr
    assert "Traceback" not in finished.stderr and finished.stdout == ""


def test_e2a_mcp_needs_no_gateway_module() -> None:
    # The mcp extra has no trio, Quart or hypercorn: nothing of the gateway loads.
    gateway_parts = ("api", "storage", "gateway", "app", "mcp.http")
    prefixes = tuple(f"e2a_gateway.{part}" for part in gateway_parts)
    code = (
        "import sys; import e2a_gateway.cli.main, e2a_gateway.mcp.server; "
        "print([m for m in sys.modules if m.partition('.')[0] in "
        "('quart', 'quart_trio', 'hypercorn', 'trio_websocket', 'psycopg', 'dkim') "
        f"or m.startswith({prefixes!r})])"
    )
    finished = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert finished.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("mail.example.com", "it must start with http:// or https://"),
        ("ftp://mail.example.com", "it must start with http:// or https://"),
        ("http://", "it names no host"),
        ("http://[::1", "Invalid IPv6 URL"),
        ("http://127.0.0.1:99999", "Port out of range 0-65535"),
    ],
)
def test_a_gateway_url_that_cannot_be_one_exits_1_with_a_clear_message(url: str, why: str) -> None:
    # Before: a traceback, a JSON-RPC error "unhandled errors in a TaskGroup" with code 0, or
    # every tool call answered "gateway_unreachable (retryable)" for a setting no retry fixes.
    env = {"PATH": "/usr/bin:/bin", "E2A_URL": url, "E2A_API_KEY": "e2a_" + "0" * 64}
    finished = mcp_without_input(env)
    assert finished.returncode == 1
    assert finished.stderr == (
        f"e2a mcp: E2A_URL ({url!r}) is not a gateway URL: {why} — set it to your gateway's "
        "URL (http.public_url, e.g. https://mail.example.com)\n"
    )
    assert finished.stdout == ""


async def test_a_request_holding_a_lone_surrogate_is_answered_under_its_id() -> None:
    """JSON may escape half of a surrogate pair (`"\\ud83d"`, what a JavaScript client writes
    for a string cut inside an emoji), which is no Unicode text and which the MCP library
    cannot read. The request is refused under its own id, saying where and why, so the client
    is not left waiting for an answer that never comes; the server goes on."""
    call_line = (
        '{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": '
        '{"name": "get_agent", "arguments": {"email": "bot\\ud83d@agents.test"}}}'
    )
    lines = [
        json.dumps(INITIALIZE),
        '{"jsonrpc": "2.0", "method": "notifications/initialized"}',
        call_line,
        '{"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"x": "\\udfff"}}',
        '{"jsonrpc": "2.0", "id": "after", "method": "ping"}',
    ]
    answers = await exchange(lines, 4)
    by_id = {answer["id"]: answer for answer in answers}
    assert set(by_id) == {1, 7, None, "after"}
    assert by_id[7]["error"] == {
        "code": -32602,
        "message": "Invalid params: params.arguments.email must not contain a lone surrogate "
        "(U+D83D), which is not Unicode text",
    }
    # A notification has no id to answer under: id null, as for any line not taken.
    assert by_id[None]["error"]["code"] == -32602
    assert "params.x must not contain a lone surrogate (U+DFFF)" in by_id[None]["error"]["message"]
    assert by_id["after"]["result"] == {}
