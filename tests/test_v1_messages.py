"""Messages and conversations on `/v1`, driven with the official SDK `e2a==5.8.1` against a
live gateway: send / reply / forward with Idempotency-Key and `?wait=sent`, held mail, the
listing with each of e2a's filters, one message with its authentication evidence (mail received
over real SMTP, DNS from a local server), attachments, labels, the trash, conversations, and
ownership (another account's message is not found)."""

from __future__ import annotations

import base64
import email.policy
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio

from e2a_gateway.api.v1.messages import _disposition
from e2a_gateway.app import RunningGateway, run_gateway
from e2a_gateway.attachments import Attachment
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.storage.base import MessageFilters
from e2a_gateway.workers.retention import RetentionWorker
from tests.conftest import Account, agent_path, make_settings
from tests.delivery_support import (
    accept,
    create_agent,
    mail,
    open_account,
    store_with_conversation,
)
from tests.dns_server import serve_dns
from tests.sdk_v1 import error, run_sdk, sdk5_python, value
from tests.test_authentication_e2e import SIGNER, ZONE, send

pytestmark = pytest.mark.slow

__all__ = ["sdk5_python"]  # a fixture


def v1_path(agent: str, suffix: str = "") -> str:
    return f"/v1/agents/{quote(agent, safe='')}/messages{suffix}"


async def hitl_on(account: Account, agent: str) -> None:
    response = await account.http.put(
        f"/api/v1/agents/{quote(agent, safe='')}", json={"hitl_enabled": True}
    )
    assert response.status_code == 200, response.text


