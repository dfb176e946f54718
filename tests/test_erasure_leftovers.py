"""An erased account leaves nothing behind, over real SMTP, HTTP and database: after
`DELETE /api/v1/users/me`, no row of any table names the user, their address, their agents'
ids or their messages (feedback sent with their address included), and every raw message
only they held is gone, while another account's copy of mail they shared, and all that
account owns, stays whole. Nor does this process keep the parsed bodies of an erased account's
or agent's mail in memory."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trio

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from e2a_gateway.inbound.parse import kept_body, parse_body
from e2a_gateway.storage.base import ApprovalAnswer, BouncedRecipient, ReplyToken
from e2a_gateway.storage.sqlite import SqliteStorage
from e2a_gateway.workers.retention import RetentionWorker
from tests.conftest import Account, agent_path, make_settings
from tests.databases import full_scans, query, traced_statements
from tests.delivery_support import agent_id, create_agent, mail, smtp_send, wait_until
from tests.test_key_scopes import agent_key
from tests.test_storage import add_user, make_agent, make_message, make_outbound


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, webhooks={"allow_private": True})


def tables(url: str) -> list[str]:
    """Every table of the gateway's database."""
    if url.startswith("sqlite:///"):
        found = query(url, "SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        found = query(
            url,
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
        )
    return sorted(str(row[0]) for row in found)


def rows_naming(
    url: str, needles: set[str], among: list[str] | None = None
) -> dict[str, list[tuple[Any, ...]]]:
    """Per table (of `among`, else all), the rows in which any of `needles` appears (in any
    column, as text)."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    for table in tables(url) if among is None else among:
        for row in query(url, f"SELECT * FROM {table}"):
            text = " ".join(
                bytes(value).decode("utf-8", "replace")
                if isinstance(value, bytes | memoryview)
                else str(value)
                for value in row
            )
            if any(needle in text for needle in needles):
                found.setdefault(table, []).append(row)
    return found


def v1_messages(agent: str, suffix: str = "") -> str:
    return f"/v1/agents/{quote(agent, safe='')}/messages{suffix}"


async def inbound_ids(account: Account, agent: str) -> dict[str, str]:
    listed = await account.http.get(v1_messages(agent), params={"read_status": "all"})
    assert listed.status_code == 200, listed.text
    return {item["subject"]: item["id"] for item in listed.json()["items"]}


ERASED = "must hold nothing of an erased account or agent"
TABLES = {
    "agent_unsubscribe_tokens": ERASED,
    "agents": ERASED,
    "api_keys": ERASED,
    "approval_answers": ERASED,
    "approval_reply_tokens": ERASED,
    "dashboard_signouts": ERASED,
    "domains": ERASED,
    "event_bodies": ERASED,
    "event_copies": ERASED,
    "events": ERASED,
    "feedback": ERASED,
    "idempotency_keys": ERASED,
    "jobs": ERASED,
    "message_contents": ERASED,
    "message_labels": ERASED,
    "messages": ERASED,
    "raw_messages": "the bytes of another account's copy of mail the two shared (theirs)",
    "rate_limit_hits": "when and under which limit a request was made, for the last hour",
    "relay_message_ids": ERASED,
    "schema_migrations": "the migrations applied to the database",
    "server_state": "the gateway's own state (schema version, keys), no account's",
    "signing_secrets": ERASED,
    "suppressions": ERASED,
    "templates": ERASED,
    "users": ERASED,
    "webhook_attempts": ERASED,
    "webhook_deliveries": ERASED,
    "webhooks": ERASED,
}
"""Every table of the gateway's database, with what an erasure leaves in it: a table added
without being named here fails the walks below, until its erasure is thought through (and
whatever it keeps documented, docs/api.md)."""
ENGINE_TABLES = {"sqlite_sequence"}
"""SQLite's own table (the last id of each AUTOINCREMENT table), which PostgreSQL does not
have."""
UNFILLED = {
    "schema_migrations": "no account's",
    "server_state": "no account's",
    "event_bodies": "written no more (0033): older events' envelopes, erased by user_id",
    "message_contents": "copies' shared content names no account: counted after the erasure",
}
"""The tables where the walk finds nothing of an account before its erasure: every other one
holds one of the account's records, so the walk has something to find."""


