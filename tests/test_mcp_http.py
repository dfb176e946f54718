"""The MCP server at `/mcp` on a live gateway, driven by the official `mcp` client.

Mail arrives over real SMTP; the tools answer through the gateway's operations.
"""

from __future__ import annotations

import base64
import json
import os
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import httpx2
import pytest
import trio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from e2a_gateway.app import RunningGateway, run_gateway
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.mcp.toolkit import MAX_ERROR_MESSAGE_CHARS
from e2a_gateway.mcp.tools import TOOLS
from tests.conftest import Account, agent_path, make_settings
from tests.delivery_support import create_agent, mail, open_account, quiet_gateway, smtp_send
from tests.mcp_support import INITIALIZE, call, fails, failure, mcp_client
from tests.test_request_bodies import chunks

MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


def mcp_errors(group: BaseExceptionGroup[BaseException]) -> list[MCPError]:
    """The MCP errors inside `group`, however deeply nested."""
    found: list[MCPError] = []
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            found += mcp_errors(error)
        elif isinstance(error, MCPError):
            found.append(error)
    return found


async def test_initialize_and_list_tools(running: RunningGateway, make_account: Any) -> None:
    account: Account = await make_account("lister@example.com")
    async with mcp_client(running, account.key) as client:
        assert client.server_info is not None
        assert client.server_info.name == "e2a"
        assert client.instructions and "untrusted" in client.instructions
        listed = await client.list_tools()
    names = [tool.name for tool in listed.tools]
    assert names == [tool.name for tool in TOOLS]
    for tool in listed.tools:
        assert tool.description and len(tool.description) > 40
        assert tool.input_schema["type"] == "object"
    tools = {tool.name: tool for tool in listed.tools}
    assert tools["send_email"].input_schema["required"] == ["to", "subject", "body"]
    assert tools["send_message"].input_schema["required"] == ["to"]  # or a template
    hints = {
        name: tool.annotations.model_dump(by_alias=True, exclude_none=True)
        for name, tool in tools.items()
        if tool.annotations
    }
    # e2a's hints exactly (mcp/src/tools/*.ts), nothing more: openWorldHint left default.
    assert hints["list_messages"] == {"readOnlyHint": True}
    assert hints["get_message"] == {"readOnlyHint": False}  # marks read
    assert hints["get_attachment"] == hints["get_attachment_data"] == {"readOnlyHint": True}
    assert hints["send_message"] == {"destructiveHint": False}
    assert hints["reject_review"] == {"destructiveHint": True}
    assert hints["delete_agent"] == {"destructiveHint": True, "idempotentHint": True}
    for name in ("update_agent", "update_protection", "register_domain", "verify_domain"):
        assert hints[name] == {"idempotentHint": True, "destructiveHint": False}, name
    for name in ("update_webhook", "update_template", "update_message_labels"):
        assert hints[name] == {"idempotentHint": True, "destructiveHint": False}, name
    for name in ("delete_domain", "delete_webhook", "delete_template", "delete_message"):
        assert hints[name] == {"destructiveHint": True, "idempotentHint": True}, name
    assert hints["delete_api_key"] == {"destructiveHint": True, "idempotentHint": True}
    assert hints["get_message_lifecycle"] == {"readOnlyHint": True, "idempotentHint": True}
    assert hints["restore_agent"] == {"destructiveHint": False, "idempotentHint": False}
    assert not any("openWorldHint" in hint for hint in hints.values())
    # An earlier name has the hints of the tool it stands for.
    assert hints["get_inbox"] == hints["list_messages"]
    # Earlier names stay listed for one release, as e2a lists its own: titled as aliases.
    assert tools["get_inbox"].title == "Deprecated alias: list_messages"
    assert tools["get_inbox"].description.startswith("DEPRECATED: use list_messages.")
    assert tools["send_email"].title == "Deprecated alias: send_message"
    assert tools["wait_for_email"].title == "Wait for email"


