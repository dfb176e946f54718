"""The MCP tools over their two ports answer alike: the SDK against the gateway over HTTP (what
`e2a mcp` uses) and the gateway's operations in-process (what `/mcp` uses), on one live
gateway, for the same calls — results and refusals, word for word. Every tool served is
compared. A call that makes something (a message, webhook, key, agent) is made once over each
port on twin objects, and the two answers compared but for what twins legitimately differ in
(generated ids, secrets, times; each such set is named and explained below); every other call,
refusals included, acts on the same objects and must answer identically."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from e2a_gateway.accounts import issue_api_key
from e2a_gateway.app import RunningGateway
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.mcp.bounds import MAX_BODY_BYTES
from e2a_gateway.mcp.in_process import OperationsPort
from e2a_gateway.mcp.remote import SdkPort
from e2a_gateway.mcp.tools import TOOLS, TOOLS_BY_NAME, ToolCaller, call_tool
from e2a_gateway.signing.credentials import hash_api_key
from e2a_gateway.storage.base import OUTBOUND_LIST_LIMIT
from tests.conftest import Account, agent_path
from tests.delivery_support import (
    SENDER,
    create_agent,
    mail,
    smtp_send,
    store_with_conversation,
    wait_until,
)
from tests.test_dashboard import outbound_row, watch_outbound_reads

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
        assert read[0]["direction"] == "inbound" and read[0]["verified_domain"] is None
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


async def test_list_pending_reads_no_attachment_data_and_answers_alike(
    running: RunningGateway, make_account: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held mail with large bodies and attachments: `list_pending` in-process reads one page of
    summaries, with each body cut in the database to what the answer keeps and each
    attachment's size but not its contents, and answers what it answers over `/api/v1`: the
    same bodies, the same `truncated` marks (a text of exactly the bound whole, one character
    more cut), the same attachment sizes."""
    account: Account = await make_account("ports-held@example.com")
    agent = await create_agent(account, "ports-held")
    storage = running.gateway.storage
    user = await storage.user_for_key_hash(hash_api_key(account.key))
    assert user is not None
    now = time.time()
    bodies: list[tuple[str | None, str | None, list[dict[str, str]] | None]] = [
        (
            "T" + "é" * 130_000,
            "<p>" + "x" * 200_000,
            [
                {
                    "filename": "big.bin",
                    "content_type": "application/pdf",
                    "data": "QUJD" * 100_000,
                },
                {"filename": "a.txt", "content_type": "text/plain", "data": "QQ=="},
            ],
        ),
        ("ab" * 70_000, None, None),
        ("y" * 120_000, None, []),
        ("z" * 120_001, "", None),
        (
            "short",
            "<b>short</b>",
            [{"filename": "b.txt", "content_type": "text/plain", "data": "QUI="}],
        ),
    ]
    for number, (text, html, attachments) in enumerate(bodies):
        await storage.add_outbound(
            outbound_row(
                user.id,
                agent,
                f"held {number}",
                "pending_approval",
                now - number,
                approval_expires_at=now + 3_600 + number,
                body_text=text,
                body_html=html,
                attachments=attachments,
            )
        )
    await storage.add_outbound(outbound_row(user.id, agent, "queued", "queued", now))
    async with both_ports(running, account.key, agent) as (remote, local):
        over_http = await run(remote, "list_pending")
        most = 2 * (MAX_BODY_BYTES + 1) + 4_000  # two bodies as far as an answer keeps them
        reads = watch_outbound_reads(storage, monkeypatch, most, OUTBOUND_LIST_LIMIT)
        in_process = await run(local, "list_pending")
        assert reads == ["summaries of 5"]
    assert in_process == over_http
    listed = in_process["messages"]
    assert [message["subject"] for message in listed] == [f"held {n}" for n in range(5)]
    assert [message["truncated"] for message in listed] == [True, True, False, True, False]
    assert listed[0]["attachments"] == [
        {"filename": "big.bin", "content_type": "application/pdf", "size": 300_000},
        {"filename": "a.txt", "content_type": "text/plain", "size": 1},
    ]
    assert listed[4]["attachments"] == [
        {"filename": "b.txt", "content_type": "text/plain", "size": 2}
    ]
    assert "QUJD" not in json.dumps(in_process)


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
        for _ in range(12):
            await run(remote, "send_email", draft | {"subject": "Held"})
        pending = (
            await run(remote, "list_pending_messages"),
            await run(local, "list_pending_messages"),
        )
        assert len(pending[0]["messages"]) == 12
        assert pending[0] == pending[1]
        assert await run(remote, "list_pending") == await run(local, "list_pending")
        assert await run(remote, "list_reviews") == await run(local, "list_reviews")
        ids = [message["id"] for message in pending[0]["messages"]]
        for message_id in ids:
            review = {"message_id": message_id}
            assert await run(remote, "get_review", review) == await run(local, "get_review", review)
            assert await run(remote, "get_pending_message", review) == await run(
                local, "get_pending_message", review
            )
        # e2a's and this gateway's other names for approving and rejecting, on twin messages.
        for name, arguments, twins in (
            ("approve_message", {"subject": "Edited", "text": "Edited."}, ids[4:6]),
            ("approve_email", {"subject": "Edited", "body_text": "Edited."}, ids[6:8]),
            ("reject_message", {"reason": "no"}, ids[8:10]),
            ("reject_email", {"reason": "no"}, ids[10:12]),
        ):
            decided = (
                await run(remote, name, {"message_id": twins[0]} | arguments),
                await run(local, name, {"message_id": twins[1]} | arguments),
            )
            assert decided[0]["status"] != "pending_approval", name
            assert without(decided[0], VARYING) == without(decided[1], VARYING), name
        approve = {"subject": "Held (edited)", "body_text": "Edited.", "to": [peer, agent]}
        approved = (
            await run(remote, "approve_pending_message", {"message_id": ids[0]} | approve),
            await run(local, "approve_pending_message", {"message_id": ids[1]} | approve),
        )
        assert approved[0]["status"] == "accepted"
        assert without(approved[0], VARYING) == without(approved[1], VARYING)
        # The worker sends each approved message on its own time, and a message's body is
        # scrubbed once it is settled: both are compared settled (no relay, so they fail).
        with trio.fail_after(10):
            while True:
                shown = [
                    await run(port, "get_review", {"message_id": message_id})
                    for port, message_id in zip((remote, local), ids[:2], strict=True)
                ]
                if all("text" not in one for one in shown):
                    break
                await trio.sleep(0.05)
        assert shown[0]["subject"] == "Held (edited)" and shown[0]["to"] == [peer, agent]
        assert without(shown[0], VARYING) == without(shown[1], VARYING)
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


