"""Outbound throughput: messages/s from queued rows in storage to an SMTP sink on 127.0.0.1.

e2a: a backlog of `queued` messages is stored, then the outbound worker runs (build MIME,
hand off to the relay, record the result and scrub the body) until every message is `sent`:
with a connection per message (`outbound_smtp.connection_idle_seconds = 0`), keeping
connections open between messages (the default), and keeping them with a relay that offers
PIPELINING (the envelope and DATA in one write). Peer: smtplib sending the same bytes to the
same aiosmtpd sink with the same concurrency (threads) — SMTP alone, no storage, never
pipelining — with a connection per message and with one connection per thread.

`--latency-ms N` puts the relay N ms away each way (`bench/_latency_proxy.py` on 127.0.0.1, a
round trip of 2N ms), as a relay across the internet is: what round trips cost then shows.

Run: `.venv/bin/python bench/outbound.py [--messages 2000] [--latency-ms 0]`. Only 127.0.0.1
is contacted.
"""

from __future__ import annotations

import argparse
import contextlib
import smtplib
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import trio
from aiosmtpd.controller import Controller

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._latency_proxy import latency_proxy
from e2a_gateway.accounts import bootstrap_user
from e2a_gateway.config import Settings
from e2a_gateway.gateway import open_gateway
from e2a_gateway.ids import new_id
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.outbound.mime import new_message_id
from e2a_gateway.storage.base import Agent, OutboundMessage
from e2a_gateway.workers.outbound import MAX_IN_FLIGHT, OutboundWorker

SENDER = "bench@agents.test"
RECIPIENT = "someone@example.org"


class CountingSink:
    """aiosmtpd handler that accepts everything and counts messages; its EHLO offers
    PIPELINING while `pipelining` is set (aiosmtpd takes pipelined commands either way)."""

    def __init__(self) -> None:
        self.count = 0
        self.pipelining = False
        self._lock = threading.Lock()

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if not self.pipelining:
            return responses
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.count += 1
        return "250 OK"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def outbound(user_id: str, index: int, now: float) -> OutboundMessage:
    return OutboundMessage(
        id=new_id("msg"),
        user_id=user_id,
        agent_email=SENDER,
        kind="send",
        to=[RECIPIENT],
        cc=[],
        bcc=[],
        subject=f"Bench message {index}",
        body_text="A short status update from the benchmark.\n" * 10,
        body_html=None,
        attachments=None,
        conversation_id=None,
        in_reply_to=None,
        references=[],
        email_message_id=new_message_id("agents.test"),
        status="queued",
        approval_expires_at=None,
        created_at="2026-01-01T00:00:00Z",
        created_epoch=now,
    )


async def run_e2a(
    port: int, count: int, sink: CountingSink, idle_seconds: float
) -> tuple[float, list[bytes], int, int]:
    """Seconds for the worker to send `count` queued messages, the bytes it built, the
    transactions that recorded their outcomes and the connections it opened to the relay."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.model_validate(
            {
                "shared_domain": "agents.test",
                "smtp": {"listen": "127.0.0.1:0", "hostname": "mx.agents.test"},
                "database": {"url": f"sqlite:///{tmp}/e2a.db"},
                "outbound_smtp": {
                    "host": "127.0.0.1",
                    "port": port,
                    "tls": "none",
                    "connection_idle_seconds": idle_seconds,
                },
            }
        )
        async with open_gateway(settings, FixtureResolver()) as gateway:
            user, _, _ = await bootstrap_user(gateway.storage, gateway.server_key, "b@x.org")
            await gateway.storage.add_agent(
                Agent(SENDER, user.id, "agents.test", "bench", None, "local", False, 3600,
                      "reject", "2026-01-01T00:00:00Z")
            )  # fmt: skip
            now = time.time()
            messages = [outbound(user.id, index, now) for index in range(count)]
            for message in messages:
                await gateway.storage.add_outbound(message)
            worker = OutboundWorker(gateway)
            samples = [worker.compose(message) for message in messages[:count]]
            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(worker.run)
                # Polling is fine here: the sink runs in another thread and storage has no events.
                while sink.count < count:  # noqa: ASYNC110
                    await trio.sleep(0.01)
                while await gateway.storage.list_outbound(user.id, "queued", None):  # noqa: ASYNC110
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
            return (
                time.perf_counter() - started,
                samples,
                worker.outcome_commits,
                worker.relay_connections_opened,
            )


def run_peer(port: int, messages: list[bytes], concurrency: int, *, keep: bool) -> float:
    """Seconds for smtplib threads to send the same bytes: one connection per message, or
    (`keep`) one per thread for all its messages."""
    pending = list(messages)
    lock = threading.Lock()

    def next_message() -> bytes | None:
        with lock:
            return pending.pop() if pending else None

    def sender() -> None:
        if keep:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                while (data := next_message()) is not None:
                    client.sendmail(SENDER, [RECIPIENT], data)
            return
        while (data := next_message()) is not None:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.sendmail(SENDER, [RECIPIENT], data)

    threads = [threading.Thread(target=sender) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


E2A_RUNS = (
    ("e2a worker, a connection per message", 0.0, False),
    ("e2a worker, connections kept (default)", 5.0, False),
    ("e2a worker, connections kept, PIPELINING", 5.0, True),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per run")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="the relay's distance")
    args = parser.parse_args()
    sink = CountingSink()
    sink_port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=sink_port)
    controller.start()
    try:
        with contextlib.ExitStack() as stack:
            port = sink_port
            if args.latency_ms > 0:
                port = stack.enter_context(latency_proxy(sink_port, args.latency_ms / 1000))
            runs = []
            for _, idle_seconds, pipelining in E2A_RUNS:
                sink.count = 0
                sink.pipelining = pipelining
                runs.append(trio.run(run_e2a, port, args.messages, sink, idle_seconds))
            sink.pipelining = False
            samples = runs[0][1]
            peer = {
                keep: run_peer(port, samples, MAX_IN_FLIGHT, keep=keep) for keep in (False, True)
            }
    finally:
        controller.stop()
    where = f"{args.latency_ms:g} ms away each way" if args.latency_ms else "on 127.0.0.1"
    print(f"outbound: {args.messages} messages to an aiosmtpd sink {where}")
    print(f"  {'':52} {'seconds':>8} {'msg/s':>8} {'connections':>12} {'outcome txs':>12}")
    for (name, _, _), (taken, _, commits, connections) in zip(E2A_RUNS, runs, strict=True):
        print(
            f"  {name:52} {taken:8.2f} {args.messages / taken:8.0f} {connections:12d} {commits:12d}"
        )
    for keep, name in ((False, "a connection per message"), (True, "a connection per thread")):
        label = f"peer: smtplib, {MAX_IN_FLIGHT} threads, {name}"
        print(f"  {label:52} {peer[keep]:8.2f} {args.messages / peer[keep]:8.0f}")
    print(
        f"  ratio e2a / smtplib: a connection per message {peer[False] / runs[0][0]:.2f}x, "
        f"connections kept {peer[True] / runs[1][0]:.2f}x, "
        f"kept and pipelined {peer[True] / runs[2][0]:.2f}x"
    )


if __name__ == "__main__":
    main()