async def test_every_tool_on_a_mailbox(running: RunningGateway, make_account: Any) -> None:
    account: Account = await make_account("mcp-owner@example.com")
    support = await create_agent(account, "mcp-support")
    await trio.sleep(1.1)  # creation times are whole seconds: sales is the newer
    sales = await create_agent(account, "mcp-sales")
    smtp_port = running.addresses.smtp_port
    await smtp_send(smtp_port, [support], mail("Invoice 7", body="Please pay invoice 7."))

    async with mcp_client(running, account.key, agent=support) as client:
        # /v1's listAgents, as e2a's list_agents: newest first, with registered_domain.
        agents = await call(client, "list_agents")
        assert [a["email"] for a in agents["agents"]] == [sales, support]
        assert agents["agents"] == (await account.http.get("/v1/agents")).json()["items"]
        assert all(a["registered_domain"] == "agents.test" for a in agents["agents"])
        assert agents["default_agent"] == support
        assert "next_cursor" not in agents

        # whoami is /v1's getAccount, as e2a's: an account key names no agent_email.
        me = await call(client, "whoami")
        account_view = (await account.http.get("/v1/account")).json()
        assert {name: me[name] for name in account_view} == account_view
        assert me["scope"] == "account" and me["user"]["email"] == "mcp-owner@example.com"
        assert set(me) >= {"user", "scope", "plan_code", "limits", "usage", "upgrade_url"}
        assert "agent_email" not in me
        assert me["default_agent"] == support
        assert me["gateway"]["shared_domain"] == "agents.test"

        inbox = await call(client, "list_messages")
        assert inbox["agent_email"] == support
        [summary] = inbox["messages"]
        assert summary["subject"] == "Invoice 7"
        assert summary["from"] == "alice@example.org"
        assert summary["recipient"] == support
        assert inbox["next_token"] is None and "next_cursor" not in inbox

        # get_message answers /v1's MessageView in e2a's tool shape.
        email = await call(client, "get_message", {"message_id": summary["message_id"]})
        assert email["id"] == summary["message_id"] and email["direction"] == "inbound"
        assert email["text"].strip() == "Please pay invoice 7."
        assert email["header_from"] == "alice@example.org"
        assert email["verified_domain"] is None
        assert set(email["authentication"]) >= {"spf", "dkim", "dmarc"}
        assert email["read_status"] == "read" and email["labels"] == []
        assert email["received_at"] and email["attachments"] == []
        assert "raw_message" not in email and "parsed" not in email
        assert (await call(client, "list_messages"))["messages"] == []
        read = await call(client, "list_messages", {"read_status": "read", "limit": 1})
        assert [m["message_id"] for m in read["messages"]] == [summary["message_id"]]

        # Agent to agent on this gateway: delivered locally, and verified on arrival.
        sent = await call(
            client, "send_message", {"to": [sales], "subject": "Handover", "text": "Yours now."}
        )
        assert sent["status"] == "accepted" and sent["method"] == "loopback"
        arrived = await call(
            client, "wait_for_email", {"agent_email": sales, "timeout_seconds": 10}
        )
        assert arrived["timed_out"] is False
        assert arrived["message"]["subject"] == "Handover"
        assert arrived["message"]["from"] == support
        assert arrived["message"]["verification"]["verified"] is True
        assert arrived["message"]["verification"]["entity_type"] == "agent"
        # Mail the agent sent reads as e2a's get_message reads it (not a 404). Once it is
        # marked sent (just after its copy arrived) it keeps no body: the gateway drops it
        # at hand-off.
        with trio.fail_after(10):
            while True:
                outbound = await call(client, "get_message", {"message_id": sent["message_id"]})
                if outbound["delivery_status"] == "sent":
                    break
                await trio.sleep(0.05)
        assert outbound["id"] == sent["message_id"] and outbound["direction"] == "outbound"
        assert outbound["subject"] == "Handover" and outbound["text"] == ""
        assert outbound["authentication"] is None
        reply = await call(
            client,
            "reply_to_message",
            {"email": sales, "message_id": arrived["message"]["message_id"], "text": "Got it."},
        )
        assert reply["status"] == "accepted" and reply["method"] == "loopback"
        answer = await call(client, "wait_for_email", {"timeout_seconds": 10})
        assert answer["message"]["subject"] == "Re: Handover"
        assert answer["message"]["text_body"].strip() == "Got it."
        assert answer["message"]["conversation_id"] == arrived["message"]["conversation_id"]

        # Approval: the agent's mail is held; the person approves one and rejects another.
        response = await account.http.put(agent_path(support), json={"hitl_enabled": True})
        assert response.status_code == 200, response.text
        held = await call(
            client, "send_message", {"to": [sales], "subject": "Offer", "text": "10% off."}
        )
        assert held["status"] == "pending_review" and held["approval_expires_at"]
        dropped = await call(
            client, "send_message", {"to": [sales], "subject": "Oops", "text": "Wrong."}
        )
        reviews = await call(client, "list_reviews")
        assert {m["id"] for m in reviews["reviews"]} == {held["message_id"], dropped["message_id"]}
        # newest first, as /v1's ReviewView: no body in the list
        assert [m["subject"] for m in reviews["reviews"]] == ["Oops", "Offer"]
        assert {(m["direction"], m["review_status"]) for m in reviews["reviews"]} == {
            ("outbound", "pending_review")
        }
        assert all("text" not in m and "body" not in m for m in reviews["reviews"])
        first = await call(client, "list_reviews", {"limit": 1})
        assert len(first["reviews"]) == 1
        rest = await call(client, "list_reviews", {"cursor": first["next_cursor"]})
        assert first["reviews"] + rest["reviews"] == reviews["reviews"]
        assert "next_cursor" not in rest
        review = await call(client, "get_review", {"message_id": held["message_id"]})
        assert review["review_status"] == "pending_review" and review["subject"] == "Offer"
        assert review["text"] == "10% off." and review["hold_reason"]["code"] == "recipient_gate"
        assert "raw_message" not in review and review["received_at"]
        terms = {"filename": "terms.txt", "content_type": "text/plain", "data": "VGVybXMu"}
        edits = {"subject": "Offer (ed.)", "attachments": [terms]}
        approved = await call(client, "approve_review", {"message_id": held["message_id"]} | edits)
        assert approved["status"] == "accepted"
        review = await call(client, "get_review", {"message_id": held["message_id"]})
        assert approved["edited"] is True
        assert review["review_status"] == "sent" and review["subject"] == "Offer (ed.)"
        rejected = await call(
            client, "reject_review", {"message_id": dropped["message_id"], "reason": "wrong"}
        )
        assert rejected == {
            "status": "review_rejected",
            "message_id": dropped["message_id"],
            "rejection_reason": "wrong",
        }
        assert (await call(client, "list_reviews"))["reviews"] == []
        offer = await call(client, "wait_for_email", {"agent_email": sales, "timeout_seconds": 10})
        assert offer["message"]["subject"] == "Offer (ed.)"
        assert [item["filename"] for item in offer["message"]["attachments"]] == ["terms.txt"]


