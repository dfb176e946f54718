"""Upgrading e2a in place: a database an older e2a made and filled migrates to the newest schema
with every account, agent, key, message, approval, webhook and event kept, meaning what it
meant. Each older schema is made by the same migration runner stopped at its version
(`migrated_to`), filled with plain SQL as that version's e2a wrote its rows, migrated, and read
back through the Storage API (and the HTTP API of a gateway started on it), on each backend."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio

from e2a_gateway.app import RunningGateway, run_gateway
from e2a_gateway.clock import format_timestamp
from e2a_gateway.events import derived_event_id
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.signing.credentials import hash_api_key
from e2a_gateway.storage import open_storage
from e2a_gateway.storage.base import EventFilter, Storage
from e2a_gateway.storage.migrations import load_migrations
from tests.conftest import agent_path, make_settings
from tests.test_storage import (  # noqa: F401  (storage_url is a fixture)
    migrated_to,
    run_sql,
    storage_url,
)

pytestmark = pytest.mark.backend_independent

EPOCH = float(int(time.time()) - 3600)
"""When the older e2a stored it all: recent, so a gateway's retention sweep keeps it."""
NOW = format_timestamp(EPOCH)
USER = "usr_upgrade"
KEY = "e2a_" + "5e" * 32
"""The API key the older e2a gave; the key it hashed is what a client sends."""
AGENTS = {
    "a@agents.test": "agt_aaaaaaaaaaaaaaaaaaaaaaaa",
    "b@agents.test": "agt_bbbbbbbbbbbbbbbbbbbbbbbb",
}
RAW_ONE = (
    b"From: Ann <ann@example.org>\r\nTo: a@agents.test\r\nSubject: for a alone\r\n"
    b"Message-ID: <one@example.org>\r\n\r\nHello a, \xe2\x82\xac10.\r\n"
)
RAW_BOTH = (
    b"From: Ann <ann@example.org>\r\nTo: a@agents.test, b@agents.test\r\nSubject: for both\r\n"
    b"Message-ID: <both@example.org>\r\n\r\nHello both.\r\n"
)
RAW_HELD = b"From: eve@elsewhere.test\r\nTo: a@agents.test\r\nSubject: held\r\n\r\nLet me in.\r\n"
INBOUND = {  # message id: agent, raw bytes, conversation, the copy of a message sent to both
    "msg_one": ("a@agents.test", RAW_ONE, "cnv_one", None),
    "msg_both_a": ("a@agents.test", RAW_BOTH, "cnv_both_a", "both"),
    "msg_both_b": ("b@agents.test", RAW_BOTH, "cnv_both_b", "both"),
}

RECEIVED_EVENTS = {
    message_id: derived_event_id(message_id, "email.received") for message_id in INBOUND
}
"""The id of each message's `email.received`, derived from the message's as e2a derives it: a
further copy's, folded into the first copy's row (33), is found by it (`event_copies`)."""


def _versions_that_move_rows() -> list[int]:
    """The oldest schema; each one just before a migration that rewrites or moves existing
    rows (8: agent ids, 9: raw bytes once, 27: outbound gates, 38: hold TTLs) or changes
    how rows are laid out (32: shared message contents, 33: folded copy events); the one
    before the newest."""
    newest = load_migrations("sqlite")[-1].version
    return sorted({1, 7, 8, 26, 31, 32, 37, newest - 1})


def _columns(url: str, table: str) -> set[str]:
    """The columns `table` has at `url` (none when it does not exist yet)."""
    if url.startswith("sqlite"):
        query = "SELECT name FROM pragma_table_info(?)"
    else:
        query = (
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = ? AND table_schema = current_schema()"
        )
    return {row[0] for row in run_sql(url, query, table)}


def _insert(url: str, table: str, row: dict[str, Any]) -> None:
    """Insert the values of `row` whose columns `table` has in this schema."""
    columns = _columns(url, table)
    kept = {name: value for name, value in row.items() if name in columns}
    marks = ", ".join("?" for _ in kept)
    run_sql(url, f"INSERT INTO {table} ({', '.join(kept)}) VALUES ({marks})", *kept.values())


