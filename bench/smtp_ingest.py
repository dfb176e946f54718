"""SMTP ingest: e2a against Postfix and aiosmtpd, same machine, same run, alternating runs.

For 1 KB and 100 KB messages, one message per connection (as MTAs deliver) and persistent
sessions, at 1, 10 and 50 concurrent sessions, it prints messages per second, the servers' CPU
time per message, and the p50/p99 DATA-to-250 latency (from the message's final "." to the 250
that promises it is on disk). Every server commits before 250:

* e2a is `e2a serve` with its whole inbound pipeline (SPF/DKIM/DMARC, signing, threading) at
  the default log level, on a fresh SQLite file (WAL, synchronous=FULL), with one SMTP process
  per CPU (`smtp.processes`, `--e2a-processes`);
* Postfix is the Debian package unpacked with `dpkg -x` (bench/_postfix_peer.py), private
  config and queue, `discard:` transport: its queue file is written and synced before 250;
* aiosmtpd commits one row per recipient to SQLite the same way (bench/_aiosmtpd_sink.py).

msg/s comes from Postfix's `smtp-source` (C, a small share of a core), the same loader for
every server; each cell is measured `--rounds` times, the servers' order rotating from round to
round, and the rate is all messages over all time. The latencies come from a second, shorter
pass with bench/_smtp_load.py, which times each reply (without smtp-source, that loader
measures everything). The load average is printed with each round: the machine may be shared,
so compare the ratios, which are measured under the same load.

Run: `make bench-smtp` or `.venv/bin/python bench/smtp_ingest.py [--seconds 3] [--rounds 2]`
(about eight minutes); `--sizes`, `--modes`, `--sessions`, `--servers` select a part.
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
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._gateway_process import (
    AGENT,
    GatewayProcess,
    clean_environment,
    compile_bytecode,
    free_port,
    tree_cpu_seconds,
)
from bench._postfix_peer import (
    PostfixUnavailable,
    library_environment,
    postfix_server,
    smtp_source,
)
from bench._quiet_dns import QuietDns
from bench._smtp_load import LoadResult, closed_loop, fixed_rate, make_message
from e2a_gateway.storage import open_storage
from e2a_gateway.storage.base import Agent

SIZES = {"1 KB": 1024, "100 KB": 100 * 1024}
MODES = ("per-connection", "persistent")
SESSIONS = (1, 10, 50)
FIXED_RATE = 200.0
FIXED_RATE_SESSIONS = 20
SENDER = "load@example.org"
HERE = Path(__file__).resolve().parent
HANDLER_SCRIPTS = {
    "aiosmtpd": HERE / "_aiosmtpd_sink.py",
    "e2a-smtp": HERE / "_e2a_listener_sink.py",
}
SERVERS = ("e2a", "postfix", "aiosmtpd")
"""Measured by default; `e2a-smtp` (e2a's listener without the pipeline) on request."""
FIRST_GUESS = {"1 KB": 600.0, "100 KB": 250.0}
"""msg/s guessed for a server's first run, to size its smtp-source run."""


@dataclass
class Cell:
    """What one server did in one configuration, summed over the rounds."""

    server: str
    size: str
    mode: str
    sessions: int
    messages: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    failures: int = 0
    latency: LoadResult | None = None
    loads: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Messages per second over every round."""
        return self.messages / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class Server:
    """A running server: its SMTP port and the process whose tree does its work."""

    name: str
    port: int
    pid: int


@contextmanager
def e2a_server(folder: Path, dns: str, processes: int, name: str = "e2a") -> Iterator[Server]:
    """`e2a serve` at the default log level on a fresh database with the agent registered,
    `processes` processes accepting SMTP (`smtp.processes`)."""
    folder.mkdir()
    smtp: dict[str, object] = {"max_sessions_per_ip": 200, "processes": processes}
    gateway = GatewayProcess(folder, dns, smtp=smtp, log_level=None)
    gateway.start()
    try:
        gateway.bootstrap().close()
        assert gateway.process is not None
        yield Server(name, gateway.smtp_port, gateway.process.pid)
    finally:
        code = gateway.terminate()
        if code != 0:
            print(f"e2a serve exited with {code}:\n{gateway.log_text()}", file=sys.stderr)


@contextmanager
def handler_server(name: str, folder: Path) -> Iterator[Server]:
    """A server from HANDLER_SCRIPTS on a fresh database holding e2a's schema and the agent."""
    folder.mkdir()
    database = folder / "peer.db"
    trio.run(prepare_peer_database, str(database))
    port = free_port()
    log = folder / "peer.log"
    with log.open("wb") as errors:
        process = subprocess.Popen(
            [sys.executable, str(HANDLER_SCRIPTS[name]), str(port), str(database)],
            env={**clean_environment(), "PYTHONPATH": str(HERE.parent)},
            stdout=subprocess.PIPE,
            stderr=errors,
        )
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"{name} did not start: {log.read_text()}")
        yield Server(name, port, process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def postfix(folder: Path) -> Iterator[Server]:
    """Postfix from the unpacked package, accepting mail for AGENT."""
    port = free_port()
    with postfix_server(port, AGENT) as (listening, pid):
        yield Server("postfix", listening, pid)


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


def load_average() -> float:
    """The one-minute load average."""
    return os.getloadavg()[0]


def source_run(server: Server, cell: Cell, count: int) -> None:
    """`count` messages through smtp-source; adds messages, time and CPU time to `cell`."""
    command = [
        str(smtp_source()),
        "-s",
        str(cell.sessions),
        "-m",
        str(count),
        "-l",
        str(SIZES[cell.size]),
        "-f",
        SENDER,
        "-t",
        AGENT,
        "-M",
        "load.example",
    ]
    if cell.mode == "persistent":
        command.append("-d")
    command.append(f"127.0.0.1:{server.port}")
    cpu_before = tree_cpu_seconds(server.pid)
    began = time.perf_counter()
    result = subprocess.run(
        command, env=library_environment(), capture_output=True, timeout=300, check=False
    )
    elapsed = time.perf_counter() - began
    cell.cpu_seconds += tree_cpu_seconds(server.pid) - cpu_before
    cell.loads.append(load_average())
    if result.returncode != 0:
        cell.failures += 1
        print(f"  smtp-source against {server.name}: {result.stderr[-300:]!r}", file=sys.stderr)
        return
    cell.messages += count
    cell.seconds += elapsed


def python_run(server: Server, cell: Cell, seconds: float) -> None:
    """One run of bench/_smtp_load.py (without smtp-source): rate, CPU time and latencies."""
    message = make_message(SIZES[cell.size], AGENT)
    run = partial(
        closed_loop,
        server.port,
        cell.sessions,
        message,
        AGENT,
        warmup=0.0,
        duration=seconds,
        per_connection=cell.mode == "per-connection",
    )
    cpu_before = tree_cpu_seconds(server.pid)
    result = trio.run(run)
    cell.cpu_seconds += tree_cpu_seconds(server.pid) - cpu_before
    cell.loads.append(load_average())
    cell.messages += result.messages
    cell.seconds += result.seconds
    cell.failures += result.failures
    if cell.latency is None:
        cell.latency = LoadResult()
    cell.latency.messages += result.messages
    cell.latency.seconds += result.seconds
    cell.latency.latencies += result.latencies


def latency_run(server: Server, cell: Cell, seconds: float) -> None:
    """DATA-to-250 latencies of the same configuration from bench/_smtp_load.py."""
    message = make_message(SIZES[cell.size], AGENT)
    run = partial(
        closed_loop,
        server.port,
        cell.sessions,
        message,
        AGENT,
        warmup=0.3,
        duration=seconds,
        per_connection=cell.mode == "per-connection",
    )
    cell.latency = trio.run(run)


def measure_size(
    size: str, servers: list[Server], args: argparse.Namespace, cells: list[Cell]
) -> None:
    """Every mode and session count of one size, rounds alternating between servers."""
    estimate = {server.name: FIRST_GUESS[size] for server in servers}
    for mode in args.modes:
        for sessions in args.sessions:
            row = {server.name: Cell(server.name, size, mode, sessions) for server in servers}
            for round_number in range(args.rounds):
                shift = round_number % len(servers)
                for server in servers[shift:] + servers[:shift]:
                    cell = row[server.name]
                    count = max(2 * sessions, int(estimate[server.name] * args.seconds))
                    seconds_before, messages_before = cell.seconds, cell.messages
                    if args.python_loader:
                        python_run(server, cell, args.seconds)
                        continue
                    source_run(server, cell, count)
                    if cell.seconds > seconds_before:
                        estimate[server.name] = (cell.messages - messages_before) / (
                            cell.seconds - seconds_before
                        )
            for server in servers:
                if not args.python_loader:
                    latency_run(server, row[server.name], args.seconds / 2)
                cells.append(row[server.name])
                progress(row[server.name])


def progress(cell: Cell) -> None:
    print(
        f"  {cell.server:8} {cell.size:6} {cell.mode:14} {cell.sessions:>3}: "
        f"{cell.rate:6.0f} msg/s  (load {' '.join(f'{load:.1f}' for load in cell.loads)})",
        file=sys.stderr,
        flush=True,
    )


def milliseconds(value: float) -> str:
    return f"{value * 1000:.1f}"


def print_rows(header: tuple[str, ...], lines: list[tuple[str, ...]], left: int = 2) -> None:
    """A plain table; the first `left` columns flush left, the rest flush right."""
    table = [header, *lines]
    widths = [max(len(line[column]) for line in table) for column in range(len(header))]
    for index, line in enumerate(table):
        cells = [
            cell.ljust(width) if column < left else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))


