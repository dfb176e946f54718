"""e2a's SMTP listener with the benchmark peer's handler: the same work as bench/_aiosmtpd_sink.py.

Run as a process: `python bench/_e2a_listener_sink.py PORT DATABASE`. RCPT looks the agent up
with `SqliteStorage.find_agent` (a reader thread); DATA parses the headers with e2a's parser
and commits one row per recipient through `GroupCommitter` over `SqliteStorage.store_inbound`
(WAL, synchronous=FULL) before the 250. What it leaves out, next to `e2a serve`, is the
inbound pipeline's SPF/DKIM/DMARC, signing and threading: the difference between the two rows
in the benchmark is what that pipeline costs.
"""

from __future__ import annotations

import signal
import sys
import time
from functools import partial

import trio

from e2a_gateway.clock import format_timestamp
from e2a_gateway.ids import new_id
from e2a_gateway.inbound.parse import summarise_headers
from e2a_gateway.smtp.protocol import Envelope, Mailbox, SessionLimits
from e2a_gateway.smtp.server import ListenerLimits, RecipientVerdict, serve_smtp
from e2a_gateway.storage.group_commit import GroupCommitter
from e2a_gateway.storage.new_inbound import NewInboundMessage
from e2a_gateway.storage.sqlite import SqliteStorage


class StoringSink:
    """A MailSink doing what the aiosmtpd peer's handler does."""

    def __init__(self, storage: SqliteStorage) -> None:
        self._storage = storage
        self._committer = GroupCommitter(storage)

    async def check_recipient(self, mailbox: Mailbox) -> RecipientVerdict:
        agent = await self._storage.find_agent(mailbox.address.lower())
        return RecipientVerdict.ACCEPT if agent else RecipientVerdict.UNKNOWN_USER

    async def accept_message(self, envelope: Envelope, peer: str) -> str:
        headers = summarise_headers(envelope.data)
        now = time.time()
        messages = [
            NewInboundMessage(
                id=new_id("msg"),
                agent_email=mailbox.address.lower(),
                envelope_from=envelope.mail_from,
                from_addr=headers.from_addr or envelope.mail_from,
                reply_to=headers.reply_to,
                to=headers.to,
                cc=headers.cc,
                subject=headers.subject,
                conversation_id=None,
                rfc_message_id=headers.message_id,
                raw_message=envelope.data,
                auth_headers={},
                authentication_results={},
                received_at=format_timestamp(now),
                client_ip=peer,
                helo=envelope.helo,
            )
            for mailbox in envelope.recipients
        ]
        await self._committer.store_inbound(messages, now)
        return messages[0].id


async def serve(port: int, path: str) -> None:
    storage = SqliteStorage.open(path)
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(
                    serve_smtp,
                    listeners,
                    StoringSink(storage),
                    "mx.agents.test",
                    SessionLimits(),
                    listener_limits=ListenerLimits(
                        max_sessions_per_ip=500, max_sessions_per_network=500
                    ),
                )
            )
            print("ready", flush=True)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()
    await storage.close()


if __name__ == "__main__":
    trio.run(serve, int(sys.argv[1]), sys.argv[2])