async def test_a_rate_limited_call_says_when_to_retry(
    running: RunningGateway, make_account: Any
) -> None:
    """A tool refused by a rate limit says, over either port, how long to wait: e2a's
    `retry_after_seconds` beside `retryable`, the 429's `Retry-After`."""
    running.gateway.settings.limits.sends_per_agent_per_minute = 1
    account: Account = await make_account("ports-limited@example.com")
    agent = await create_agent(account, "ports-limited")
    draft = {"to": [agent], "subject": "Once", "body": "Only one a minute."}
    async with both_ports(running, account.key, agent) as (remote, local):
        assert (await run(remote, "send_email", draft))["method"] == "local"
        v1_draft = {"to": [agent], "subject": "Once", "text": "Only one a minute."}
        for port, name, arguments in (
            (remote, "send_email", draft),
            (local, "send_email", draft),
            (remote, "send_message", v1_draft),
            (local, "send_message", v1_draft),
        ):
            refused = await run(port, name, arguments)
            assert refused[0] == "error", refused
            error = refused[1]
            assert error["code"] == "rate_limited" and error["status"] == 429
            assert error["retryable"] is True
            wait = error["retry_after_seconds"]
            assert isinstance(wait, int) and 1 <= wait <= 60, error
            assert f"retry in {wait} seconds" in error["message"], error


async def test_inbound_holds_are_reviewed_alike(running: RunningGateway, make_account: Any) -> None:
    account: Account = await make_account("ports-gate@example.com")
    agent = await create_agent(account, "ports-gate")
    gate = {
        "inbound": {
            "gate": {"policy": "allowlist", "allowlist": [], "action": "review"},
            "scan": {"sensitivity": "off"},
        },
        "outbound": {"gate": {"policy": "open", "action": "flag"}, "scan": {}},
        "holds": {},
    }
    response = await account.http.put(f"/v1/agents/{agent}/protection", json=gate)
    assert response.status_code == 200, response.text
    for subject in ("Keep", "Drop", "Spare"):
        await smtp_send(running.addresses.smtp_port, [agent], mail(subject, body="Held words."))
    async with both_ports(running, account.key, agent) as (remote, local):
        listed = await run(remote, "list_reviews")
        assert listed == await run(local, "list_reviews")
        assert [item["subject"] for item in listed["reviews"]] == ["Spare", "Drop", "Keep"]
        assert {(item["direction"], item["review_status"]) for item in listed["reviews"]} == {
            ("inbound", "pending_review")
        }
        assert listed["reviews"][0]["hold_reason"]["type"] == "gate"
        assert (await run(local, "list_pending_messages"))["messages"] == listed["reviews"]
        spare, drop, keep = (item["id"] for item in listed["reviews"])
        detail = await run(remote, "get_review", {"message_id": keep})
        assert detail == await run(local, "get_pending_message", {"message_id": keep})
        assert detail["direction"] == "inbound" and detail["text"] == "Held words."
        assert detail["header_from"] == SENDER and detail["truncated"] is False
        assert "raw_message" not in detail and detail["attachments"] == []

        # edits are ignored for incoming mail: it is delivered as it arrived
        approved = await run(remote, "approve_review", {"message_id": keep, "subject": "x"})
        assert approved == {"status": "review_approved", "message_id": keep}
        rejected = await run(local, "reject_review", {"message_id": drop, "reason": "spam"})
        assert rejected == {
            "status": "review_rejected",
            "message_id": drop,
            "rejection_reason": "spam",
        }
        again = await run(remote, "reject_message", {"message_id": drop})
        assert again[0] == "error" and again[1]["status"] == 409
        assert [item["id"] for item in (await run(local, "list_reviews"))["reviews"]] == [spare]
        missing = await run(local, "get_review", {"message_id": drop})
        assert missing[0] == "error" and missing[1]["status"] == 404
    inbox = await account.http.get(f"/api/v1/agents/{agent}/messages")
    assert [message["subject"] for message in inbox.json()["messages"]] == ["Keep"]


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
        assert after == (await run(local, "list_api_keys"))["api_keys"]  # revoked: not listed
        assert after == [key for key in listed["api_keys"] if key["id"] not in spare]
        # An expired key is listed alike, its expiry showing it, and refused alike.
        holder = await running.gateway.storage.key_holder(hash_api_key(account.key))
        assert holder is not None
        stale = await issue_api_key(
            running.gateway.storage, holder.user.id, "stale", expires_at="2001-01-01T00:00:00Z"
        )
        listed = await run(remote, "list_api_keys")
        assert listed == await run(local, "list_api_keys")
        [shown] = [key for key in listed["api_keys"] if key["id"] == stale.key.id]
        assert shown["expires_at"] == "2001-01-01T00:00:00Z"
    async with both_ports(running, stale.plaintext, agent) as (remote, local):
        refused = await run(remote, "list_api_keys")
        assert refused[1]["code"] == "unauthorized" and refused[1]["status"] == 401
        assert await run(local, "list_api_keys") == refused


