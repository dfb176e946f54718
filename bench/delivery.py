"""Delivery to agents: WebSocket latency, webhook throughput and idle WebSocket memory.

`e2a serve` runs as its own process on a fresh SQLite file; this script is every client:
- latency: messages sent over SMTP at a steady rate to a local agent with one WebSocket
  listener; the time from the end of DATA (the client's final ".") to the notification frame
  (target p99 <= 25 ms at 100 msg/s). The time from the 250 reply is shown as well;
- webhooks: a backlog of messages for a cloud agent is stored before the server starts, and a
  receiver on 127.0.0.1 (trio + h11) counts deliveries per second (target >= 500/s). Peer:
  httpx alone POSTing the same bodies with the same concurrency (no storage, no signing).
  Then the same for a `/v1` webhook subscriber (a second server on a second database, whose
  backlog's `email.received` events are queued to one webhook): target within 10 % of the
  per-agent webhook's rate;
- idle WebSockets: many connections held open, server RSS before and after (target 5,000
  connections with the server under 400 MB). Peer: a bare Quart-Trio WebSocket route on
  hypercorn holding as many connections: what the web stack costs before e2a adds anything.

Run: `.venv/bin/python bench/delivery.py [--rate 100] [--seconds 10] [--webhooks 3000]
[--connections 5000]`. Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio
from trio_websocket import connect_websocket_url, open_websocket_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from e2a_gateway.accounts import bootstrap_user
from e2a_gateway.config import Settings
from e2a_gateway.gateway import open_gateway
from e2a_gateway.inbound.pipeline import InboundMailSink
from e2a_gateway.mailauth.resolver import FixtureResolver, Zone
from e2a_gateway.signing.credentials import new_secret_seed
from e2a_gateway.smtp.protocol import Envelope, Mailbox
from e2a_gateway.storage.base import Agent, Webhook
from e2a_gateway.storage.group_commit import GroupCommitter
from tests.dns_server import serve_dns
from tests.http_receiver import HttpReceiver

SENDER = "bench@example.org"
DOMAIN = "agents.bench"
HANDSHAKES_AT_ONCE = 64
SENDER_ZONE: Zone = {
    "example.org": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
    "_dmarc.example.org": {"TXT": ["v=DMARC1; p=none"]},
}
START_SECONDS = 30.0

PEER_WEBSOCKET_APP = """
import sys
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart import websocket
from quart_trio import QuartTrio

app = QuartTrio("peer")

@app.websocket("/ws")
async def hold():
    await websocket.accept()
    while True:
        await websocket.receive()

@app.get("/api/health")
async def health():
    return {"status": "ok"}

config = Config()
config.bind = ["127.0.0.1:" + sys.argv[1]]
config.accesslog = None
config.websocket_ping_interval = 30.0
trio.run(serve, app, config)
"""

PEER_WEBHOOK_CLIENT = """
import json, sys, time
import httpx, trio

url, count, concurrency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
body = sys.stdin.buffer.read()
headers = {"Content-Type": "application/json"}

async def main():
    remaining = iter(range(count))
    async with httpx.AsyncClient(follow_redirects=False) as http:
        async def post_some():
            for _ in remaining:
                response = await http.post(url, content=body, headers=headers)
                response.raise_for_status()
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(post_some)
        print(json.dumps({"seconds": time.perf_counter() - started}))

trio.run(main)
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def raise_fd_limit(needed: int) -> int:
    """Raise this process's (and its children's) open-file limit as far as allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(soft, min(hard, needed)) if hard != resource.RLIM_INFINITY else max(soft, needed)
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return wanted


def rss_mb(pid: int) -> float:
    """Resident set size of process `pid` in MB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@dataclass
class Setup:
    """The prepared database and how to reach the server that will serve it."""

    folder: Path
    config: Path
    smtp_port: int
    http_port: int
    api_key: str
    live_agent: str
    idle_agent: str
    hook_agent: str

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def ws_url(self, agent: str) -> str:
        return f"ws://127.0.0.1:{self.http_port}/api/v1/agents/{agent}/ws?token={self.api_key}"


def bench_settings(
    folder: Path, smtp_port: int, http_port: int, dns_port: int
) -> dict[str, object]:
    return {
        "shared_domain": DOMAIN,
        "smtp": {"listen": f"127.0.0.1:{smtp_port}", "hostname": "mx.agents.bench"},
        "http": {"listen": f"127.0.0.1:{http_port}"},
        "database": {"url": f"sqlite:///{folder / 'e2a.db'}"},
        # No DNS leaves the machine: the sender's domain is served on loopback by this script.
        "dns": {"nameservers": [f"127.0.0.1:{dns_port}"], "timeout_seconds": 2},
        "webhooks": {"allow_private": True},
        "log": {"level": "warning"},
    }