async def test_tool_errors_are_structured(running: RunningGateway, make_account: Any) -> None:
    account: Account = await make_account("mcp-errors@example.com")
    first = await create_agent(account, "mcp-err-one")
    second = await create_agent(account, "mcp-err-two")
    async with mcp_client(running, account.key) as client:
        # Two agents and no default: the model is told to choose.
        error = await failure(client, "list_messages")
        assert error["code"] == "invalid_request" and error["retryable"] is False
        assert "status" not in error  # no request was made
        assert first in error["message"] and second in error["message"]
        assert "pass email or agent_email" in error["message"]
        # The argument named is the one the tool takes (e2a's client.ts), never one it refuses.
        for name, arguments in (
            ("send_message", {"to": [first], "subject": "s", "text": "t"}),
            ("forward_message", {"message_id": "msg_x", "to": [first], "text": "t"}),
            ("get_attachment", {"message_id": "msg_x", "attachment_index": 0}),
            ("delete_message", {"message_id": "msg_x", "confirm": True}),
        ):
            error = await failure(client, name, arguments)
            assert "pass email (one of them)" in error["message"], name
            assert "agent_email" not in error["message"].replace("E2A_AGENT_EMAIL", ""), name
        error = await failure(
            client, "get_attachment_data", {"message_id": "m", "attachment_index": 0}
        )
        assert "pass agent_email (one of them)" in error["message"]
        error = await failure(client, "list_messages", {"email": first, "status": "archived"})
        assert error["code"] == "invalid_request"
        assert error["message"].startswith("invalid arguments for list_messages: status:")
        error = await failure(client, "get_message", {"email": first, "message_id": "msg_nope"})
        assert error == {
            "code": "not_found",
            "message": "message not found",
            "retryable": False,
            "status": 404,
        }
        text = await fails(client, "send_message", {"email": first, "to": [], "subject": "s"})
        assert text.startswith("e2a error [invalid_request]: invalid arguments for send_message")
        assert "to:" in text
        text = await fails(client, "send_message", {"email": first, "to": [second], "subject": "s"})
        assert "give the message a body" in text  # no text, html nor template
        error = await failure(
            client, "reply_to_message", {"email": first, "message_id": "msg_nope", "body": "Hi"}
        )
        assert error["status"] == 404
        for name in ("approve_review", "reject_review", "approve_pending_message"):
            assert (await failure(client, name, {"message_id": "out_nope"}))["status"] == 404
        error = await failure(
            client, "wait_for_email", {"agent_email": first, "timeout_seconds": 301}
        )
        assert "timeout_seconds" in error["message"]
        error = await failure(client, "list_messages", {"agent_email": first, "email": second})
        assert error["message"] == (
            "list_messages: pass only one of agent_email and email: they mean the same"
        )
        for name in ("list_agents", "list_reviews", "whoami", "get_info"):
            assert "extra" in (await failure(client, name, {"surprise": 1}))["message"].lower()
        # A filter of list_messages is checked as /v1 checks it: a date without time is refused.
        error = await failure(client, "list_messages", {"email": first, "since": "2026-01-01"})
        assert error["code"] == "invalid_filter" and "since" in error["message"]
        # Destructive tools want e2a's confirm: true.
        error = await failure(client, "delete_agent", {"email": first})
        assert "confirm" in error["message"]
        assert len((await call(client, "list_agents"))["agents"]) == 2
        with pytest.raises(MCPError, match="unknown tool 'delete_everything'"):
            await client.call_tool("delete_everything", {})
        # A name is the caller's to make any length: the error quotes it cut short.
        with pytest.raises(MCPError) as long_name:
            await client.call_tool("x" * 1_000_000, {})
        message = str(long_name.value)
        assert message.startswith("unknown tool '" + "x" * 99 + "…; tools/list names the")
        assert len(message) <= MAX_ERROR_MESSAGE_CHARS