async def test_send_reply_forward_with_idempotency_keys(
    running: RunningGateway, make_account: Any, sdk5_python: Path
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    pal = await create_agent(alice, "pal")
    held = await create_agent(alice, "held")
    await hitl_on(alice, held)
    url = running.addresses.http_url
    hello = {"to": [pal], "cc": [], "subject": "Hello pal", "text": "Hi pal.\nSecond line."}
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()  # scheduled sending (beta)
    steps: list[dict[str, Any]] = [
        {
            "do": "messages.send",
            "args": [bot, hello],
            "kwargs": {"idempotency_key": "send-1", "wait": "sent"},
            "as": "sent",
        },
        {
            "do": "messages.send",
            "args": [bot, hello],
            "kwargs": {"idempotency_key": "send-1", "wait": "sent"},
        },
        {
            "do": "messages.send",
            "args": [bot, {**hello, "subject": "Another"}],
            "kwargs": {"idempotency_key": "send-1", "wait": "sent"},
        },
        {"do": "messages.list", "args": [pal], "as": "inbox"},
        {
            "do": "messages.reply",
            "args": [pal, "${inbox.0.id}", {"text": "Thanks!", "reply_to": "alt@agents.test"}],
            "kwargs": {"idempotency_key": "reply-1", "quote_history": True, "wait": "sent"},
            "as": "replied",
        },
        {
            "do": "messages.reply",
            "args": [pal, "${inbox.0.id}", {"text": "Thanks!", "reply_to": "alt@agents.test"}],
            "kwargs": {"idempotency_key": "reply-1", "quote_history": True, "wait": "sent"},
        },
        {"do": "messages.list", "args": [bot], "as": "bot_inbox"},
        {"do": "messages.get", "args": [bot, "${bot_inbox.0.id}"]},
        {
            "do": "messages.forward",
            "args": [bot, "${bot_inbox.0.id}", {"to": [pal], "text": "FYI"}],
            "kwargs": {"idempotency_key": "fwd-1", "wait": "sent"},
            "as": "forwarded",
        },
        {
            "do": "messages.forward",
            "args": [bot, "${bot_inbox.0.id}", {"to": [pal], "text": "FYI, again"}],
            "kwargs": {"idempotency_key": "fwd-1"},
        },
        {
            "do": "messages.reply",
            "args": [bot, "${sent.message_id}", {"text": "Following up", "reply_all": True}],
            "kwargs": {"wait": "sent"},
        },
        {"do": "messages.list", "args": [pal], "kwargs": {"sort": "asc"}},
        {"do": "messages.send", "args": [held, {"to": [pal], "subject": "Wait", "text": "x"}]},
        {
            "do": "messages.send",
            "args": [
                bot,
                {"to": [pal], "subject": "Later", "text": "x", "send_at": later},
            ],
        },
        {"do": "messages.send", "args": [bot, {"to": [pal], "subject": "No wait", "text": "x"}]},
    ]
    made = await run_sdk(sdk5_python, url, {"default": alice.key}, steps)
    sent = value(made[0], "SendResultView")
    assert sent["status"] == "sent" and sent["method"] == "loopback"
    assert value(made[1], "SendResultView") == sent  # replayed, not sent twice
    error(made[2], "E2AIdempotencyError", "idempotency_key_reuse", 422)
    (received,) = value(made[3])
    assert received["subject"] == "Hello pal" and received["direction"] == "inbound"
    replied = value(made[4], "SendResultView")
    assert replied["status"] == "sent"
    assert value(made[5], "SendResultView") == replied
    (answer,) = value(made[6])
    assert answer["subject"] == "Re: Hello pal" and answer["header_from"] == pal
    full = value(made[7], "MessageView")
    assert full["reply_to"] == ["alt@agents.test"]
    assert full["parsed"]["text"] == "Thanks!"  # the agent's words: the quote left out
    assert full["body"]["text"].startswith("Thanks!\n\nOn ")
    assert "> Hi pal.\n> Second line." in full["body"]["text"]
    assert full["authentication"] is None  # delivered here, not over SMTP
    assert full["conversation_id"] == received["conversation_id"] != ""
    assert value(made[8], "SendResultView")["status"] == "sent"
    error(made[9], "E2AIdempotencyError", "idempotency_key_reuse", 422)
    assert value(made[10], "SendResultView")["status"] == "sent"
    subjects = [message["subject"] for message in value(made[11])]
    # pal answered the first without opening it: as on e2a, a reply leaves it unread
    assert subjects == ["Hello pal", "Fwd: Re: Hello pal", "Re: Hello pal"]
    pending = value(made[12], "SendResultView")
    assert pending["status"] == "pending_review" and "approval_expires_at" in pending
    scheduled = value(made[13], "SendResultView")
    assert scheduled["status"] == "scheduled"
    assert abs(
        datetime.fromisoformat(scheduled["scheduled_at"]) - datetime.fromisoformat(later)
    ) < (timedelta(seconds=1))
    assert value(made[14], "SendResultView")["status"] in ("accepted", "sent")

    forwarded = await alice.http.get(v1_path(pal), params={"subject_contains": "fwd:"})
    (fwd,) = forwarded.json()["items"]
    shown = (await alice.http.get(v1_path(pal, f"/{fwd['id']}"))).json()
    assert shown["parsed"]["text"] == "FYI"  # the forwarder's words, as on e2a
    assert shown["body"]["text"].startswith("FYI\n\n---------- Forwarded message ----------")
    assert "From: pal@agents.test" in shown["body"]["text"]
    outbox = (await alice.http.get(v1_path(held), params={"direction": "outbound"})).json()
    (waiting,) = outbox["items"]
    assert waiting["review_status"] == "pending_review" and waiting["direction"] == "outbound"
    trash = await alice.http.delete(v1_path(held, f"/{waiting['id']}"))
    assert trash.status_code == 409 and trash.json()["error"]["code"] == "message_held"


async def test_list_with_each_filter(
    running: RunningGateway, make_account: Any, sdk5_python: Path
) -> None:
    gateway = running.gateway
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    ids = {}
    for subject, sender in (("Invoice 1", "alice@example.org"), ("Lunch", "bob@example.net")):
        data = f"From: {sender}\r\nTo: {bot}\r\nSubject: {subject}\r\n\r\nbody\r\n".encode()
        ids[subject] = await accept(gateway, [bot], data)
    ids["Thread"] = await store_with_conversation(gateway, bot, "conv-1", subject="Thread")
    elsewhere = await gateway.storage.filed_message("usr_other", bot, ids["Lunch"], mark_read=False)
    assert elsewhere is None  # ownership is decided inside the query
    labelled = await alice.http.patch(
        v1_path(bot, f"/{ids['Lunch']}"), json={"add_labels": ["urgent", "food"]}
    )
    assert labelled.json() == {"message_id": ids["Lunch"], "labels": ["food", "urgent"]}
    await alice.http.get(v1_path(bot, f"/{ids['Invoice 1']}"))  # now read
    url = running.addresses.http_url
    listing = [
        ({}, ["Thread", "Lunch"]),  # inbound, unread, newest first
        ({"read_status": "all"}, ["Thread", "Lunch", "Invoice 1"]),
        ({"read_status": "read"}, ["Invoice 1"]),
        ({"read_status": "all", "sort": "asc"}, ["Invoice 1", "Lunch", "Thread"]),
        ({"read_status": "all", "from_": "BOB@"}, ["Lunch"]),
        ({"read_status": "all", "subject_contains": "invoice"}, ["Invoice 1"]),
        ({"read_status": "all", "conversation_id": "conv-1"}, ["Thread"]),
        ({"read_status": "all", "labels": ["urgent", "food"]}, ["Lunch"]),
        ({"read_status": "all", "labels": ["urgent", "other"]}, []),
        ({"direction": "outbound"}, []),
        ({"direction": "all", "since": "2000-01-01T00:00:00Z"}, ["Thread", "Lunch", "Invoice 1"]),
        ({"direction": "all", "until": "2000-01-01T00:00:00+02:00"}, []),
        ({"deleted": True}, []),
        ({"read_status": "all", "limit": 1}, ["Thread", "Lunch", "Invoice 1"]),
    ]
    steps: list[dict[str, Any]] = [
        {"do": "messages.list", "args": [bot], "kwargs": kwargs} for kwargs, _ in listing
    ]
    steps.append({"do": "messages.list", "args": [bot], "kwargs": {"filter": "label:urgent"}})
    steps.append({"do": "messages.list", "args": [bot], "kwargs": {"since": "yesterday"}})
    made = await run_sdk(sdk5_python, url, {"default": alice.key}, steps)
    for (kwargs, expected), result in zip(listing, made, strict=False):
        found = [item["subject"] for item in value(result)]
        assert found == expected, (kwargs, found)
    refused = error(made[-2], "E2AValidationError", "invalid_request", 422)
    assert "filter" in str(refused["details"])
    error(made[-1], "E2AValidationError", "invalid_filter", 400)  # e2a's code for a bad time

    for bound, moment, count in (
        ("since", "0001-01-01T00:00:00+01:00", 3),  # before year 1 in UTC: everything
        ("until", "0001-01-01T00:00:00Z", 0),
        ("since", "9999-12-31T23:59:59-14:00", 0),  # after year 9999 in UTC: nothing
        ("until", "9999-12-31T23:59:59.5-14:00", 3),
    ):
        edge = await alice.http.get(v1_path(bot), params={"read_status": "all", bound: moment})
        assert edge.status_code == 200, edge.text
        assert len(edge.json()["items"]) == count, (bound, moment)
    loose_times = (
        "2026-01-31T12:00Z",
        "2026-01-31",
        "20260131T120000Z",
        "2026-01-31T12:00:00",
        "2026-01-31T12:00:00+02:75",  # no such offset: not read as +03:15
    )
    for loose in loose_times:
        refused = await alice.http.get(v1_path(bot), params={"since": loose})
        assert refused.status_code == 400, (loose, refused.text)
        assert refused.json()["error"]["message"].startswith("since must be an RFC 3339 time")
    unknown = await alice.http.get(v1_path(bot), params={"status": "unread"})
    assert unknown.status_code == 422
    assert unknown.json()["error"]["details"]["fields"][0]["location"] == "query.status"
    page = (await alice.http.get(v1_path(bot), params={"limit": 1})).json()
    other = await alice.http.get(
        v1_path(bot), params={"limit": 1, "cursor": page["next_cursor"], "sort": "asc"}
    )
    assert other.status_code == 400 and other.json()["error"]["code"] == "invalid_cursor"
    assert MessageFilters().directions == ("inbound", "outbound")


def _mail_with_attachments(sender: str, subject: str, big: int) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "bot@agents.test"
    message["Subject"] = subject
    message["Message-ID"] = "<with-attachments@example.org>"
    message.set_content("See attached.")
    message.add_attachment(b"a,b\n1,2\n", maintype="text", subtype="csv", filename="r.csv")
    message.add_attachment(
        b"\0" * big, maintype="application", subtype="octet-stream", filename="big.bin"
    )
    return message.as_bytes(policy=email.policy.SMTP)


@pytest.fixture
async def dns_gateway(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[RunningGateway]:
    """A gateway whose DNS is a local server holding the authentication tests' zone."""
    port: int = await nursery.start(serve_dns, ZONE)
    settings = make_settings(tmp_path, dns={"nameservers": [f"127.0.0.1:{port}"]})
    running: RunningGateway = await nursery.start(partial(run_gateway, settings))
    yield running


async def test_get_with_authentication_and_attachments_over_smtp(
    dns_gateway: RunningGateway, sdk5_python: Path
) -> None:
    running = dns_gateway
    owner = await open_account(running.gateway, running.addresses.http_url, "owner@example.com")
    bot = await create_agent(owner, "bot")
    big = 300 * 1024
    data = SIGNER.sign(_mail_with_attachments("Alice <alice@example.org>", "Signed", big))
    await trio.to_thread.run_sync(send, running.addresses.smtp_port, "alice@example.org", data)
    made = await run_sdk(
        sdk5_python,
        running.addresses.http_url,
        {"default": owner.key},
        [
            {"do": "messages.list", "args": [bot], "as": "inbox"},
            {"do": "messages.get", "args": [bot, "${inbox.0.id}"]},
            {
                "do": "messages.get_attachment",
                "args": [bot, "${inbox.0.id}", 0],
                "kwargs": {"inline": True},
            },
            {"do": "messages.get_attachment", "args": [bot, "${inbox.0.id}", 1]},
            {
                "do": "messages.get_attachment",
                "args": [bot, "${inbox.0.id}", 1],
                "kwargs": {"inline": True},
            },
            {"do": "messages.get_attachment", "args": [bot, "${inbox.0.id}", 2]},
            {"do": "messages.get_lifecycle", "args": [bot, "${inbox.0.id}"]},
        ],
    )
    (summary,) = value(made[0])
    assert summary["verified_domain"] == "example.org" and summary["size_bytes"] > big
    full = value(made[1], "MessageView")
    assert (full["header_from"], full["envelope_from"]) == (
        "alice@example.org",
        "alice@example.org",
    )
    assert full["verified_domain"] == "example.org"
    auth = full["authentication"]
    assert auth["spf"] == {"status": "pass", "domain": "example.org", "aligned": True}
    assert auth["dkim"] == [
        {"status": "pass", "domain": "example.org", "selector": "mail", "aligned": True}
    ]
    assert auth["dmarc"] == {
        "status": "pass",
        "domain": "example.org",
        "policy": "reject",
        "aligned_by": ["spf", "dkim"],
    }
    assert [(a["index"], a["filename"], a["size_bytes"]) for a in full["attachments"]] == [
        (0, "r.csv", 8),
        (1, "big.bin", big),
    ]
    assert base64.b64decode(full["raw_message"]).endswith(data)
    small = value(made[2], "AttachmentView")
    assert base64.b64decode(small["data"]) == b"a,b\n1,2\n"
    link = value(made[3], "AttachmentView")
    assert "data" not in link and link["size_bytes"] == big
    error(made[4], "E2AError", "attachment_too_large", 413)
    error(made[5], "E2ANotFoundError", "attachment_not_found", 404)
    stages = [(t["stage"], t["reason_code"]) for t in value(made[6])["items"]]
    assert stages == [
        ("accepted", "acceptance.inbound_smtp"),
        ("authentication", "authentication.dmarc_pass"),
    ]

    public, _, path = link["download_url"].partition("/v1/attachments/")
    assert public == "http://localhost:8080"  # http.public_url, unset in tests
    async with httpx.AsyncClient(base_url=running.addresses.http_url, timeout=10) as anonymous:
        download = await anonymous.get(f"/v1/attachments/{path}")
        assert download.status_code == 200 and download.content == b"\0" * big
        assert download.headers["content-disposition"] == 'attachment; filename="big.bin"'
        assert download.headers["x-content-type-options"] == "nosniff"
        forged = await anonymous.get(f"/v1/attachments/{path[:-4]}AAAA")
        assert forged.status_code == 403 and forged.json()["error"]["code"] == "forbidden"
    # Mail received carries its reply text and trust map (docs/replies.md) on /v1 too.
    read = (await owner.http.get(f"/v1/agents/{bot}/messages/{full['id']}")).json()
    assert read["reply_text"] == "See attached."
    sender = read["trust"]["sender"]
    assert (sender["address"], sender["verified"], sender["basis"]) == (
        "alice@example.org",
        True,
        "dmarc=pass",
    )
    assert [part["kind"] for part in read["trust"]["parts"]] == ["authored"]
    assert read["trust"]["quoted_unverified"] is False
    await owner.http.aclose()


async def test_labels_trash_restore_and_conversations(
    running: RunningGateway, make_account: Any, sdk5_python: Path
) -> None:
    gateway = running.gateway
    alice: Account = await make_account("alice@example.com")
    mallory: Account = await make_account("mallory@example.com")
    bot = await create_agent(alice, "bot")
    await create_agent(mallory, "evil")
    first = await store_with_conversation(gateway, bot, "conv-7", subject="Start")
    second = await store_with_conversation(gateway, bot, "conv-7", subject="Re: Start")
    await store_with_conversation(gateway, bot, "conv-8", subject="Other")
    url = running.addresses.http_url
    made = await run_sdk(
        sdk5_python,
        url,
        {"default": alice.key, "mallory": mallory.key},
        [
            {"do": "messages.update_labels", "args": [bot, first, {"add_labels": ["todo", "x"]}]},
            {"do": "messages.update_labels", "args": [bot, first, {"remove_labels": ["x"]}]},
            {"do": "messages.update_labels", "args": [bot, first, {"add_labels": ["e2a:spam"]}]},
            {"do": "messages.update_labels", "args": [bot, first, {"add_labels": ["Bad Label"]}]},
            {"do": "messages.delete", "args": [bot, second]},
            {"do": "messages.list", "args": [bot], "kwargs": {"read_status": "all"}},
            {"do": "messages.list", "args": [bot], "kwargs": {"deleted": True}},
            {"do": "messages.get", "args": [bot, second]},
            {"do": "conversations.get", "args": [bot, "conv-7"]},
            {"do": "messages.reply", "args": [bot, second, {"text": "to the trash?"}]},
            {"do": "messages.restore", "args": [bot, second]},
            {"do": "messages.restore", "args": [bot, second]},
            {"do": "conversations.list", "args": [bot]},
            {"do": "conversations.list", "args": [bot], "kwargs": {"limit": 1}},
            {"do": "conversations.get", "args": [bot, "conv-7"]},
            {"do": "conversations.get", "args": [bot, "nope"]},
            {"do": "messages.get", "args": [bot, first], "key": "mallory"},
            {"do": "messages.list", "args": [bot], "key": "mallory"},
            {"do": "conversations.list", "args": [bot], "key": "mallory"},
            {"do": "messages.delete", "args": [bot, first], "kwargs": {"permanent": True}},
            {"do": "messages.delete", "args": [bot, first]},
            {"do": "messages.delete", "args": [bot, first], "kwargs": {"permanent": True}},
            {"do": "messages.get", "args": [bot, first]},
        ],
    )
    assert value(made[0], "UpdateMessageResultView") == {
        "message_id": first,
        "labels": ["todo", "x"],
    }
    assert value(made[1])["labels"] == ["todo"]
    error(made[2], "E2AValidationError", "invalid_request", 400)
    error(made[3], "E2AValidationError", "invalid_request", 400)
    assert value(made[4], "DeleteMessageResult") == {"deleted": True, "id": second}
    assert [m["subject"] for m in value(made[5])] == ["Other", "Start"]
    (trashed,) = value(made[6])
    assert trashed["id"] == second and "deleted_at" in trashed
    assert value(made[7], "MessageView")["deleted_at"] == trashed["deleted_at"]
    assert value(made[8], "ConversationDetailView")["message_count"] == 1
    error(made[9], "E2ANotFoundError", "not_found", 404)
    restored = value(made[10], "MessageView")
    assert restored["id"] == second and "deleted_at" not in restored
    error(made[11], "E2AConflictError", "not_in_trash", 409)
    conversations = value(made[12])
    assert [c["id"] for c in conversations] == ["conv-8", "conv-7"]
    assert conversations[1]["message_count"] == 2 and conversations[1]["inbound_count"] == 2
    assert conversations[1]["has_unread"] is True
    assert [c["id"] for c in value(made[13])] == ["conv-8", "conv-7"]  # pages of one
    detail = value(made[14], "ConversationDetailView")
    assert [m["subject"] for m in detail["messages"]] == ["Start", "Re: Start"]
    assert detail["labels"] == ["todo"] and detail["latest_subject"] == "Re: Start"
    error(made[15], "E2ANotFoundError", "not_found", 404)
    for refused in made[16:19]:  # another account's agent: not found, never its mail
        error(refused, "E2ANotFoundError", "not_found", 404)
    error(made[19], "E2AConflictError", "not_in_trash", 409)
    value(made[20], "DeleteMessageResult")
    value(made[21], "DeleteMessageResult")
    error(made[22], "E2ANotFoundError", "not_found", 404)


async def test_the_trash_is_emptied_30_days_after_deletion(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    settings = make_settings(tmp_path, retention={"days": 365})
    running: RunningGateway = await nursery.start(
        partial(run_gateway, settings, resolver=FixtureResolver())
    )
    gateway = running.gateway
    owner = await open_account(gateway, running.addresses.http_url, "owner@example.com")
    bot = await create_agent(owner, "bot")
    kept = await store_with_conversation(gateway, bot, None, subject="Kept")
    trashed = await store_with_conversation(gateway, bot, None, subject="Trashed")
    deleted = await owner.http.delete(v1_path(bot, f"/{trashed}"))
    assert deleted.status_code == 200, deleted.text
    now = time.time()
    worker = RetentionWorker(gateway, pause=0)
    assert (await worker.sweep(now + 29 * 86_400)).trashed_messages == 0
    assert (await owner.http.get(v1_path(bot, f"/{trashed}"))).status_code == 200
    swept = await worker.sweep(now + 31 * 86_400)
    assert (swept.messages, swept.trashed_messages) == (0, 1)
    assert (await owner.http.get(v1_path(bot, f"/{trashed}"))).status_code == 404
    assert (await owner.http.get(v1_path(bot, f"/{kept}"))).status_code == 200
    await owner.http.aclose()


async def test_an_agent_key_reaches_its_own_agents_mail_only(
    running: RunningGateway, make_account: Any, sdk5_python: Path
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    pal = await create_agent(alice, "pal")
    mine = await store_with_conversation(running.gateway, bot, None, subject="Mine")
    theirs = await store_with_conversation(running.gateway, pal, None, subject="Theirs")
    created = await alice.http.post(
        "/v1/account/api-keys", json={"name": "bot", "scope": "agent", "agent_email": bot}
    )
    assert created.status_code == 201, created.text
    made = await run_sdk(
        sdk5_python,
        running.addresses.http_url,
        {"default": created.json()["key"]},
        [
            {"do": "messages.list", "args": [bot]},
            {"do": "messages.list", "args": [pal]},
            {"do": "messages.get", "args": [pal, theirs]},
            {"do": "messages.send", "args": [pal, {"to": [bot], "subject": "As pal", "text": "x"}]},
            {"do": "conversations.list", "args": [pal]},
            {"do": "messages.delete", "args": [bot, mine]},
            {"do": "messages.delete", "args": [bot, mine], "kwargs": {"permanent": True}},
        ],
    )
    assert [m["subject"] for m in value(made[0])] == ["Mine"]
    for refused in made[1:5]:
        found = error(refused, "E2APermissionError", "forbidden", 403)
        assert bot in found["message"]
    value(made[5], "DeleteMessageResult")
    error(made[6], "E2APermissionError", "forbidden", 403)  # deleting for good: account keys


async def test_a_nul_character_is_refused_before_the_database(
    running: RunningGateway, make_account: Any
) -> None:
    """PostgreSQL cannot hold or compare text with NUL: such a filter, id or body is refused
    (or names nothing), never a 500."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    http = alice.http
    listed = await http.get(v1_path(bot), params={"subject_contains": "a\x00b"})
    assert listed.status_code == 400, listed.text
    assert listed.json()["error"]["code"] == "invalid_request"
    for method, path, body in (
        ("GET", v1_path(bot, "/msg_%00x"), None),
        ("PATCH", v1_path(bot, "/msg_%00x"), {"add_labels": ["a"]}),
        ("DELETE", v1_path(bot, "/msg_%00x"), None),
        ("POST", v1_path(bot, "/msg_%00x/restore"), None),
        ("POST", v1_path(bot, "/msg_%00x/reply"), {"text": "hi"}),
        ("GET", f"/v1/agents/{quote(bot, safe='')}/conversations/c%00", None),
    ):
        answer = await http.request(method, path, json=body)
        assert answer.status_code == 404, (method, path, answer.text)
    sent = await http.post(v1_path(bot), json={"to": [bot], "subject": "s", "text": "a\x00b"})
    assert sent.status_code == 400, sent.text
    assert "NUL" in sent.json()["error"]["message"]


async def test_head_of_a_message_leaves_it_unread(
    running: RunningGateway, make_account: Any
) -> None:
    """HEAD answers as GET does, and changes nothing: the mail stays unread until a GET."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    message_id = await accept(running.gateway, [bot], mail("Unread still"))

    async def unread() -> list[str]:
        listed = await alice.http.get(v1_path(bot), params={"read_status": "unread"})
        assert listed.status_code == 200, listed.text
        return [item["id"] for item in listed.json()["items"]]

    for path in (v1_path(bot, f"/{message_id}"), agent_path(bot, f"/messages/{message_id}")):
        looked = await alice.http.head(path)
        assert looked.status_code == 200, path
        assert await unread() == [message_id], path
    assert (await alice.http.head(v1_path(bot, "/msg_nowhere"))).status_code == 404
    assert (await alice.http.get(v1_path(bot, f"/{message_id}"))).status_code == 200
    assert await unread() == []


def conversation_path(agent: str, conversation_id: str) -> str:
    return f"/v1/agents/{quote(agent, safe='')}/conversations/{quote(conversation_id, safe='')}"


async def test_get_conversation_lists_every_message_and_checks_the_id(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    for number in range(205):  # more than any page: the detail lists them all, as e2a does
        await store_with_conversation(running.gateway, bot, "long-thread", subject=f"#{number}")
    await store_with_conversation(running.gateway, bot, "team/thread", subject="Slashed")
    long = await alice.http.get(conversation_path(bot, "long-thread"))
    assert long.status_code == 200, long.text
    detail = long.json()
    assert detail["message_count"] == len(detail["messages"]) == 205
    assert detail["messages"][-1]["subject"] == "#204"  # the last is the latest
    slashed = await alice.http.get(conversation_path(bot, "team/thread"))
    assert slashed.status_code == 200, slashed.text
    assert [item["subject"] for item in slashed.json()["messages"]] == ["Slashed"]
    for bad in ("x" * 201, "a\rb", "a\nb", "\nX-Injected: 1", "a\r\n"):
        refused = await alice.http.get(conversation_path(bot, bad))
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["code"] == "invalid_request"
    stranger = await alice.http.get(conversation_path("nobody@agents.test", "x" * 201))
    assert stranger.status_code == 404  # the agent is looked up first, as e2a does


async def test_get_conversation_pages_its_messages_when_asked(
    running: RunningGateway, make_account: Any
) -> None:
    """With `limit` (or a cursor) getConversation answers one page of the thread's messages,
    oldest first, and `next_cursor` until the last; the counts, participants and labels stay
    those of the whole thread. A cursor of another thread is refused, never read."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    for number in range(205):
        await store_with_conversation(running.gateway, bot, "long-thread", subject=f"#{number}")
    await store_with_conversation(running.gateway, bot, "other-thread", subject="Other")
    whole = (await alice.http.get(conversation_path(bot, "long-thread"))).json()
    assert len(whole["messages"]) == 205 and whole["next_cursor"] is None

    seen: list[str] = []
    pages = 0
    params: dict[str, Any] = {"limit": 100}
    while True:
        answer = await alice.http.get(conversation_path(bot, "long-thread"), params=params)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        pages += 1
        assert len(page["messages"]) <= 100
        assert page["message_count"] == 205
        assert page["participants"] == whole["participants"]
        seen += [item["subject"] for item in page["messages"]]
        if page["next_cursor"] is None:
            break
        params = {"cursor": page["next_cursor"], "limit": 100}
    assert pages == 3
    assert seen == [item["subject"] for item in whole["messages"]]

    first = await alice.http.get(conversation_path(bot, "long-thread"), params={"limit": 1})
    cursor = first.json()["next_cursor"]
    elsewhere = await alice.http.get(
        conversation_path(bot, "other-thread"), params={"cursor": cursor}
    )
    assert elsewhere.status_code == 400, elsewhere.text
    assert elsewhere.json()["error"]["code"] == "invalid_cursor"
    for bad in ({"limit": 0}, {"limit": 101}, {"page": 2}):
        refused = await alice.http.get(conversation_path(bot, "long-thread"), params=bad)
        assert refused.status_code in (400, 422), (bad, refused.text)


@pytest.mark.parametrize(
    ("filename", "header"),
    [
        ("big.bin", 'attachment; filename="big.bin"'),
        (None, "attachment"),
        (
            'née "q".txt',
            "attachment; filename=\"n_e _q_.txt\"; filename*=UTF-8''n%C3%A9e%20%22q%22.txt",
        ),
        ('a "b".txt', "attachment; filename=\"a _b_.txt\"; filename*=UTF-8''a%20%22b%22.txt"),
        ("\u200b", "attachment"),
        ("a\r\nb.txt", 'attachment; filename="ab.txt"'),
    ],
)
def test_a_download_names_its_file_in_utf8_and_ascii(filename: str | None, header: str) -> None:
    meta = Attachment(filename, "text/plain", 1, None)
    assert _disposition(meta) == header


async def test_a_reply_to_mail_never_sent_waits_only_while_it_may_still_be_sent(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    held = await create_agent(alice, "held")
    await hitl_on(alice, held)
    draft = {"to": ["carol@example.org"], "subject": "Plan", "text": "Draft."}
    pending = await alice.http.post(v1_path(held), json=draft)
    assert pending.json()["status"] == "pending_review", pending.text
    pending_id = pending.json()["message_id"]
    early = await alice.http.post(v1_path(held, f"/{pending_id}/reply"), json={"text": "More."})
    assert early.status_code == 409, early.text
    assert early.json()["error"]["code"] == "message_not_yet_delivered"
    rejected = await alice.http.post(f"/v1/reviews/{pending_id}/reject", json={})
    assert rejected.status_code == 200, rejected.text
    # no relay is configured: mail beyond the deployment fails at once, and never goes out
    failed = await alice.http.post(v1_path(bot, "?wait=sent"), json=draft)
    assert failed.json()["status"] == "failed", failed.text

    for agent, original in ((held, pending_id), (bot, failed.json()["message_id"])):
        reply = await alice.http.post(v1_path(agent, f"/{original}/reply"), json={"text": "Again."})
        assert reply.status_code in (200, 202), reply.text
        stored = await running.gateway.storage.get_outbound(None, reply.json()["message_id"])
        assert stored is not None and stored.to == ["carol@example.org"]
        assert stored.subject == "Re: Plan" and stored.in_reply_to is None