def to_toml(values: dict[str, object]) -> str:
    top = [
        f"{key} = {json.dumps(value)}"
        for key, value in values.items()
        if not isinstance(value, dict)
    ]
    sections = [
        f"[{key}]\n" + "\n".join(f"{name} = {json.dumps(item)}" for name, item in value.items())
        for key, value in values.items()
        if isinstance(value, dict)
    ]
    return "\n".join(top) + "\n" + "\n".join(sections) + "\n"


def agent(user_id: str, slug: str, webhook_url: str | None = None) -> Agent:
    return Agent(
        email=f"{slug}@{DOMAIN}",
        user_id=user_id,
        domain=DOMAIN,
        name=slug,
        webhook_url=webhook_url,
        agent_mode="cloud" if webhook_url else "local",
        hitl_enabled=False,
        hitl_ttl_seconds=604800,
        hitl_expiration_action="reject",
        created_at="2026-01-01T00:00:00Z",
    )


def message(recipient: str, subject: str) -> bytes:
    return (
        f"From: Bench <{SENDER}>\r\nTo: {recipient}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@example.org>\r\n\r\n"
        "A message of a few lines, as agents get them.\r\nRegards,\r\nthe benchmark\r\n"
    ).encode()


async def prepare(
    folder: Path, receiver_url: str, backlog: int, dns_port: int, *, subscriber: bool = False
) -> Setup:
    """Create the user and agents, store `backlog` messages for the hook agent (so their
    deliveries are due when the server starts) and write the server's config. The hook agent is
    a cloud agent with a `webhook_url`, or with `subscriber` a local agent that a `/v1` webhook
    at `receiver_url` listens to."""
    smtp_port, http_port = free_port(), free_port()
    values = bench_settings(folder, smtp_port, http_port, dns_port)
    settings = Settings.model_validate(values)
    async with open_gateway(settings, FixtureResolver.from_zone(SENDER_ZONE)) as gateway:
        user, key, _ = await bootstrap_user(
            gateway.storage, gateway.server_key, "bench@example.com"
        )
        live, idle = agent(user.id, "live"), agent(user.id, "idle")
        hook = agent(user.id, "hook", None if subscriber else receiver_url)
        for each in (live, idle, hook):
            await gateway.storage.add_agent(each)
        if subscriber:
            subscription = Webhook(
                id="wh_bench",
                user_id=user.id,
                url=receiver_url,
                description="bench",
                events=["email.received"],
                agent_emails=[hook.email],
                conversation_ids=[],
                enabled=True,
                seed=new_secret_seed(),
                created_at="2026-01-01T00:00:00Z",
            )
            await gateway.storage.add_webhook(subscription, 1)
        sink = InboundMailSink(gateway, GroupCommitter(gateway.storage))
        mailbox = Mailbox("hook", DOMAIN)
        numbers = iter(range(backlog))

        async def store_some() -> None:
            for number in numbers:
                data = message(hook.email, f"backlog {number}")
                await sink.accept_message(Envelope("bench", SENDER, [mailbox], data), "127.0.0.1")

        async with trio.open_nursery() as nursery:
            for _ in range(32):
                nursery.start_soon(store_some)
    config = folder / "e2a.toml"
    config.write_text(to_toml(values))
    return Setup(
        folder, config, smtp_port, http_port, key.plaintext, live.email, idle.email, hook.email
    )