def walked_tables(url: str) -> list[str]:
    """Every table of the database, checked to be one of TABLES."""
    found = [table for table in tables(url) if table not in ENGINE_TABLES]
    assert set(found) == set(TABLES), "name each new table in TABLES, with what erasing keeps"
    return found


async def stored_records(
    running: RunningGateway, user_id: str, agent: str, draft: str, sent: str
) -> None:
    """The account's records that no request of its own makes: a hard bounce of the message
    `sent` (its account-wide suppression and events), a reply token and an answer to it for
    the held `draft`, a dashboard sign-out, a managed-unsubscribe link of `agent`, the relay's
    id for the sent message, and a legacy webhook attempt."""
    storage = running.gateway.storage
    now = time.time()
    recipient = query(
        running.gateway.settings.database.url, "SELECT to_json FROM messages WHERE id = ?", (sent,)
    )[0][0]
    bounced = json.loads(recipient)[0]
    assert await storage.record_bounce(sent, [BouncedRecipient(bounced, "permanent")], now)
    token = ReplyToken("reply-token-hash", draft, "reviewer@example.net", "<notice@x>", now)
    await storage.add_reply_token(token)
    answer = ApprovalAnswer(draft, "e2a@example.net", "reviewer@example.net", b"Answer.")
    assert await storage.add_approval_answer(answer, "reply-token-hash", 5, now)
    await storage.sign_out_session(user_id, "alice-session", now + 3600)
    await storage.add_unsubscribe_token("unsubscribe-hash", user_id, agent, "x@example.org", now)
    url = running.gateway.settings.database.url
    query(
        url,
        "INSERT INTO relay_message_ids (message_id, recipient, relay_id) VALUES (?, ?, ?)",
        (sent, bounced, "relay-id-of-alice"),
    )
    query(
        url,
        "INSERT INTO webhook_attempts (message_id, attempt, attempted_at, status_code, "
        "duration_ms) VALUES (?, 1, '2024-01-01T00:00:00Z', 500, 1)",
        (sent,),
    )


def account_needles(url: str, user_id: str, *more: str) -> set[str]:
    """What names the account in any table: its id, its agents' ids and addresses (trashed
    ones too), its mail's, webhooks', events', keys', secrets' and templates' ids, and
    `more`."""
    needles = {user_id, *more}
    for sql in (
        "SELECT id FROM agents WHERE user_id = ?",
        "SELECT email FROM agents WHERE user_id = ?",
        "SELECT id FROM messages WHERE user_id = ?",
        "SELECT id FROM webhooks WHERE user_id = ?",
        "SELECT id FROM events WHERE user_id = ?",
        "SELECT id FROM api_keys WHERE user_id = ?",
        "SELECT id FROM signing_secrets WHERE user_id = ?",
        "SELECT id FROM templates WHERE user_id = ?",
    ):
        needles |= {str(row[0]) for row in query(url, sql, (user_id,))}
    return needles