def _envelope(event_id: str, message_id: str, agent: str, conversation: str) -> bytes:
    return orjson.dumps(
        {
            "type": "email.received",
            "id": event_id,
            "schema_version": "1",
            "created_at": NOW,
            "data": {
                "message_id": message_id,
                "agent_email": agent,
                "conversation_id": conversation,
                "direction": "inbound",
                "subject": "mail",
            },
        }
    )


def fill_older_database(url: str) -> None:
    """What an older e2a stored for one account, in the layout of the database's schema: a
    key, two agents (one holding its sends for approval), a message for one agent, one for
    both (a whole row each before migration 32, one shared content after), a message its
    gate holds, a send held for approval and one sent, a webhook and the events."""
    messages = _columns(url, "messages")
    _insert(url, "users", {"id": USER, "email": "owner@example.com", "created_at": NOW})
    _insert(
        url,
        "api_keys",
        {"id": "apk_old", "user_id": USER, "name": "ci", "key_hash": hash_api_key(KEY),
         "key_prefix": KEY[:12], "created_at": NOW, "scope": "account"},
    )  # fmt: skip
    for email, agent_id in AGENTS.items():
        _insert(
            url,
            "agents",
            {"email": email, "user_id": USER, "domain": "agents.test", "name": email[0],
             "agent_mode": "local" if email.startswith("a") else "cloud",
             "webhook_url": None if email.startswith("a") else "https://b.example.com/mail",
             "hitl_enabled": email.startswith("a"),
             "hitl_ttl_seconds": 3600, "created_at": NOW, "id": agent_id},
        )  # fmt: skip
    shared_content: int | None = None
    for message_id, (agent, raw, conversation, shared) in INBOUND.items():
        digest = hashlib.sha256(raw).hexdigest()
        content = {
            "envelope_from": "ann@example.org", "from_addr": "ann@example.org",
            "to_json": json.dumps([agent] if shared is None else list(AGENTS)),
            "cc_json": "[]", "subject": "for both" if shared else "for a alone",
            "rfc_message_id": "<both@example.org>" if shared else "<one@example.org>",
            "auth_results_json": json.dumps({"spf": "pass", "dkim": "pass"}),
            "client_ip": "192.0.2.1", "helo": "mx.example.org", "received_at": NOW,
        }  # fmt: skip
        own = {"id": message_id, "user_id": USER, "agent_email": agent, "direction": "inbound",
               "conversation_id": conversation, "status": "unread", "auth_headers_json": "{}",
               "created_at": NOW,
               "delivery_status": "pending" if agent.startswith("b") else None}  # fmt: skip
        if "raw_message" in messages:  # before migration 9
            _insert(url, "messages", {**own, **content, "raw_message": raw})
            continue
        if not run_sql(url, "SELECT 1 FROM raw_messages WHERE digest = ?", digest):
            _insert(url, "raw_messages", {"digest": digest, "raw": raw})
        if shared is None or "content_seq" not in messages:  # a whole row
            _insert(url, "messages", {**own, **content, "raw_digest": digest})
            continue
        if shared_content is None:  # since migration 32: the shared content once
            _insert(url, "message_contents", {**content, "raw_digest": digest})
            shared_content = run_sql(url, "SELECT max(seq) FROM message_contents")[0][0]
        empty = dict.fromkeys(
            ("envelope_from", "from_addr", "to_json", "cc_json", "subject",
             "auth_results_json", "received_at"), "",
        )  # fmt: skip
        _insert(url, "messages", {**own, **empty, "content_seq": shared_content})
    if "hold" in messages:  # since migration 22: mail an agent's gate holds for review
        digest = hashlib.sha256(RAW_HELD).hexdigest()
        _insert(url, "raw_messages", {"digest": digest, "raw": RAW_HELD})
        _insert(
            url,
            "messages",
            {"id": "msg_held", "user_id": USER, "agent_email": "a@agents.test",
             "direction": "inbound", "envelope_from": "eve@elsewhere.test",
             "from_addr": "eve@elsewhere.test", "to_json": '["a@agents.test"]', "cc_json": "[]",
             "subject": "held", "conversation_id": "cnv_held", "status": "unread",
             "auth_headers_json": "{}", "auth_results_json": "{}", "received_at": NOW,
             "created_at": NOW, "raw_digest": digest, "hold": "pending_review",
             "hold_expires_at": EPOCH + 86400, "flag_reason": "sender not on the allowlist"},
        )  # fmt: skip
    if "kind" in messages:  # since migration 4: outbound mail
        for message_id, status in (("out_held", "pending_approval"), ("out_sent", "sent")):
            _insert(
                url,
                "messages",
                {"id": message_id, "user_id": USER, "agent_email": "a@agents.test",
                 "direction": "outbound", "envelope_from": "a@agents.test",
                 "from_addr": "a@agents.test", "to_json": '["bob@example.org"]',
                 "cc_json": "[]", "bcc_json": "[]", "subject": f"re {message_id}",
                 "conversation_id": "cnv_one", "in_reply_to": "<one@example.org>",
                 "references_json": '["<one@example.org>"]',
                 "rfc_message_id": f"<{message_id}@agents.test>", "status": status,
                 "auth_headers_json": "{}", "auth_results_json": "{}", "kind": "reply",
                 "body_text": f"body of {message_id}", "body_html": None,
                 "approval_expires_at": EPOCH + 86400 if status == "pending_approval" else None,
                 "method": "smtp" if status == "sent" else None, "received_at": NOW,
                 "created_at": NOW, "created_epoch": EPOCH,
                 "sent_at": NOW if status == "sent" else None,
                 "raw_message": b""},  # outbound mail had no raw bytes before 9 either
            )  # fmt: skip
    jobs = [("webhook", "msg_both_b")]  # the cloud agent's delivery, not yet made
    if "kind" in messages:
        jobs.append(("approval_notice", "out_held"))  # the notice of the held send
    for kind, message_id in jobs:
        _insert(url, "jobs", {"kind": kind, "message_id": message_id, "run_at": EPOCH,
                              "created_at": EPOCH})  # fmt: skip
    if _columns(url, "webhooks"):  # since migration 18: webhooks and the events log
        _insert(
            url,
            "webhooks",
            {"id": "whk_old", "user_id": USER, "url": "https://hooks.example.com/e2a",
             "description": "ops", "events_json": '["email.received"]',
             "filters_json": json.dumps({"agent_emails": [], "conversation_ids": []}),
             "enabled": True, "seed": "seed-of-the-older-e2a", "created_at": NOW},
        )  # fmt: skip
        columns = _columns(url, "events")
        folded = "copies" in columns  # since 33: copies folded in one row
        shared = "body_id" in columns and not folded  # 31, 32: copies share one envelope
        for message_id, (agent, _, conversation, _) in INBOUND.items():
            event_id = RECEIVED_EVENTS[message_id]
            if folded and message_id == "msg_both_b":
                continue  # in msg_both_a's row
            row = {"id": event_id, "user_id": USER, "type": "email.received",
                   "agent_email": agent, "conversation_id": conversation,
                   "message_id": message_id, "created_epoch": EPOCH,
                   "envelope": _envelope(event_id, message_id, agent, conversation)}  # fmt: skip
            if folded and message_id == "msg_both_a":
                row["copies"] = json.dumps(
                    [[RECEIVED_EVENTS["msg_both_b"], "msg_both_b", "b@agents.test", "cnv_both_b"]]
                )
                _insert(
                    url, "event_copies", {"id": RECEIVED_EVENTS["msg_both_b"], "first_id": event_id}
                )
            if shared and message_id == "msg_both_a":  # kept once, by the first's event id
                _insert(url, "event_bodies", {"id": event_id, "user_id": USER,
                                              "created_epoch": EPOCH,
                                              "envelope": row["envelope"]})  # fmt: skip
            if shared and message_id == "msg_both_b":  # made from the first's when read
                row.update(envelope=b"", body_id=RECEIVED_EVENTS["msg_both_a"])
            _insert(url, "events", row)