async def test_wait_for_email_returns_mail_sent_while_waiting(
    running: RunningGateway, make_account: Any
) -> None:
    account: Account = await make_account("mcp-waiter@example.com")
    agent = await create_agent(account, "mcp-waiter")
    async with mcp_client(running, account.key) as client:
        started = trio.current_time()
        timed_out = await call(client, "wait_for_email", {"timeout_seconds": 1})
        assert timed_out == {"agent": agent, "message": None, "timed_out": True}
        assert 1 <= trio.current_time() - started < 5

        async def send_later() -> None:
            await trio.sleep(0.5)
            await smtp_send(running.addresses.smtp_port, [agent], mail("Ping", body="pong?"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_later)
            got = await call(client, "wait_for_email", {"timeout_seconds": 30})
        assert got["timed_out"] is False
        assert got["message"]["subject"] == "Ping"
        assert got["message"]["text_body"].strip() == "pong?"
        # It was handed out once: it is read now.
        assert (await call(client, "list_messages"))["messages"] == []


async def test_one_key_cannot_reach_another_users_agent(
    running: RunningGateway, make_account: Any
) -> None:
    owner: Account = await make_account("mcp-victim@example.com")
    other: Account = await make_account("mcp-intruder@example.com")
    agent = await create_agent(owner, "mcp-private")
    await create_agent(other, "mcp-intruder")
    await smtp_send(running.addresses.smtp_port, [agent], mail("Secret"))
    async with mcp_client(running, owner.key) as client:
        [message] = (await call(client, "list_messages"))["messages"]
    message_id = message["message_id"]
    async with mcp_client(running, other.key) as client:
        assert [a["email"] for a in (await call(client, "list_agents"))["agents"]] != [agent]
        for name, arguments in (
            ("list_messages", {"agent_email": agent}),
            ("get_message", {"agent_email": agent, "message_id": message_id}),
            ("get_attachment", {"email": agent, "message_id": message_id, "attachment_index": 0}),
            ("wait_for_email", {"agent_email": agent, "timeout_seconds": 1}),
            ("reply_to_message", {"agent_email": agent, "message_id": message_id, "body": "x"}),
            (
                "send_email",
                {"agent_email": agent, "to": ["a@example.org"], "subject": "s", "body": "b"},
            ),
            ("get_agent", {"email": agent}),
            ("update_agent", {"email": agent, "name": "Mine now"}),
            ("delete_agent", {"email": agent, "confirm": True}),
        ):
            error = await failure(client, name, arguments)
            assert "Secret" not in error["message"]
            assert error.get("status") in (400, 403, 404), error
    async with mcp_client(running, owner.key) as client:
        # Still there and unread: the intruder's attempts read and changed nothing.
        assert len((await call(client, "list_messages"))["messages"]) == 1
        assert (await call(client, "get_agent", {"email": agent}))["name"] == "mcp-private"


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, "missing API key: send 'Authorization: Bearer e2a_…'"),
        ("Bearer not-a-key", "malformed API key: expected e2a_ followed by 64 hex"),
        ("Bearer e2a_" + "0" * 64, "unknown or revoked API key"),
    ],
)
async def test_requests_without_a_valid_key_are_refused(
    anonymous: httpx.AsyncClient, authorization: str | None, message: str
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = await anonymous.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS | headers)
    assert response.status_code == 401
    # A JSON-RPC error without an id, as the streamable-HTTP spec allows on an HTTP error.
    assert response.json() == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32000, "message": message, "data": {"code": "unauthorized"}},
    }
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="e2a"')
    # No pointer to OAuth metadata: clients must not start an OAuth flow for an e2a key.
    assert "resource_metadata" not in challenge
    if authorization is not None:
        assert 'error="invalid_token"' in challenge
    assert "mcp-session-id" not in response.headers


async def test_the_official_client_shows_why_its_key_was_refused(running: RunningGateway) -> None:
    with pytest.raises(BaseExceptionGroup) as refused:
        async with mcp_client(running, "e2a_" + "1" * 64):
            pass
    assert [str(error) for error in mcp_errors(refused.value)] == ["unknown or revoked API key"]