async def test_get_domain_finds_any_spelling_of_a_registered_domain(
    running: RunningGateway, make_account: Any
) -> None:
    """get_domain finds a domain however it is spelled, as register_domain and the API read
    it: Unicode or A-labels, any case, one trailing dot."""
    account: Account = await make_account("ports-idn@example.com")
    agent = await create_agent(account, "ports-idn")
    async with both_ports(running, account.key, agent) as (remote, local):
        registered = await run(local, "register_domain", {"domain": "BÜCHER.example"})
        assert registered["domain"] == "xn--bcher-kva.example"
        for port in (remote, local):
            for spelling in ("bücher.example", "Bücher.Example.", "XN--BCHER-KVA.example"):
                assert await run(port, "get_domain", {"domain": spelling}) == registered
            refused = await run(port, "get_domain", {"domain": "not a domain"})
            assert refused[1]["code"] == "not_found"


async def test_attachments_answer_alike(running: RunningGateway, make_account: Any) -> None:
    account: Account = await make_account("ports-files@example.com")
    agent = await create_agent(account, "ports-files")
    peer = await create_agent(account, "ports-files-peer")
    report = {"filename": "report.csv", "content_type": "text/csv", "data": "YSxiCjEsMgo="}
    async with both_ports(running, account.key, agent) as ports:
        remote, local = ports
        for port in ports:
            draft = {"to": [peer], "subject": "Files", "text": "Attached.", "attachments": [report]}
            assert (await run(port, "send_message", draft))["method"] == "loopback"

        async def both_arrived() -> bool:
            page = await run(local, "list_messages", {"agent_email": peer})
            return len(page["messages"]) == 2

        await wait_until(both_arrived)
        page = await run(local, "list_messages", {"agent_email": peer})
        ids = [message["message_id"] for message in page["messages"]]
        for port, message_id in zip((remote, local), ids, strict=True):
            email = await run(port, "get_message", {"agent_email": peer, "message_id": message_id})
            assert email["attachments"] == [
                {"index": 0, "filename": "report.csv", "content_type": "text/csv", "size_bytes": 8}
            ]
            wanted = {"email": peer, "message_id": message_id, "attachment_index": 0}
            inline = await run(port, "get_attachment", wanted | {"inline": True})
            assert inline["data"] == report["data"] and inline["size_bytes"] == 8
            # /v1's AttachmentView: a signed link that works, and when it stops working.
            linked = await run(port, "get_attachment", wanted)
            assert "data" not in linked and linked["expires_at"]
            assert {name: linked[name] for name in ("index", "filename", "content_type")} == {
                "index": 0,
                "filename": "report.csv",
                "content_type": "text/csv",
            }
            path = linked["download_url"].partition("/v1/attachments/")[2]
            downloaded = await account.http.get(f"/v1/attachments/{path}")
            assert downloaded.status_code == 200
            assert downloaded.content == base64.b64decode(report["data"])
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
            assert beyond[1]["code"] == "attachment_not_found" and beyond[1]["status"] == 404

        # One idempotency key, either port: the send and the reply made once, then replayed.
        once = {"to": [peer], "subject": "Once", "text": "Once.", "idempotency_key": "ports-1"}
        first = await run(remote, "send_message", once)
        assert first["status"] == "accepted"
        assert await run(local, "send_message", once) == first
        reused = [await run(port, "send_message", once | {"reply_to": agent}) for port in ports]
        assert reused[0][1]["code"] == "idempotency_key_reuse" and reused[0] == reused[1]
        answer = {"message_id": ids[0], "text": "Both.", "email": peer, "idempotency_key": "r-1"}
        replied = await run(local, "reply_to_message", answer)
        assert replied["status"] == "accepted"
        assert await run(remote, "reply_to_message", answer) == replied
        reused = [await run(port, "reply_to_message", answer | {"text": "No."}) for port in ports]
        assert reused[0][1]["code"] == "idempotency_key_reuse" and reused[0] == reused[1]
        # e2a's first name for sending too: made over one port, replayed over the other.
        draft = {"to": [peer], "subject": "Once by email", "body": "Once.", "attachments": [report]}
        sent = await run(local, "send_email", draft | {"idempotency_key": "ports-email"})
        assert sent["status"] == "sent"
        assert await run(remote, "send_email", draft | {"idempotency_key": "ports-email"}) == sent
        reused = [
            await run(port, "send_email", draft | {"idempotency_key": "ports-email", "cc": [agent]})
            for port in ports
        ]
        assert reused[0][1]["code"] == "idempotency_key_reuse" and reused[0] == reused[1]
        page = await run(local, "list_messages", {"agent_email": peer, "status": "all"})
        assert [m["subject"] for m in page["messages"]].count("Once by email") == 1


def differences(remote: Any, local: Any, path: str = "") -> list[str]:
    """Where two answers differ, each as `path: remote != local`."""
    if isinstance(remote, dict) and isinstance(local, dict):
        return [
            found
            for key in sorted(set(remote) | set(local))
            for found in differences(
                remote.get(key, "<absent>"), local.get(key, "<absent>"), f"{path}.{key}"
            )
        ]
    sequences = isinstance(remote, list | tuple) and isinstance(local, list | tuple)
    if sequences and len(remote) == len(local):
        return [
            found
            for index, pair in enumerate(zip(remote, local, strict=True))
            for found in differences(*pair, f"{path}[{index}]")
        ]
    return [] if remote == local else [f"{path}: {remote!r:.200} != {local!r:.200}"]


