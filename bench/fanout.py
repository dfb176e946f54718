"""Fan-out: one 100 KB message to 1, 10 and 50 local agents per SMTP transaction.

`e2a serve` (default log level, `smtp.processes` one per CPU, SQLite WAL with
synchronous=FULL) with 50 local agents; bench/_smtp_load.py keeps `--sessions` (10)
connections busy with transactions naming 1, 10 or 50 of them, pipelined (RFC 2920) as MTAs
send them. For each count it prints transactions and deliveries per second, the p50/p99
DATA-to-250 latency, and per transaction the bytes the gateway's processes wrote to disk
(/proc/PID/io write_bytes: the database, its WAL and checkpoints, the log), the growth of the
database (pages in use), the CPU time of the main process (storage, the group commit, its own
sessions), of the acceptor processes and of the load generator (this process, which shares the
cores with the gateway: its client reads a pipelined group's replies under one deadline, so
its cost hardly grows with the recipients), and from the gateway's `/metrics` the share of the
time its group commit was busy and the SMTP transactions each commit held (a commit busy near
100 % is what bounds the rate). The raw message is stored once per transaction,
whatever the number of recipients. Runs alternate between the three counts, `--rounds` times.
The ratio asked of fan-out follows the main process's CPU per transaction: 0.5x asks that a
50-agent transaction cost it at most twice what a single-recipient one does.

The ratio itself is then measured again in `--pairs` (8) short interleaved pairs, one agent
then fifty, `--pair-seconds` (1.5) each: the machine's speed drifts by 10-30 % from one run to
the next (a fixed Python loop here takes 0.26-0.38 s), and two runs of the same build have
differed by 0.08 in the ratio, so a ratio of two rates measured half a minute apart says little
on its own. Each pair's two rates are measured seconds apart, and with kept-open sessions over
the same ten connections: which process the kernel gave them to moves both rates of a pair
alike, not one of them. The verdict takes the median of the pairs' ratios and prints their
quartiles beside it.

Run: `.venv/bin/python bench/fanout.py [--seconds 4] [--rounds 2] [--pairs 8] [--sessions 10]
[--per-connection]` (about a minute and a half).

At 10 sessions a 50-agent message is bound by the latency of its commit as much as by the
gateway's capacity; `--sessions 50` measures the capacity alone. By default each session keeps
its connection for the whole run, so where the kernel put those ten connections (which process
serves them) weighs on every figure: the acceptors' CPU column near 0 says the main process
took them all. `--per-connection` sends each message over a connection of its own, as MTAs
mostly deliver, so connections are placed afresh all along.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._gateway_process import (
    AGENT,
    SHARED_DOMAIN,
    GatewayProcess,
    compile_bytecode,
    cpu_seconds,
    process_tree,
    tree_cpu_seconds,
)
from bench._quiet_dns import QuietDns
from bench._smtp_load import LoadResult, closed_loop, kept_sessions_in_turn, make_message

RECIPIENTS = (1, 10, 50)
SESSIONS = 10
"""Connections kept busy by default (`--sessions`)."""
SIZE = 100 * 1024
PAIR_WARM_UP = 0.3
"""Seconds each run of a pair sends before it counts: the sessions connect and fill."""


@dataclass
class Commits:
    """The gateway's group commits of inbound mail, from its `/metrics` (or the difference of
    two readings)."""

    count: int = 0
    seconds: float = 0.0
    transactions: int = 0

    def __sub__(self, earlier: Commits) -> Commits:
        return Commits(
            self.count - earlier.count,
            self.seconds - earlier.seconds,
            self.transactions - earlier.transactions,
        )

    def __add__(self, other: Commits) -> Commits:
        return Commits(
            self.count + other.count,
            self.seconds + other.seconds,
            self.transactions + other.transactions,
        )


@dataclass
class Row:
    """One recipient count, summed over the rounds."""

    recipients: int
    messages: int = 0
    seconds: float = 0.0
    written: int = 0
    grown: int = 0
    main_cpu: float = 0.0
    """CPU seconds of the main process (storage, the group commit, its own sessions)."""
    acceptors_cpu: float = 0.0
    """CPU seconds of the acceptor processes (their sessions)."""
    load_cpu: float = 0.0
    """CPU seconds of this process: the load generator and the DNS fixture, which share the
    machine's cores with the gateway."""
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    commits: Commits = field(default_factory=Commits)
    """The group commits during the runs (from the gateway's `/metrics`)."""

    @property
    def rate(self) -> float:
        """Transactions per second."""
        return self.messages / self.seconds if self.seconds else 0.0


