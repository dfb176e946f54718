"""The MCP tools over their two ports answer alike: the SDK against the gateway over HTTP (what
`e2a mcp` uses) and the gateway's operations in-process (what `/mcp` uses), on one live
gateway, for the same calls — results and refusals, word for word."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from e2a_gateway.app import RunningGateway
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.mcp.in_process import OperationsPort
from e2a_gateway.mcp.remote import SdkPort
from e2a_gateway.mcp.tools import TOOLS_BY_NAME, ToolCaller, call_tool
from tests.conftest import Account, agent_path
from tests.delivery_support import create_agent, mail, smtp_send

VARYING = {
    "message_id",
    "id",
    "received_at",
    "created_at",
    "approval_expires_at",
    "reviewed_at",
    "email_message_id",
}
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
        return ("error", result.structured_content)
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
            ("list_agents", {"limit": 1}),
            ("get_agent", {"email": agent}),
            ("get_agent", {"email": "nobody@agents.test"}),
            ("list_messages", {"page_size": 1}),
            ("list_messages", {"status": "all"}),
            ("list_messages", {"token": "not-a-token"}),
            ("get_message", {"message_id": "msg_nope"}),
            ("get_message", {"agent_email": "nobody@agents.test", "message_id": "msg_nope"}),
            ("get_attachment", {"message_id": "msg_nope", "attachment_index": 0}),
            ("reply_to_message", {"message_id": "msg_nope", "body": "Hi"}),
            ("send_email", {"to": ["not an address"], "subject": "s", "body": "b"}),
            ("send_message", {"to": ["a@example.org"], "subject": "s\r\nBcc: x", "text": "b"}),
            ("approve_pending_message", {"message_id": "msg_nope"}),
            ("reject_pending_message", {"message_id": "msg_nope", "reason": "no"}),
            ("list_pending_messages", {}),
            ("list_reviews", {}),
            ("list_domains", {}),
            ("get_domain", {"domain": "nope.example"}),
            ("verify_domain", {"domain": "nope.example"}),
            ("delete_domain", {"domain": "nope.example", "confirm": True}),
            ("delete_api_key", {"id": "key_nope", "confirm": True}),
            ("create_agent", {"slug": "Not A Slug"}),
            ("create_agent", {"slug": "ports-reader"}),
            ("update_agent", {"email": "nobody@agents.test", "name": "x"}),
            ("delete_agent", {"email": "nobody@agents.test", "confirm": True}),
        ):
            assert await run(remote, name, arguments) == await run(local, name, arguments), name
        info = (await run(remote, "get_info"), await run(local, "get_info"))
        assert info[0].pop("gateway_url") == running.addresses.http_url
        assert info[1].pop("gateway_url") == running.gateway.settings.http.public_url
        assert info[0] == info[1]
        me = (await run(remote, "whoami"), await run(local, "whoami"))
        assert me[0]["gateway"].pop("url") == running.addresses.http_url
        assert me[1]["gateway"].pop("url") == running.gateway.settings.http.public_url
        assert me[0] == me[1]
        # Two equal messages, one read over each port: the same answer but for ids and times.
        page = await run(local, "list_messages")
        first, second = (message["message_id"] for message in page["messages"])
        read = (
            await run(remote, "get_message", {"message_id": first}),
            await run(local, "get_message", {"message_id": second}),
        )
        assert read[0]["verification"]["summary"].startswith("UNVERIFIED")
        assert without(read[0], VARYING) == without(read[1], VARYING)
        assert await run(remote, "list_messages") == await run(local, "list_messages")
    revoked = await account.http.get("/api/v1/users/me/api-keys")
    [key] = revoked.json()["api_keys"]
    assert (await account.http.delete(f"/api/v1/users/me/api-keys/{key['id']}")).is_success
    async with both_ports(running, account.key, agent) as (remote, local):
        refused = await run(remote, "list_agents")
        assert refused == (
            "error",
            {
                "code": "unauthorized",
                "message": "unknown or revoked API key",
                "retryable": False,
                "status": 401,
            },
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
        pending = (
            await run(remote, "list_pending_messages"),
            await run(local, "list_pending_messages"),
        )
        assert len(pending[0]["messages"]) == 4
        assert pending[0] == pending[1]
        ids = [message["id"] for message in pending[0]["messages"]]
        for message_id in ids:
            review = {"message_id": message_id}
            assert await run(remote, "get_review", review) == await run(local, "get_review", review)
        approve = {"subject": "Held (edited)", "body_text": "Edited.", "to": [peer, agent]}
        approved = (
            await run(remote, "approve_pending_message", {"message_id": ids[0]} | approve),
            await run(local, "approve_pending_message", {"message_id": ids[1]} | approve),
        )
        assert approved[0]["edited"] is True
        assert approved[0]["to"] == [peer, agent]
        assert without(approved[0], VARYING) == without(approved[1], VARYING)
        rejected = (
            await run(remote, "reject_review", {"message_id": ids[2], "reason": "  not now "}),
            await run(local, "reject_review", {"message_id": ids[3], "reason": "  not now "}),
        )
        assert rejected[0]["rejection_reason"] == "not now"
        assert without(rejected[0], VARYING) == without(rejected[1], VARYING)
        again = {"message_id": ids[2]}  # rejected: a state no worker moves on
        conflict = (
            await run(remote, "approve_review", again),
            await run(local, "approve_review", again),
        )
        assert conflict[0][0] == "error" and conflict[0][1]["status"] == 409
        assert conflict[0] == conflict[1]
    assert json.dumps(sent[1])  # the in-process answers are plain JSON, as the remote ones


async def test_account_tools_answer_alike(running: RunningGateway, make_account: Any) -> None:
    running.gateway.settings.env = "production"  # domains verify by DNS, not at once
    resolver = running.gateway.resolver
    assert isinstance(resolver, FixtureResolver)
    account: Account = await make_account("ports-admin@example.com")
    agent = await create_agent(account, "ports-admin")
    async with both_ports(running, account.key, agent) as (remote, local):
        # Agents: one made, renamed and deleted over each port.
        made = [
            await run(port, "create_agent", {"slug": f"ports-new-{n}", "name": "New"})
            for n, port in enumerate((remote, local))
        ]
        assert made[0]["agent_mode"] == "local" and made[0]["name"] == "New"
        assert without(made[0], VARYING | {"email"}) == without(made[1], VARYING | {"email"})
        renamed = [
            await run(port, "update_agent", {"email": new["email"], "name": "Renamed"})
            for port, new in zip((remote, local), made, strict=True)
        ]
        assert [agent["name"] for agent in renamed] == ["Renamed", "Renamed"]
        for port, new in zip((remote, local), made, strict=True):
            deleted = await run(port, "delete_agent", {"email": new["email"], "confirm": True})
            assert deleted == {"deleted": True, "email": new["email"], "messages_deleted": 0}
            assert (await run(port, "get_agent", {"email": new["email"]}))[1]["status"] == 404
            restored = await run(port, "restore_agent", {"email": new["email"]})
            assert restored["email"] == new["email"]

        # Domains: registered, refused until the TXT record is there, verified, deleted.
        names = ["remote.example", "local.example"]
        for port, name in zip((remote, local), names, strict=True):
            registered = await run(port, "register_domain", {"domain": name})
            assert registered["verified"] is False
            assert registered["dns_records"]["mx"]["value"] == "mx.agents.test"
            assert await run(port, "get_domain", {"domain": name}) == registered
        assert await run(remote, "list_domains") == await run(local, "list_domains")
        missing = [
            await run(port, "verify_domain", {"domain": name})
            for port, name in zip((remote, local), names, strict=True)
        ]
        assert missing[0][1]["code"] == "verification_record_missing"
        assert missing[0][1]["status"] == 412
        assert without(missing[0], {"message"}) == without(missing[1], {"message"})
        for port, name in zip((remote, local), names, strict=True):
            domain = await run(port, "get_domain", {"domain": name})
            resolver.set_txt(name, [domain["verification_token"]])
            assert (await run(port, "verify_domain", {"domain": name}))["verified"] is True
            agent_on_it = {"email": f"desk@{name}"}
            assert (await run(port, "create_agent", agent_on_it))["domain_verified"] is True
            in_use = await run(port, "delete_domain", {"domain": name, "confirm": True})
            assert in_use[1]["code"] == "domain_in_use"
            await run(port, "delete_agent", agent_on_it | {"confirm": True})
            trashed = await run(port, "delete_domain", {"domain": name, "confirm": True})
            assert trashed == in_use  # a trashed agent keeps its address until purged
            purged = await account.http.delete(
                f"/v1/agents/desk@{name}", params={"permanent": "true", "confirm": "DELETE"}
            )
            assert purged.status_code == 200, purged.text
            gone = await run(port, "delete_domain", {"domain": name, "confirm": True})
            assert gone == {"deleted": True, "domain": name}
        assert (await run(local, "list_domains")) == {"domains": []}

        # API keys: listed alike (prefixes only), one revoked over each port.
        for _ in range(2):
            created = await account.http.post("/api/v1/users/me/api-keys", json={"name": "spare"})
            assert created.status_code == 201, created.text
        listed = await run(remote, "list_api_keys")
        assert listed == await run(local, "list_api_keys")
        assert len(listed["api_keys"]) == 3
        assert all("key" not in key and key["scope"] == "account" for key in listed["api_keys"])
        spare = [key["id"] for key in listed["api_keys"] if key["name"] == "spare"]
        for port, key_id in zip((remote, local), spare, strict=True):
            revoked = await run(port, "delete_api_key", {"id": key_id, "confirm": True})
            assert revoked == {"deleted": True, "id": key_id}
        after = (await run(remote, "list_api_keys"))["api_keys"]
        assert sorted(key["id"] for key in after if key.get("revoked_at")) == sorted(spare)


async def test_attachments_answer_alike(running: RunningGateway, make_account: Any) -> None:
    account: Account = await make_account("ports-files@example.com")
    agent = await create_agent(account, "ports-files")
    peer = await create_agent(account, "ports-files-peer")
    report = {"filename": "report.csv", "content_type": "text/csv", "data": "YSxiCjEsMgo="}
    async with both_ports(running, account.key, agent) as (remote, local):
        for port in (remote, local):
            draft = {"to": [peer], "subject": "Files", "text": "Attached.", "attachments": [report]}
            assert (await run(port, "send_message", draft))["method"] == "local"
        page = await run(local, "list_messages", {"agent_email": peer})
        ids = [message["message_id"] for message in page["messages"]]
        for port, message_id in zip((remote, local), ids, strict=True):
            email = await run(port, "get_message", {"agent_email": peer, "message_id": message_id})
            assert email["attachments"] == [
                {"index": 0, "filename": "report.csv", "content_type": "text/csv", "size": 8}
            ]
            wanted = {"email": peer, "message_id": message_id, "attachment_index": 0}
            inline = await run(port, "get_attachment", wanted | {"inline": True})
            assert inline["data"] == report["data"] and inline["size_bytes"] == 8
            assert (await run(port, "get_attachment", wanted))["download_url"] is None
            data = await run(
                port,
                "get_attachment_data",
                {"agent_email": peer, "message_id": message_id, "attachment_index": 0},
            )
            assert data == {
                "filename": "report.csv",
                "content_type": "text/csv",
                "size_bytes": 8,
                "data": report["data"],
            }
            beyond = await run(port, "get_attachment", wanted | {"attachment_index": 1})
            assert beyond[1]["code"] == "not_found"
            assert "0 to 0" in beyond[1]["message"]
