"""Cold start to first healthy HTTP answer: `e2a serve` against a bare Quart-Trio app.

The peer is the smallest program on the same web stack (Quart-Trio on hypercorn's trio worker
answering one route), so the difference is what e2a itself adds: config, storage, migrations,
SMTP listener. e2a is byte-compiled first, as an installed copy is. Run:
`.venv/bin/python bench/startup.py [--runs N]`.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._gateway_process import compile_bytecode

PEER_APP = """
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart_trio import QuartTrio

app = QuartTrio("peer")

@app.get("/api/health")
async def health():
    return {"status": "ok"}

config = Config()
config.bind = ["127.0.0.1:%d"]
config.accesslog = None
trio.run(serve, app, config)
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def time_to_healthy(command: list[str], url: str, cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = started + 30
        while time.perf_counter() < deadline:
            try:
                if httpx.get(url, timeout=0.5).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                time.sleep(0.005)
        raise RuntimeError(f"{command[:3]} did not become healthy in 30 s")
    finally:
        process.terminate()
        process.wait(timeout=10)


def measure_e2a(runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as folder:
            http_port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("E2A_")}
            env.update(
                E2A_SMTP_LISTEN=f"127.0.0.1:{free_port()}",
                E2A_HTTP_LISTEN=f"127.0.0.1:{http_port}",
                E2A_DATABASE_URL=f"sqlite:///{folder}/e2a.db",
            )
            samples.append(
                time_to_healthy(
                    [sys.executable, "-m", "e2a_gateway", "serve"],
                    f"http://127.0.0.1:{http_port}/api/health",
                    Path(folder),
                    env,
                )
            )
    return samples


def measure_peer(runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as folder:
            port = free_port()
            samples.append(
                time_to_healthy(
                    [sys.executable, "-c", PEER_APP % port],
                    f"http://127.0.0.1:{port}/api/health",
                    Path(folder),
                    dict(os.environ),
                )
            )
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    compile_bytecode()
    rows = [("e2a serve (fresh SQLite)", measure_e2a(args.runs))]
    rows.append(("bare Quart-Trio + hypercorn", measure_peer(args.runs)))
    print(f"{'program':32} {'median s':>9} {'min s':>7} {'max s':>7}  (runs={args.runs})")
    for name, samples in rows:
        print(
            f"{name:32} {statistics.median(samples):9.3f} {min(samples):7.3f} {max(samples):7.3f}"
        )


if __name__ == "__main__":
    main()
