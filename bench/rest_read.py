"""REST read path: e2a's inbox page and message requests against the bare framework's ceiling.

`e2a serve` (SQLite, default log level) holds MESSAGES messages for one local agent. `wrk`
(Debian's package; a C load generator in its own process) sends keep-alive `GET` requests
from 1, 16 and 64 connections for `--seconds` each:

* inbox: `GET /api/v1/agents/{agent}/messages?status=all&page_size=20`;
* message: `GET /api/v1/agents/{agent}/messages/{id}` over every stored id in turn (the first
  read of each marks it read, a write);

and the same requests to a bare Quart-Trio app answering with the same JSON bodies from memory
on e2a's HTTP server (`e2a_gateway.http_server.serve_asgi`, the same connection handling as
`e2a serve`; bench/_bare_quart.py). Runs alternate between the two servers, `--rounds` times;
it prints requests/s and wrk's p50/p99 latency, then e2a's share of the bare app's rate.

Run: `.venv/bin/python bench/rest_read.py [--seconds 3] [--rounds 2]` (about a minute);
needs `wrk` (`apt-get install wrk`).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._gateway_process import AGENT, GatewayProcess, compile_bytecode, free_port
from bench._quiet_dns import QuietDns
from bench._smtp_load import SmtpClient, make_message

HERE = Path(__file__).resolve().parent
MESSAGES = 200
CONNECTIONS = (1, 16, 64)
INBOX_QUERY = "?status=all&page_size=20"
ROTATING_SCRIPT = """
ids = {%s}
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "%s" .. ids[(counter %% #ids) + 1])
end
"""
UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


@dataclass
class Cell:
    """One server, request and connection count, summed over the rounds."""

    server: str
    request: str
    connections: int
    requests: int = 0
    seconds: float = 0.0
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def rate(self) -> float:
        """Requests per second over every round."""
        return self.requests / self.seconds if self.seconds else 0.0

    def add(self, run: dict[str, float]) -> None:
        """Count one wrk run."""
        self.requests += int(run["requests"])
        self.seconds += run["seconds"]
        self.p50.append(run["p50"])
        self.p99.append(run["p99"])
        self.errors += int(run["errors"])


def progress(cells: dict[tuple[str, str, int], Cell], request: str, connections: int) -> None:
    for server in ("e2a", "bare"):
        cell = cells[(server, request, connections)]
        print(
            f"  {server:4} {request:7} {connections:>2}: {cell.rate:7.0f} req/s "
            f"(load {os.getloadavg()[0]:.1f})",
            file=sys.stderr,
            flush=True,
        )


def wrk(
    url: str, connections: int, seconds: float, key: str, script: Path | None
) -> dict[str, float]:
    """One wrk run: requests, seconds, p50 and p99 latency (seconds), non-2xx/socket errors."""
    command = [
        "wrk",
        "--latency",
        "-t",
        str(min(2, connections)),
        "-c",
        str(connections),
        "-d",
        f"{seconds:g}s",
        "-H",
        f"Authorization: Bearer {key}",
    ]
    if script is not None:
        command += ["-s", str(script)]
    output = subprocess.run(
        [*command, url], capture_output=True, text=True, timeout=seconds + 60, check=True
    ).stdout
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    if total is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    duration = float(total.group(2)) * (60.0 if total.group(3) == "m" else UNITS[total.group(3)])
    latencies = {
        percent: float(value) * UNITS[unit]
        for percent, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)$", output, re.M)
    }
    errors = sum(
        int(count)
        for count in re.findall(
            r"(?:Non-2xx or 3xx responses|connect|read|write|timeout) (\d+)", output
        )
    )
    return {
        "requests": float(total.group(1)),
        "seconds": duration,
        "p50": latencies.get("50", float("nan")),
        "p99": latencies.get("99", float("nan")),
        "errors": float(errors),
    }


async def fill_inbox(port: int) -> None:
    """MESSAGES messages of 1 KB to AGENT over one SMTP session."""
    client = await SmtpClient.connect(port)
    message = make_message(1024, AGENT)
    for _ in range(MESSAGES):
        await client.send_message("load@example.org", AGENT, message)
    await client.close()


@contextmanager
def bare_server(folder: Path, inbox: bytes, message: bytes) -> Iterator[str]:
    """bench/_bare_quart.py serving `inbox` and `message`; yields its base URL."""
    (folder / "inbox.json").write_bytes(inbox)
    (folder / "message.json").write_bytes(message)
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "_bare_quart.py"),
            str(port),
            str(folder / "inbox.json"),
            str(folder / "message.json"),
        ],
        env={**os.environ, "PYTHONPATH": str(HERE.parent)},
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != b"ready":
            raise RuntimeError("the bare Quart-Trio app did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per cell")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("REST reads skipped: wrk is the load generator (`apt-get install wrk`)")
        return
    compile_bytecode()
    print(
        f"REST reads on {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{args.seconds:g} s x {args.rounds} rounds per cell, load average "
        f"{' '.join(f'{load:.2f}' for load in os.getloadavg())}",
        flush=True,
    )
    cells: dict[tuple[str, str, int], Cell] = {}
    with QuietDns() as dns, tempfile.TemporaryDirectory(prefix="e2a-bench-") as temp:
        folder = Path(temp)
        (folder / "e2a").mkdir()
        gateway = GatewayProcess(folder / "e2a", dns.address, log_level=None)
        gateway.start()
        try:
            client = gateway.bootstrap()
            key = str(client.headers["Authorization"]).split()[1]
            trio.run(fill_inbox, gateway.smtp_port)
            path = f"/api/v1/agents/{quote(AGENT, safe='')}/messages"
            inbox = client.get(f"/agents/{quote(AGENT, safe='')}/messages{INBOX_QUERY}")
            inbox.raise_for_status()
            listed = client.get(
                f"/agents/{quote(AGENT, safe='')}/messages",
                params={"status": "all", "page_size": 100},
            ).json()["messages"]
            ids = [item["message_id"] for item in listed]
            one = client.get(f"/agents/{quote(AGENT, safe='')}/messages/{ids[0]}")
            one.raise_for_status()
            client.close()
            script = folder / "rotate.lua"
            script.write_text(ROTATING_SCRIPT % (", ".join(f'"{i}"' for i in ids), path + "/"))
            with bare_server(folder, inbox.content, one.content) as bare:
                targets = {
                    ("e2a", "inbox"): (gateway.url + path + INBOX_QUERY, None),
                    ("bare", "inbox"): (bare + path + INBOX_QUERY, None),
                    ("e2a", "message"): (gateway.url + path, script),
                    ("bare", "message"): (bare + path, script),
                }
                for connections in CONNECTIONS:
                    for request in ("inbox", "message"):
                        for round_number in range(args.rounds):
                            order = ("e2a", "bare") if round_number % 2 == 0 else ("bare", "e2a")
                            for server in order:
                                url, lua = targets[(server, request)]
                                cell = cells.setdefault(
                                    (server, request, connections),
                                    Cell(server, request, connections),
                                )
                                cell.add(wrk(url, connections, args.seconds, key, lua))
                        progress(cells, request, connections)
        finally:
            code = gateway.terminate()
            if code != 0:
                print(f"e2a serve exited with {code}:\n{gateway.log_text()}", file=sys.stderr)
    print_cells(cells)


def print_cells(cells: dict[tuple[str, str, int], Cell]) -> None:
    header = ("request", "connections", "e2a req/s", "bare req/s", "e2a / bare", "e2a p50 ms",
              "e2a p99 ms", "bare p50 ms", "bare p99 ms", "errors")  # fmt: skip
    lines = [header]
    worst = float("inf")
    for request in ("inbox", "message"):
        for connections in CONNECTIONS:
            e2a, bare = cells[("e2a", request, connections)], cells[("bare", request, connections)]
            ratio = e2a.rate / bare.rate if bare.rate else 0.0
            worst = min(worst, ratio)
            lines.append(
                (
                    request,
                    str(connections),
                    f"{e2a.rate:.0f}",
                    f"{bare.rate:.0f}",
                    f"{ratio:.2f}x",
                    f"{max(e2a.p50) * 1000:.1f}",
                    f"{max(e2a.p99) * 1000:.1f}",
                    f"{max(bare.p50) * 1000:.1f}",
                    f"{max(bare.p99) * 1000:.1f}",
                    str(e2a.errors + bare.errors),
                )
            )
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    print()
    for index, line in enumerate(lines):
        cells_text = [
            cell.ljust(width) if column == 0 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        print("  ".join(cells_text))
        if index == 0:
            print("  ".join("-" * width for width in widths))
    verdict = "PASS" if worst >= 0.6 else "MISS"
    print(
        f"\n{verdict}  REST reads >= 0.6x the bare framework's requests/s, every cell: worst "
        f"{worst:.2f}x (load average {os.getloadavg()[0]:.2f})"
    )


if __name__ == "__main__":
    main()