async def test_an_erased_account_leaves_no_row_behind_and_spares_the_other(
    running: RunningGateway, make_account: Any
) -> None:
    """One record of every kind the account can hold (agents in service and in the trash,
    mail in and out, held drafts, labels, attachments, webhooks and their deliveries and
    events, templates, suppressions account-wide and per agent, keys of both scopes, signing
    secrets, a domain, Idempotency-Keys, dashboard sign-outs, feedback, …): after the erasure
    no table names the account, but those TABLES says keep something, and the other account's
    records are whole."""
    url = running.gateway.settings.database.url
    port = running.addresses.smtp_port
    alice: Account = await make_account("alice@example.com")
    bob: Account = await make_account("bob@example.com")
    alice_bot = await create_agent(alice, "alicebot")
    alice_aide = await create_agent(alice, "aliceaide")
    alice_gone = await create_agent(alice, "alicegone")
    bob_bot = await create_agent(bob, "bobbot")
    await agent_key(running, alice, alice_bot)

    # mail both accounts hold (one raw message, one shared content row), mail only alice holds
    await smtp_send(port, [alice_bot, alice_aide, bob_bot], mail("Shared"))
    await smtp_send(port, [alice_bot], mail("Alice only", body="Alice's secret."))
    await smtp_send(port, [alice_gone], with_attachment("Attached", "ATTACHED-MARKER"))
    trashed_agent = await alice.http.delete(
        f"/v1/agents/{quote(alice_gone, safe='')}", params={"confirm": "DELETE"}
    )
    assert trashed_agent.status_code == 200, trashed_agent.text
    ids = await inbound_ids(alice, alice_bot)
    trashed = await alice.http.delete(v1_messages(alice_bot, f"/{ids['Shared']}"))
    assert trashed.status_code == 200, trashed.text
    labelled = await alice.http.patch(
        v1_messages(alice_bot, f"/{ids['Alice only']}"), json={"add_labels": ["keep"]}
    )
    assert labelled.status_code == 200, labelled.text
    # alice writes to bob's agent (delivered here) and holds a draft for approval
    sent = await alice.http.post(
        v1_messages(alice_bot),
        json={"to": [bob_bot], "subject": "To Bob", "text": "From Alice."},
        headers={"Idempotency-Key": "once"},
    )
    assert sent.status_code in (200, 202), sent.text

    async def bob_holds_alices_mail() -> bool:
        return "To Bob" in await inbound_ids(bob, bob_bot)

    await wait_until(bob_holds_alices_mail)  # delivered by a worker, after the 202
    held = await alice.http.put(
        agent_path(alice_aide), json={"hitl_enabled": True, "hitl_ttl_seconds": 3600}
    )
    assert held.status_code == 200, held.text
    draft = await alice.http.post(
        "/api/v1/send",
        json={"from": alice_aide, "to": ["x@example.org"], "subject": "Draft", "body": "Wait."},
    )
    assert draft.status_code == 202, draft.text
    for created in (
        await alice.http.post(
            "/v1/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": ["email.received"]}
        ),
        await alice.http.post(
            "/v1/templates",
            json={"name": "T", "alias": "t", "subject": "S", "text": "x", "html": "<p>x</p>"},
        ),
        await alice.http.post(
            f"/v1/agents/{quote(alice_bot, safe='')}/suppressions",
            json={"address": "nobody@example.org"},
        ),
        await alice.http.post("/api/v1/users/me/signing-secrets", json={"name": "second"}),
        await alice.http.post("/api/v1/domains", json={"domain": "alice.example"}),
        await bob.http.post("/api/v1/domains", json={"domain": "bob.example"}),
        # feedback the gateway stamped with alice's address, and feedback typing it
        await alice.http.post("/api/feedback", json={"message": "Alice's idea."}),
        await bob.http.post(
            "/api/feedback", json={"message": "Alice asked me.", "email": "ALICE@example.com"}
        ),
        await bob.http.post("/api/feedback", json={"message": "Bob's idea."}),
    ):
        assert created.status_code in (200, 201), created.text
    # mail after the webhook: its events, their deliveries, one envelope for both copies
    await smtp_send(port, [alice_bot, alice_aide], mail("Hooked"))

    user_id = str(query(url, "SELECT id FROM users WHERE email = ?", (alice.email,))[0][0])
    sent_id = str(sent.json()["message_id"])
    await stored_records(running, user_id, alice_bot, str(draft.json()["message_id"]), sent_id)
    alice_ids = account_needles(url, user_id, alice.email, "alice.example")
    assert set(rows_naming(url, alice_ids, walked_tables(url))) == set(TABLES) - set(UNFILLED)
    alice_only_raw = {
        str(row[0])
        for row in query(
            url,
            "SELECT raw_digest FROM messages_with_content WHERE user_id = ? "
            "AND raw_digest IS NOT NULL EXCEPT SELECT raw_digest FROM messages_with_content "
            "WHERE user_id <> ?",
            (user_id, user_id),
        )
    }
    suppressed = "SELECT agent_email, address FROM suppressions WHERE user_id = ? ORDER BY 1"
    assert query(url, suppressed, (user_id,)) == [("", bob_bot), (alice_bot, "nobody@example.org")]
    bob_before = (await bob.http.get("/api/v1/users/me/export")).json()
    raw_before = {str(row[0]) for row in query(url, "SELECT digest FROM raw_messages")}

    erased = await alice.http.delete("/api/v1/users/me?confirm=DELETE")
    assert erased.status_code == 200, erased.text

    bob_id = str(query(url, "SELECT id FROM users WHERE email = ?", (bob.email,))[0][0])
    assert query(url, suppressed, (user_id,)) == []  # account-wide ones too
    left = {  # bob's own rows may name alice's agents: his copy of her mail, its events
        table: [row for row in rows if bob_id not in row]
        for table, rows in rows_naming(url, alice_ids, walked_tables(url)).items()
        if TABLES[table] == ERASED
    }
    assert {table: rows for table, rows in left.items() if rows} == {}
    raw_after = {str(row[0]) for row in query(url, "SELECT digest FROM raw_messages")}
    assert raw_after == raw_before - alice_only_raw
    assert query(url, "SELECT count(*) FROM message_contents")[0][0] == 1  # bob's copy's
    bob_after = (await bob.http.get("/api/v1/users/me/export")).json()
    for name in ("user", "agents", "domains", "api_keys", "signing_secrets", "messages"):
        assert bob_after[name] == bob_before[name]
    assert sorted(m["subject"] for m in bob_after["messages"]) == ["Shared", "To Bob"]
    assert query(url, "SELECT message, email FROM feedback") == [("Bob's idea.", bob.email)]