def alike(answers: tuple[Any, Any], fields: set[str], context: str) -> None:
    """The two ports' answers to twin calls are equal but for `fields` (and message ids in
    texts): what two objects made one after the other legitimately differ in."""
    remote, local = (without(answer, fields) for answer in answers)
    assert remote == local, (context, differences(remote, local))


async def both(
    ports: tuple[ToolCaller, ToolCaller], name: str, arguments: list[dict[str, Any]]
) -> tuple[Any, Any]:
    """`name` called over the remote port with `arguments[0]` and over the in-process one with
    `arguments[-1]` (one argument set for both, or one per twin object)."""
    remote, local = ports
    return await run(remote, name, arguments[0]), await run(local, name, arguments[-1])


async def same(ports: tuple[ToolCaller, ToolCaller], name: str, arguments: dict[str, Any]) -> Any:
    """`name` with `arguments` over both ports, answering word for word alike; the answer."""
    remote, local = await both(ports, name, [arguments])
    assert remote == local, (name, arguments, differences(remote, local))
    return remote


TWIN_MESSAGE = VARYING | {
    "conversation_id",
    "occurred_at",
    "deleted_at",
    "updated_at",
    "raw_message",
}
"""What two equal messages delivered one after the other differ in: their ids (a transition's
`id` is made from its message's), times, conversations (each new thread gets its own) and the
raw mail (base64; its Received: header names the message's id and arrival time)."""


async def test_mailbox_tools_answer_alike(running: RunningGateway, make_account: Any) -> None:
    account: Account = await make_account("ports-mailbox@example.com")
    agent = await create_agent(account, "ports-mailbox")
    peer = await create_agent(account, "ports-mailbox-peer")
    quiet = await create_agent(account, "ports-mailbox-quiet")
    for _ in range(2):
        await smtp_send(running.addresses.smtp_port, [agent], mail("Twin", body="Same words."))
    thread = [
        await store_with_conversation(running.gateway, agent, "conv-ports", subject=subject)
        for subject in ("Opening", "Follow-up")
    ]
    await store_with_conversation(running.gateway, agent, "conv-ports-aside", subject="Aside")
    async with both_ports(running, account.key, agent) as ports:
        page = await same(ports, "get_inbox", {"status": "all", "page_size": 1})
        assert page["messages"] and page["next_page"]
        inbox = await same(ports, "list_messages", {"status": "all"})
        twins = [m["message_id"] for m in inbox["messages"] if m["subject"] == "Twin"]
        assert len(twins) == 2
        pair = [{"message_id": message_id} for message_id in twins]

        # Read-only calls on the same objects: word for word, cursors included (signed alike).
        first = await same(ports, "list_conversations", {"limit": 1})
        assert first["next_cursor"]
        await same(ports, "list_conversations", {"limit": 1, "cursor": first["next_cursor"]})
        await same(ports, "list_conversations", {"since": "2000-01-01T00:00:00Z"})
        shown = await same(ports, "get_conversation", {"conversation_id": "conv-ports"})
        assert [m["id"] for m in shown["messages"]] == thread
        steps = await same(ports, "get_message_lifecycle", {"message_id": twins[0], "limit": 1})
        assert steps["next_cursor"]
        cursor = {"message_id": twins[0], "cursor": steps["next_cursor"]}
        await same(ports, "get_message_lifecycle", cursor)
        await same(ports, "wait_for_email", {"agent_email": quiet, "timeout_seconds": 1})
        for name, arguments in (
            ("get_message_lifecycle", {"message_id": "msg_nope"}),
            ("get_message_lifecycle", {"message_id": twins[0], "cursor": "bm9wZQ.bm9wZQ"}),
            ("get_message_lifecycle", {"message_id": twins[0], "email": "nobody@agents.test"}),
            ("get_conversation", {"conversation_id": "conv-nope"}),
            ("list_conversations", {"since": "yesterday"}),
            ("update_message_labels", {"message_id": twins[0], "add_labels": ["e2a:x"]}),
            ("update_message_labels", {"message_id": "msg_nope", "add_labels": ["x"]}),
            ("delete_message", {"message_id": "msg_nope", "confirm": True}),
            ("delete_message", {"message_id": twins[0]}),
            ("restore_message", {"message_id": twins[0]}),
            ("forward_message", {"message_id": "msg_nope", "to": [peer]}),
            ("forward_message", {"message_id": twins[0], "to": ["not an address"]}),
            ("read_email", {"message_id": "msg_nope"}),
            ("reply_email", {"message_id": "msg_nope", "body": "Hi"}),
        ):
            await same(ports, name, arguments)

        # Twin calls on twin objects: alike but for ids and times.
        twin_steps = await both(ports, "get_message_lifecycle", pair)
        assert twin_steps[0]["transitions"][0]["reason_code"] == "acceptance.inbound_smtp"
        alike(twin_steps, TWIN_MESSAGE, "get_message_lifecycle")
        change = {"add_labels": ["urgent", "later"], "remove_labels": ["later"]}
        labelled = await both(ports, "update_message_labels", [one | change for one in pair])
        assert labelled[0]["labels"] == ["urgent"]
        alike(labelled, TWIN_MESSAGE, "update_message_labels")
        read = await both(ports, "read_email", pair)
        alike(read, TWIN_MESSAGE, "read_email")
        forwarded = await both(
            ports,
            "forward_message",
            [one | {"to": [peer], "text": "FYI", "cc": [quiet]} for one in pair],
        )
        assert forwarded[0]["status"] == "accepted"
        alike(forwarded, TWIN_MESSAGE, "forward_message")
        # One idempotency key over both ports: the second port replays the first's forward.
        once = pair[0] | {"to": [peer], "idempotency_key": "ports-forward-once"}
        replayed = await same(ports, "forward_message", once)
        assert replayed["message_id"] not in (
            forwarded[0]["message_id"],
            forwarded[1]["message_id"],
        )
        await same(ports, "forward_message", once | {"text": "Not the same request"})
        replied = await both(
            ports, "reply_email", [one | {"body": "Thanks.", "reply_all": True} for one in pair]
        )
        alike(replied, TWIN_MESSAGE, "reply_email")
        deleted = await both(ports, "delete_message", [one | {"confirm": True} for one in pair])
        assert deleted[0] == {"deleted": True, "id": twins[0]}
        alike(deleted, {"id"}, "delete_message")
        restored = await both(ports, "restore_message", pair)
        assert restored[0]["id"] == twins[0] and restored[0]["labels"] == ["urgent"]
        alike(restored, TWIN_MESSAGE, "restore_message")
        again = await both(ports, "restore_message", pair)
        assert again[0][1]["code"] == "not_in_trash"
        alike(again, set(), "restore_message again")