async def test_origins_other_than_the_gateways_own_are_refused(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    settings = make_settings(
        tmp_path,
        http={
            "listen": "127.0.0.1:0",
            "public_url": "https://mail.example.com/",
            "cors_allowed_origins": ["https://ui.example.com"],
        },
    )
    running: RunningGateway = await nursery.start(
        partial(run_gateway, settings, resolver=FixtureResolver())
    )
    account = await open_account(running.gateway, running.addresses.http_url, "o@example.com")
    auth = {"Authorization": f"Bearer {account.key}"}
    async with httpx.AsyncClient(base_url=running.addresses.http_url, timeout=10) as http:
        for origin in ("http://evil.example", "https://mail.example.com.evil.example", "null"):
            for headers in ({}, auth):  # checked before the key
                refused = await http.post(
                    "/mcp", json=INITIALIZE, headers=MCP_HEADERS | headers | {"Origin": origin}
                )
                assert refused.status_code == 403
                error = refused.json()["error"]
                assert error["data"] == {"code": "forbidden_origin"}
                assert error["message"] == (
                    f"origin {origin} may not use /mcp: add it to http.cors_allowed_origins"
                )
                assert "mcp-session-id" not in refused.headers
        for allowed in (
            {},
            {"Origin": "https://mail.example.com"},
            {"Origin": "https://ui.example.com"},
        ):
            opened = await http.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS | auth | allowed)
            assert opened.status_code == 200, opened.text
    # The official client, sent from a page on a foreign origin, is told why.
    headers = auth | {"Origin": "http://evil.example"}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http2:
        transport = streamable_http_client(f"{running.addresses.http_url}/mcp", http_client=http2)
        with pytest.raises(BaseExceptionGroup) as refused_client:
            async with Client(transport):
                pass
    [error] = mcp_errors(refused_client.value)
    assert str(error).startswith("origin http://evil.example may not use /mcp")
    await account.http.aclose()


async def test_refused_requests_name_no_session(
    running: RunningGateway, make_account: Any, anonymous: httpx.AsyncClient
) -> None:
    account: Account = await make_account("mcp-refusals@example.com")
    auth = MCP_HEADERS | {"Authorization": f"Bearer {account.key}"}
    batch = [INITIALIZE, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}]
    refusals = [
        await anonymous.post("/mcp", json=batch, headers=auth),
        await anonymous.post(
            "/mcp",
            content=b"  \n [" + json.dumps(INITIALIZE).encode() + b"]",
            headers=auth | {"Content-Type": "application/json"},
        ),
        await anonymous.post(
            "/mcp", content=b"{nope", headers=auth | {"Content-Type": "application/json"}
        ),
    ]
    for refused in refusals:
        assert refused.status_code == 400, refused.text
        assert "mcp-session-id" not in refused.headers
        assert refused.json()["error"]["message"]
    # A batch is refused in one line, not with the JSON-RPC validator's report.
    for refused in refusals[:2]:
        assert refused.json()["error"] == {
            "code": -32600,
            "message": "JSON-RPC batches are not supported: send one message per request",
            "data": {"code": "invalid_request"},
        }
    # The endpoint still answers after all that, and opens no session.
    opened = await anonymous.post("/mcp", json=INITIALIZE, headers=auth)
    assert opened.status_code == 200 and "mcp-session-id" not in opened.headers


NOT_AN_OBJECT = "a JSON-RPC message must be a JSON object"
NOT_2_0 = 'a JSON-RPC message must carry "jsonrpc": "2.0"'
BAD_ID = 'a JSON-RPC request\'s "id" must be a string or an integer'


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"42", NOT_AN_OBJECT),
        (b'"tools/list"', NOT_AN_OBJECT),
        (b"null", NOT_AN_OBJECT),
        (b"true", NOT_AN_OBJECT),
        (b'{"id": 2, "method": "tools/list"}', NOT_2_0),
        (b'{"jsonrpc": "1.0", "id": 2, "method": "tools/list"}', NOT_2_0),
        (b'{"jsonrpc": 2.0, "id": 2, "method": "tools/list"}', NOT_2_0),
        (b'{"jsonrpc": "2.0", "id": 1.5, "method": "tools/list"}', BAD_ID),
        (b'{"jsonrpc": "2.0", "id": null, "method": "tools/list"}', BAD_ID),
        (b'{"jsonrpc": "2.0", "id": true, "method": "tools/list"}', BAD_ID),
        (b'{"jsonrpc": "2.0", "id": {"a": 1}, "method": "tools/list"}', BAD_ID),
        (b'{"jsonrpc": "2.0", "id": [1], "method": "tools/list"}', BAD_ID),
        (b'{"jsonrpc": "2.0", "id": 3, "method": 5}', 'a JSON-RPC "method" must be a string'),
        (
            b'{"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": [1]}',
            'MCP "params" must be a JSON object',
        ),
        (
            b'{"jsonrpc": "2.0", "id": 3}',
            'a JSON-RPC message needs a "method" (a request or notification), or an "id" and '
            'a "result" or "error" (a response)',
        ),
    ],
)
async def test_a_body_that_is_not_a_json_rpc_message_is_an_invalid_request(
    running: RunningGateway,
    make_account: Any,
    anonymous: httpx.AsyncClient,
    body: bytes,
    message: str,
) -> None:
    account: Account = await make_account("mcp-envelopes@example.com")
    headers = MCP_HEADERS | {
        "Authorization": f"Bearer {account.key}",
        "Content-Type": "application/json",
    }
    refused = await anonymous.post("/mcp", content=body, headers=headers)
    # JSON-RPC 2.0 section 5: an Invalid Request is answered, with a null id; never taken for
    # a notification (202, no answer) nor refused with the validator's report.
    assert refused.status_code == 400, refused.text
    assert refused.json() == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32600, "message": message, "data": {"code": "invalid_request"}},
    }