async def wait_healthy(url: str, process: trio.Process) -> None:
    async with httpx.AsyncClient() as http:
        with trio.fail_after(START_SECONDS):
            while True:
                if process.returncode is not None:
                    raise RuntimeError(f"server exited with {process.returncode}")
                try:
                    if (await http.get(f"{url}/api/health", timeout=1)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await trio.sleep(0.02)


@asynccontextmanager
async def server_process(
    command: list[str], health_url: str, log: Path
) -> AsyncIterator[trio.Process]:
    """Run `command` until the block ends; yield once `health_url` answers 200."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("E2A_")}
    with log.open("wb") as output:
        process = await trio.lowlevel.open_process(command, env=env, stdout=output, stderr=output)
        try:
            await wait_healthy(health_url, process)
            yield process
        finally:
            process.kill()
            await process.wait()


# -- webhooks ------------------------------------------------------------------------------


def delivered_message(body: bytes) -> str:
    """The message a delivery is about: a per-agent webhook's body or a `/v1` envelope."""
    document = json.loads(body)
    return str(document["data"]["message_id"] if "data" in document else document["message_id"])


async def measure_webhooks(receiver: HttpReceiver, count: int) -> tuple[float, int]:
    """Deliveries per second from the first delivery to the last, and distinct messages.
    Fails when no delivery arrives for the receiver's wait bound."""
    while len(receiver.requests) < count:
        await receiver.wait_for(len(receiver.requests) + 1)
    requests = receiver.requests
    span = requests[-1].at - requests[0].at
    distinct = len({delivered_message(request.body) for request in requests})
    return (len(requests) - 1) / span, distinct


# -- latency -------------------------------------------------------------------------------


class SmtpClient:
    """The least SMTP client that can time its own transactions (one connection)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buffer = b""

    async def reply(self) -> bytes:
        while True:
            end = self._buffer.find(b"\r\n")
            while end != -1:
                line, self._buffer = self._buffer[: end + 2], self._buffer[end + 2 :]
                if line[3:4] == b" ":
                    return line
                end = self._buffer.find(b"\r\n")
            data = await self._stream.receive_some(65536)
            if not data:
                raise ConnectionError("SMTP server closed the connection")
            self._buffer += data

    async def command(self, line: bytes, expected: bytes) -> None:
        await self._stream.send_all(line + b"\r\n")
        answer = await self.reply()
        if not answer.startswith(expected):
            raise RuntimeError(f"{line!r} -> {answer!r}")

    async def send(self, recipient: str, data: bytes) -> tuple[float, float]:
        """One transaction; returns (end of DATA sent, 250 received) as perf_counter times."""
        await self.command(f"MAIL FROM:<{SENDER}>".encode(), b"250")
        await self.command(f"RCPT TO:<{recipient}>".encode(), b"250")
        await self.command(b"DATA", b"354")
        await self._stream.send_all(data + b".\r\n")
        sent = time.perf_counter()
        answer = await self.reply()
        if not answer.startswith(b"250"):
            raise RuntimeError(f"DATA -> {answer!r}")
        return sent, time.perf_counter()


async def measure_latency(setup: Setup, rate: float, seconds: float) -> dict[str, list[float]]:
    """Send rate*seconds messages at a steady pace; milliseconds from DATA end / from 250 to
    the WebSocket frame."""
    count = int(rate * seconds)
    sent_at: dict[str, float] = {}
    accepted_at: dict[str, float] = {}
    framed_at: dict[str, float] = {}
    async with (
        open_websocket_url(setup.ws_url(setup.live_agent)) as ws,
        trio.open_nursery() as nursery,
    ):
        nursery.cancel_scope.deadline = trio.current_time() + seconds + 30

        async def receive_frames() -> None:
            while len(framed_at) < count:
                frame = json.loads(await ws.get_message())
                framed_at[frame["subject"]] = time.perf_counter()

        nursery.start_soon(receive_frames)
        async with await trio.open_tcp_stream("127.0.0.1", setup.smtp_port) as stream:
            smtp = SmtpClient(stream)
            await smtp.reply()
            await smtp.command(b"EHLO bench.example.org", b"250")
            started = trio.current_time()
            for number in range(count):
                await trio.sleep_until(started + number / rate)
                subject = f"live {number}"
                data = message(setup.live_agent, subject)
                sent_at[subject], accepted_at[subject] = await smtp.send(setup.live_agent, data)
    if len(framed_at) < count:
        raise RuntimeError(f"only {len(framed_at)} of {count} notifications arrived")
    return {
        "DATA end": [(framed_at[s] - sent_at[s]) * 1000 for s in sent_at],
        "250 reply": [(framed_at[s] - accepted_at[s]) * 1000 for s in accepted_at],
    }


# -- idle connections ----------------------------------------------------------------------


async def hold_connections(
    url: str, count: int, pid: int, settle: float = 2.0
) -> tuple[float, float, int]:
    """Open `count` WebSockets to `url` and keep them idle; server RSS before and after (MB)
    and how many connected."""
    before = rss_mb(pid)
    connected = 0
    all_open = trio.Event()
    handshakes = trio.CapacityLimiter(HANDSHAKES_AT_ONCE)
    async with trio.open_nursery() as nursery:

        async def hold() -> None:
            nonlocal connected
            async with handshakes:
                connection = await connect_websocket_url(nursery, url)
            connected += 1
            if connected == count:
                all_open.set()
            async with connection:
                await trio.sleep_forever()

        for _ in range(count):
            nursery.start_soon(hold)
        with trio.fail_after(60 + count / 50):
            await all_open.wait()
        await trio.sleep(settle)
        after = rss_mb(pid)
        nursery.cancel_scope.cancel()
    return before, after, connected


def report_connections(name: str, before: float, after: float, count: int) -> None:
    per_100 = count / max(after - before, 0.001) * 100
    row(
        name,
        f"{count} held, RSS {before:5.1f} -> {after:5.1f} MB, "
        f"{(after - before) * 1024 / count:4.1f} KB each, {per_100:5.0f} per 100 MB",
    )


# -- main ----------------------------------------------------------------------------------


def row(name: str, figure: str) -> None:
    print(f"  {name:36} {figure}")


async def webhook_section(receiver: HttpReceiver, count: int) -> float:
    """The per-agent webhook worker's rate (printed with its peer's)."""
    print(f"webhooks: a backlog of {count} messages delivered to a receiver on 127.0.0.1")
    rate, distinct = await measure_webhooks(receiver, count)
    row("e2a webhook worker", f"{rate:6.0f} deliveries/s ({distinct} distinct messages)")
    body = receiver.requests[0].body
    receiver.requests.clear()
    command = [sys.executable, "-c", PEER_WEBHOOK_CLIENT, receiver.url, str(count), "8"]
    peer = await trio.run_process(command, stdin=body, capture_stdout=True)
    row(
        "peer: httpx alone, 8 at a time",
        f"{count / json.loads(peer.stdout)['seconds']:6.0f} POSTs/s",
    )
    print("  target: >= 500 deliveries/s")
    return rate


async def subscriber_section(
    folder: Path, dns_port: int, count: int, legacy_rate: float, nursery: trio.Nursery
) -> None:
    """The `/v1` webhook subscriber's rate over the same backlog, on a server of its own."""
    receiver = HttpReceiver()
    await nursery.start(receiver.serve)
    await trio.Path(folder).mkdir()
    setup = await prepare(folder, receiver.url, count, dns_port, subscriber=True)
    command = [sys.executable, "-m", "e2a_gateway", "serve", "--config", str(setup.config)]
    async with server_process(command, setup.http_url, folder / "e2a.log"):
        print(f"/v1 webhook subscriber: a backlog of {count} email.received events")
        rate, distinct = await measure_webhooks(receiver, count)
    row("e2a /v1 delivery worker", f"{rate:6.0f} deliveries/s ({distinct} distinct messages)")
    row("  beside the per-agent webhook", f"{rate / legacy_rate * 100:6.1f} %")
    print("  target: within 10 % of the per-agent webhook")