DELIVERY_PROGRESS = {
    "status",
    "attempts",
    "next_retry_at",
    "last_attempt_at",
    "last_status_code",
    "last_error",
    "last_latency_ms",
}
"""A webhook delivery's progress: the delivery worker may try it between the two calls."""
TWIN_WEBHOOK = {"id", "created_at", "signing_secret", "previous_secret_expires_at"}
"""What two webhooks made one after the other differ in (a secret is random, its old one's
expiry a time)."""


async def test_event_and_webhook_tools_answer_alike(
    running: RunningGateway, make_account: Any
) -> None:
    account: Account = await make_account("ports-hooks@example.com")
    agent = await create_agent(account, "ports-hooks")
    elsewhere = await create_agent(account, "ports-hooks-elsewhere")
    for subject in ("One", "Two", "Three"):
        await smtp_send(running.addresses.smtp_port, [agent], mail(subject, body="Hi."))
    url = "https://hooks.example.com/hook"
    async with both_ports(running, account.key, agent) as ports:
        # Events: the same log read alike, page by page.
        events = await same(ports, "list_events", {"type": "email.received"})
        assert len(events["events"]) == 3
        page = await same(ports, "list_events", {"type": "email.received", "limit": 2})
        await same(ports, "list_events", {"type": "email.received", "cursor": page["next_cursor"]})
        await same(ports, "list_events", {"agent_email": elsewhere})
        newest = events["events"][0]["id"]
        assert (await same(ports, "get_event", {"event_id": newest}))["status"] == "no_match"
        redelivered = await both(ports, "redeliver_event", [{"event_id": newest}])
        assert redelivered[0] == {"event_id": newest, "deliveries": [], "status": "scheduled"}
        alike(redelivered, set(), "redeliver_event")

        # Webhooks: twins made, changed, rotated, tested and deleted; listed and read alike.
        hook = {"url": url, "events": ["email.sent"], "filters": {"agent_emails": [elsewhere]}}
        created = await both(ports, "create_webhook", [hook | {"description": "twin"}])
        assert created[0]["signing_secret"].startswith("whsec_")
        alike(created, TWIN_WEBHOOK, "create_webhook")
        twins = [{"id": made["id"]} for made in created]
        listed = await same(ports, "list_webhooks", {"limit": 1})
        assert [w["id"] for w in listed["webhooks"]] == [twins[1]["id"]]  # newest first
        await same(ports, "list_webhooks", {"cursor": listed["next_cursor"]})
        await same(ports, "get_webhook", twins[1])
        change = {"description": "paused", "enabled": False, "events": ["email.sent"]}
        changed = await both(ports, "update_webhook", [twin | change for twin in twins])
        assert changed[0]["enabled"] is False
        alike(changed, TWIN_WEBHOOK, "update_webhook")
        alike(await both(ports, "rotate_webhook_secret", twins), TWIN_WEBHOOK, "rotate")
        paused = await same(ports, "test_webhook", twins[0])
        assert paused[0] == "error" and paused[1]["code"] == "webhook_disabled"
        await both(ports, "update_webhook", [twin | {"enabled": True} for twin in twins])
        tested = await both(
            ports, "test_webhook", [twin | {"type": "email.sent"} for twin in twins]
        )
        alike(tested, {"delivery_id"}, "test_webhook")
        deliveries = await both(ports, "list_webhook_deliveries", [twins[0]])
        assert [d["id"] for d in deliveries[0]["deliveries"]] == [tested[0]["delivery_id"]]
        alike(deliveries, DELIVERY_PROGRESS, "list_webhook_deliveries (one webhook)")
        for name, arguments in (
            ("get_event", {"event_id": "evt_nope"}),
            ("redeliver_event", {"event_id": "evt_nope"}),
            ("redeliver_event", {"event_id": newest, "webhook_id": "wh_nope"}),
            ("list_events", {"since": "yesterday"}),
            ("list_events", {"cursor": "bm9wZQ.bm9wZQ"}),
            ("get_webhook", {"id": "wh_nope"}),
            ("create_webhook", {"url": url, "events": ["email.nope"]}),
            ("create_webhook", {"url": "http://127.0.0.1/hook", "events": ["email.sent"]}),
            ("update_webhook", {"id": "wh_nope", "enabled": True}),
            ("rotate_webhook_secret", {"id": "wh_nope"}),
            ("test_webhook", {"id": "wh_nope"}),
            ("list_webhook_deliveries", {"id": "wh_nope"}),
            ("list_webhook_deliveries", {**twins[0], "status": "nope"}),
            ("delete_webhook", {"id": "wh_nope", "confirm": True}),
            ("delete_webhook", twins[0]),
        ):
            await same(ports, name, arguments)
        deleted = await both(ports, "delete_webhook", [twin | {"confirm": True} for twin in twins])
        assert deleted[0] == {"deleted": True, "id": twins[0]["id"]}
        alike(deleted, {"id"}, "delete_webhook")
        assert await same(ports, "list_webhooks", {}) == {"webhooks": []}