def print_table(cells: list[Cell]) -> None:
    lines = []
    for cell in cells:
        latency = cell.latency or LoadResult()
        cpu = cell.cpu_seconds / cell.messages * 1000 if cell.messages else float("nan")
        lines.append(
            (
                cell.server,
                cell.size,
                cell.mode,
                str(cell.sessions),
                f"{cell.rate:.0f}",
                f"{cpu:.2f}",
                f"{latency.rate:.0f}",
                milliseconds(latency.percentile(0.50)),
                milliseconds(latency.percentile(0.99)),
                str(cell.failures + latency.failures),
                " ".join(f"{load:.1f}" for load in cell.loads),
            )
        )
    header = (
        "server",
        "size",
        "mode",
        "sessions",
        "msg/s",
        "CPU ms/msg",
        "msg/s (py)",
        "p50 ms",
        "p99 ms",
        "failed",
        "load",
    )
    print_rows(header, lines, left=3)


def print_ratios(cells: list[Cell]) -> None:
    found = {(cell.server, cell.size, cell.mode, cell.sessions): cell for cell in cells}
    present = {cell.server for cell in cells}
    peers = [name for name in ("postfix", "aiosmtpd", "e2a-smtp") if name in present]
    peers += sorted(name for name in present if name.startswith("e2a-") and name.endswith("p"))
    lines = []
    for (server, size, mode, sessions), cell in found.items():
        if server != "e2a":
            continue
        ratios = []
        for peer in peers:
            other = found.get((peer, size, mode, sessions))
            ratios.append(f"{cell.rate / other.rate:.2f}x" if other and other.rate else "-")
        lines.append((size, mode, str(sessions), *ratios))
    print()
    print_rows(("size", "mode", "sessions", *(f"e2a / {peer}" for peer in peers)), lines, 3)


