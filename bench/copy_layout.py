"""What one more agent's copy of a message costs the database: the gateway's layout against
leaner ones.

Fan-out's target (0.5x the single-recipient rate at 50 agents, issue 23) asks that a further
copy cost the gateway about half of what it does; the copy's row, its index entries and its
`email.received` event are most of it. This benchmark measures the storage alone, on SQLite
files (WAL, synchronous=FULL, a PASSIVE checkpoint every 20 transactions as upkeep does),
five arrivals of a 100 KB message per transaction, for 1 and for 50 local agents, alternating:

* **today**: `store_inbound` of the gateway (one `message_contents` row per message, a narrow
  `messages` row per copy with its index entries and signed headers, one `email.received`
  event per copy);
* **content + copies**: a leaner layout, built here in a scratch file and not used by the
  gateway: the message's shared fields once (`contents`), a narrow row per agent in a table
  of its own (`copies`: id, owner, agent, status, conversation, signature; indexed by agent,
  status and order, and by content), and either one event row per message or one per copy.

It prints the CPU time (user + system) per further copy: (cost at 50 agents - cost at 1) / 49,
counting the storing and checkpointing alone, not the making of the arrivals.

Then the whole inbound pipeline in one process, where the gateway's main process spends a
further copy's time: `InboundMailSink.accept_message` of a 100 KB message for 1 and for 50
agents, one message at a time (one per commit), split into the event loop's CPU (routing,
threading, signing, the copy's record, announcing) and the other threads' (the writer's
transaction: rows, events, statements and commit). Run:
`.venv/bin/python bench/copy_layout.py [--rounds 3]` (under a minute).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import orjson
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._smtp_load import SENDER, make_message
from e2a_gateway.accounts import bootstrap_user
from e2a_gateway.clock import format_timestamp
from e2a_gateway.config import Settings
from e2a_gateway.gateway import open_gateway
from e2a_gateway.ids import new_id
from e2a_gateway.inbound.pipeline import InboundMailSink
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.smtp.protocol import Envelope, Mailbox
from e2a_gateway.storage import open_storage
from e2a_gateway.storage.base import Agent
from e2a_gateway.storage.group_commit import GroupCommitter
from e2a_gateway.storage.new_inbound import NewInboundMessage

ARRIVALS_PER_TRANSACTION = 5
TRANSACTIONS = 60
CHECKPOINT_EVERY = 20
COUNTS = (1, 50)
AGENTS = [f"agent{number}@agents.bench" for number in range(max(COUNTS))]
RAW = b"Subject: bench\r\nFrom: s@example.org\r\n\r\n" + b"x" * 102_400 + b"\r\n"
SIGNED = ("Verified", "Sender", "Entity-Type", "Domain-Check", "Delegation", "Timestamp")
NOW = "2026-01-01T00:00:00Z"

SCRATCH_SCHEMA = """
CREATE TABLE raw_messages (digest TEXT PRIMARY KEY, raw BLOB NOT NULL);
CREATE TABLE contents (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, envelope_from TEXT NOT NULL, from_addr TEXT NOT NULL,
    reply_to TEXT, to_json TEXT NOT NULL, cc_json TEXT NOT NULL, subject TEXT NOT NULL,
    rfc_message_id TEXT, raw_digest TEXT NOT NULL REFERENCES raw_messages(digest),
    auth_results_json TEXT NOT NULL, client_ip TEXT NOT NULL, helo TEXT NOT NULL,
    received_at TEXT NOT NULL);
CREATE INDEX contents_rfc_id ON contents(rfc_message_id);
CREATE INDEX contents_raw_digest ON contents(raw_digest);
CREATE INDEX contents_received ON contents(received_at);
CREATE TABLE copies (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, user_id TEXT NOT NULL,
    agent_email TEXT NOT NULL, content_seq INTEGER NOT NULL, status TEXT NOT NULL DEFAULT 'unread',
    conversation_id TEXT, signature TEXT NOT NULL, hold TEXT, flag_reason TEXT);
CREATE INDEX copies_agent_status ON copies(agent_email, status, seq);
CREATE INDEX copies_content ON copies(content_seq);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, user_id TEXT NOT NULL,
    type TEXT NOT NULL, content_seq INTEGER, created_epoch REAL NOT NULL, envelope BLOB NOT NULL);