async def latency_section(setup: Setup, rate: float, seconds: float) -> None:
    print(f"latency: SMTP -> WebSocket frame, {rate:g} msg/s for {seconds:g} s")
    for label, samples in (await measure_latency(setup, rate, seconds)).items():
        row(
            f"from {label}",
            f"p50 {statistics.median(samples):6.2f} ms  p99 {percentile(samples, 0.99):6.2f} ms"
            f"  max {max(samples):6.2f} ms",
        )
    print("  target: p99 <= 25 ms")


async def connections_section(setup: Setup, server_pid: int, count: int, folder: Path) -> None:
    print(f"idle WebSockets: {count} connections")
    before, after, held = await hold_connections(setup.ws_url(setup.idle_agent), count, server_pid)
    report_connections("e2a", before, after, held)
    port = free_port()
    command = [sys.executable, "-c", PEER_WEBSOCKET_APP, str(port)]
    async with server_process(command, f"http://127.0.0.1:{port}", folder / "peer.log") as peer:
        before, after, held = await hold_connections(f"ws://127.0.0.1:{port}/ws", count, peer.pid)
    report_connections("peer: bare Quart-Trio on hypercorn", before, after, held)
    print("  target: >= 5,000 connections with the server under 400 MB")


async def main(args: argparse.Namespace) -> None:
    limit = raise_fd_limit(2 * args.connections + 1000)
    if limit < args.connections + 500:
        raise SystemExit(f"open-file limit {limit} is too low for {args.connections} connections")
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        async with trio.open_nursery() as nursery:
            receiver = HttpReceiver()
            await nursery.start(receiver.serve)
            dns_port = await nursery.start(serve_dns, SENDER_ZONE)
            print(f"preparing {args.webhooks} messages for a cloud agent ...", flush=True)
            setup = await prepare(folder, receiver.url, args.webhooks, dns_port)
            command = [sys.executable, "-m", "e2a_gateway", "serve", "--config", str(setup.config)]
            async with server_process(command, setup.http_url, folder / "e2a.log") as server:
                legacy_rate = await webhook_section(receiver, args.webhooks)
                if not args.only_webhooks:
                    await latency_section(setup, args.rate, args.seconds)
                    await connections_section(setup, server.pid, args.connections, folder)
            await subscriber_section(folder / "v1", dns_port, args.webhooks, legacy_rate, nursery)
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=100.0, help="SMTP messages per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to send")
    parser.add_argument("--webhooks", type=int, default=3000, help="webhook backlog size")
    parser.add_argument("--connections", type=int, default=5000, help="idle WebSockets")
    parser.add_argument(
        "--only-webhooks", action="store_true", help="measure the two webhook paths only"
    )
    trio.run(main, parser.parse_args())
