"""The peer in the SMTP benchmark: aiosmtpd committing each message to SQLite like e2a does.

Run as a process: `python bench/_aiosmtpd_sink.py PORT DATABASE`. The database must already
hold e2a's schema, a user and the agent. RCPT looks the agent up on a reader connection in a
thread; DATA parses the headers (with e2a's own parser) and commits the raw message once and one row
per recipient agent (plus its webhook job) in one `BEGIN IMMEDIATE` transaction on a single
writer thread, with WAL and synchronous=FULL. One transaction per message: aiosmtpd has no
group commit.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import sqlite3
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from e2a_gateway.clock import format_timestamp
from e2a_gateway.inbound.parse import summarise_headers

INSERT_MESSAGE = (
    "INSERT INTO messages (id, user_id, agent_email, envelope_from, from_addr, "
    "reply_to, to_json, cc_json, subject, conversation_id, rfc_message_id, "
    "raw_digest, auth_headers_json, auth_results_json, delivery_status, "
    "client_ip, helo, received_at, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def connect(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    connection.execute("PRAGMA foreign_keys = ON")
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("PRAGMA journal_mode = WAL")
    return connection


class SqliteHandler:
    """aiosmtpd handler: recipients checked against `agents`, messages committed before 250."""

    def __init__(self, path: str) -> None:
        self._writer = connect(path)
        self._reader = connect(path)
        self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="writer")
        self._read_thread = ThreadPoolExecutor(1, thread_name_prefix="reader")

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        loop = asyncio.get_running_loop()
        row = await loop.run_in_executor(self._read_thread, self._find_agent, address.lower())
        if row is None:
            return f"550 5.1.1 <{address}>: no such agent here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        headers = summarise_headers(content)
        now = time.time()
        ids = [f"msg_{uuid.uuid4().hex[:24]}" for _ in envelope.rcpt_tos]
        rows = [
            (
                message_id,
                address.lower(),
                envelope.mail_from,
                headers.from_addr or envelope.mail_from,
                headers.reply_to,
                json.dumps(headers.to),
                json.dumps(headers.cc),
                headers.subject,
                headers.message_id,
                content,
                session.peer[0] if session.peer else "",
                session.host_name,
                format_timestamp(now),
            )
            for message_id, address in zip(ids, envelope.rcpt_tos, strict=True)
        ]
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._write_thread, self._store, rows, now)
        except sqlite3.Error:
            return "451 4.3.0 Temporary storage failure, try again later"
        return f"250 2.0.0 Ok: queued as {ids[0]}"

    def _find_agent(self, address: str) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._reader.execute(
            "SELECT email FROM agents WHERE email = ?", (address,)
        ).fetchone()
        return row

    def _store(self, rows: list[tuple[Any, ...]], now: float) -> None:
        db = self._writer
        db.execute("BEGIN IMMEDIATE")
        try:
            content = rows[0][9]
            digest = hashlib.sha256(content).hexdigest()
            db.execute(
                "INSERT OR IGNORE INTO raw_messages (digest, raw) VALUES (?, ?)", (digest, content)
            )
            for row in rows:
                found = db.execute(
                    "SELECT user_id, agent_mode FROM agents WHERE email = ?", (row[1],)
                ).fetchone()
                user_id, agent_mode = found
                cloud = agent_mode == "cloud"
                (message_id, agent, sender, from_addr, reply_to, to, cc, subject) = row[:8]
                (rfc_id, _, client_ip, helo, received_at) = row[8:]
                db.execute(
                    INSERT_MESSAGE,
                    (
                        message_id,
                        user_id,
                        agent,
                        sender,
                        from_addr,
                        reply_to,
                        to,
                        cc,
                        subject,
                        None,
                        rfc_id,
                        digest,
                        "{}",
                        "{}",
                        "pending" if cloud else None,
                        client_ip,
                        helo,
                        received_at,
                        received_at,
                    ),
                )
                if cloud:
                    db.execute(
                        "INSERT INTO jobs (kind, message_id, run_at, created_at) "
                        "VALUES ('webhook', ?, ?, ?)",
                        (message_id, now, now),
                    )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


async def serve(port: int, path: str) -> None:
    loop = asyncio.get_running_loop()
    handler = SqliteHandler(path)
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="mx.agents.test", enable_SMTPUTF8=True),
        host="127.0.0.1",
        port=port,
    )
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), sys.argv[2]))