def print_targets(cells: list[Cell], fixed: LoadResult | None) -> None:
    found = {(cell.server, cell.size, cell.mode, cell.sessions): cell for cell in cells}
    checks: list[tuple[str, Callable[[], tuple[bool, str]]]] = []
    e2a = found.get(("e2a", "1 KB", "per-connection", 50))
    for peer, target in (("postfix", 1.0), ("aiosmtpd", 1.5)):
        other = found.get((peer, "1 KB", "per-connection", 50))
        if e2a is None or other is None or not other.rate:
            continue

        def ratio(e2a: Cell = e2a, other: Cell = other, target: float = target) -> tuple[bool, str]:
            value = e2a.rate / other.rate
            return value >= target, f"{value:.2f}x"

        checks.append(
            (f"e2a >= {target}x {peer} msg/s, 1 KB, 50 sessions, one message per connection", ratio)
        )
    if fixed is not None:
        p99 = fixed.percentile(0.99)
        checks.append(
            (
                f"e2a p99 <= 20 ms at {FIXED_RATE:.0f} msg/s (1 KB)",
                lambda: (p99 <= 0.020, f"{p99 * 1000:.1f} ms"),
            )
        )
    print()
    for name, check in checks:
        passed, value = check()
        print(f"{'PASS' if passed else 'MISS'}  {name}: {value}")