CREATE INDEX events_user ON events(user_id, seq);
"""


def arrival(agents: int, number: int) -> list[NewInboundMessage]:
    """The copies of one 100 KB message (its own bytes and Message-ID) for the first `agents`,
    made as the gateway makes them: the first whole, each further one from it (`copy_for`)
    with its own id, agent and signed headers."""
    raw = RAW + str(number).encode()
    received = format_timestamp(time.time())
    results = {"spf": "pass", "dkim": "none", "dmarc": "pass"}
    first = NewInboundMessage(
        id=new_id("msg"),
        agent_email=AGENTS[0],
        envelope_from="s@example.org",
        from_addr="s@example.org",
        reply_to=None,
        to=[AGENTS[0]],
        cc=[],
        subject="bench",
        conversation_id=None,
        rfc_message_id=f"<{number}@example.org>",
        raw_message=raw,
        auth_headers=signed_headers(),
        authentication_results=results,
        received_at=received,
        client_ip="127.0.0.1",
        helo="load.example",
    )
    further = [
        first.copy_for(id=new_id("msg"), agent_email=agent, auth_headers=signed_headers())
        for agent in AGENTS[1:agents]
    ]
    return [first, *further]


def signed_headers() -> dict[str, str]:
    """A copy's X-E2A-Auth-* headers: values of the signed claim's length, its own signature."""
    return {
        **{f"X-E2A-Auth-{name}": "v" * 40 for name in SIGNED},
        "X-E2A-Auth-Signature": new_id("sig"),
    }


def cpu_seconds() -> float:
    """This process's CPU time so far, user and system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def local_agent(user_id: str, email: str) -> Agent:
    """A local agent (no webhook) of `user_id` at `email`."""
    return Agent(
        email=email,
        user_id=user_id,
        domain=email.partition("@")[2],
        name=email.split("@")[0],
        webhook_url=None,
        agent_mode="local",
        hitl_enabled=False,
        hitl_ttl_seconds=604800,
        hitl_expiration_action="reject",
        created_at=NOW,
    )


async def today(counts: list[int]) -> dict[int, list[float]]:
    """CPU ms per arrival of the gateway's own `store_inbound`, for each count in turn."""
    with tempfile.TemporaryDirectory(prefix="e2a-layout-") as folder:
        storage = open_storage(f"sqlite:///{folder}/today.db")
        try:
            await storage.migrate()
            user, _ = await storage.ensure_user("usr_bench", "owner@example.com", NOW)
            for email in AGENTS:
                await storage.add_agent(local_agent(user.id, email))

            async def store(arrivals: list[list[NewInboundMessage]]) -> None:
                copies = [copy for message in arrivals for copy in message]
                await storage.store_inbound(copies, time.time())

            return await measure(counts, store, f"{folder}/today.db")
        finally:
            await storage.close()


async def measure(
    counts: list[int],
    store: Callable[[list[list[NewInboundMessage]]], Awaitable[None]],
    path: str,
) -> dict[int, list[float]]:
    """CPU ms per arrival of `store` (one transaction of ARRIVALS_PER_TRANSACTION arrivals) on
    the database at `path`, checkpointed as upkeep does, for each count in turn."""
    checkpoint = sqlite3.connect(path, isolation_level=None)
    numbers = iter(range(10**9))
    found: dict[int, list[float]] = {}
    try:
        for count in counts:
            spent = 0.0
            for transaction in range(TRANSACTIONS):
                arrivals = [arrival(count, next(numbers)) for _ in range(ARRIVALS_PER_TRANSACTION)]
                began = cpu_seconds()
                await store(arrivals)
                if transaction % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1:
                    checkpoint.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                spent += cpu_seconds() - began
            found.setdefault(count, []).append(
                spent / (TRANSACTIONS * ARRIVALS_PER_TRANSACTION) * 1e3
            )
    finally:
        checkpoint.close()
    return found


def store_in_scratch(
    db: sqlite3.Connection, arrivals: list[list[NewInboundMessage]], *, events_per_copy: bool
) -> None:
    """One transaction of the scratch layout: each message's content once, a narrow row per
    agent, and its `email.received` event once or per copy."""
    db.execute("BEGIN IMMEDIATE")
    for copies in arrivals:
        first = copies[0]
        digest = hashlib.sha256(first.raw_message).hexdigest()
        db.execute(
            "INSERT INTO raw_messages VALUES (?, ?) ON CONFLICT DO NOTHING",
            (digest, first.raw_message),
        )
        content = db.execute(
            "INSERT INTO contents (envelope_from, from_addr, reply_to, to_json, cc_json, "
            "subject, rfc_message_id, raw_digest, auth_results_json, client_ip, helo, "
            "received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                first.envelope_from,
                first.from_addr,
                first.reply_to,
                json.dumps(first.to),
                json.dumps(first.cc),
                first.subject,
                first.rfc_message_id,
                digest,
                json.dumps(first.authentication_results),
                first.client_ip,
                first.helo,
                first.received_at,
            ),
        ).lastrowid
        db.executemany(
            "INSERT INTO copies (id, user_id, agent_email, content_seq, conversation_id, "
            "signature) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    copy.id,
                    "usr_bench",
                    copy.agent_email,
                    content,
                    copy.conversation_id,
                    copy.auth_headers["X-E2A-Auth-Signature"],
                )
                for copy in copies
            ],
        )
        envelopes = (
            [
                {
                    "message_id": copy.id,
                    "agent_email": copy.agent_email,
                    "subject": copy.subject,
                    "to": copy.to,
                    "received_at": copy.received_at,
                }
                for copy in copies
            ]
            if events_per_copy
            else [{"message_ids": [copy.id for copy in copies]}]
        )
        db.executemany(
            "INSERT INTO events (id, user_id, type, content_seq, created_epoch, envelope) "
            "VALUES (?, ?, 'email.received', ?, ?, ?)",
            [
                (new_id("evt"), "usr_bench", content, time.time(), orjson.dumps(envelope))
                for envelope in envelopes
            ],
        )
    db.execute("COMMIT")