async def assert_everything_kept(storage: Storage, url: str, version: int) -> None:
    """What `fill_older_database` stored at schema `version` reads back, through the Storage
    API, as it meant then, and what was pending can still be decided."""
    holder = await storage.key_holder(hash_api_key(KEY))
    assert holder is not None and holder.user.id == USER and holder.scope == "account"
    agents = {agent.email: agent for agent in await storage.list_agents(USER)}
    assert set(agents) == set(AGENTS)
    if version >= 8:  # ids given before stay; older agents got distinct ones
        assert {email: agent.id for email, agent in agents.items()} == AGENTS
    assert len({agent.id for agent in agents.values()}) == 2
    assert agents["a@agents.test"].hitl_enabled and not agents["b@agents.test"].hitl_enabled
    assert agents["a@agents.test"].hitl_ttl_seconds == 3600
    assert agents["b@agents.test"].webhook_url == "https://b.example.com/mail"
    if version >= 18:  # before the decisions below log events of their own
        webhook = await storage.get_webhook(USER, "whk_old")
        assert webhook is not None and webhook.enabled
        assert (webhook.url, webhook.events, webhook.seed) == (
            "https://hooks.example.com/e2a",
            ["email.received"],
            "seed-of-the-older-e2a",
        )
        events = await storage.list_events(USER, EventFilter(), 10, None)
        seen = {(event.id, event.message_id, event.agent_email, event.conversation_id)
                for event in events}  # fmt: skip
        assert seen == {
            (RECEIVED_EVENTS[message_id], message_id, agent, conversation)
            for message_id, (agent, _, conversation, _) in INBOUND.items()
        }
        for message_id in INBOUND:
            by_message = await storage.list_events(
                USER, EventFilter(message_id=message_id), 10, None
            )
            assert [event.id for event in by_message] == [RECEIVED_EVENTS[message_id]]
        for event in events:
            envelope = orjson.loads(event.envelope)
            assert envelope["id"] == event.id
            assert envelope["data"]["message_id"] == event.message_id
            assert envelope["data"]["agent_email"] == event.agent_email
            assert envelope["data"]["conversation_id"] == event.conversation_id

    (delivery,) = await storage.claim_webhook_jobs(EPOCH + 1, None, 60, {}, 10)
    assert delivery.message_id == "msg_both_b"
    if version >= 4:
        (notice,) = await storage.claim_jobs("approval_notice", EPOCH + 1, 10, 60)
        assert notice.message_id == "out_held"
    if version < 9:  # identical copies' bytes were merged
        assert run_sql(url, "SELECT count(*) FROM raw_messages") == [(2,)]
    for message_id, (agent, raw, conversation, shared) in INBOUND.items():
        message = await storage.read_inbound(USER, agent, message_id, mark_read=False)
        assert message is not None, (version, message_id)
        assert message.raw_message == raw
        assert message.conversation_id == conversation
        assert (message.status, message.hold, message.from_addr) == (
            "unread",
            None,
            "ann@example.org",
        )
        assert message.subject == ("for both" if shared else "for a alone")
        assert message.to == (list(AGENTS) if shared else [agent])
        assert message.authentication_results == {"spf": "pass", "dkim": "pass"}
        assert message.received_at == NOW
    for agent, expected in (
        ("a@agents.test", ["msg_one", "msg_both_a"]),
        ("b@agents.test", ["msg_both_b"]),
    ):
        page = await storage.list_inbound(USER, agent, "all", 10, None)
        assert [message.id for message in page.messages] == expected, (version, agent)
    opened = await storage.read_inbound(USER, "b@agents.test", "msg_both_b")
    assert opened is not None and opened.status == "read"
    still = await storage.read_inbound(USER, "a@agents.test", "msg_both_a", mark_read=False)
    assert still is not None and still.status == "unread"  # each copy has its own status
    if version >= 22:
        held = await storage.held_inbound(USER, "msg_held")
        assert held is not None and held.raw_message == RAW_HELD
        assert held.flag_reason == "sender not on the allowlist"
        assert await storage.release_inbound(USER, "msg_held", True, EPOCH + 10) is not None
        assert await storage.held_inbound(USER, "msg_held") is None
    if version >= 4:
        sent = await storage.get_outbound(USER, "out_sent")
        assert sent is not None and sent.status == "sent"
        assert (sent.body_text, sent.conversation_id) == ("body of out_sent", "cnv_one")
        assert sent.to == ["bob@example.org"] and sent.references == ["<one@example.org>"]
        pending = await storage.list_outbound(USER, "pending_approval", None)
        assert [message.id for message in pending] == ["out_held"]
        assert pending[0].body_text == "body of out_held"
        assert pending[0].approval_expires_at == EPOCH + 86400
        approved = await storage.review_outbound(USER, "out_held", True, None, None, EPOCH + 5)
        assert approved is not None and approved.status == "queued"
        assert approved.email_message_id == "<out_held@agents.test>"
        (send,) = await storage.claim_jobs("outbound", EPOCH + 10, 10, 60)
        assert send.message_id == "out_held"


