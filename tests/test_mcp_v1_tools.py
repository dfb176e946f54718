"""e2a's MCP tools for what the gateway keeps on its `/v1` face (the trash, labels,
conversations, the events log),
called with e2a's argument names by the official `mcp` client over both transports: `/mcp`
(the operations in-process) and `e2a mcp` on stdio (HTTP to the gateway), on a live gateway
with mail arriving over real SMTP.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote

import pytest
import trio
from mcp import Client
from mcp.shared.exceptions import MCPError

from e2a_gateway.api.v1.parsed_view import MAX_TEXT_BYTES
from e2a_gateway.app import RunningGateway
from e2a_gateway.mcp.bounds import MAX_BODY_BYTES, MAX_QUOTED_BYTES
from e2a_gateway.mcp.mail_tools import POLL_INTERVAL_SECONDS
from e2a_gateway.mcp.tiers import RUNTIME_TOOLS
from e2a_gateway.mcp.tools import TOOLS
from tests.conftest import Account, agent_path
from tests.delivery_support import (
    create_agent,
    mail,
    smtp_send,
    store_with_conversation,
    wait_until,
)
from tests.mcp_support import call, failure
from tests.test_mcp_names import TRANSPORTS, opener


async def not_for_agent_keys(client: Client, name: str, arguments: dict[str, Any]) -> None:
    """Calling account tool `name` with an agent key: there is no such tool for it."""
    with pytest.raises(MCPError) as refused:
        await client.call_tool(name, arguments)
    assert f"unknown tool {name!r} for an agent-scoped API key" in str(refused.value)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_trash_restore_and_conversation_of_a_message(
    transport: str, running: RunningGateway, make_account: Any
) -> None:
    account: Account = await make_account(f"trash-{transport}@example.com")
    agent = await create_agent(account, f"trash-{transport}")
    conversation_id = f"conv-{transport}"
    first = await store_with_conversation(running.gateway, agent, conversation_id, subject="Hi")
    message_id = await store_with_conversation(
        running.gateway, agent, conversation_id, subject="Keep me"
    )
    async with opener(transport, running)(account.key, agent) as client:
        other = await store_with_conversation(running.gateway, agent, "conv-other", subject="X")
        first_page = await call(client, "list_conversations", {"limit": 1})
        assert [c["id"] for c in first_page["conversations"]] == ["conv-other"]
        second_page = await call(
            client, "list_conversations", {"limit": 1, "cursor": first_page["next_cursor"]}
        )
        assert [c["id"] for c in second_page["conversations"]] == [conversation_id]
        assert "next_cursor" not in second_page
        forged = await failure(client, "list_conversations", {"cursor": "bm9wZQ.bm9wZQ"})
        assert forged["code"] == "invalid_cursor" and forged["status"] == 400

        labelled = await call(
            client,
            "update_message_labels",
            {"message_id": other, "add_labels": ["urgent", "later"], "remove_labels": ["later"]},
        )
        assert labelled == {"message_id": other, "labels": ["urgent"]}
        reserved = await failure(
            client, "update_message_labels", {"message_id": other, "add_labels": ["e2a:x"]}
        )
        assert reserved["code"] == "invalid_request" and reserved["status"] in (400, 422)

        thread = await call(client, "get_conversation", {"conversation_id": conversation_id})
        assert thread["id"] == conversation_id and thread["message_count"] == 2
        assert [m["id"] for m in thread["messages"]] == [first, message_id]
        assert thread["latest_subject"] == "Keep me"

        refused = await failure(client, "delete_message", {"message_id": message_id})
        assert refused["code"] == "invalid_request" and "confirm" in refused["message"]
        deleted = await call(client, "delete_message", {"message_id": message_id, "confirm": True})
        assert deleted == {"deleted": True, "id": message_id}
        thread = await call(client, "get_conversation", {"conversation_id": conversation_id})
        assert [m["id"] for m in thread["messages"]] == [first]

        restored = await call(client, "restore_message", {"message_id": message_id})
        assert restored["id"] == message_id and restored["subject"] == "Keep me"
        again = await failure(client, "restore_message", {"message_id": message_id})
        assert again["code"] == "not_in_trash" and again["status"] == 409
        thread = await call(client, "get_conversation", {"conversation_id": conversation_id})
        assert [m["id"] for m in thread["messages"]] == [first, message_id]

        unknown = await failure(
            client,
            "get_conversation",
            {"conversation_id": conversation_id, "email": "nobody@agents.test"},
        )
        assert unknown["code"] == "not_found" and unknown["status"] == 404
        assert unknown["retryable"] is False


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_long_conversation_comes_a_page_at_a_time(
    transport: str, running: RunningGateway, make_account: Any
) -> None:
    """get_conversation shows a thread's first 50 messages unless asked for another limit,
    with `next_cursor` while more remain: a long thread never comes back whole."""
    account: Account = await make_account(f"long-thread-{transport}@example.com")
    agent = await create_agent(account, f"long-thread-{transport}")
    subjects = [f"#{number}" for number in range(61)]
    for subject in subjects:
        await store_with_conversation(running.gateway, agent, "conv-long", subject=subject)
    async with opener(transport, running)(account.key, agent) as client:
        first = await call(client, "get_conversation", {"conversation_id": "conv-long"})
        assert [m["subject"] for m in first["messages"]] == subjects[:50]
        assert first["message_count"] == 61
        rest = await call(
            client,
            "get_conversation",
            {"conversation_id": "conv-long", "cursor": first["next_cursor"]},
        )
        assert [m["subject"] for m in rest["messages"]] == subjects[50:]
        assert "next_cursor" not in rest
        one = await call(client, "get_conversation", {"conversation_id": "conv-long", "limit": 1})
        assert [m["subject"] for m in one["messages"]] == subjects[:1] and one["next_cursor"]
        forged = await failure(
            client, "get_conversation", {"conversation_id": "conv-long", "cursor": "bm9wZQ.bm9wZQ"}
        )
        assert forged["code"] == "invalid_cursor" and forged["status"] == 400


ATTACHED = (
    "From: Alice <alice@example.org>\r\nTo: {to}\r\nSubject: Scan\r\nMIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
    "Attached.\r\n--b\r\nContent-Type: application/pdf\r\n"
    "Content-Disposition: attachment; filename=scan.pdf\r\n"
    "Content-Transfer-Encoding: base64\r\n\r\n{data}\r\n--b--\r\n"
)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_restored_message_is_answered_without_its_raw_bytes(
    transport: str, running: RunningGateway, make_account: Any
) -> None:
    """restore_message answers the message with its attachments as metadata, never its raw
    MIME: a restored mail with a large attachment does not flood the model's context."""
    account: Account = await make_account(f"restore-raw-{transport}@example.com")
    agent = await create_agent(account, f"restore-raw-{transport}")
    data = base64.encodebytes(b"%PDF" + b"\x00" * 300_000).decode().replace("\n", "\r\n")
    await smtp_send(
        running.addresses.smtp_port, [agent], ATTACHED.format(to=agent, data=data).encode()
    )
    async with opener(transport, running)(account.key, agent) as client:

        async def arrived() -> bool:
            return bool((await call(client, "list_messages", {}))["messages"])

        await wait_until(arrived)
        [row] = (await call(client, "list_messages", {}))["messages"]
        message_id = row["message_id"]
        await call(client, "delete_message", {"message_id": message_id, "confirm": True})
        restored = await call(client, "restore_message", {"message_id": message_id})
    assert restored["id"] == message_id and restored["subject"] == "Scan"
    assert "raw_message" not in restored
    [attachment] = restored["attachments"]
    assert attachment["filename"] == "scan.pdf" and attachment["size_bytes"] == 300_004
    assert len(json.dumps(restored)) < 20_000


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_get_message_cuts_a_long_body(
    transport: str, running: RunningGateway, make_account: Any
) -> None:
    """A mail whose text and HTML run to 600 KB each: get_message answers text, HTML,
    reply_text and the quoted passages cut to MAX_BODY_BYTES together, an equal share each,
    and says so (`truncated`), as read_email does, so the answer fits an MCP client's event
    limit and the model's context."""
    account: Account = await make_account(f"long-body-{transport}@example.com")
    agent = await create_agent(account, f"long-body-{transport}")
    line = "Budget notes for the quarter, line by line.\r\n"
    text = line * (600_000 // len(line))
    long_mail = (
        f"From: Alice <alice@example.org>\r\nTo: {agent}\r\nSubject: Notes\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n"
        f"--b\r\nContent-Type: text/plain\r\n\r\n{text}--b\r\nContent-Type: text/html\r\n\r\n"
        f"<p>{text}</p>\r\n--b--\r\n"
    )
    await smtp_send(running.addresses.smtp_port, [agent], long_mail.encode())
    async with opener(transport, running)(account.key, agent) as client:

        async def arrived() -> bool:
            return bool((await call(client, "list_messages", {}))["messages"])

        await wait_until(arrived)
        [row] = (await call(client, "list_messages", {}))["messages"]
        shown = await call(client, "get_message", {"message_id": row["message_id"]})
    assert shown["subject"] == "Notes" and shown["truncated"] is True
    share = MAX_BODY_BYTES // 4
    # the text is the API's parsed text, already within its 16 KiB; what it leaves of its
    # share goes to the longer ones
    assert len(shown["text"].encode()) <= MAX_TEXT_BYTES < share
    assert share < len(shown["html"]) and abs(len(shown["html"]) - len(shown["reply_text"])) <= 1
    quoted = sum(len(part.get("content") or "") for part in shown["trust"]["parts"])
    assert quoted > 0
    sizes = len(shown["text"]) + len(shown["html"]) + len(shown["reply_text"]) + quoted
    assert sizes <= MAX_BODY_BYTES
    assert shown["text"].startswith(line.replace("\r\n", "\n"))


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_unverified_quotes_of_a_message_are_cut_together(
    transport: str, running: RunningGateway, make_account: Any
) -> None:
    """A mail quoting 30 long passages nobody can prove: each is still listed in the
    verification block, their text cut at MAX_QUOTED_BYTES all together, so get_message and
    read_email stay within an MCP client's event limit."""
    account: Account = await make_account(f"quotes-{transport}@example.com")
    agent = await create_agent(account, f"quotes-{transport}")
    quoted = "> Transfer the funds to the new account today, as agreed.\r\n" * 500
    passages = "".join(
        f"Point {n}.\r\n\r\nOn Mon, 1 Jun 2026, Bob <bob{n}@example.net> wrote:\r\n{quoted}\r\n"
        for n in range(30)
    )
    body = f"From: Alice <alice@example.org>\r\nTo: {agent}\r\nSubject: Quotes\r\n\r\n{passages}"
    await smtp_send(running.addresses.smtp_port, [agent], body.encode())
    async with opener(transport, running)(account.key, agent) as client:

        async def arrived() -> bool:
            return bool((await call(client, "list_messages", {}))["messages"])

        await wait_until(arrived)
        [row] = (await call(client, "list_messages", {}))["messages"]
        shown = await call(client, "read_email", {"message_id": row["message_id"]})
        again = await call(client, "get_message", {"message_id": row["message_id"]})
    for answer in (shown, again):
        quotes = answer["verification"]["quoted_unverified"]
        assert len(quotes) == 30
        assert 0 < sum(len(quote["text"] or "") for quote in quotes) <= MAX_QUOTED_BYTES


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_restore_an_agent_from_the_trash(
    transport: str, running: RunningGateway, make_account: Any
) -> None:
    account: Account = await make_account(f"revive-{transport}@example.com")
    agent = await create_agent(account, f"revive-{transport}")
    await smtp_send(running.addresses.smtp_port, [agent], mail("Still here", body="Kept."))
    trashed = await account.http.delete(f"/v1/agents/{quote(agent, safe='')}?confirm=DELETE")
    assert trashed.status_code == 200, trashed.text
    async with opener(transport, running)(account.key) as client:
        assert (await call(client, "list_agents"))["agents"] == []
        restored = await call(client, "restore_agent", {"email": agent})
        assert restored["email"] == agent
        assert [a["email"] for a in (await call(client, "list_agents"))["agents"]] == [agent]
        [kept] = (await call(client, "list_messages", {"read_status": "all", "email": agent}))[
            "messages"
        ]
        assert kept["subject"] == "Still here"

        live = await failure(client, "restore_agent", {"email": agent})
        assert live["code"] == "not_in_trash" and live["status"] == 409
        unknown = await failure(client, "restore_agent", {"email": "nobody@agents.test"})
        assert unknown["code"] == "not_found" and unknown["status"] == 404


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_events_listed_read_and_redelivered(
    transport: str, running: RunningGateway, make_account: Any
) -> None:
    account: Account = await make_account(f"events-{transport}@example.com")
    agent = await create_agent(account, f"events-{transport}")
    for subject in ("One", "Two"):
        await smtp_send(running.addresses.smtp_port, [agent], mail(subject, body="Hi."))
    async with opener(transport, running)(account.key, agent) as client:
        received = await call(client, "list_events", {"type": "email.received"})
        assert len(received["events"]) == 2 and "next_cursor" not in received
        assert {event["agent_email"] for event in received["events"]} == {agent}
        walked, cursor = [], None
        for _ in range(3):
            arguments: dict[str, Any] = {"type": "email.received", "limit": 1}
            if cursor:
                arguments["cursor"] = cursor
            page = await call(client, "list_events", arguments)
            walked += [event["id"] for event in page["events"]]
            cursor = page.get("next_cursor")
            if cursor is None:
                break
        assert walked == [event["id"] for event in received["events"]]

        newest = received["events"][0]
        event = await call(client, "get_event", {"event_id": newest["id"]})
        assert event["id"] == newest["id"] and event["type"] == "email.received"
        assert event["status"] == "no_match"
        assert event["delivery_status"]["matched_webhooks"] == 0
        again = await call(client, "redeliver_event", {"event_id": newest["id"]})
        assert again == {"event_id": newest["id"], "deliveries": [], "status": "scheduled"}

        unknown = await failure(client, "get_event", {"event_id": "evt_unknown"})
        assert unknown["code"] == "not_found" and unknown["status"] == 404
        stranger = {"agent_email": "nobody@agents.test"}
        assert await call(client, "list_events", stranger) == {"events": []}
        malformed = await failure(client, "list_events", {"since": "yesterday"})
        assert malformed["code"] == "invalid_filter" and malformed["status"] == 400


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_webhooks_created_changed_tested_and_deleted(
    transport: str, running: RunningGateway, make_account: Any
) -> None:
    account: Account = await make_account(f"hooks-{transport}@example.com")
    agent = await create_agent(account, f"hooks-{transport}")
    url = "https://hooks.example.com/hook"
    async with opener(transport, running)(account.key, agent) as client:
        created = await call(
            client,
            "create_webhook",
            {"url": url, "events": ["email.received"], "filters": {"agent_emails": [agent]}},
        )
        hook = created["id"]
        assert created["signing_secret"].startswith("whsec_")
        assert created["events"] == ["email.received"]
        second = await call(client, "create_webhook", {"url": url, "events": ["email.sent"]})
        listed = await call(client, "list_webhooks", {"limit": 1})
        assert [w["id"] for w in listed["webhooks"]] == [second["id"]]  # newest first
        rest = await call(client, "list_webhooks", {"cursor": listed["next_cursor"]})
        assert [w["id"] for w in rest["webhooks"]] == [hook]
        shown = await call(client, "get_webhook", {"id": hook})
        assert shown["id"] == hook and "signing_secret" not in shown

        changed = await call(
            client, "update_webhook", {"id": hook, "description": "ops", "enabled": False}
        )
        assert changed["description"] == "ops" and changed["enabled"] is False
        rotated = await call(client, "rotate_webhook_secret", {"id": hook})
        assert rotated["signing_secret"].startswith("whsec_")
        assert rotated["signing_secret"] != created["signing_secret"]
        paused = await failure(client, "test_webhook", {"id": hook})
        assert paused["code"] == "webhook_disabled" and paused["status"] == 409
        await call(client, "update_webhook", {"id": hook, "enabled": True})
        tested = await call(client, "test_webhook", {"id": hook})
        deliveries = await call(client, "list_webhook_deliveries", {"id": hook})
        assert [d["id"] for d in deliveries["deliveries"]] == [tested["delivery_id"]]

        bad = await failure(client, "create_webhook", {"url": url, "events": ["email.nope"]})
        assert bad["code"] == "invalid_request" and bad["status"] == 422
        assert await call(client, "delete_webhook", {"id": hook, "confirm": True}) == {
            "deleted": True,
            "id": hook,
        }
        gone = await failure(client, "get_webhook", {"id": hook})
        assert gone["code"] == "not_found" and gone["status"] == 404


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_agent_keys_protection_and_what_an_agent_key_may_not_do(
    transport: str, running: RunningGateway, make_account: Any
) -> None:
    account: Account = await make_account(f"guard-{transport}@example.com")
    agent = await create_agent(account, f"guard-{transport}")
    async with opener(transport, running)(account.key, agent) as client:
        before = await call(client, "get_protection", {})
        assert before["outbound"]["gate"]["action"] == "flag"
        # e2a's semantics: an open gate matches every recipient, so `review` holds nothing
        still_open = await call(client, "update_protection", {"outbound_gate_action": "review"})
        assert still_open["outbound"]["gate"] == {
            "policy": "open",
            "allowlist": [],
            "action": "review",
        }
        legacy = await account.http.get(f"/api/v1/agents/{quote(agent, safe='')}")
        assert legacy.json()["hitl_enabled"] is False
        every_send = {
            "outbound_gate_policy": "allowlist",
            "outbound_gate_allowlist": [],
            "outbound_gate_action": "review",
            "holds_on_expiry": "reject",
        }
        after = await call(client, "update_protection", every_send)
        assert after["outbound"]["gate"] == {
            "policy": "allowlist",
            "allowlist": [],
            "action": "review",
        }
        assert after["holds"]["on_expiry"] == "reject"
        assert after["inbound"] == before["inbound"]
        assert await call(client, "get_protection", {"email": agent}) == after
        refused = await failure(client, "update_protection", {"inbound_scan_sensitivity": "high"})
        assert refused["code"] == "not_implemented" and refused["status"] == 501
        assert refused["retryable"] is False  # by its code first, as e2a's SDK decides
        unknown = await failure(client, "get_protection", {"email": "nobody@agents.test"})
        assert unknown["code"] == "not_found" and unknown["status"] == 404

        issued = await call(client, "create_api_key", {"agent_email": agent, "name": "bot"})
        assert issued["key"] and issued["name"] == "bot"
        no_agent = await failure(client, "create_api_key", {"agent_email": "nobody@agents.test"})
        assert no_agent["code"] == "not_found" and no_agent["status"] == 404

    # An agent key sees e2a's runtime tier only (tiers.ts): the account tools are neither
    # listed nor callable for it (and the operations refuse them anyway, 403).
    async with opener(transport, running)(issued["key"], agent) as bound:
        listed = {tool.name for tool in (await bound.list_tools()).tools}
        assert listed == set(RUNTIME_TOOLS)
        assert {"list_agents", "list_reviews", "get_protection", "create_api_key"} - listed
        for name, arguments in (
            ("list_reviews", {}),
            ("get_protection", {}),
            ("create_api_key", {"agent_email": agent}),
            ("list_agents", {}),
        ):
            await not_for_agent_keys(bound, name, arguments)
        assert (await call(bound, "whoami"))["agent_email"] == agent
    async with opener(transport, running)(account.key, agent) as client:
        assert len((await client.list_tools()).tools) == len(TOOLS)  # an account key: all


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_forward_a_message_and_read_its_lifecycle(
    transport: str, running: RunningGateway, make_account: Any
) -> None:
    account: Account = await make_account(f"fwd-{transport}@example.com")
    agent = await create_agent(account, f"fwd-{transport}")
    peer = await create_agent(account, f"fwd-peer-{transport}")
    await smtp_send(running.addresses.smtp_port, [agent], mail("Quarterly", body="Numbers."))
    note = {"filename": "note.txt", "content_type": "text/plain", "data": "bm90ZQo="}
    async with opener(transport, running)(account.key, agent) as client:
        [received] = (await call(client, "list_messages", {"read_status": "all"}))["messages"]
        original = received["message_id"]
        forwarded = await call(
            client,
            "forward_message",
            {"message_id": original, "to": [peer], "text": "FYI", "attachments": [note]},
        )
        assert forwarded["status"] == "accepted" and forwarded["sent_as"] == "own_address"
        assert forwarded["message_id"] != original

        async def arrived() -> bool:
            page = await call(client, "list_messages", {"email": peer, "read_status": "all"})
            return bool(page["messages"])

        await wait_until(arrived)
        [copy] = (await call(client, "list_messages", {"email": peer, "read_status": "all"}))[
            "messages"
        ]
        assert copy["subject"] == "Fwd: Quarterly"
        shown = await call(client, "get_message", {"email": peer, "message_id": copy["message_id"]})
        # the text is the forwarder's own words (the API's parsed text, as on e2a); the mail
        # it carries is a quoted part of the trust map, marked forwarded
        assert shown["text"] == "FYI"
        (carried,) = [part for part in shown["trust"]["parts"] if part["kind"] == "quoted"]
        assert carried["attribution"]["forwarded"] is True
        assert carried["attribution"]["subject"] == "Quarterly"
        assert carried["content"].endswith("Numbers.")
        assert [a["filename"] for a in shown["attachments"]] == ["note.txt"]

        # The received message's lifecycle, one transition a page, then all at once.
        walked, cursor = [], None
        for _ in range(5):
            arguments: dict[str, Any] = {"message_id": original, "limit": 1}
            if cursor:
                arguments["cursor"] = cursor
            page = await call(client, "get_message_lifecycle", arguments)
            assert set(page) <= {"transitions", "next_cursor"}
            walked += page["transitions"]
            cursor = page.get("next_cursor")
            if cursor is None:
                break
        whole = await call(client, "get_message_lifecycle", {"message_id": original})
        assert whole == {"transitions": walked}
        assert walked[0]["stage"] == "accepted" and walked[0]["direction"] == "inbound"
        assert walked[0]["reason_code"] == "acceptance.inbound_smtp"
        assert all(step["message_id"] == original for step in walked)
        sent = await call(client, "get_message_lifecycle", {"message_id": forwarded["message_id"]})
        assert sent["transitions"][0]["reason_code"] == "acceptance.outbound_api"

        # What cannot be forwarded or read.
        own = await failure(
            client, "forward_message", {"message_id": forwarded["message_id"], "to": [peer]}
        )
        assert own["code"] == "conflict" and own["status"] == 409
        unknown = await failure(client, "forward_message", {"message_id": "msg_nope", "to": [peer]})
        assert unknown["code"] == "not_found" and unknown["status"] == 404
        forged = await failure(
            client, "get_message_lifecycle", {"message_id": original, "cursor": "bm9wZQ.bm9wZQ"}
        )
        assert forged["code"] == "invalid_cursor" and forged["status"] == 400
        # A retry with the same idempotency key answers the first forward again.
        retried = {"message_id": original, "to": [peer], "idempotency_key": f"fwd-{original}"}
        first = await call(client, "forward_message", retried)
        assert await call(client, "forward_message", retried) == first
        assert first["message_id"] != forwarded["message_id"]
        other = await failure(client, "forward_message", retried | {"text": "Other"})
        assert other["code"] == "idempotency_key_reuse" and other["status"] == 422
        bad = await failure(client, "forward_message", retried | {"idempotency_key": "ü"})
        assert bad["code"] == "invalid_request" and "idempotency_key" in bad["message"]
        issued = await call(client, "create_api_key", {"agent_email": peer, "name": "peer"})

    # Another account reaches neither the message nor the agent holding it.
    stranger: Account = await make_account(f"fwd-stranger-{transport}@example.com")
    elsewhere = await create_agent(stranger, f"fwd-elsewhere-{transport}")
    async with opener(transport, running)(stranger.key, elsewhere) as client:
        for email in (elsewhere, agent):
            for name, arguments in (
                ("forward_message", {"message_id": original, "to": [elsewhere]}),
                ("get_message_lifecycle", {"message_id": original}),
            ):
                refused = await failure(client, name, arguments | {"email": email})
                assert refused["code"] == "not_found" and refused["status"] == 404, (name, email)

    # A key bound to the peer may not act as the agent, nor reach its message through itself.
    async with opener(transport, running)(issued["key"], peer) as bound:
        for name, arguments in (
            ("forward_message", {"message_id": original, "to": [peer]}),
            ("get_message_lifecycle", {"message_id": original}),
        ):
            forbidden = await failure(bound, name, arguments | {"email": agent})
            assert forbidden["code"] == "forbidden" and forbidden["status"] == 403, name
            missing = await failure(bound, name, arguments)
            assert missing["code"] == "not_found" and missing["status"] == 404, name

        async def both_forwards_arrived() -> bool:
            page = await call(bound, "list_messages", {"read_status": "all"})
            return len(page["messages"]) == 2

        await wait_until(both_forwards_arrived)  # the retried forward was sent once
        own_copy = (await call(bound, "list_messages", {"read_status": "all"}))["messages"][0]
        mine = await call(bound, "get_message_lifecycle", {"message_id": own_copy["message_id"]})
        assert mine["transitions"][0]["direction"] == "inbound"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_whoami_names_the_scope_of_the_key(
    transport: str, running: RunningGateway, make_account: Any
) -> None:
    account: Account = await make_account(f"who-{transport}@example.com")
    agent = await create_agent(account, f"who-{transport}")
    other = await create_agent(account, f"who-other-{transport}")
    await smtp_send(running.addresses.smtp_port, [agent], mail("For the bound one", body="Hi."))
    async with opener(transport, running)(account.key, agent) as client:
        me = await call(client, "whoami")
        # e2a's whoami: /v1's getAccount; an account key names no agent, whatever the default.
        assert me["scope"] == "account" and "agent_email" not in me
        assert me["default_agent"] == agent and me["user"]["email"] == account.email
        assert me["plan_code"] and me["limits"] and "usage" in me and "upgrade_url" in me
        issued = await call(client, "create_api_key", {"agent_email": agent, "name": "bound"})
    async with opener(transport, running)(account.key) as client:
        me = await call(client, "whoami")
        assert me["scope"] == "account" and "agent_email" not in me  # two agents, no default
        assert "default_agent" not in me

    # An agent key: its scope and its agent, which is also every tool's default agent.
    async with opener(transport, running)(issued["key"]) as bound:
        me = await call(bound, "whoami")
        assert me["scope"] == "agent" and me["agent_email"] == agent
        assert me["user"]["email"] == account.email
        assert me["gateway"]["shared_domain"] == "agents.test"
        [message] = (await call(bound, "list_messages"))["messages"]
        assert message["subject"] == "For the bound one"
    async with opener(transport, running)(issued["key"], other) as bound:
        me = await call(bound, "whoami")  # the bound agent, whatever default was configured
        assert me["scope"] == "agent" and me["agent_email"] == agent


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_delete_agent_moves_it_to_the_trash_and_restore_agent_brings_it_back(
    transport: str, running: RunningGateway, make_account: Any
) -> None:
    account: Account = await make_account(f"bin-{transport}@example.com")
    agent = await create_agent(account, f"bin-{transport}")
    keeper = await create_agent(account, f"bin-keeper-{transport}")
    for subject in ("One", "Two"):
        await smtp_send(running.addresses.smtp_port, [agent], mail(subject, body="Kept."))
    async with opener(transport, running)(account.key, keeper) as client:
        unconfirmed = await failure(client, "delete_agent", {"email": agent})
        assert unconfirmed["code"] == "invalid_request" and "confirm" in unconfirmed["message"]
        deleted = await call(client, "delete_agent", {"email": agent, "confirm": True})
        assert deleted == {"deleted": True, "email": agent, "messages_deleted": 0}
        assert [a["email"] for a in (await call(client, "list_agents"))["agents"]] == [keeper]
        gone = await failure(client, "get_agent", {"email": agent})
        assert gone["code"] == "not_found" and gone["status"] == 404
        again = await failure(client, "delete_agent", {"email": agent, "confirm": True})
        assert again["code"] == "not_found" and again["status"] == 404
        trash = await call(client, "list_agents", {"deleted": True})
        assert [a["email"] for a in trash["agents"]] == [agent]
        assert trash["agents"][0]["deleted_at"] and "next_cursor" not in trash

        restored = await call(client, "restore_agent", {"email": agent})
        assert restored["email"] == agent and "deleted_at" not in restored
        assert (await call(client, "list_agents", {"deleted": True}))["agents"] == []
        listed = await call(client, "list_messages", {"read_status": "all", "email": agent})
        assert [m["subject"] for m in listed["messages"]] == ["One", "Two"]
        issued = await call(client, "create_api_key", {"agent_email": agent})

    async with opener(transport, running)(issued["key"]) as bound:
        await not_for_agent_keys(bound, "delete_agent", {"confirm": True})
    assert (await account.http.get(f"/v1/agents/{quote(agent, safe='')}")).status_code == 200


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_send_and_reply_are_sent_once_per_idempotency_key_with_their_reply_to(
    transport: str, running: RunningGateway, make_account: Any
) -> None:
    account: Account = await make_account(f"once-{transport}@example.com")
    agent = await create_agent(account, f"once-{transport}")
    peer = await create_agent(account, f"once-peer-{transport}")
    desk = await create_agent(account, f"once-desk-{transport}")

    async def inbox(client: Any, email: str) -> list[dict[str, Any]]:
        page = await call(client, "list_messages", {"email": email, "read_status": "all"})
        return list(page["messages"])

    async def reply_to_of(email: str, message_id: str) -> Any:
        path = f"/v1/agents/{quote(email, safe='')}/messages/{message_id}"
        shown = await account.http.get(path)
        assert shown.status_code == 200, shown.text
        return shown.json()["reply_to"]

    async with opener(transport, running)(account.key, agent) as client:
        draft = {
            "email": peer,
            "to": [agent],
            "subject": "Once",
            "text": "Sent once.",
            "reply_to": desk,
            "idempotency_key": f"send-{transport}",
        }
        first = await call(client, "send_message", draft)
        assert first["status"] == "accepted" and first["message_id"].startswith("msg_")
        assert await call(client, "send_message", draft) == first
        other = await failure(client, "send_message", draft | {"text": "Sent twice."})
        assert other["code"] == "idempotency_key_reuse" and other["status"] == 422
        bad = await failure(client, "send_message", draft | {"idempotency_key": "ü"})
        assert bad["code"] == "invalid_request" and "idempotency_key" in bad["message"]

        async def sent_arrived() -> bool:
            return bool(await inbox(client, agent))

        await wait_until(sent_arrived)
        [received] = await inbox(client, agent)
        assert received["subject"] == "Once"
        assert await reply_to_of(agent, received["message_id"]) == [desk]

        answer = {
            "message_id": received["message_id"],
            "text": "Answered once.",
            "reply_to": peer,
            "idempotency_key": received["message_id"],
        }
        replied = await call(client, "reply_to_message", answer)
        assert replied["status"] == "accepted" and replied["message_id"] != first["message_id"]
        assert await call(client, "reply_to_message", answer) == replied
        other = await failure(client, "reply_to_message", answer | {"text": "Twice."})
        assert other["code"] == "idempotency_key_reuse" and other["status"] == 422

        async def reply_arrived() -> bool:
            return bool(await inbox(client, desk))  # the Reply-To of the mail answered

        await wait_until(reply_arrived)
        [reply] = await inbox(client, desk)
        assert reply["subject"] == "Re: Once"
        assert await reply_to_of(desk, reply["message_id"]) == [peer]
        assert len(await inbox(client, agent)) == 1  # each retry answered, none sent again
        assert await inbox(client, peer) == []


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_send_email_is_sent_once_per_idempotency_key(
    transport: str, running: RunningGateway, make_account: Any
) -> None:
    """e2a's first name for sending takes its idempotency_key as send_message does."""
    account: Account = await make_account(f"email-once-{transport}@example.com")
    agent = await create_agent(account, f"email-once-{transport}")
    peer = await create_agent(account, f"email-once-peer-{transport}")
    async with opener(transport, running)(account.key, agent) as client:
        draft = {
            "to": [peer],
            "subject": "Once",
            "body": "Sent once.",
            "html_body": "<p>Sent once.</p>",
            "agent_email": agent,
            "idempotency_key": f"email-{transport}",
        }
        first = await call(client, "send_email", draft)
        assert first["status"] == "sent" and first["method"] == "local"
        assert await call(client, "send_email", draft) == first
        other = await failure(client, "send_email", draft | {"body": "Sent twice."})
        assert other["code"] == "idempotency_key_reuse" and other["status"] == 422
        bad = await failure(client, "send_email", draft | {"idempotency_key": "ü"})
        assert bad["code"] == "invalid_request" and "idempotency_key" in bad["message"]
        fresh = await call(client, "send_email", draft | {"idempotency_key": "another"})
        assert fresh["message_id"] != first["message_id"]
        page = await call(client, "list_messages", {"email": peer, "read_status": "all"})
        assert len(page["messages"]) == 2  # the first key's send once, the second key's


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_approval_is_made_once_per_idempotency_key(
    transport: str, running: RunningGateway, make_account: Any
) -> None:
    account: Account = await make_account(f"approve-once-{transport}@example.com")
    agent = await create_agent(account, f"approve-once-{transport}")
    peer = await create_agent(account, f"approve-peer-{transport}")
    held = await account.http.put(agent_path(agent), json={"hitl_enabled": True})
    assert held.status_code == 200, held.text
    async with opener(transport, running)(account.key, agent) as client:
        drafts = [
            await call(client, "send_message", {"to": [peer], "subject": s, "text": "Draft."})
            for s in ("First", "Second")
        ]
        assert [draft["status"] for draft in drafts] == ["pending_review"] * 2
        for name, draft, edits in (
            ("approve_review", drafts[0], {"subject": "First (edited)"}),
            ("approve_pending_message", drafts[1], {"body_text": "Edited."}),
        ):
            approval = {"message_id": draft["message_id"], "idempotency_key": draft["message_id"]}
            approved = await call(client, name, approval | edits)
            assert approved["status"] == "accepted", name
            assert approved["message_id"] == draft["message_id"], name
            assert await call(client, name, approval | edits) == approved, name
            reused = await failure(client, name, approval)
            assert reused["code"] == "idempotency_key_reuse" and reused["status"] == 422, name
            again = await failure(client, name, {"message_id": draft["message_id"]})
            assert again["code"] == "message_not_pending" and again["status"] == 409, name

        async def delivered() -> bool:
            page = await call(client, "list_messages", {"email": peer, "read_status": "all"})
            return len(page["messages"]) == 2

        await wait_until(delivered)
        page = await call(client, "list_messages", {"email": peer, "read_status": "all"})
        assert sorted(m["subject"] for m in page["messages"]) == ["First (edited)", "Second"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_wait_for_email_reports_progress_and_ends_before_clients_give_up(
    transport: str, running: RunningGateway, make_account: Any
) -> None:
    account: Account = await make_account(f"waiting-{transport}@example.com")
    agent = await create_agent(account, f"waiting-{transport}")
    reported: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        reported.append((progress, total, message))

    async with opener(transport, running)(account.key, agent) as client:
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
        # Most clients give up on a call after 60 s (the TypeScript SDK's default request
        # timeout): the default wait ends well before, so it answers timed_out, not an error.
        assert (
            listed["wait_for_email"].input_schema["properties"]["timeout_seconds"]["default"] < 60
        )
        answer = await client.call_tool(
            "wait_for_email", {"timeout_seconds": 5}, progress_callback=on_progress
        )
    assert not answer.is_error and answer.structured_content == {
        "agent": agent,
        "message": None,
        "timed_out": True,
    }
    # A client that asked for progress hears from the wait while it lasts (and so can keep
    # waiting past its own timeout), each report further on than the last.
    assert len(reported) >= 2, reported
    assert [progress for progress, _, _ in reported] == sorted({p for p, _, _ in reported})
    assert all(total == 5 for _, total, _ in reported)
    assert all(message and agent in message for _, _, message in reported)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_delete_agent_never_guesses_the_agent(
    transport: str, running: RunningGateway, make_account: Any
) -> None:
    account: Account = await make_account(f"no-guess-{transport}@example.com")
    agent = await create_agent(account, f"no-guess-{transport}")
    # The default agent, and the account's only one: still not deleted without being named.
    async with opener(transport, running)(account.key, agent) as client:
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert listed["delete_agent"].input_schema["required"] == ["email", "confirm"]
        refused = await failure(client, "delete_agent", {"confirm": True})
        assert refused["code"] == "invalid_request" and "email" in refused["message"]
        assert [a["email"] for a in (await call(client, "list_agents"))["agents"]] == [agent]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_cancelled_wait_for_email_marks_no_mail_read(
    transport: str, running: RunningGateway, make_account: Any
) -> None:
    account: Account = await make_account(f"cancelling-{transport}@example.com")
    agent = await create_agent(account, f"cancelling-{transport}")
    async with opener(transport, running)(account.key, agent) as client:
        # The client gives up on the wait (the user stopped the model): the SDK sends
        # notifications/cancelled, on a POST of its own over /mcp, which keeps no session.
        with trio.move_on_after(1):
            await client.call_tool("wait_for_email", {"timeout_seconds": 30})
        await smtp_send(running.addresses.smtp_port, [agent], mail("Arrived later", body="Hi."))
        await trio.sleep(3 * POLL_INTERVAL_SECONDS)  # the abandoned wait would have polled
        # The message was not taken by the abandoned wait, read and thrown away: it is
        # still unread, and the next wait returns it.
        [waiting] = (await call(client, "list_messages"))["messages"]
        assert waiting["subject"] == "Arrived later"
        got = await call(client, "wait_for_email", {"timeout_seconds": 5})
        assert got["message"]["subject"] == "Arrived later"