TWIN_KEY = {"id", "key", "key_prefix", "created_at", "agent_email"}
"""What two keys made one after the other (for twin agents) differ in."""
TWIN_AGENT = {"email", "name", "created_at", "deleted_at"}
"""What two agents made one after the other differ in (the test helper names each after its
address)."""


async def test_keys_protection_and_agent_trash_answer_alike(
    running: RunningGateway, make_account: Any
) -> None:
    account: Account = await make_account("ports-guard@example.com")
    agent = await create_agent(account, "ports-guard")
    twins = [await create_agent(account, f"ports-guard-{n}") for n in range(2)]
    for twin in twins:
        await smtp_send(running.addresses.smtp_port, [twin], mail("Kept", body="Kept."))
    async with both_ports(running, account.key, agent) as ports:
        # Protection: the same agent read alike; twins changed alike.
        await same(ports, "get_protection", {})
        change = {
            "outbound_gate_policy": "allowlist",
            "outbound_gate_allowlist": [],
            "outbound_gate_action": "review",
            "holds_on_expiry": "reject",
        }
        changed = await both(ports, "update_protection", [{"email": t} | change for t in twins])
        assert changed[0]["outbound"]["gate"]["action"] == "review"
        alike(changed, set(), "update_protection")
        await same(ports, "get_protection", {"email": twins[0]})

        # Keys bound to twin agents.
        issued = await both(
            ports, "create_api_key", [{"agent_email": t, "name": "bot"} for t in twins]
        )
        assert issued[0]["scope"] == "agent" and issued[0]["agent_email"] == twins[0]
        alike(issued, TWIN_KEY, "create_api_key")
        keys = (await same(ports, "list_api_keys", {}))["api_keys"]
        scopes = {key["id"]: (key["scope"], key.get("agent_email")) for key in keys}
        assert scopes.pop(issued[0]["id"]) == ("agent", twins[0])
        assert scopes.pop(issued[1]["id"]) == ("agent", twins[1])
        assert list(scopes.values()) == [("account", None)]  # the key in use
        assert all("key" not in key and key["key_prefix"] for key in keys)
        newest = await same(ports, "list_api_keys", {"limit": 1})
        assert newest["api_keys"] == keys[:1] and newest["next_cursor"]
        await same(ports, "list_api_keys", {"limit": 2, "cursor": newest["next_cursor"]})

        # Twin agents to the trash and back.
        trashed = await both(ports, "delete_agent", [{"email": t, "confirm": True} for t in twins])
        assert trashed[0] == {"deleted": True, "email": twins[0], "messages_deleted": 0}
        alike(trashed, TWIN_AGENT, "delete_agent")
        trash = await same(ports, "list_agents", {"deleted": True, "limit": 1})
        assert [a["email"] for a in trash["agents"]] == [twins[1]]
        await same(ports, "list_agents", {"deleted": True, "cursor": trash["next_cursor"]})
        restored = await both(ports, "restore_agent", [{"email": t} for t in twins])
        assert restored[0]["email"] == twins[0]
        alike(restored, TWIN_AGENT, "restore_agent")
        for name, arguments in (
            ("get_protection", {"email": "nobody@agents.test"}),
            ("update_protection", {"inbound_scan_sensitivity": "high"}),
            ("update_protection", {"email": "nobody@agents.test", "holds_ttl_seconds": 60}),
            ("create_api_key", {"agent_email": "nobody@agents.test"}),
            ("create_api_key", {"agent_email": agent, "expires_at": "tomorrow"}),
            ("restore_agent", {"email": agent}),
            ("restore_agent", {"email": "nobody@agents.test"}),
            ("delete_agent", {"email": "nobody@agents.test", "confirm": True}),
        ):
            await same(ports, name, arguments)

    # A key bound to one agent: who it is, and what it may not do, alike.
    async with both_ports(running, issued[0]["key"], "") as ports:
        me = await both(ports, "whoami", [{}])
        assert me[0]["scope"] == "agent" and me[0]["agent_email"] == twins[0]
        alike(me, {"url"}, "whoami (agent key)")  # the gateway's URL as each port reaches it
        await same(ports, "list_messages", {"status": "all"})
        for name, arguments in (
            ("list_reviews", {}),
            ("list_pending", {}),
            ("get_protection", {}),
            ("create_api_key", {"agent_email": twins[0]}),
            ("delete_agent", {"confirm": True}),
            ("restore_agent", {"email": twins[0]}),
            ("list_webhooks", {}),
            ("list_events", {}),
            ("get_message_lifecycle", {"message_id": "msg_nope", "email": twins[1]}),
            ("forward_message", {"message_id": "msg_nope", "to": [agent], "email": twins[1]}),
            ("get_message_lifecycle", {"message_id": "msg_nope"}),
        ):
            await same(ports, name, arguments)