async def test_a_call_with_a_bad_id_is_refused_not_made(
    running: RunningGateway, make_account: Any, anonymous: httpx.AsyncClient
) -> None:
    account: Account = await make_account("mcp-bad-ids@example.com")
    headers = MCP_HEADERS | {"Authorization": f"Bearer {account.key}"}
    creating = {
        "jsonrpc": "2.0",
        "id": 1.5,
        "method": "tools/call",
        "params": {"name": "create_agent", "arguments": {"slug": "mcp-float-id"}},
    }
    refused = await anonymous.post("/mcp", json=creating, headers=headers)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == -32600
    assert (await account.http.get("/api/v1/agents")).json() == {"agents": []}
    # A string or an integer id is a request, answered; no id at all, a notification.
    for request_id in ("call-1", 2):
        answered = await anonymous.post("/mcp", json=creating | {"id": request_id}, headers=headers)
        assert answered.status_code == 200, answered.text
        assert _rpc_answer(answered)["id"] == request_id
    noticed = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    notified = await anonymous.post("/mcp", json=noticed, headers=headers)
    assert notified.status_code == 202 and notified.content == b""
    # JSON that does not parse stays the MCP library's parse error.
    garbled = await anonymous.post(
        "/mcp", content=b"{nope", headers=headers | {"Content-Type": "application/json"}
    )
    assert garbled.status_code == 400 and garbled.json()["error"]["code"] == -32700


async def test_a_request_holding_a_lone_surrogate_is_refused_under_its_id(
    running: RunningGateway, make_account: Any, anonymous: httpx.AsyncClient
) -> None:
    """JSON may escape half of a surrogate pair (what a JavaScript client writes for a string
    cut inside an emoji), which the MCP library cannot read: the request is refused under its
    own id, saying where and why, not as a parse error of no request."""
    account: Account = await make_account("mcp-surrogates@example.com")
    headers = MCP_HEADERS | {
        "Authorization": f"Bearer {account.key}",
        "Content-Type": "application/json",
    }
    body = (
        b'{"jsonrpc": "2.0", "id": "call-9", "method": "tools/call", "params": '
        b'{"name": "create_agent", "arguments": {"slug": "bot", "name": "Bot \\ud83d"}}}'
    )
    refused = await anonymous.post("/mcp", content=body, headers=headers)
    assert refused.status_code == 400, refused.text
    message = (
        "Invalid params: params.arguments.name must not contain a lone surrogate (U+D83D), "
        "which is not Unicode text"
    )
    assert refused.json() == {
        "jsonrpc": "2.0",
        "id": "call-9",
        "error": {"code": -32602, "message": message, "data": {"code": "invalid_request"}},
    }
    assert (await account.http.get("/api/v1/agents")).json() == {"agents": []}


def _rpc_answer(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC answer in a streamable-HTTP response (JSON, or one SSE `data:` event)."""
    if response.headers["content-type"].startswith("application/json"):
        answer: dict[str, Any] = response.json()
        return answer
    [data] = [line[5:] for line in response.text.splitlines() if line.startswith("data:")]
    found: dict[str, Any] = json.loads(data)
    return found


BIG_BOUND = 8 * 1024 * 1024
"""An `http.max_request_bytes` above the MCP library's own bound (4 MiB)."""


async def test_bodies_are_bound_by_the_gateways_limit_not_the_librarys(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, http={"listen": "127.0.0.1:0", "max_request_bytes": BIG_BOUND}
    )
    report = os.urandom(3_750_000)
    attachment = {
        "filename": "report.pdf",
        "content_type": "application/pdf",
        "data": base64.b64encode(report).decode(),
    }
    async with quiet_gateway(settings, FixtureResolver()) as quiet:
        account = await open_account(quiet.gateway, quiet.http_url, "mcp-big@example.com")
        async with account.http:
            agent = await create_agent(account, "mcp-big")
            arguments = {
                "email": agent,
                "to": ["bob@example.org"],
                "subject": "Report",
                "text": "Attached.",
                "attachments": [attachment],
            }
            calling = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": "send_message", "arguments": arguments},
            }
            body = json.dumps(calling).encode()
            assert 5_000_000 < len(body) < BIG_BOUND
            headers = MCP_HEADERS | {
                "Authorization": f"Bearer {account.key}",
                "Content-Type": "application/json",
            }
            sent = await account.http.post("/mcp", content=body, headers=headers, timeout=30)
            assert sent.status_code == 200, sent.text[:500]
            result = _rpc_answer(sent)["result"]
            assert result.get("isError") is not True, result
            assert result["structuredContent"]["status"] == "accepted"
            message_id = result["structuredContent"]["message_id"]
            shown = await account.http.get(
                f"/v1/agents/{quote(agent, safe='')}/messages/{message_id}"
            )
            [stored] = shown.json()["attachments"]
            assert stored["size_bytes"] == len(report)
            # Past the gateway's bound: its 413 in the API's JSON, declared or chunked.
            over = body + b" " * (BIG_BOUND + 1 - len(body))
            for content in (over, chunks(over)):
                refused = await account.http.post(
                    "/mcp", content=content, headers=headers, timeout=60
                )
                assert refused.status_code == 413
                assert refused.headers["content-type"] == "application/json"
                assert refused.json() == {
                    "error": {
                        "code": "payload_too_large",
                        "message": f"request body too large: at most {BIG_BOUND} bytes "
                        "(http.max_request_bytes)",
                    }
                }


