"""The MCP tools over their two ports answer alike: the SDK against the gateway over HTTP (what
`e2a mcp` uses) and the gateway's operations in-process (what `/mcp` uses), on one live
gateway, for the same calls — results and refusals, word for word."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from e2a.app import RunningGateway
from e2a.mcp.in_process import OperationsPort
from e2a.mcp.remote import SdkPort
from e2a.mcp.tools import TOOLS_BY_NAME, ToolCaller, call_tool
from tests.conftest import Account, agent_path
from tests.delivery_support import create_agent, mail, smtp_send

VARYING = {"message_id", "id", "received_at", "created_at", "approval_expires_at", "reviewed_at"}
"""Fields that differ between two otherwise equal messages made one after the other."""
MESSAGE_ID = re.compile(r"msg_[0-9a-f]+")


@asynccontextmanager
async def both_ports(
    running: RunningGateway, key: str, agent: str
) -> AsyncIterator[tuple[ToolCaller, ToolCaller]]:
    """A tool caller over the SDK (remote) and one over the operations (in-process)."""
    remote = SdkPort(api_key=key, base_url=running.addresses.http_url)
    async with remote:
        yield (
            ToolCaller(remote, agent),
            ToolCaller(OperationsPort(running.gateway, key), agent),
        )


async def run(caller: ToolCaller, name: str, arguments: dict[str, Any] | None = None) -> Any:
    """The tool's structured answer, or its error text."""
    result = await call_tool(TOOLS_BY_NAME[name], caller, arguments or {})
    if result.is_error:
        [content] = result.content
        return ("error", content.text)  # type: ignore[union-attr]
    return result.structured_content


def without(answer: Any, fields: set[str]) -> Any:
    """`answer` with `fields` dropped at every depth, and message ids in texts blanked."""
    if isinstance(answer, dict):
        return {key: without(value, fields) for key, value in answer.items() if key not in fields}
    if isinstance(answer, list | tuple):
        return [without(item, fields) for item in answer]
    if isinstance(answer, str):
        return MESSAGE_ID.sub("msg_…", answer)
    return answer


async def test_reading_and_refusals_answer_alike(
    running: RunningGateway, make_account: Any
) -> None:
    account: Account = await make_account("ports-reader@example.com")
    agent = await create_agent(account, "ports-reader")
    await create_agent(account, "ports-other")
    for _ in range(2):
        await smtp_send(running.addresses.smtp_port, [agent], mail("Twice", body="Same words."))
    async with both_ports(running, account.key, agent) as (remote, local):
        for name, arguments in (
            ("list_agents", {}),
            ("get_inbox", {"page_size": 1}),
            ("get_inbox", {"status": "all"}),
            ("get_inbox", {"page": "not-a-token"}),
            ("read_email", {"message_id": "msg_nope"}),
            ("read_email", {"agent": "nobody@agents.test", "message_id": "msg_nope"}),
            ("reply_email", {"message_id": "msg_nope", "body": "Hi"}),
            ("send_email", {"to": ["not an address"], "subject": "s", "body": "b"}),
            ("send_email", {"to": ["a@example.org"], "subject": "s\r\nBcc: x", "body": "b"}),
            ("approve_email", {"message_id": "msg_nope"}),
            ("reject_email", {"message_id": "msg_nope", "reason": "no"}),
            ("list_pending", {}),
        ):
            assert await run(remote, name, arguments) == await run(local, name, arguments), name
        info = (await run(remote, "get_info"), await run(local, "get_info"))
        assert info[0].pop("gateway_url") == running.addresses.http_url
        assert info[1].pop("gateway_url") == running.gateway.settings.http.public_url
        assert info[0] == info[1]
        # Two equal messages, one read over each port: the same answer but for ids and times.
        page = await run(local, "get_inbox")
        first, second = (message["message_id"] for message in page["messages"])
        read = (
            await run(remote, "read_email", {"message_id": first}),
            await run(local, "read_email", {"message_id": second}),
        )
        assert read[0]["verification"]["summary"].startswith("UNVERIFIED")
        assert without(read[0], VARYING) == without(read[1], VARYING)
        assert await run(remote, "get_inbox") == await run(local, "get_inbox")
    revoked = await account.http.get("/api/v1/users/me/api-keys")
    [key] = revoked.json()["api_keys"]
    assert (await account.http.delete(f"/api/v1/users/me/api-keys/{key['id']}")).is_success
    async with both_ports(running, account.key, agent) as (remote, local):
        refused = await run(remote, "list_agents")
        assert refused == (
            "error",
            "list_agents: the gateway answered 401 unauthorized: unknown or revoked API key",
        )
        assert await run(local, "list_agents") == refused


async def test_sending_and_reviewing_answer_alike(
    running: RunningGateway, make_account: Any
) -> None:
    account: Account = await make_account("ports-sender@example.com")
    agent = await create_agent(account, "ports-sender")
    peer = await create_agent(account, "ports-peer")
    async with both_ports(running, account.key, agent) as (remote, local):
        draft = {"to": [peer], "subject": "Local", "body": "Hello, peer."}
        sent = (await run(remote, "send_email", draft), await run(local, "send_email", draft))
        assert sent[0]["method"] == "local"
        assert without(sent[0], VARYING) == without(sent[1], VARYING)
        failed = {"to": ["bob@example.org"], "subject": "Out", "body": "No relay."}
        assert without(await run(remote, "send_email", failed), VARYING) == without(
            await run(local, "send_email", failed), VARYING
        )

        held = await account.http.put(agent_path(agent), json={"hitl_enabled": True})
        assert held.status_code == 200, held.text
        for _ in range(4):
            await run(remote, "send_email", draft | {"subject": "Held"})
        pending = (await run(remote, "list_pending"), await run(local, "list_pending"))
        assert len(pending[0]["messages"]) == 4
        assert pending[0] == pending[1]
        ids = [message["id"] for message in pending[0]["messages"]]
        approve = {"subject": "Held (edited)", "body_text": "Edited."}
        approved = (
            await run(remote, "approve_email", {"message_id": ids[0]} | approve),
            await run(local, "approve_email", {"message_id": ids[1]} | approve),
        )
        assert approved[0]["edited"] is True
        assert without(approved[0], VARYING) == without(approved[1], VARYING)
        rejected = (
            await run(remote, "reject_email", {"message_id": ids[2], "reason": "  not now "}),
            await run(local, "reject_email", {"message_id": ids[3], "reason": "  not now "}),
        )
        assert rejected[0]["rejection_reason"] == "not now"
        assert without(rejected[0], VARYING) == without(rejected[1], VARYING)
        again = {"message_id": ids[0]}
        conflict = (
            await run(remote, "approve_email", again),
            await run(local, "approve_email", again),
        )
        assert conflict[0][0] == "error" and "409 conflict" in conflict[0][1]
        assert conflict[0] == conflict[1]
    assert json.dumps(sent[1])  # the in-process answers are plain JSON, as the remote ones