async def test_template_tools_answer_alike(running: RunningGateway, make_account: Any) -> None:
    account: Account = await make_account("ports-templates@example.com")
    agent = await create_agent(account, "ports-templates")
    reader = await create_agent(account, "ports-templates-reader")
    async with both_ports(running, account.key, agent) as ports:
        source = {"name": "Note", "subject": "About {{topic}}", "text": "{{topic}}: {{body}}"}
        made = await both(
            ports,
            "create_template",
            [source | {"alias": "remote-note"}, source | {"alias": "local-note"}],
        )
        assert made[0]["id"].startswith("tmpl_") and made[0]["alias"] == "remote-note"
        alike(made, {"id", "alias", "created_at", "updated_at"}, "create_template")
        page = await same(ports, "list_templates", {"limit": 1})
        assert [item["alias"] for item in page["templates"]] == ["local-note"]
        await same(ports, "list_templates", {"cursor": page["next_cursor"]})
        for template in made:
            await same(ports, "get_template", {"id": template["id"]})
        changed = await both(
            ports,
            "update_template",
            [{"id": made[0]["id"], "html": "<b>{{topic}}</b>"}, {"id": made[1]["id"], "html": "x"}],
        )
        assert (changed[0]["html"], changed[1]["html"]) == ("<b>{{topic}}</b>", "x")
        checked = await same(
            ports, "validate_template", {"subject": "{{a.b}}", "text": "{{#x}}", "test_data": {}}
        )
        assert checked["valid"] is False and checked["suggested_data"] == {"a": {"b": "a.b_value"}}
        preview = await same(
            ports, "validate_template", {"subject": "s", "text": "{{n}}", "test_data": {"n": 2.0}}
        )
        assert preview["rendered"]["text"] == "2.0"  # as the JSON wrote it, on both ports
        starters = await same(ports, "list_starter_templates", {})
        aliases = [item["alias"] for item in starters["starter_templates"]]
        for alias in aliases:
            await same(ports, "get_starter_template", {"alias": alias})
        for name, arguments in (
            ("get_template", {"id": "tmpl_nope"}),
            ("get_starter_template", {"alias": "nope"}),
            ("create_template", {"name": "Bad", "subject": "{{", "text": "t"}),
            ("create_template", {"from_starter": "nope"}),
            ("update_template", {"id": made[0]["id"], "alias": "local-note"}),
            ("delete_template", {"id": "tmpl_nope", "confirm": True}),
        ):
            refused = await same(ports, name, arguments)
            assert refused[0] == "error", (name, refused)
        data = {"topic": "T", "body": "B"}
        sent = await both(
            ports,
            "send_message",
            [
                {"to": [reader], "template_alias": alias, "template_data": data}
                for alias in ("remote-note", "local-note")
            ],
        )
        assert sent[0]["status"] == "accepted"
        alike(sent, VARYING, "send_message with a template")
        gone = await both(
            ports, "delete_template", [{"id": item["id"], "confirm": True} for item in made]
        )
        assert gone[0] == {"deleted": True, "id": made[0]["id"]}
        assert (await same(ports, "list_templates", {}))["templates"] == []


async def test_list_messages_filters_answer_alike(
    running: RunningGateway, make_account: Any
) -> None:
    account: Account = await make_account("ports-filters@example.com")
    agent = await create_agent(account, "ports-filters")
    port = running.addresses.smtp_port
    await smtp_send(port, [agent], mail("Invoice 1", body="One."))
    from_bob = b"From: Bob <bob@example.net>\r\nSubject: Hello\r\n\r\nTwo.\r\n"
    await smtp_send(port, [agent], from_bob, sender="bob@example.net")
    await smtp_send(port, [agent], mail("Your invoice 2", body="Three."))
    thread = await store_with_conversation(running.gateway, agent, "conv-filters", subject="Re")
    listed = await account.http.get(f"/v1/agents/{agent}/messages", params={"sort": "asc"})
    ids = [item["id"] for item in listed.json()["items"]]
    labelled = await account.http.patch(
        f"/v1/agents/{agent}/messages/{ids[2]}", json={"add_labels": ["billing", "urgent"]}
    )
    assert labelled.status_code == 200, labelled.text
    async with both_ports(running, account.key, agent) as ports:
        invoices = await same(ports, "list_messages", {"subject_contains": "INVOICE"})
        assert [row["subject"] for row in invoices["messages"]] == ["Invoice 1", "Your invoice 2"]
        assert invoices["messages"][0]["message_id"] == ids[0]  # oldest first, unread ones
        assert invoices["messages"][0]["from"] == "alice@example.org"
        assert invoices["messages"][0]["status"] == "unread"
        assert invoices["messages"][0]["recipient"] == agent
        first = await same(ports, "list_messages", {"subject_contains": "invoice", "limit": 1})
        assert [row["subject"] for row in first["messages"]] == ["Invoice 1"]
        rest = await same(
            ports, "list_messages", {"subject_contains": "invoice", "cursor": first["next_cursor"]}
        )
        assert [row["subject"] for row in rest["messages"]] == ["Your invoice 2"]
        assert rest["next_token"] is None and "next_cursor" not in rest
        bob = await same(ports, "list_messages", {"from_": "BOB@", "status": "all"})
        assert [row["subject"] for row in bob["messages"]] == ["Hello"]
        labels = await same(ports, "list_messages", {"labels": ["billing", "urgent"]})
        assert [row["message_id"] for row in labels["messages"]] == [ids[2]]
        assert (await same(ports, "list_messages", {"labels": ["billing", "x"]}))["messages"] == []
        threaded = await same(
            ports, "list_messages", {"conversation_id": "conv-filters", "status": "all"}
        )
        assert [row["message_id"] for row in threaded["messages"]] == [thread]
        later = await same(ports, "list_messages", {"since": "2999-01-01T00:00:00Z"})
        assert later["messages"] == []
        earlier = await same(ports, "list_messages", {"until": "2999-01-01T00:00:00Z"})
        assert [row["message_id"] for row in earlier["messages"]] == ids  # every one, unread
        refused = await same(ports, "list_messages", {"since": "yesterday"})
        assert refused[0] == "error" and refused[1]["code"] == "invalid_filter"
        newest = await same(ports, "list_messages", {"sort": "desc", "status": "all"})
        assert [row["message_id"] for row in newest["messages"]] == ids[::-1]

        # The sent folder (a draft held for review: its state stays put), both, the trash.
        held = await account.http.put(agent_path(agent), json={"hitl_enabled": True})
        assert held.status_code == 200, held.text
        sent = await account.http.post(
            f"/v1/agents/{agent}/messages",
            json={"to": ["carol@example.org"], "subject": "Quote", "text": "Here."},
        )
        assert sent.status_code == 202, sent.text
        outbox = await same(ports, "list_messages", {"direction": "outbound"})
        (row,) = outbox["messages"]
        assert (row["message_id"], row["direction"]) == (sent.json()["message_id"], "outbound")
        assert row["subject"] == "Quote" and row["from"] == agent and row["status"] == ""
        assert row["review_status"] == "pending_review", row
        both_folders = await same(ports, "list_messages", {"direction": "all", "status": "all"})
        assert len(both_folders["messages"]) == len(ids) + 1
        trashed = await account.http.delete(f"/v1/agents/{agent}/messages/{ids[1]}")
        assert trashed.status_code == 200, trashed.text
        trash = await same(ports, "list_messages", {"deleted": True})
        assert [row["message_id"] for row in trash["messages"]] == [ids[1]]
        assert trash["messages"][0]["deleted_at"]
        inbox = await same(ports, "list_messages", {"status": "all"})
        assert ids[1] not in [row["message_id"] for row in inbox["messages"]]