def raw_of(url: str, agent: str, subject: str) -> bytes:
    """The raw bytes of the message `subject` received by `agent`, as stored."""
    rows = query(
        url,
        "SELECT r.raw FROM messages_with_content m JOIN raw_messages r ON r.digest = m.raw_digest "
        "WHERE m.agent_email = ? AND m.subject = ?",
        (agent, subject),
    )
    assert len(rows) == 1, rows
    return bytes(rows[0][0])


async def test_erased_mail_leaves_no_parsed_body_in_memory(
    running: RunningGateway, make_account: Any
) -> None:
    url = running.gateway.settings.database.url
    port = running.addresses.smtp_port
    alice: Account = await make_account("alice@example.com")
    bob: Account = await make_account("bob@example.com")
    alice_bot = await create_agent(alice, "alicebot")
    alice_aide = await create_agent(alice, "aliceaide")
    bob_bot = await create_agent(bob, "bobbot")
    await smtp_send(port, [alice_bot], mail("Bot's", body="For the bot alone."))
    await smtp_send(port, [alice_aide], mail("Aide's", body="For the aide alone."))
    await smtp_send(port, [alice_bot, bob_bot], mail("Shared", body="For both accounts."))

    async def read(account: Account, agent: str, subject: str) -> str:
        """Read the message `subject` of `agent` (the gateway keeps its parsed body); its
        text."""
        message_id = (await inbound_ids(account, agent))[subject]
        answer = await account.http.get(v1_messages(agent, f"/{message_id}"))
        assert answer.status_code == 200, answer.text
        return str(answer.json()["body"]["text"])

    held = {
        "bot": raw_of(url, alice_bot, "Bot's"),
        "aide": raw_of(url, alice_aide, "Aide's"),
        "shared": raw_of(url, bob_bot, "Shared"),
    }
    for agent, subject in ((alice_bot, "Bot's"), (alice_aide, "Aide's"), (bob_bot, "Shared")):
        await read(alice if agent != bob_bot else bob, agent, subject)
    assert all(kept_body(raw) is not None for raw in held.values())

    gone = await alice.http.delete(agent_path(alice_aide), params={"permanent": "true"})
    assert gone.status_code == 200, gone.text
    assert kept_body(held["aide"]) is None
    assert kept_body(held["bot"]) is not None  # the account's other agent's mail stays kept

    erased = await alice.http.delete("/api/v1/users/me?confirm=DELETE")
    assert erased.status_code == 200, erased.text
    assert kept_body(held["bot"]) is None
    assert kept_body(held["shared"]) is None  # erased with alice's copy; bob's reads it again
    assert await read(bob, bob_bot, "Shared") == "For both accounts.\n"
    assert kept_body(held["shared"]) is not None


async def test_mail_erased_from_sqlite_is_overwritten_in_the_file(tmp_path: Path) -> None:
    """SQLite leaves deleted rows' bytes in the pages it frees unless told to overwrite them:
    whatever the build's default, the gateway's connections overwrite them, so an erased
    account's mail cannot be read back out of the database file."""
    path = tmp_path / "e2a.db"
    storage = SqliteStorage.open(str(path))
    try:
        await storage.migrate()
        for connection in (storage._writer, *storage._readers, storage._checkpointer):
            assert connection.execute("PRAGMA secure_delete").fetchone() == (1,)
        alice = await add_user(storage, "alice@example.com")
        await storage.add_agent(make_agent(alice, "bot@agents.test"))
        for number, size in enumerate((100, 6000, 70000)):  # in a page, overflowing, many pages
            body = b"ERASED-MARKER " + b"x" * size
            raw = b"Subject: ERASED-MARKER\r\n\r\n" + body + b"\r\n"
            message = make_message(f"msg_{number}", "bot@agents.test", raw)
            await storage.store_inbound([message], 0.0)
        await storage.delete_user(alice)
    finally:
        await storage.close()
    assert await trio.to_thread.run_sync(files_holding, tmp_path, b"ERASED-MARKER") == []


