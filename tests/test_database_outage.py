"""PostgreSQL going away under a running `e2a serve` and coming back: a real server of its own
(packaging/pg-test-cluster.sh), stopped with `pg_ctl stop` and started again on its port.

Meanwhile the gateway stays alive for its orchestrator (`/livez` 200) but not ready
(`/readyz` and `/api/health` 503), SMTP answers 451 to what it cannot check or store (never 250,
never 5xx), and the log says so in a line each, without a traceback; once the database is back
the same process is ready again and takes mail, without a restart."""

from __future__ import annotations

import json
import os
import shlex
import signal
import smtplib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.databases import POSTGRES_URL_VAR
from tests.test_cli import free_port, launch, run_e2a, write_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.backend_independent,
    pytest.mark.skipif(
        not os.environ.get(POSTGRES_URL_VAR),
        reason=f"needs PostgreSQL (packaging/pg-test-cluster.sh; {POSTGRES_URL_VAR})",
    ),
]

CLUSTER = Path(__file__).resolve().parent.parent / "packaging" / "pg-test-cluster.sh"
MESSAGE = b"From: alice@example.org\r\nTo: bot@agents.test\r\nSubject: hi\r\n\r\nbody\r\n"


def cluster(*args: str) -> str:
    """Run packaging/pg-test-cluster.sh with `args`; its stdout."""
    done = subprocess.run(
        [str(CLUSTER), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def own_cluster() -> Iterator[tuple[str, str]]:
    """A PostgreSQL server of this test's own (it is stopped on purpose): its URL and dir."""
    exports = dict(
        line.removeprefix("export ").split("=", 1)
        for line in shlex.split(cluster("start"), posix=True, comments=False)
        if "=" in line
    )
    directory = exports["E2A_PG_TEST_DIR"]
    try:
        yield exports["E2A_TEST_POSTGRES_URL"], directory
    finally:
        cluster("stop", directory)


def wait_for(url: str, path: str, status: int) -> None:
    """Until GET `path` answers `status` (at most 30 s)."""
    deadline = time.monotonic() + 30
    while httpx.get(f"{url}{path}", timeout=5).status_code != status:
        assert time.monotonic() < deadline, f"GET {path} never answered {status}"
        time.sleep(0.2)


def test_postgresql_stopped_and_started_again(tmp_path: Path, own_cluster: tuple[str, str]) -> None:
    database, directory = own_cluster
    smtp_port, http_port = free_port(), free_port()
    config = write_config(tmp_path, smtp_port, http_port)
    config.write_text(
        config.read_text().replace(
            f'url = "sqlite:///{tmp_path / "e2a.db"}"', f'url = "{database}"'
        )
        + '[log]\nformat = "json"\n'
    )
    bootstrap = run_e2a(
        "bootstrap", "--email", "ops@example.com", "--config", str(config), cwd=tmp_path
    )
    assert bootstrap.returncode == 0, bootstrap.stderr
    key = bootstrap.stdout.strip().splitlines()[-1]
    process, url = launch(config, http_port, tmp_path)
    try:
        created = httpx.post(
            f"{url}/api/v1/agents",
            json={"email": "bot@agents.test", "agent_mode": "local"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert created.status_code == 201, created.text
        assert httpx.get(f"{url}/livez", timeout=5).json() == {"status": "alive"}

        # A transaction whose recipient was checked before the database went away.
        early = smtplib.SMTP("127.0.0.1", smtp_port, timeout=30)
        early.ehlo("mail.example.org")
        early.mail("alice@example.org")
        assert early.rcpt("bot@agents.test")[0] == 250

        cluster("pause", directory)
        assert early.data(MESSAGE)[0] == 451
        early.quit()
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
            client.ehlo("mail.example.org")
            client.mail("alice@example.org")
            assert client.rcpt("bot@agents.test") == (
                451,
                b"4.3.0 Temporary failure, try again later",
            )
        health = httpx.get(f"{url}/api/health", timeout=10)
        assert health.status_code == 503 and health.json()["storage"]["state"] == "down"
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 503
        # Alive all the same: an orchestrator must not restart it for the database's sake.
        live = httpx.get(f"{url}/livez", timeout=5)
        assert (live.status_code, live.json()) == (200, {"status": "alive"})

        cluster("resume", directory)
        wait_for(url, "/readyz", 200)
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
            client.ehlo("mail.example.org")
            client.mail("alice@example.org")
            assert client.rcpt("bot@agents.test")[0] == 250
            assert client.data(MESSAGE)[0] == 250
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
    stderr = process.stderr.read() if process.stderr else ""
    records = [json.loads(line) for line in stderr.splitlines()]
    refused = [r for r in records if "checking <bot@agents.test>" in r["message"]]
    assert refused and all(r["level"] == "warning" for r in refused), refused
    assert "connection refused" in refused[0]["message"]
    assert [r for r in records if "exception" in r] == []
