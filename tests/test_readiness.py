"""GET /readyz, e2a's readiness probe: ready while the replica should get traffic; 503 with
the reason while it drains before a stop (`http.drain_seconds`, by a real SIGTERM to
`e2a serve`) or while its database does not answer or take writes, saying why as the health
check does — and /livez and /api/health stay up while it drains."""

from __future__ import annotations

import signal
import smtplib
import subprocess
import time
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import trio

from e2a_gateway.app import ECHO_SECONDS, RunningGateway, run_gateway
from e2a_gateway.mailauth.resolver import FixtureResolver
from tests.conftest import make_settings
from tests.test_cli import E2A, free_port, launch, run_e2a, write_config

DRAIN_SECONDS = 3.0


async def test_ready_until_the_database_stops_answering(
    running: RunningGateway, anonymous: httpx.AsyncClient
) -> None:
    ready = await anonymous.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    await running.gateway.storage.close()
    down = await anonymous.get("/readyz")
    assert down.status_code == 503
    health = (await anonymous.get("/api/health")).json()
    assert down.json() == {"status": "not_ready", "reason": health["storage"]["detail"]}


async def test_a_caller_elsewhere_is_not_shown_where_the_database_is(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """The probes answer anyone: a caller from another machine (here, as a trusted proxy
    forwards one) learns that the database is down, not its host, port, user or name, nor the
    SQLite file's path; a request from this machine (an operator's curl) gets the whole reason,
    and the gateway's log has it too."""
    settings = make_settings(
        tmp_path, http={"listen": "127.0.0.1:0", "trusted_proxies": ["127.0.0.1"]}
    )
    running: RunningGateway = await nursery.start(
        partial(run_gateway, settings, resolver=FixtureResolver())
    )
    await running.gateway.storage.close()
    elsewhere = {"X-Forwarded-For": "203.0.113.9"}
    async with httpx.AsyncClient(base_url=running.addresses.http_url) as client:
        health = await client.get("/api/health", headers=elsewhere)
        ready = await client.get("/readyz", headers=elsewhere)
        local = await client.get("/api/health")
    assert (health.status_code, ready.status_code, local.status_code) == (503, 503, 503)
    where = database_place(tmp_path, settings.database.url)
    assert where in local.json()["storage"]["detail"]
    for answer in (health.text, ready.text):
        assert where not in answer and "sqlite:" not in answer and "postgresql:" not in answer
    assert health.json()["storage"]["state"] == "down"
    assert "log" in health.json()["storage"]["detail"]
    assert ready.json()["status"] == "not_ready" and "log" in ready.json()["reason"]


def database_place(tmp_path: Path, url: str) -> str:
    """Where the database is, as a storage failure names it: the SQLite file's folder, or
    PostgreSQL's host and port."""
    return str(tmp_path) if url.startswith("sqlite:") else urlsplit(url).netloc.rpartition("@")[2]


@pytest.mark.parametrize(
    "forwarded",
    [
        {"X-Forwarded-For": "203.0.113.9"},
        {"X-Forwarded-For": "127.0.0.1"},
        {"Forwarded": "for=203.0.113.9;proto=https"},
        {"Forwarded": 'for="[2001:db8::9]:4711"'},
        {"X-Real-IP": "203.0.113.9"},
    ],
)
async def test_a_proxy_not_listed_on_this_machine_does_not_pass_the_reason_on(
    tmp_path: Path, nursery: trio.Nursery, forwarded: dict[str, str]
) -> None:
    """The deployment docs/deploy.md describes: `http.listen` on 127.0.0.1 behind a reverse
    proxy on the same host, `http.trusted_proxies` not set. Every request then comes from the
    loopback, but one the proxy forwards says so in its headers: its client is elsewhere and
    must not learn where the database is (nor can it claim the loopback in a header)."""
    settings = make_settings(tmp_path)
    running: RunningGateway = await nursery.start(
        partial(run_gateway, settings, resolver=FixtureResolver())
    )
    await running.gateway.storage.close()
    where = database_place(tmp_path, settings.database.url)
    async with httpx.AsyncClient(base_url=running.addresses.http_url) as client:
        health = await client.get("/api/health", headers=forwarded)
        ready = await client.get("/readyz", headers=forwarded)
        local = await client.get("/api/health")
    assert (health.status_code, ready.status_code, local.status_code) == (503, 503, 503)
    assert where in local.json()["storage"]["detail"]
    for answer in (health.text, ready.text):
        assert where not in answer and "sqlite:" not in answer and "postgresql:" not in answer
    assert "log" in health.json()["storage"]["detail"]


async def test_a_dual_stack_listener_shows_the_reason_to_this_machine(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Listening on `[::]`, an operator's `curl http://127.0.0.1:…` arrives from
    `::ffff:127.0.0.1`: that is this machine's loopback, and it is told the whole reason."""
    settings = make_settings(tmp_path, http={"listen": "[::]:0"})
    running: RunningGateway = await nursery.start(
        partial(run_gateway, settings, resolver=FixtureResolver())
    )
    await running.gateway.storage.close()
    url = f"http://127.0.0.1:{running.addresses.http_port}"
    async with httpx.AsyncClient(base_url=url) as client:
        local = await client.get("/api/health")
    assert local.status_code == 503
    assert database_place(tmp_path, settings.database.url) in local.json()["storage"]["detail"]


def readiness(url: str) -> tuple[int, dict[str, str]]:
    answer = httpx.get(f"{url}/readyz", timeout=2)
    return answer.status_code, answer.json()


def draining_config(tmp_path: Path, drain: str, smtp_port: int, http_port: int) -> Path:
    """The tests' `e2a serve` configuration with `http.drain_seconds = drain`."""
    config = write_config(tmp_path, smtp_port, http_port)
    config.write_text(config.read_text().replace("[http]\n", f"[http]\ndrain_seconds = {drain}\n"))
    return config


def serve(tmp_path: Path, drain_seconds: float) -> tuple[subprocess.Popen[str], str, int]:
    """`e2a serve` with `http.drain_seconds`, healthy; its process, URL and SMTP port."""
    smtp_port, http_port = free_port(), free_port()
    config = draining_config(tmp_path, str(drain_seconds), smtp_port, http_port)
    process, url = launch(config, http_port, tmp_path)
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
        assert httpx.get(f"{url}/livez", timeout=2).json() == {"status": "alive"}
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
        time.sleep(ECHO_SECONDS)  # later than an echo of the first could come
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        assert time.monotonic() - signalled < 15
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
    assert "stopping now" in (process.stderr.read() if process.stderr else "")


def test_one_ctrl_c_passed_on_twice_still_drains(tmp_path: Path) -> None:
    """A Ctrl-C reaches the one-file executable's launcher and the gateway both, and the
    launcher passes it on: the gateway gets SIGINT twice within milliseconds. That is one
    request to stop, so the drain goes on; a SIGINT sent after it ends the drain."""
    process, url, _ = serve(tmp_path, 120)
    try:
        process.send_signal(signal.SIGINT)
        time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 10
        while readiness(url)[0] == 200:
            assert time.monotonic() < deadline, "/readyz did not turn 503 on SIGINT"
            time.sleep(0.05)
        time.sleep(ECHO_SECONDS)
        assert process.poll() is None, "the echo of the first SIGINT stopped the drain"
        assert readiness(url) == (503, {"status": "not_ready", "reason": "draining"})
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
    stderr = process.stderr.read() if process.stderr else ""
    assert stderr.count("received SIGINT again, stopping now") == 1, stderr


@pytest.mark.parametrize("value", ["-1", "301", '"soon"'])
def test_a_bad_drain_time_stops_start_up(tmp_path: Path, value: str) -> None:
    config = draining_config(tmp_path, value, free_port(), free_port())
    result = run_e2a("serve", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert "http.drain_seconds" in result.stderr


def test_a_signal_at_the_first_health_answer_drains(tmp_path: Path) -> None:
    """Once `/api/health` answers, the gateway serves (a load balancer may send it traffic): a
    stop signal then drains, never ending the start at once as a signal still starting does.
    The signal goes the moment the first answer comes, health asked without a pause."""
    smtp_port, http_port = free_port(), free_port()
    config = draining_config(tmp_path, "1", smtp_port, http_port)
    process = subprocess.Popen(
        [*E2A, "serve", "--config", str(config)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        with httpx.Client(timeout=1) as client:
            while True:
                assert time.monotonic() < deadline and process.poll() is None, "never healthy"
                try:
                    if client.get(f"http://127.0.0.1:{http_port}/api/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
    stderr = process.stderr.read() if process.stderr else ""
    assert "draining for 1 s" in stderr and "while starting" not in stderr, stderr[-2000:]
