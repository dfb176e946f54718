"""SMTP ingest: e2a against aiosmtpd committing to SQLite the same way, same machine, same run.

For 1 KB and 100 KB messages at 1, 10 and 50 concurrent sessions it prints messages per second
and the p50/p99 DATA-to-250 latency (the time from the message's final "." to the 250 that
promises it is on disk), then the latencies at a fixed 200 messages/s, then the targets of
issue 3. Both servers are real processes on a fresh SQLite file in WAL mode with
synchronous=FULL; e2a is `e2a serve` with its full inbound pipeline, the peer is aiosmtpd with
a handler that commits one row per recipient before answering 250 (bench/_aiosmtpd_sink.py).
The load comes from bench/_smtp_load.py in this process.

Run: `.venv/bin/python bench/smtp_ingest.py [--seconds 4]` (about two minutes).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._gateway_process import (
    AGENT,
    GatewayProcess,
    clean_environment,
    free_port,
)
from bench._quiet_dns import QuietDns
from bench._smtp_load import LoadResult, closed_loop, fixed_rate, make_message
from e2a.storage import open_storage
from e2a.storage.base import Agent

SIZES = {"1 KB": 1024, "100 KB": 100 * 1024}
SESSIONS = (1, 10, 50)
FIXED_RATE = 200.0
FIXED_RATE_SESSIONS = 20
HERE = Path(__file__).resolve().parent
PEER_SCRIPTS = {
    "aiosmtpd": HERE / "_aiosmtpd_sink.py",
    "e2a-smtp": HERE / "_e2a_listener_sink.py",
}


@dataclass(frozen=True)
class Row:
    server: str
    size: str
    sessions: int | str
    result: LoadResult


@contextmanager
def e2a_server(folder: Path, dns: str) -> Iterator[int]:
    """`e2a serve` on a fresh database with the agent registered; yields its SMTP port."""
    folder.mkdir()
    gateway = GatewayProcess(folder, dns, smtp={"max_sessions_per_ip": 200})
    gateway.start()
    try:
        gateway.bootstrap().close()
        yield gateway.smtp_port
    finally:
        code = gateway.terminate()
        if code != 0:
            print(f"e2a serve exited with {code}:\n{gateway.log_text()}", file=sys.stderr)


@contextmanager
def handler_server(name: str, folder: Path) -> Iterator[int]:
    """A server from PEER_SCRIPTS on a fresh database holding e2a's schema and the agent."""
    folder.mkdir()
    database = folder / "peer.db"
    trio.run(prepare_peer_database, str(database))
    port = free_port()
    log = folder / "peer.log"
    with log.open("wb") as errors:
        process = subprocess.Popen(
            [sys.executable, str(PEER_SCRIPTS[name]), str(port), str(database)],
            env={**clean_environment(), "PYTHONPATH": str(HERE.parent)},
            stdout=subprocess.PIPE,
            stderr=errors,
        )
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"{name} did not start: {log.read_text()}")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


async def prepare_peer_database(path: str) -> None:
    """e2a's own schema, a user and the agent, written with e2a's storage code."""
    storage = open_storage(f"sqlite:///{path}")
    await storage.migrate()
    user, _ = await storage.ensure_user("usr_bench", "owner@example.com", "2026-01-01T00:00:00Z")
    await storage.add_agent(
        Agent(
            email=AGENT,
            user_id=user.id,
            domain=AGENT.split("@")[1],
            name="bot",
            webhook_url=None,
            agent_mode="local",
            hitl_enabled=False,
            hitl_ttl_seconds=604800,
            hitl_expiration_action="reject",
            created_at="2026-01-01T00:00:00Z",
        )
    )
    await storage.close()


def measure(server: str, port: int, size: str, seconds: float, with_fixed_rate: bool) -> list[Row]:
    message = make_message(SIZES[size], AGENT)
    rows = []
    for sessions in SESSIONS:
        run = partial(closed_loop, port, sessions, message, AGENT, warmup=0.5, duration=seconds)
        rows.append(Row(server, size, sessions, trio.run(run)))
        progress(rows[-1])
    if with_fixed_rate:
        run = partial(
            fixed_rate, port, FIXED_RATE, FIXED_RATE_SESSIONS, message, AGENT, duration=seconds
        )
        rows.append(Row(server, size, f"{FIXED_RATE:.0f}/s", trio.run(run)))
        progress(rows[-1])
    return rows


def progress(row: Row) -> None:
    print(
        f"  {row.server:8} {row.size:6} {row.sessions!s:>6}: {row.result.rate:8.0f} msg/s",
        file=sys.stderr,
        flush=True,
    )


def milliseconds(value: float) -> str:
    return f"{value * 1000:.1f}"


def print_table(rows: list[Row]) -> None:
    header = ("server", "size", "sessions", "msg/s", "p50 ms", "p99 ms", "failed")
    lines = [header]
    for row in rows:
        result = row.result
        lines.append(
            (
                row.server,
                row.size,
                str(row.sessions),
                f"{result.rate:.0f}",
                milliseconds(result.percentile(0.50)),
                milliseconds(result.percentile(0.99)),
                str(result.failures),
            )
        )
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    for index, line in enumerate(lines):
        cells = [
            cell.ljust(width) if column < 2 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))


def print_targets(rows: list[Row]) -> None:
    def find(server: str, size: str, sessions: int | str) -> LoadResult:
        return next(
            row.result
            for row in rows
            if (row.server, row.size, row.sessions) == (server, size, sessions)
        )

    checks: list[tuple[str, Callable[[], tuple[bool, str]]]] = []
    for size in SIZES:
        e2a, peer = find("e2a", size, 50), find("aiosmtpd", size, 50)

        def ratio(e2a: LoadResult = e2a, peer: LoadResult = peer) -> tuple[bool, str]:
            value = e2a.rate / peer.rate if peer.rate else float("inf")
            return value >= 1.5, f"{value:.2f}x"

        checks.append((f"e2a >= 1.5x aiosmtpd msg/s, {size}, 50 sessions", ratio))
    best = max(find("e2a", "1 KB", sessions).rate for sessions in SESSIONS)
    checks.append((">= 1,000 msg/s for 1 KB", lambda: (best >= 1000, f"{best:.0f} msg/s")))
    fixed = find("e2a", "1 KB", f"{FIXED_RATE:.0f}/s")
    p99 = fixed.percentile(0.99)
    checks.append(
        (f"p99 <= 20 ms at {FIXED_RATE:.0f} msg/s", lambda: (p99 <= 0.020, f"{p99 * 1000:.1f} ms"))
    )
    print()
    for name, check in checks:
        passed, value = check()
        print(f"{'PASS' if passed else 'MISS'}  {name}: {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measured time per run")
    args = parser.parse_args()
    started = time.monotonic()
    print(
        f"SMTP ingest on {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{args.seconds:g} s per run (progress on stderr)",
        flush=True,
    )
    rows: list[Row] = []
    with QuietDns() as dns, tempfile.TemporaryDirectory(prefix="e2a-bench-") as temp:
        folder = Path(temp)
        for size in SIZES:
            fixed = size == "1 KB"
            with e2a_server(folder / f"e2a-{SIZES[size]}", dns.address) as port:
                rows += measure("e2a", port, size, args.seconds, fixed)
            for name in PEER_SCRIPTS:
                with handler_server(name, folder / f"{name}-{SIZES[size]}") as port:
                    rows += measure(name, port, size, args.seconds, fixed)
    print()
    print_table(rows)
    print_targets(rows)
    print(f"\n({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