def files_holding(directory: Path, needle: bytes) -> list[str]:
    """The files in `directory` whose bytes hold `needle`, once the log of its SQLite database
    `e2a.db` has been copied into the file and emptied."""
    with closing(sqlite3.connect(directory / "e2a.db")) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    return [file.name for file in directory.iterdir() if needle in file.read_bytes()]


USER_CASCADE_SCAN = "DELETE FROM users WHERE id = 'usr_alice'"
"""The one statement of an account's deletion allowed to read all of `messages`: deleting the
user's row, whose cascade along `messages.user_id` (kept for the other tables' sake) finds
no row left but has no index by user to look with."""
FEEDBACK_SCAN = (
    "DELETE FROM feedback WHERE e2a_lower(email) = "
    "(SELECT e2a_lower(email) FROM users WHERE id = 'usr_alice')"
)
"""The other: the feedback sent with the account's address, looked for case-insensitively in
a table the feedback limit and retention keep small (no index to maintain for it)."""


async def test_erasing_an_account_finds_its_mail_through_indexes(tmp_path: Path) -> None:
    """Deleting an account holds SQLite's single writer while it runs, and `messages` keeps no
    index by user (storing inbound mail would maintain it): each statement finds the
    account's mail through its agents' indexes, never by reading every message of the
    gateway, and the account's mail of every kind still goes, the other account's stays."""
    path = tmp_path / "e2a.db"
    storage = SqliteStorage.open(str(path))
    try:
        await storage.migrate()
        alice = await add_user(storage, "alice@example.com")
        bob = await add_user(storage, "bob@example.com")
        for address in ("cloud@agents.test", "local@agents.test"):
            await storage.add_agent(
                make_agent(alice, address, "cloud" if "cloud" in address else "local")
            )
        await storage.add_agent(make_agent(bob, "bob@agents.test"))
        await storage.store_inbound(
            [
                make_message("msg_cloud", "cloud@agents.test"),
                make_message("msg_local", "local@agents.test"),
                make_message("msg_bob", "bob@agents.test"),
            ],
            0.0,
        )
        await storage.add_outbound(make_outbound(alice, "local@agents.test", "out_a", "queued"))
        with traced_statements(storage) as statements:
            deleted = await storage.delete_user(alice)
        assert deleted["messages"] == 3 and deleted["jobs"] == 2
        remaining = storage._writer.execute("SELECT id, user_id FROM messages").fetchall()
        assert remaining == [("msg_bob", bob)]
    finally:
        await storage.close()
    assert {sql for sql, _ in full_scans(path, statements)} == {USER_CASCADE_SCAN, FEEDBACK_SCAN}


EVENTS_LOG = {"events", "webhook_deliveries"}
"""The account's `/v1` events log and its webhooks' copies of its events, kept 30 days."""