async def test_the_endpoint_is_stateless_as_e2as(
    running: RunningGateway, make_account: Any, anonymous: httpx.AsyncClient
) -> None:
    owner: Account = await make_account("mcp-stateless@example.com")
    agent = await create_agent(owner, "mcp-stateless")
    auth = MCP_HEADERS | {"Authorization": f"Bearer {owner.key}"}
    # A bare tools/call, no initialize before it and no session: answered (e2a's /mcp is
    # stateless, http-server.ts).
    calling = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "get_agent", "arguments": {"email": agent}},
    }
    answered = await anonymous.post("/mcp", json=calling, headers=auth)
    assert answered.status_code == 200, answered.text
    assert "mcp-session-id" not in answered.headers
    result = _rpc_answer(answered)["result"]
    assert result.get("isError") is not True and result["structuredContent"]["email"] == agent
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    listed = await anonymous.post("/mcp", json=listing, headers=auth)
    assert listed.status_code == 200 and "send_message" in listed.text
    # Each request stands alone: its own key decides, whatever session id it claims.
    stranger = auth | {"Mcp-Session-Id": "not-a-session"}
    assert (await anonymous.post("/mcp", json=listing, headers=stranger)).status_code == 200
    # No stream to open, no session to end: 405, as e2a answers.
    for method in ("GET", "DELETE"):
        refused = await anonymous.request(method, "/mcp", headers=auth)
        assert refused.status_code == 405
        assert refused.headers["allow"] == "POST"
        assert refused.json()["error"] == {
            "code": -32000,
            "message": "Method not allowed: the e2a MCP server is stateless",
            "data": {"code": "method_not_allowed"},
        }


async def test_send_and_reply_failures_carry_the_rest_apis_reason(
    running: RunningGateway, make_account: Any
) -> None:
    account: Account = await make_account("mcp-failures@example.com")
    agent = await create_agent(account, "mcp-failing")
    bad_send = {"to": ["not an address"], "subject": "s", "body": "b"}
    rest = await account.http.post("/api/v1/send", json=bad_send | {"from": agent})
    rest_error = rest.json()["error"]
    rest_reply = await account.http.post(
        f"/v1/agents/{quote(agent, safe='')}/messages/msg_nope/reply", json={"text": "b"}
    )
    reply_error = rest_reply.json()["error"]  # reply_to_message writes through /v1
    async with mcp_client(running, account.key) as client:
        assert await failure(client, "send_email", bad_send) == {
            "code": rest_error["code"],
            "message": rest_error["message"],
            "retryable": False,
            "status": rest.status_code,
        }
        replied = await failure(client, "reply_to_message", {"message_id": "msg_nope", "body": "b"})
        assert replied == {
            "code": reply_error["code"],
            "message": reply_error["message"],
            "retryable": False,
            "status": rest_reply.status_code,
        }
        # Refused while send_email waited (no relay is configured): REST's 422 and its reason.
        text = await fails(
            client, "send_email", {"to": ["bob@example.org"], "subject": "s", "body": "b"}
        )
        # send_message answers as e2a's does: accepted once stored, the outcome comes later.
        accepted = await call(
            client, "send_message", {"to": ["bob@example.org"], "subject": "s", "text": "b"}
        )
        assert accepted["status"] == "accepted"
    message_id = text.split()[4]
    recorded = (await account.http.get(f"/api/v1/messages/{message_id}")).json()
    assert recorded["status"] == "failed"
    assert text == (
        f"e2a error [send_failed]: message {message_id} was not sent: {recorded['error']} "
        f"(kept as failed: GET /api/v1/messages/{message_id})"
    )


async def test_protocol_2026_without_sessions(running: RunningGateway, make_account: Any) -> None:
    account: Account = await make_account("mcp-modern@example.com")
    agent = await create_agent(account, "mcp-modern")
    async with mcp_client(running, account.key, mode="auto") as client:
        assert client.protocol_version.startswith("2026")
        assert len((await client.list_tools()).tools) == len(TOOLS)
        assert (await call(client, "list_messages"))["agent_email"] == agent


