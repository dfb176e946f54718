"""Storage backends side by side: inbound ingest (messages/s) and webhook job claims (jobs/s).

For SQLite (a temp file) and PostgreSQL (a throwaway cluster this script starts and stops with
packaging/pg-test-cluster.sh, on 127.0.0.1 only):
- ingest 1/txn: `store_inbound` of one 1 KB message per transaction, from `--concurrency`
  callers at once (what SMTP sessions do without group commit);
- ingest 64/txn: the same messages in transactions of 64 (what group commit does under load);
- claims: `--concurrency` workers lease the resulting webhook jobs 100 at a time until none
  is left, as replicas' webhook workers do; every job must be claimed exactly once.

Run: `.venv/bin/python bench/storage.py [--messages 4000] [--concurrency 8]`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from e2a_gateway.storage import open_storage
from e2a_gateway.storage.base import Agent, Storage
from e2a_gateway.storage.new_inbound import NewInboundMessage

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_SCRIPT = ROOT / "packaging" / "pg-test-cluster.sh"
NOW = "2026-01-01T00:00:00Z"
AGENT = "bench@agents.bench"
BODY = b"Subject: bench\r\n\r\n" + b"x" * 1000 + b"\r\n"
BATCH = 64
CLAIM_LIMIT = 100
LEASE_SECONDS = 600.0
CLUSTER_SECONDS = 120


@dataclass
class Figures:
    """One backend's results (None: not measured)."""

    backend: str
    single: float | None = None
    batched: float | None = None
    claims: float | None = None
    note: str = ""


def message(number: int) -> NewInboundMessage:
    """A 1 KB message for the benchmark's cloud agent."""
    return NewInboundMessage(
        id=f"msg_bench_{number:08d}",
        agent_email=AGENT,
        envelope_from="sender@example.org",
        from_addr="sender@example.org",
        reply_to=None,
        to=[AGENT],
        cc=[],
        subject="bench",
        conversation_id=None,
        rfc_message_id=f"<{number}@example.org>",
        raw_message=BODY,
        auth_headers={},
        authentication_results={},
        received_at=NOW,
    )


async def prepare(storage: Storage) -> None:
    """Migrate and add one user with one cloud agent."""
    await storage.migrate()
    user, _ = await storage.ensure_user("usr_bench", "owner@example.com", NOW)
    await storage.add_agent(
        Agent(
            email=AGENT,
            user_id=user.id,
            domain="agents.bench",
            name="bench",
            webhook_url="https://hooks.example.com/x",
            agent_mode="cloud",
            hitl_enabled=False,
            hitl_ttl_seconds=604800,
            hitl_expiration_action="reject",
            created_at=NOW,
        )
    )


async def timed_concurrently(
    concurrency: int, batches: list[list[NewInboundMessage]], storage: Storage
) -> float:
    """Seconds to store every batch (one transaction each) from `concurrency` callers."""
    remaining = iter(batches)

    async def store_some() -> None:
        for batch in remaining:
            await storage.store_inbound(batch, 0.0)

    return await _timed(concurrency, store_some)


async def _timed(concurrency: int, work: Callable[[], Awaitable[None]]) -> float:
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(work)
    return time.perf_counter() - started


async def claim_all(storage: Storage, concurrency: int, expected: int) -> float:
    """Seconds for `concurrency` workers to lease every webhook job; checks none is taken twice."""
    claimed: list[int] = []

    async def claim_until_empty() -> None:
        for _ in range(expected // CLAIM_LIMIT + 2 * concurrency + 10):
            jobs = await storage.claim_webhook_jobs(
                1.0, CLAIM_LIMIT, LEASE_SECONDS, {}, CLAIM_LIMIT
            )
            if not jobs:
                return
            claimed.extend(job.id for job in jobs)

    seconds = await _timed(concurrency, claim_until_empty)
    if len(claimed) != expected or len(set(claimed)) != expected:
        raise RuntimeError(f"claimed {len(claimed)} ({len(set(claimed))} distinct) of {expected}")
    return seconds


async def measure(backend: str, url: str, messages: int, concurrency: int) -> Figures:
    """Ingest twice (one message per transaction, then 64), then claim every job."""
    figures = Figures(backend)
    storage = open_storage(url)
    try:
        await prepare(storage)
        singles = [[message(n)] for n in range(messages)]
        figures.single = messages / await timed_concurrently(concurrency, singles, storage)
        batched = [message(n) for n in range(messages, 2 * messages)]
        chunks = [batched[i : i + BATCH] for i in range(0, messages, BATCH)]
        figures.batched = messages / await timed_concurrently(concurrency, chunks, storage)
        figures.claims = 2 * messages / await claim_all(storage, concurrency, 2 * messages)
    finally:
        await storage.close()
    return figures


def start_cluster() -> tuple[str, str]:
    """Start a throwaway PostgreSQL cluster; return (url, directory)."""
    started = subprocess.run(
        [str(CLUSTER_SCRIPT), "start"],
        capture_output=True,
        text=True,
        timeout=CLUSTER_SECONDS,
        check=False,
    )
    if started.returncode != 0:
        raise RuntimeError(started.stderr.strip().splitlines()[-1] if started.stderr else "failed")
    exports = dict(
        line.removeprefix("export ").split("=", 1)
        for line in started.stdout.splitlines()
        if line.startswith("export ")
    )
    return exports["E2A_TEST_POSTGRES_URL"], exports["E2A_PG_TEST_DIR"]


def stop_cluster(directory: str) -> None:
    """Stop the cluster and delete its directory."""
    subprocess.run(
        [str(CLUSTER_SCRIPT), "stop", directory],
        capture_output=True,
        timeout=CLUSTER_SECONDS,
        check=False,
    )


def rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def print_table(rows: list[Figures], messages: int, concurrency: int) -> None:
    print(f"{messages} messages of 1 KB per ingest run, {concurrency} concurrent callers")
    header = f"{'backend':<10} {'ingest 1/txn':>14} {'ingest 64/txn':>14} {'claims':>12}"
    print(header)
    print(f"{'':<10} {'msg/s':>14} {'msg/s':>14} {'jobs/s':>12}")
    for row in rows:
        line = f"{row.backend:<10} {rate(row.single):>14} {rate(row.batched):>14}"
        print(f"{line} {rate(row.claims):>12}  {row.note}".rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=4000, help="messages per ingest run")
    parser.add_argument("--concurrency", type=int, default=8, help="callers (and claimers)")
    args = parser.parse_args()
    rows: list[Figures] = []
    with tempfile.TemporaryDirectory(prefix="e2a-bench-") as directory:
        sqlite_url = f"sqlite:///{Path(directory) / 'bench.db'}"
        rows.append(trio.run(measure, "sqlite", sqlite_url, args.messages, args.concurrency))
    print("starting a throwaway PostgreSQL cluster…", file=sys.stderr)
    try:
        url, cluster = start_cluster()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        rows.append(Figures("postgres", note=f"(not measured: {exc})"))
    else:
        try:
            rows.append(trio.run(measure, "postgres", url, args.messages, args.concurrency))
        finally:
            stop_cluster(cluster)
    print_table(rows, args.messages, args.concurrency)


if __name__ == "__main__":
    main()