def start_servers(
    stack: ExitStack, args: argparse.Namespace, folder: Path, dns: str, size: str
) -> list[Server]:
    """Every server named, each on fresh state; Postfix skipped with the reason if it cannot run."""
    servers = []
    for name in args.servers:
        place = folder / f"{name}-{SIZES[size]}"
        if name == "e2a":
            first, *others = args.e2a_processes
            servers.append(stack.enter_context(e2a_server(place, dns, first)))
            for count in others:  # the same gateway with more processes, for comparison
                other = f"e2a-{count}p"
                where = folder / f"{other}-{SIZES[size]}"
                servers.append(stack.enter_context(e2a_server(where, dns, count, other)))
        elif name == "postfix":
            try:
                servers.append(stack.enter_context(postfix(place)))
            except PostfixUnavailable as reason:
                print(f"Postfix skipped: {reason}", flush=True)
        else:
            servers.append(stack.enter_context(handler_server(name, place)))
    return servers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measured run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per cell")
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--sessions", nargs="+", type=int, default=list(SESSIONS))
    parser.add_argument(
        "--servers", nargs="+", choices=[*SERVERS, "e2a-smtp"], default=list(SERVERS)
    )
    parser.add_argument(
        "--e2a-processes",
        type=int,
        nargs="+",
        default=[os.cpu_count() or 1],
        help="e2a's smtp.processes (default: one per CPU); more values add e2a-Np servers",
    )
    args = parser.parse_args()
    args.python_loader = False
    try:
        smtp_source()
    except PostfixUnavailable as reason:
        print(f"smtp-source not found, bench/_smtp_load.py loads every server instead: {reason}")
        args.python_loader = True
    compile_bytecode()
    started = time.monotonic()
    print(
        f"SMTP ingest on {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{args.seconds:g} s x {args.rounds} rounds per cell, e2a with smtp.processes = "
        f"{args.e2a_processes[0]}, load average "
        f"{' '.join(f'{load:.2f}' for load in os.getloadavg())} (progress on stderr)",
        flush=True,
    )
    cells: list[Cell] = []
    fixed: LoadResult | None = None
    with QuietDns() as dns, tempfile.TemporaryDirectory(prefix="e2a-bench-") as temp:
        for size in args.sizes:
            with ExitStack() as stack:
                servers = start_servers(stack, args, Path(temp), dns.address, size)
                measure_size(size, servers, args, cells)
                e2a = next((server for server in servers if server.name == "e2a"), None)
                if e2a is not None and size == "1 KB":
                    message = make_message(SIZES[size], AGENT)
                    run = partial(
                        fixed_rate,
                        e2a.port,
                        FIXED_RATE,
                        FIXED_RATE_SESSIONS,
                        message,
                        AGENT,
                        duration=args.seconds,
                    )
                    fixed = trio.run(run)
    print()
    print_table(cells)
    print_ratios(cells)
    print_targets(cells, fixed)
    print(
        f"\n({time.monotonic() - started:.0f} s; load average at the end "
        f"{' '.join(f'{load:.2f}' for load in os.getloadavg())})"
    )


if __name__ == "__main__":
    main()