async def test_an_agent_or_message_deleted_for_good_leaves_only_the_events_log(
    running: RunningGateway, make_account: Any
) -> None:
    """A message purged from the trash, then an agent deleted for good: afterwards only the
    account's events log (kept its 30 days with its webhooks' copies, docs/events.md), the
    rate-limit counts, a day's Idempotency-Key records and the copy
    another account received name them; mail the agent shared with a sibling stays whole."""
    url = running.gateway.settings.database.url
    port = running.addresses.smtp_port
    alice: Account = await make_account("alice@example.com")
    bob: Account = await make_account("bob@example.com")
    bot, aide = await create_agent(alice, "alicebot"), await create_agent(alice, "aliceaide")
    bob_bot = await create_agent(bob, "bobbot")
    hook = await alice.http.post(
        "/v1/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": ["email.received"]}
    )
    assert hook.status_code in (200, 201), hook.text
    await smtp_send(port, [aide], mail("Aide only", body="AIDE-ONLY body"))
    await smtp_send(port, [aide, bot], mail("Siblings", body="SIBLINGS body"))
    await smtp_send(port, [bot], mail("Purged", body="PURGED body"))
    for agent, to, subject in ((aide, bob_bot, "Aide to Bob"), (aide, "x@example.org", "Out")):
        sent = await alice.http.post(
            v1_messages(agent),
            json={"to": [to], "subject": subject, "text": f"{subject} body"},
            headers={"Idempotency-Key": subject},
        )
        assert sent.status_code == 202, sent.text
    suppressed = await alice.http.post(
        f"/v1/agents/{quote(aide, safe='')}/suppressions", json={"address": "no@example.org"}
    )
    assert suppressed.status_code in (200, 201), suppressed.text
    await agent_key(running, alice, aide)
    user_id = str(query(url, "SELECT id FROM users WHERE email = ?", (alice.email,))[0][0])
    out_id = str(
        query(url, "SELECT id FROM messages WHERE subject = 'Out' AND agent_email = ?", (aide,))[0][
            0
        ]
    )
    await running.gateway.storage.add_unsubscribe_token("aide-link", user_id, aide, "y@x.org", 0)
    # a hard bounce of the aide's mail: a suppression for every agent of the account
    bounced = [BouncedRecipient("x@example.org", "permanent")]
    assert await running.gateway.storage.record_bounce(out_id, bounced, time.time())

    async def bob_holds_the_aides_mail() -> bool:
        return "Aide to Bob" in await inbound_ids(bob, bob_bot)

    await wait_until(bob_holds_the_aides_mail)
    purged_id = (await inbound_ids(alice, bot))["Purged"]
    for params in ({}, {"permanent": "true", "confirm": "DELETE"}):
        deleted = await alice.http.delete(v1_messages(bot, f"/{purged_id}"), params=params)
        assert deleted.status_code == 200, deleted.text
    left = rows_naming(url, {purged_id, "Purged", "PURGED"})
    assert set(left) == EVENTS_LOG, left  # its email.received event

    aide_id = await agent_id(running.gateway, aide)
    aide_mail = {
        str(row[0]) for row in query(url, "SELECT id FROM messages WHERE agent_email = ?", (aide,))
    }
    gone = await alice.http.delete(
        f"/v1/agents/{quote(aide, safe='')}", params={"permanent": "true", "confirm": "DELETE"}
    )
    assert gone.status_code == 200, gone.text
    assert gone.json()["messages_deleted"] == len(aide_mail) == 4
    left = rows_naming(
        url, {aide, aide_id, "AIDE-ONLY", "Out body", *aide_mail}, walked_tables(url)
    )
    assert [row[3] for row in left.pop("messages")] == [bob_bot]  # bob's copy of its mail
    # the bytes of bob's copy, and of the sibling's (its Received names the aide's copy's id)
    held = {str(row[0]) for row in query(url, "SELECT raw_digest FROM messages_with_content")}
    assert {str(row[0]) for row in left.pop("raw_messages")} <= held
    # the account's own records, kept: its key bound to the agent, revoked, and the
    # suppression a bounce of the agent's mail put on the account's list, naming that mail
    assert [(row[2], row[6]) for row in left.pop("suppressions")] == [("", out_id)]
    (revoked,) = query(url, "SELECT id FROM api_keys WHERE revoked_at IS NOT NULL")
    assert [revoked[0] in row for row in left.pop("api_keys")] == [True]
    assert set(left) <= {*EVENTS_LOG, "rate_limit_hits", "idempotency_keys"}, left
    # a send's Idempotency-Key names what it made by id alone (its answer is sealed), for a day
    assert {row[-1] for row in left.get("idempotency_keys", [])} <= aide_mail
    siblings = (await inbound_ids(alice, bot))["Siblings"]
    kept = await alice.http.get(v1_messages(bot, f"/{siblings}"))
    assert kept.status_code == 200, kept.text
    assert kept.json()["body"]["text"] == "SIBLINGS body\n"
    assert query(url, "SELECT count(*) FROM message_contents")[0][0] == 1  # the sibling's


def with_attachment(subject: str, marker: str) -> bytes:
    """A message whose text is `marker` and which carries one attachment naming it too."""
    return (
        f"From: Alice <alice@example.org>\r\nTo: someone@agents.test\r\nSubject: {subject}\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        f"--b\r\nContent-Type: text/plain\r\n\r\n{marker} in the text\r\n"
        '--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename="m.txt"'
        f"\r\n\r\n{marker} in the attachment\r\n--b--\r\n"
    ).encode()