def read_commits(base_url: str) -> Commits:
    """The group commit's totals so far, from `GET /metrics`."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).raise_for_status().text
    found = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }
    return Commits(
        int(found.get("e2a_inbound_commit_seconds_count", 0)),
        found.get("e2a_inbound_commit_seconds_sum", 0.0),
        int(found.get("e2a_inbound_commit_transactions_sum", 0)),
    )


def written_bytes(pid: int) -> int:
    """Bytes `pid`'s process tree has caused to be written to storage (/proc/PID/io)."""
    total = 0
    for member in process_tree(pid):
        try:
            text = Path(f"/proc/{member}/io").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("write_bytes:"):
                total += int(line.split()[1])
    return total


def database_bytes(path: Path) -> int:
    """Bytes in use in the database (pages less free pages), WAL included."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        size = db.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * size)


def percentile(values: list[float], fraction: float) -> float:
    return LoadResult(latencies=values).percentile(fraction)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="time per measured run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per count")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--sessions", type=int, default=SESSIONS, help="connections kept busy")
    parser.add_argument(
        "--per-connection", action="store_true", help="each message over a connection of its own"
    )
    parser.add_argument("--pairs", type=int, default=8, help="interleaved pairs for the ratio")
    parser.add_argument("--pair-seconds", type=float, default=1.5, help="time per run of a pair")
    args = parser.parse_args()
    compile_bytecode()
    print(
        f"Fan-out of a 100 KB message on {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {args.sessions} sessions"
        f"{' (one message per connection)' if args.per_connection else ''}, "
        f"smtp.processes = {args.processes}, "
        f"load average {' '.join(f'{load:.2f}' for load in os.getloadavg())}",
        flush=True,
    )
    agents = [AGENT] + [f"agent{number}@{SHARED_DOMAIN}" for number in range(1, max(RECIPIENTS))]
    rows = {count: Row(count) for count in RECIPIENTS}
    pair_ratios: list[float] = []
    with QuietDns() as dns, tempfile.TemporaryDirectory(prefix="e2a-bench-") as temp:
        folder = Path(temp)
        smtp: dict[str, object] = {"max_sessions_per_ip": 200, "processes": args.processes}
        gateway = GatewayProcess(folder, dns.address, smtp=smtp, log_level=None, metrics=True)
        gateway.start()
        try:
            client = gateway.bootstrap()
            for address in agents[1:]:
                slug = address.split("@")[0]
                created = client.post("/agents", json={"slug": slug, "agent_mode": "local"})
                created.raise_for_status()
            client.close()
            assert gateway.process is not None
            message = make_message(SIZE, AGENT)

            def load(count: int, seconds: float, warm_up: float) -> LoadResult:
                """Transactions naming the first `count` agents, from every session at once."""
                return trio.run(
                    partial(
                        closed_loop,
                        gateway.smtp_port,
                        args.sessions,
                        message,
                        agents[:count],
                        warmup=warm_up,
                        duration=seconds,
                        pipelining=True,
                        per_connection=args.per_connection,
                    )
                )

            for round_number in range(args.rounds):
                order = RECIPIENTS if round_number % 2 == 0 else RECIPIENTS[::-1]
                for count in order:
                    row = rows[count]
                    pid = gateway.process.pid
                    written = written_bytes(pid)
                    size = database_bytes(folder / "e2a.db")
                    main_cpu, tree_cpu = cpu_seconds(pid), tree_cpu_seconds(pid)
                    commits = read_commits(gateway.url)
                    load_cpu = cpu_seconds(os.getpid())
                    result = load(count, args.seconds, 0.0)
                    row.load_cpu += cpu_seconds(os.getpid()) - load_cpu
                    time.sleep(0.5)  # transactions begun in the last moments commit
                    row.commits = row.commits + (read_commits(gateway.url) - commits)
                    done = result.messages
                    row.written += written_bytes(pid) - written
                    main_used = cpu_seconds(pid) - main_cpu
                    row.main_cpu += main_used
                    row.acceptors_cpu += tree_cpu_seconds(pid) - tree_cpu - main_used
                    row.grown += database_bytes(folder / "e2a.db") - size
                    row.messages += done
                    row.seconds += result.seconds
                    row.latencies += result.latencies
                    row.failures += result.failures
                    print(
                        f"  {count:>2} recipients: {result.rate:6.1f} msg/s "
                        f"(load {os.getloadavg()[0]:.1f})",
                        file=sys.stderr,
                        flush=True,
                    )
            fewest, most = RECIPIENTS[0], RECIPIENTS[-1]

            def load_pair() -> list[LoadResult]:
                """One agent, then fifty: over the same kept-open connections, or, one message
                per connection, each run on connections of its own."""
                if args.per_connection:
                    return [
                        load(count, args.pair_seconds, PAIR_WARM_UP) for count in (fewest, most)
                    ]
                return trio.run(
                    partial(
                        kept_sessions_in_turn,
                        gateway.smtp_port,
                        args.sessions,
                        message,
                        [agents[:fewest], agents[:most]],
                        warmup=PAIR_WARM_UP,
                        duration=args.pair_seconds,
                        pipelining=True,
                    )
                )

            for _ in range(args.pairs):
                pair = load_pair()
                rows[fewest].failures += pair[0].failures
                rows[most].failures += pair[1].failures
                single, widest = pair[0].rate, pair[1].rate
                if single:
                    pair_ratios.append(widest / single)
                    print(
                        f"  pair: {single:6.1f} / {widest:6.1f} msg/s, {widest / single:.3f}x",
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            code = gateway.terminate()
            if code != 0:
                print(f"e2a serve exited with {code}:\n{gateway.log_text()}", file=sys.stderr)
    print_rows(list(rows.values()), pair_ratios)


def print_rows(rows: list[Row], pair_ratios: list[float]) -> None:
    """The table of every count, the main process's cost per further copy, and the verdict:
    from the pairs' median ratio when there are pairs, else from the table's rates."""
    header = (
        "recipients",
        "msg/s",
        "deliveries/s",
        "p50 ms",
        "p99 ms",
        "written KB/msg",
        "db growth KB/msg",
        "CPU ms/msg main",
        "acceptors",
        "load generator",
        "commit busy",
        "DATA/commit",
        "failed",
    )
    lines = [header]
    for row in rows:
        per = max(row.messages, 1)
        lines.append(
            (
                str(row.recipients),
                f"{row.rate:.1f}",
                f"{row.rate * row.recipients:.0f}",
                f"{percentile(row.latencies, 0.5) * 1000:.1f}",
                f"{percentile(row.latencies, 0.99) * 1000:.1f}",
                f"{row.written / per / 1024:.1f}",
                f"{row.grown / per / 1024:.1f}",
                f"{row.main_cpu / per * 1000:.2f}",
                f"{row.acceptors_cpu / per * 1000:.2f}",
                f"{row.load_cpu / per * 1000:.2f}",
                f"{row.commits.seconds / row.seconds * 100:.0f} %" if row.seconds else "-",
                f"{row.commits.transactions / max(row.commits.count, 1):.1f}",
                str(row.failures),
            )
        )
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    print()
    for index, line in enumerate(lines):
        print("  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))
    single, widest = rows[0], rows[-1]
    further = widest.recipients - single.recipients
    if single.messages and widest.messages and further:
        single_ms = single.main_cpu / single.messages * 1000
        widest_ms = widest.main_cpu / widest.messages * 1000
        print(
            f"\nmain process per further copy: {(widest_ms - single_ms) / further * 1000:.0f} us "
            f"of CPU; 0.5x allows {single_ms / further * 1000:.0f} (a {widest.recipients}-agent "
            "transaction at twice a single-recipient one's cost)"
        )
    ratio = widest.rate / single.rate if single.rate else 0.0
    measured = f"{ratio:.2f}x over the table's runs"
    if pair_ratios:
        ratio = statistics.median(pair_ratios)
        low, _, high = (
            statistics.quantiles(pair_ratios, n=4, method="inclusive")
            if len(pair_ratios) > 1
            else [ratio] * 3
        )
        measured = (
            f"{ratio:.3f}x, the median of {len(pair_ratios)} interleaved pairs (quartiles "
            f"{low:.2f}-{high:.2f}; {measured})"
        )
    verdict = "PASS" if ratio >= 0.5 else "MISS"
    print(
        f"\n{verdict}  fan-out to {widest.recipients} agents >= 0.5x single-recipient msg/s: "
        f"{measured} (load average {os.getloadavg()[0]:.2f})"
    )


if __name__ == "__main__":
    main()