async def scratch(counts: list[int], *, events_per_copy: bool) -> dict[int, list[float]]:
    """CPU ms per arrival of the scratch layout, for each count in turn."""
    with tempfile.TemporaryDirectory(prefix="e2a-layout-") as folder:
        db = sqlite3.connect(f"{folder}/scratch.db", isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.executescript(SCRATCH_SCHEMA)

            async def store(arrivals: list[list[NewInboundMessage]]) -> None:
                store_in_scratch(db, arrivals, events_per_copy=events_per_copy)

            return await measure(counts, store, f"{folder}/scratch.db")
        finally:
            db.close()


PIPELINE_MESSAGES = 60
"""Messages per count and round in the pipeline measurement."""
PIPELINE_WARM_UP = 10
"""Messages per count sent first and not counted: the first mail loads what the pipeline
needs, which would otherwise be charged to whichever count is measured first."""
SENDER_ZONE = {
    "example.org": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
    "_dmarc.example.org": {"TXT": ["v=DMARC1; p=none"]},
}


async def pipeline(counts: list[int]) -> dict[int, list[tuple[float, float]]]:
    """CPU ms per message of `accept_message` for each count in turn: (event loop, others)."""
    with tempfile.TemporaryDirectory(prefix="e2a-layout-") as folder:
        settings = Settings.model_validate(
            {
                "shared_domain": "agents.bench",
                "smtp": {"hostname": "mx.agents.bench"},
                "database": {"url": f"sqlite:///{folder}/pipeline.db"},
                "log": {"level": "warning"},
            }
        )
        async with open_gateway(settings, FixtureResolver.from_zone(SENDER_ZONE)) as gateway:
            user, _, _ = await bootstrap_user(gateway.storage, gateway.server_key, "o@example.com")
            for email in AGENTS:
                await gateway.storage.add_agent(local_agent(user.id, email))
            sink = InboundMailSink(gateway, GroupCommitter(gateway.storage))
            mailboxes = [Mailbox(*email.split("@")) for email in AGENTS]
            data = make_message(102_400, AGENTS[0])
            envelopes = {
                count: Envelope("load.example", SENDER, mailboxes[:count], data) for count in COUNTS
            }
            for envelope in envelopes.values():
                for _ in range(PIPELINE_WARM_UP):
                    await sink.accept_message(envelope, "127.0.0.1")
            found: dict[int, list[tuple[float, float]]] = {}
            for count in counts:
                envelope = envelopes[count]
                loop, began = time.thread_time(), cpu_seconds()
                for _ in range(PIPELINE_MESSAGES):
                    await sink.accept_message(envelope, "127.0.0.1")
                loop = time.thread_time() - loop
                others = cpu_seconds() - began - loop
                found.setdefault(count, []).append(
                    (loop / PIPELINE_MESSAGES * 1e3, others / PIPELINE_MESSAGES * 1e3)
                )
            return found


def per_further_copy(found: dict[int, list[float]]) -> float:
    """Microseconds of CPU per copy beyond the first (best of the rounds)."""
    fewest, most = COUNTS
    return (min(found[most]) - min(found[fewest])) / (most - fewest) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per count")
    args = parser.parse_args()
    counts = [count for _ in range(args.rounds) for count in COUNTS]
    layouts: list[tuple[str, Callable[[], dict[int, list[float]]]]] = [
        ("today (store_inbound)", lambda: trio.run(today, counts)),
        (
            "content + copies, event per copy",
            lambda: trio.run(partial(scratch, counts, events_per_copy=True)),
        ),
        (
            "content + copies, event per message",
            lambda: trio.run(partial(scratch, counts, events_per_copy=False)),
        ),
    ]
    print(
        f"CPU per further copy, {ARRIVALS_PER_TRANSACTION} arrivals of a 100 KB message per "
        f"transaction, best of {args.rounds} rounds"
    )
    fewest, most = COUNTS
    for name, run in layouts:
        found = run()
        print(
            f"  {name:38s} {per_further_copy(found):6.1f} us"
            f"   (per arrival: {fewest} agent {min(found[fewest]):.2f} ms, "
            f"{most} agents {min(found[most]):.2f} ms)"
        )
    split = trio.run(pipeline, counts)
    print(
        f"The whole inbound pipeline in one process, one {fewest}- or {most}-agent message per "
        f"commit, best of {args.rounds} rounds: CPU per further copy"
    )
    for index, part in enumerate(("event loop", "writer and other threads")):
        found = {count: [cost[index] for cost in split[count]] for count in COUNTS}
        print(
            f"  {part:38s} {per_further_copy(found):6.1f} us"
            f"   (per message: {fewest} agent {min(found[fewest]):.2f} ms, "
            f"{most} agents {min(found[most]):.2f} ms)"
        )


if __name__ == "__main__":
    main()