async def test_gateway_stops_promptly_while_a_tool_call_waits(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with trio.open_nursery() as nursery:
        gateway_scope = trio.CancelScope()
        stopped = trio.Event()

        async def serve(task_status: trio.TaskStatus[RunningGateway]) -> None:
            with gateway_scope:
                await run_gateway(settings, resolver=FixtureResolver(), task_status=task_status)
            stopped.set()

        running: RunningGateway = await nursery.start(serve)
        account = await open_account(running.gateway, running.addresses.http_url, "w@example.com")
        await create_agent(account, "mcp-shutdown")
        waiting = trio.Event()
        ended = trio.Event()
        outcome: list[BaseException] = []

        async def wait_for_mail() -> None:
            try:
                async with mcp_client(running, account.key) as client:
                    waiting.set()
                    await client.call_tool("wait_for_email", {"timeout_seconds": 120})
            except Exception as exc:
                outcome.append(exc)
            finally:
                ended.set()

        nursery.start_soon(wait_for_mail)
        await waiting.wait()
        await trio.sleep(0.5)
        gateway_scope.cancel()
        with trio.fail_after(10):
            await stopped.wait()
        await account.http.aclose()
        with trio.fail_after(10):
            await ended.wait()
    # The client's call ended with an error (the server went away), not a hang.
    assert len(outcome) == 1


async def test_an_argument_holding_nul_is_refused_as_invalid(
    running: RunningGateway, make_account: Any
) -> None:
    """A tool argument holding NUL (which PostgreSQL text can neither hold nor be compared
    with) is refused as `invalid_request` naming it, as the REST API refuses it in a body, on
    SQLite and PostgreSQL alike, never an internal error."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    async with mcp_client(running, alice.key) as client:
        error = await failure(
            client, "list_messages", {"agent_email": bot, "subject_contains": "a\x00"}
        )
        assert error["code"] == "invalid_request", error
        assert "subject_contains: must not contain NUL" in error["message"], error
        listed = await call(client, "list_messages", {"agent_email": bot, "subject_contains": "a"})
        assert listed["messages"] == []


async def test_an_argument_of_the_wrong_json_type_is_refused_not_coerced(
    running: RunningGateway, make_account: Any
) -> None:
    """Arguments are checked against the JSON types `tools/list` declares, as e2a's zod
    schemas check them: `confirm: 1` does not confirm a deletion and `"5"` is no number; a
    JSON number with no fraction (5.0) is an integer, as in JSON Schema and in e2a."""
    owner: Account = await make_account("mcp-types@example.com")
    agent = await create_agent(owner, "mcp-types")
    await smtp_send(running.addresses.smtp_port, [agent], mail("Keep me"))
    async with mcp_client(running, owner.key, agent=agent) as client:
        [message] = (await call(client, "list_messages"))["messages"]
        message_id = message["message_id"]
        for name, arguments, where in (
            ("delete_message", {"message_id": message_id, "confirm": 1}, "confirm"),
            ("delete_message", {"message_id": message_id, "confirm": 1.0}, "confirm"),
            ("delete_message", {"message_id": message_id, "confirm": "true"}, "confirm"),
            ("delete_agent", {"email": agent, "confirm": 1}, "confirm"),
            ("list_messages", {"limit": "5"}, "limit"),
            ("list_messages", {"limit": True}, "limit"),
            ("list_messages", {"deleted": "yes"}, "deleted"),
            ("list_messages", {"deleted": 0}, "deleted"),
            ("get_attachment", {"message_id": message_id, "attachment_index": "0"}, "attachment"),
            ("wait_for_email", {"timeout_seconds": "1"}, "timeout_seconds"),
            ("list_agents", {"deleted": "false"}, "deleted"),
        ):
            error = await failure(client, name, arguments)
            assert error["code"] == "invalid_request", (name, arguments, error)
            assert error["message"].startswith(f"invalid arguments for {name}: {where}"), error
            assert "status" not in error  # refused before any request
        # Nothing was deleted on a guess.
        assert [m["message_id"] for m in (await call(client, "list_messages"))["messages"]] == [
            message_id
        ]
        assert (await call(client, "get_agent", {"email": agent}))["email"] == agent
        # 5.0 is the JSON integer 5.
        listed = await call(client, "list_messages", {"limit": 1.0, "read_status": "all"})
        assert [m["message_id"] for m in listed["messages"]] == [message_id]


async def test_a_missing_argument_is_named_as_the_schema_names_it(
    running: RunningGateway, make_account: Any
) -> None:
    account: Account = await make_account("mcp-missing@example.com")
    await create_agent(account, "mcp-missing")
    async with mcp_client(running, account.key) as client:
        # Neither way to name a new agent: the error says to give one, not "not both".
        neither = await failure(client, "create_agent", {})
        assert (
            neither["message"]
            == "create_agent: pass slug (an address on the shared domain) or email"
        )
        both = await failure(client, "create_agent", {"slug": "a", "email": "a@agents.test"})
        assert both["message"] == "create_agent: pass slug or email, not both"
        # e2a's name for a reply's body is text; this gateway's earlier one, body.
        bodiless = await failure(client, "reply_to_message", {"message_id": "msg_x"})
        assert bodiless["message"] == (
            "reply_to_message: text (or body) is required: the text of the reply"
        )