@pytest.mark.parametrize("version", _versions_that_move_rows())
async def test_a_database_an_older_e2a_filled_keeps_everything_once_migrated(
    storage_url: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    version: int,
) -> None:
    await migrated_to(storage_url, version, monkeypatch)
    fill_older_database(storage_url)
    newest = load_migrations("sqlite")[-1].version
    store = open_storage(storage_url)
    try:
        assert await store.migrate() == list(range(version + 1, newest + 1))
        await assert_everything_kept(store, storage_url, version)
    finally:
        await store.close()


KILLED_MIGRATOR = """
import sys, time
from pathlib import Path

import trio

import e2a_gateway.storage.postgres
import e2a_gateway.storage.sqlite
from e2a_gateway.signing.credentials import hash_api_key
from e2a_gateway.storage import open_storage

url, marker, stop_at = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
for module in (e2a_gateway.storage.sqlite, e2a_gateway.storage.postgres):
    def record_then_wait(tx, migration, record=module.record_migration):
        record(tx, migration)
        if migration.version == stop_at:  # applied and recorded, not yet committed
            marker.write_text(str(stop_at))
            time.sleep(600)
    module.record_migration = record_then_wait
trio.run(open_storage(url).migrate)
"""


def _schema_version(url: str) -> list[int]:
    return [row[0] for row in run_sql(url, "SELECT version FROM schema_migrations ORDER BY 1")]