def test_every_served_tool_is_compared() -> None:
    """Each tool served is called over both ports by a test of this module (its name appears
    here as a string), so a new tool cannot go uncompared."""
    named = set(re.findall(r'"([a-z_]+)"', Path(__file__).read_text()))
    assert {tool.name for tool in TOOLS} - named == set()


DOT_IDS = (".", "..")
"""Ids that an HTTP client resolves as relative steps (RFC 3986 §5.2.4) unless escaped."""


async def test_dot_segment_ids_reach_no_other_route(
    running: RunningGateway, make_account: Any
) -> None:
    account: Account = await make_account("ports-dots@example.com")
    agent = await create_agent(account, "ports-dots")
    trashed = await create_agent(account, "ports-dots-trashed")
    assert (await account.http.delete(f"/v1/agents/{trashed}?confirm=DELETE")).is_success
    async with both_ports(running, account.key, agent) as ports:
        for odd in DOT_IDS:
            for name, arguments in (
                ("get_message", {"message_id": odd}),
                ("get_attachment", {"message_id": odd, "attachment_index": 0}),
                ("restore_message", {"message_id": odd, "email": trashed}),
                ("update_message_labels", {"message_id": odd, "add_labels": ["x"]}),
                ("get_agent", {"email": odd}),
                ("get_event", {"event_id": odd}),
                ("get_webhook", {"id": odd}),
                ("get_template", {"id": odd}),
                ("delete_api_key", {"id": odd, "confirm": True}),
                ("verify_domain", {"domain": odd}),
                ("get_review", {"message_id": odd}),
            ):
                answer = await same(ports, name, arguments)
                assert answer[0] == "error" and answer[1]["status"] in {404, 422}, (name, odd)
    # `restore_message` of message ".." did not restore the agent it names.
    listed = await account.http.get("/v1/agents", params={"deleted": "true"})
    assert [item["email"] for item in listed.json()["items"]] == [trashed]


SLASH_CALLS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("get_message", "message_id", {}),
    ("delete_message", "message_id", {"confirm": True}),
    ("restore_message", "message_id", {}),
    ("get_attachment", "message_id", {"attachment_index": 0}),
    ("reply_to_message", "message_id", {"body": "x"}),
    ("forward_message", "message_id", {"to": ["a@example.org"]}),
    ("get_message_lifecycle", "message_id", {}),
    ("update_message_labels", "message_id", {"add_labels": ["x"]}),
    ("get_review", "message_id", {}),
    ("approve_review", "message_id", {}),
    ("reject_review", "message_id", {}),
    ("get_pending_message", "message_id", {}),
    ("approve_pending_message", "message_id", {}),
    ("get_conversation", "conversation_id", {}),
    ("get_event", "event_id", {}),
    ("redeliver_event", "event_id", {}),
    ("get_webhook", "id", {}),
    ("delete_webhook", "id", {"confirm": True}),
    ("rotate_webhook_secret", "id", {}),
    ("test_webhook", "id", {}),
    ("list_webhook_deliveries", "id", {}),
    ("update_webhook", "id", {"description": "x"}),
    ("delete_api_key", "id", {"confirm": True}),
    ("get_domain", "domain", {}),
    ("verify_domain", "domain", {}),
    ("delete_domain", "domain", {"confirm": True}),
    ("get_template", "id", {}),
    ("delete_template", "id", {"confirm": True}),
    ("get_starter_template", "alias", {}),
    ("get_agent", "email", {}),
    ("get_protection", "email", {}),
    ("restore_agent", "email", {}),
)
"""Every tool naming one object in its request path, with the argument that names it."""


async def test_ids_holding_a_slash_answer_alike(running: RunningGateway, make_account: Any) -> None:
    # The gateway decodes %2F before it routes a request, so a path segment holding "/" meets
    # no route ("no such endpoint"); over /mcp the same id is simply not found.
    account: Account = await make_account("ports-slash@example.com")
    agent = await create_agent(account, "ports-slash")
    async with both_ports(running, account.key, agent) as ports:
        for odd in ("a/b", "msg_x/..", "/", "a%2Fb", "a%2fb/"):
            for name, argument, rest in SLASH_CALLS:
                answer = await same(ports, name, {argument: odd} | rest)
                assert answer[0] == "error", (name, odd, answer)
                assert answer[1]["code"].endswith("not_found"), (name, odd, answer)
