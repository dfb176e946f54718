"""Footprint of the one-file executable: size, cold start, and memory at rest and after load.

`dist/e2a serve` (built by `make binary`) is measured next to `python -m e2a_gateway serve` from
this venv, in the same run and the same way: a temp SQLite file, loopback ports, DNS answered by a
quiet loopback server. For each program:

- cold start: from starting the process to the first 200 from `/api/health` (median of
  --runs fresh starts, each on a new database), and the CPU seconds the process tree had used
  by then (less sensitive to a busy machine than the wall clock);
- idle RSS: resident memory of the process tree a few seconds after start (the one-file
  binary is two processes: the launcher that unpacked it and the gateway);
- RSS after --messages 1 KB messages accepted over SMTP by 10 sessions (bench/_smtp_load.py).

Targets (issue 10): binary <= 35 MB, cold start <= 1.0 s, idle RSS <= 90 MB.
Run: `make footprint`, or `.venv/bin/python bench/footprint.py [--runs N] [--messages N]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._gateway_process import (
    AGENT,
    E2A,
    GatewayProcess,
    compile_bytecode,
    process_tree,
    tree_cpu_seconds,
)
from bench._quiet_dns import QuietDns
from bench._smtp_load import fixed_rate, make_message

BINARY = Path(__file__).resolve().parent.parent / "dist" / "e2a"
TARGET_MB = 35.0
TARGET_START_SECONDS = 1.0
TARGET_IDLE_RSS_MB = 90.0
SETTLE_SECONDS = 3.0
LOAD_SESSIONS = 10
MESSAGE_BYTES = 1024
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Footprint:
    """What was measured for one program."""

    name: str
    starts: list[float] = field(default_factory=list)
    start_cpu: list[float] = field(default_factory=list)
    idle_rss_mb: float = 0.0
    loaded_rss_mb: float = 0.0
    accepted: int = 0
    failures: int = 0
    rate: float = 0.0


def tree_rss_mb(root: int) -> float:
    """Resident memory of the process tree under `root`, in MB (10^6 bytes)."""
    total = 0
    for pid in process_tree(root):
        try:
            resident = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        total += resident * PAGE_BYTES
    return total / 1e6


def _pid(gateway: GatewayProcess) -> int:
    assert gateway.process is not None
    return gateway.process.pid


def measure_start(result: Footprint, command: list[str], dns: str) -> None:
    """Start `command serve` on a fresh database; time it to its first 200."""
    with tempfile.TemporaryDirectory() as folder:
        gateway = GatewayProcess(Path(folder), dns, command=command)
        try:
            began = time.perf_counter()
            gateway.start()
            result.starts.append(time.perf_counter() - began)
            result.start_cpu.append(tree_cpu_seconds(_pid(gateway)))
        finally:
            gateway.terminate()


def measure_memory(result: Footprint, command: list[str], dns: str, messages: int) -> None:
    """RSS a few seconds after start, then after `messages` accepted over SMTP."""
    with tempfile.TemporaryDirectory() as folder:
        gateway = GatewayProcess(
            Path(folder), dns, smtp={"max_sessions_per_ip": 4 * LOAD_SESSIONS}, command=command
        )
        try:
            gateway.start()
            gateway.bootstrap().close()
            time.sleep(SETTLE_SECONDS)
            result.idle_rss_mb = tree_rss_mb(_pid(gateway))
            # A rate of `messages` per second for one second: exactly `messages` are sent,
            # back to back whenever the server is slower than that.
            load = trio.run(
                partial(
                    fixed_rate,
                    gateway.smtp_port,
                    float(messages),
                    LOAD_SESSIONS,
                    make_message(MESSAGE_BYTES, AGENT),
                    AGENT,
                    duration=1.0,
                )
            )
            result.accepted, result.failures = load.messages, load.failures
            result.rate = load.messages / max(load.seconds, 1e-9)
            time.sleep(SETTLE_SECONDS)
            result.loaded_rss_mb = tree_rss_mb(_pid(gateway))
        finally:
            gateway.terminate()


def measure(
    programs: list[tuple[str, list[str]]], dns: str, runs: int, messages: int
) -> list[Footprint]:
    """Every figure for each program. Starts alternate between the programs, so that a
    change in the machine's load during the run weighs on all of them alike."""
    results = [Footprint(name) for name, _ in programs]
    for run in range(runs):
        print(f"cold start {run + 1}/{runs} ...", file=sys.stderr, flush=True)
        for result, (_, command) in zip(results, programs, strict=True):
            measure_start(result, command, dns)
    for result, (name, command) in zip(results, programs, strict=True):
        print(f"memory under load: {name} ...", file=sys.stderr, flush=True)
        measure_memory(result, command, dns, messages)
    return results


def verdict(ok: bool) -> str:
    """How a figure compares with its target."""
    return "meets target" if ok else "MISSES target"


def report(rows: list[Footprint], size_mb: float | None, runs: int, messages: int) -> None:
    """The table, then the binary's figures against the targets."""
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"runs={runs}, messages={messages} x {MESSAGE_BYTES} B over {LOAD_SESSIONS} sessions; "
        f"{os.cpu_count()} CPUs, load average {load}"
    )
    print(
        f"{'program':26} {'start s':>8} {'min':>6} {'max':>6} {'start CPU s':>12} "
        f"{'idle RSS MB':>12} {'RSS after MB':>13} {'msg/s':>7} {'failed':>7}"
    )
    for row in rows:
        print(
            f"{row.name:26} {statistics.median(row.starts):8.3f} {min(row.starts):6.3f} "
            f"{max(row.starts):6.3f} {statistics.median(row.start_cpu):12.2f} "
            f"{row.idle_rss_mb:12.1f} {row.loaded_rss_mb:13.1f} {row.rate:7.0f} {row.failures:7d}"
        )
    if size_mb is None:
        print("dist/e2a is missing: run `make binary` (or `make footprint`) to measure it")
        return
    binary = rows[0]
    start = statistics.median(binary.starts)
    print(
        f"binary size    {size_mb:6.1f} MB  (target <= {TARGET_MB:.0f})  "
        f"{verdict(size_mb <= TARGET_MB)}"
    )
    print(
        f"cold start     {start:6.3f} s   (target <= {TARGET_START_SECONDS:.1f})  "
        f"{verdict(start <= TARGET_START_SECONDS)}"
    )
    print(
        f"idle RSS       {binary.idle_rss_mb:6.1f} MB  (target <= {TARGET_IDLE_RSS_MB:.0f})  "
        f"{verdict(binary.idle_rss_mb <= TARGET_IDLE_RSS_MB)}"
    )


def main() -> None:
    """Measure dist/e2a (when built) and the venv's `python -m e2a_gateway`, print the
    comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="cold starts per program")
    parser.add_argument("--messages", type=int, default=10_000, help="messages sent over SMTP")
    args = parser.parse_args()
    programs: list[tuple[str, list[str]]] = []
    size_mb = None
    if BINARY.exists():
        size_mb = BINARY.stat().st_size / 1e6
        programs.append(("dist/e2a (one file)", [str(BINARY)]))
    programs.append(("python -m e2a_gateway (venv)", E2A))
    compile_bytecode()
    with QuietDns() as dns:
        rows = measure(programs, dns.address, args.runs, args.messages)
    report(rows, size_mb, args.runs, args.messages)


if __name__ == "__main__":
    main()