async def erase_by_purge(running: RunningGateway, owner: Account, agent: str, msg: str) -> None:
    """Delete the message to the `/v1` trash, then out of it for good."""
    for params in ({}, {"permanent": "true", "confirm": "DELETE"}):
        gone = await owner.http.delete(v1_messages(agent, f"/{msg}"), params=params)
        assert gone.status_code == 200, gone.text


async def erase_by_retention(running: RunningGateway, owner: Account, agent: str, msg: str) -> None:
    """Let a retention sweep take the message, as if `retention.days` had passed."""
    days = running.gateway.settings.retention.days
    swept = await RetentionWorker(running.gateway, pause=0).sweep(time.time() + (days + 1) * 86400)
    assert swept.messages >= 1


async def erase_by_agent(running: RunningGateway, owner: Account, agent: str, msg: str) -> None:
    """Delete the agent for good, its mail with it."""
    gone = await owner.http.delete(agent_path(agent), params={"permanent": "true"})
    assert gone.status_code == 200, gone.text


async def erase_by_account(running: RunningGateway, owner: Account, agent: str, msg: str) -> None:
    """Erase the owner's account."""
    gone = await owner.http.delete("/api/v1/users/me?confirm=DELETE")
    assert gone.status_code == 200, gone.text


@pytest.mark.parametrize(
    "erase", [erase_by_purge, erase_by_retention, erase_by_agent, erase_by_account]
)
async def test_a_body_kept_of_erased_mail_is_served_by_no_request(
    running: RunningGateway, make_account: Any, erase: Any
) -> None:
    """Another replica (or process) that read the mail before it was erased still keeps its
    parsed body: none of its requests serves it. The kept bodies are found by the digest of
    the raw bytes, which a read only has once the database gave them to the caller; here the
    body is put back in this process's memory after the erasure, as the other replica has it."""
    port = running.addresses.smtp_port
    alice: Account = await make_account("alice@example.com")
    bob: Account = await make_account("bob@example.com")
    alice_bot = await create_agent(alice, "alicebot")
    bob_bot = await create_agent(bob, "bobbot")
    raw = with_attachment("Secret", "ERASED-MARKER")
    await smtp_send(port, [alice_bot], raw)
    message_id = (await inbound_ids(alice, alice_bot))["Secret"]
    read = await alice.http.get(v1_messages(alice_bot, f"/{message_id}"))
    assert read.status_code == 200, read.text
    assert "ERASED-MARKER" in read.json()["body"]["text"]
    stored = raw_of(running.gateway.settings.database.url, alice_bot, "Secret")

    for reader, agent in ((bob, bob_bot), (bob, alice_bot)):  # not bob's: the database says so
        for path in (
            v1_messages(agent, f"/{message_id}"),
            v1_messages(agent, f"/{message_id}/attachments/0?inline=true"),
            agent_path(agent, f"/messages/{message_id}"),
        ):
            answer = await reader.http.get(path)
            assert answer.status_code == 404, (path, answer.text)
            assert "ERASED-MARKER" not in answer.text

    await erase(running, alice, alice_bot, message_id)
    parse_body(stored)  # what the other replica kept of it before the erasure
    assert kept_body(stored) is not None
    for path in (
        v1_messages(alice_bot, f"/{message_id}"),
        v1_messages(alice_bot, f"/{message_id}/attachments/0?inline=true"),
        agent_path(alice_bot, f"/messages/{message_id}"),
    ):
        answer = await alice.http.get(path)
        assert answer.status_code in (401, 404), (path, answer.text)  # 401: the account is gone
        assert "ERASED-MARKER" not in answer.text
    for verb, sent in (
        ("reply", {"text": "Noted.", "quote_history": True}),
        ("forward", {"text": "FYI.", "to": ["carol@example.net"]}),
    ):
        answer = await alice.http.post(v1_messages(alice_bot, f"/{message_id}/{verb}"), json=sent)
        assert answer.status_code in (401, 404), (verb, answer.text)
    assert (
        query(
            running.gateway.settings.database.url,
            "SELECT id FROM messages WHERE direction = 'outbound'",
        )
        == []
    )
    assert kept_body(stored) is not None  # refused by the database's verdict, not by chance
