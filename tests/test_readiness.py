"""GET /readyz, e2a's readiness probe: ready while the replica should get traffic; 503 with
the reason while it drains before a stop (`http.drain_seconds`, by a real SIGTERM to
`e2a serve`) or while its database does not answer — and /api/health, the liveness probe,
stays up while it drains."""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from e2a_gateway.app import RunningGateway
from tests.test_cli import E2A, free_port, wait_healthy, write_config

DRAIN_SECONDS = 3.0


async def test_ready_until_the_database_stops_answering(
    running: RunningGateway, anonymous: httpx.AsyncClient
) -> None:
    ready = await anonymous.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    await running.gateway.storage.close()
    down = await anonymous.get("/readyz")
    assert down.status_code == 503
    assert down.json() == {"status": "not_ready", "reason": "database unreachable"}


def readiness(url: str) -> tuple[int, dict[str, str]]:
    answer = httpx.get(f"{url}/readyz", timeout=2)
    return answer.status_code, answer.json()


def serve(tmp_path: Path, drain_seconds: float) -> tuple[subprocess.Popen[str], str, int]:
    """`e2a serve` with `http.drain_seconds`, healthy; its process, URL and SMTP port."""
    smtp_port, http_port = free_port(), free_port()
    config = write_config(tmp_path, smtp_port, http_port)
    config.write_text(
        config.read_text().replace("[http]\n", f"[http]\ndrain_seconds = {drain_seconds}\n")
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2A_")}
    process = subprocess.Popen(
        [*E2A, "serve", "--config", str(config)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{http_port}"
    try:
        wait_healthy(url, process)
    except BaseException:
        process.kill()
        process.wait(timeout=10)
        raise
    return process, url, smtp_port


def test_sigterm_drains_then_stops(tmp_path: Path) -> None:
    process, url, smtp_port = serve(tmp_path, DRAIN_SECONDS)
    try:
        assert readiness(url) == (200, {"status": "ready"})
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        deadline = signalled + DRAIN_SECONDS / 2
        while readiness(url)[0] == 200:
            assert time.monotonic() < deadline, "/readyz did not turn 503 on SIGTERM"
            time.sleep(0.05)
        assert readiness(url) == (503, {"status": "not_ready", "reason": "draining"})
        # Still alive and still serving while it drains: liveness, and SMTP.
        assert httpx.get(f"{url}/api/health", timeout=2).status_code == 200
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=5) as client:
            assert client.ehlo("mail.example.org")[0] == 250
        assert process.wait(timeout=DRAIN_SECONDS + 15) == 0
        assert time.monotonic() - signalled >= DRAIN_SECONDS - 0.5
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
    stderr = process.stderr.read() if process.stderr else ""
    assert "draining for 3 s" in stderr


def test_a_second_signal_ends_the_drain(tmp_path: Path) -> None:
    process, url, _ = serve(tmp_path, 120)
    try:
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while readiness(url)[0] == 200:
            assert time.monotonic() < deadline, "/readyz did not turn 503 on SIGTERM"
            time.sleep(0.05)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        assert time.monotonic() - signalled < 15
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
    assert "stopping now" in (process.stderr.read() if process.stderr else "")


@pytest.mark.parametrize("value", ["-1", "301", '"soon"'])
def test_a_bad_drain_time_stops_start_up(tmp_path: Path, value: str) -> None:
    config = write_config(tmp_path, free_port(), free_port())
    config.write_text(config.read_text().replace("[http]\n", f"[http]\ndrain_seconds = {value}\n"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2A_")}
    result = subprocess.run(
        [*E2A, "serve", "--config", str(config)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "http.drain_seconds" in result.stderr