def kill_while_applying(url: str, version: int, folder: Path) -> None:
    """Migrate the database at `url` in another process and kill it (SIGKILL) once it has
    applied and recorded migration `version`, before that transaction commits."""
    marker = folder / "applied"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_MIGRATOR, url, str(marker), str(version)], env=env
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), f"the migrator did not get there ({process.poll()})"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)


async def test_a_migration_killed_half_way_leaves_the_older_schema_and_the_next_start_finishes(
    storage_url: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """`e2a migrate` (or a starting `e2a serve`) killed with SIGKILL in the middle of migration
    9, which moves every message's raw bytes to `raw_messages` and drops the column they were
    in: nothing of that step is kept, every row is as the older e2a left it, and the next
    start applies the step whole. SQLite commits each step with its version (8 was kept);
    PostgreSQL commits them all together (the database stays at the 7 it was found at)."""
    await migrated_to(storage_url, 7, monkeypatch)
    fill_older_database(storage_url)
    await trio.to_thread.run_sync(kill_while_applying, storage_url, 9, tmp_path)
    kept = 8 if storage_url.startswith("sqlite") else 7
    assert _schema_version(storage_url) == list(range(1, kept + 1))
    assert "raw_message" in _columns(storage_url, "messages")
    assert not _columns(storage_url, "raw_messages")
    stored = run_sql(storage_url, "SELECT id, raw_message FROM messages ORDER BY id")
    assert [(id_, bytes(raw)) for id_, raw in stored if id_ in INBOUND] == sorted(
        (message_id, raw) for message_id, (_, raw, _, _) in INBOUND.items()
    )
    newest = load_migrations("sqlite")[-1].version
    store = open_storage(storage_url)
    try:
        assert await store.migrate() == list(range(kept + 1, newest + 1))
        await assert_everything_kept(store, storage_url, 7)
    finally:
        await store.close()
    assert _schema_version(storage_url) == list(range(1, newest + 1))


@pytest.mark.parametrize("version", [1, 31])
async def test_a_gateway_started_on_an_older_database_serves_what_it_held(
    storage_url: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    nursery: trio.Nursery,
    version: int,
) -> None:
    """`e2a serve` started on a database an older e2a filled migrates it and answers the key
    that e2a gave: both agents' mail with its bodies, the held send, approvable."""
    await migrated_to(storage_url, version, monkeypatch)
    fill_older_database(storage_url)
    settings = make_settings(tmp_path, database={"url": storage_url})
    running: RunningGateway = await nursery.start(
        partial(run_gateway, settings, resolver=FixtureResolver())
    )
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(
        base_url=running.addresses.http_url, headers=headers, timeout=10
    ) as http:
        for agent, expected in (
            ("a@agents.test", ["msg_one", "msg_both_a"]),
            ("b@agents.test", ["msg_both_b"]),
        ):
            listed = await http.get(agent_path(agent, "/messages"), params={"status": "all"})
            assert listed.status_code == 200, listed.text
            assert [item["message_id"] for item in listed.json()["messages"]] == expected
            for message_id in expected:
                opened = await http.get(agent_path(agent, f"/messages/{message_id}"))
                assert opened.status_code == 200, opened.text
                message = opened.json()
                raw = INBOUND[message_id][1]
                assert base64.b64decode(message["raw_message"]) == raw
                assert message["text_body"] == raw.split(b"\r\n\r\n")[1].decode().replace(
                    "\r\n", "\n"
                )
                assert message["conversation_id"] == INBOUND[message_id][2]
        if version >= 4:
            (pending,) = (await http.get("/api/v1/messages")).json()["messages"]
            assert pending["id"] == "out_held" and pending["body_text"] == "body of out_held"
            approved = await http.post("/api/v1/messages/out_held/approve", json={})
            assert approved.status_code == 200, approved.text


RAW_ATTACHED = (
    b"From: Ann <ann@example.org>\r\nTo: a@agents.test\r\nSubject: the report\r\n"
    b"Message-ID: <attached@example.org>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
    b"--b1\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
    b'--b1\r\nContent-Type: text/csv\r\nContent-Disposition: attachment; filename="r.csv"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(b"a,b\r\n1,2\r\n") + b"\r\n"
    b"--b1--\r\n"
)
"""Mail with an attachment an older e2a stored (before 29 without its attachments' list)."""


def fill_more(url: str) -> None:
    """Beside `fill_older_database`: a message with an attachment, and an outbound send a
    replica that died held the lease of (its lease run out)."""
    digest = hashlib.sha256(RAW_ATTACHED).hexdigest()
    _insert(url, "raw_messages", {"digest": digest, "raw": RAW_ATTACHED})
    _insert(
        url,
        "messages",
        {"id": "msg_attached", "user_id": USER, "agent_email": "a@agents.test",
         "direction": "inbound", "envelope_from": "ann@example.org",
         "from_addr": "ann@example.org", "to_json": '["a@agents.test"]', "cc_json": "[]",
         "subject": "the report", "conversation_id": "cnv_attached", "status": "unread",
         "rfc_message_id": "<attached@example.org>", "auth_headers_json": "{}",
         "auth_results_json": "{}", "received_at": NOW, "created_at": NOW,
         "raw_digest": digest},
    )  # fmt: skip
    _insert(
        url,
        "messages",
        {"id": "out_queued", "user_id": USER, "agent_email": "a@agents.test",
         "direction": "outbound", "envelope_from": "a@agents.test",
         "from_addr": "a@agents.test", "to_json": '["bob@example.org"]', "cc_json": "[]",
         "bcc_json": "[]", "subject": "queued", "conversation_id": "cnv_queued",
         "rfc_message_id": "<out_queued@agents.test>", "status": "queued",
         "auth_headers_json": "{}", "auth_results_json": "{}", "kind": "send",
         "body_text": "on its way", "received_at": NOW, "created_at": NOW,
         "created_epoch": EPOCH},
    )  # fmt: skip
    _insert(
        url,
        "jobs",
        {"kind": "outbound", "message_id": "out_queued", "run_at": EPOCH, "attempts": 1,
         "locked_until": EPOCH + 60, "locked_by": "rep_gone", "created_at": EPOCH},
    )  # fmt: skip


UNTRIED = "SELECT 1 FROM jobs WHERE message_id = 'out_queued' AND attempts = 1"
"""The send a dead replica held the lease of, not tried again yet."""


@pytest.mark.parametrize("version", [20, 31, 33, 40, 46])
async def test_every_v1_read_serves_what_an_older_e2a_stored(
    storage_url: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    nursery: trio.Nursery,
    version: int,
) -> None:
    """A gateway started on a database an older e2a filled answers every read of `/v1` for it:
    each agent's messages and conversations, an attachment (by index and by its link), each
    event listed and fetched by its id (the copies of a message sent to both agents too), the
    account's export; the send a dead replica held the lease of is claimed again."""
    await migrated_to(storage_url, version, monkeypatch)
    fill_older_database(storage_url)
    fill_more(storage_url)
    settings = make_settings(tmp_path, database={"url": storage_url})
    running: RunningGateway = await nursery.start(
        partial(run_gateway, settings, resolver=FixtureResolver())
    )
    expected = {
        "a@agents.test": {"msg_one", "msg_both_a", "msg_attached", "out_held", "out_sent",
                          "out_queued", "msg_held"},
        "b@agents.test": {"msg_both_b"},
    }  # fmt: skip
    if version < 22:
        expected["a@agents.test"].discard("msg_held")
    async with httpx.AsyncClient(
        base_url=running.addresses.http_url,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=10,
    ) as http:

        async def get(path: str, **params: Any) -> Any:
            answer = await http.get(path, params=params)
            assert answer.status_code == 200, (path, answer.text)
            return answer.json()

        for agent, ids in expected.items():
            base = f"/v1/agents/{agent}"
            listed = await get(f"{base}/messages", limit=50, direction="all", read_status="all")
            held = {"msg_held"} & ids  # held for review: in the review queue, not the mailbox
            assert {item["id"] for item in listed["items"]} == ids - held, (agent, listed)
            for message_id in ids - held:
                opened = await get(f"{base}/messages/{message_id}")
                assert opened["id"] == message_id
            threads = await get(f"{base}/conversations")
            for thread in threads["items"]:
                detail = await get(f"{base}/conversations/{thread['id']}")
                assert detail["messages"], detail
        attached = await get("/v1/agents/a@agents.test/messages/msg_attached")
        (attachment,) = attached["attachments"]
        assert attachment["filename"] == "r.csv"
        by_index = await http.get("/v1/agents/a@agents.test/messages/msg_attached/attachments/0")
        assert by_index.status_code == 200, by_index.text
        download = await http.get(httpx.URL(by_index.json()["download_url"]).path)
        assert download.status_code == 200, download.text
        assert download.content == b"a,b\r\n1,2\r\n"
        listed_events = await get("/v1/events", limit=50)
        event_ids = {event["id"] for event in listed_events["items"]}
        assert {RECEIVED_EVENTS[message_id] for message_id in INBOUND} <= event_ids
        for message_id in INBOUND:
            by_message = await get("/v1/events", message_id=message_id)
            assert [event["id"] for event in by_message["items"]] == [RECEIVED_EVENTS[message_id]]
        for event_id in event_ids:
            event = await get(f"/v1/events/{event_id}")
            assert event["id"] == event_id
        exported = await get("/v1/account/export")
        assert exported
        old_export = await get("/api/v1/users/me/export")
        assert old_export
    with trio.fail_after(15):  # the send is tried again (the fixture DNS has no MX for it)
        while run_sql(storage_url, UNTRIED):  # noqa: ASYNC110 (no event for it to set)
            await trio.sleep(0.1)
