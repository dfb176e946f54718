"""`e2a serve` on SQLite whose disk takes no more while it runs (here a file-size limit, which
SQLite meets as a full disk does): mail is answered 452 4.3.1 (insufficient system storage)
and nothing of it is stored, the health and readiness checks say the database takes no writes
and what to check, and once the disk takes writes again both come up by themselves and mail
is stored again. The metric `e2a_storage_up` follows the same verdict."""

from __future__ import annotations

import os
import resource
import smtplib
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from e2a_gateway.storage.sqlite import DISK_REFUSAL_SECONDS
from tests.test_cli import E2A, free_port, run_e2a, wait_healthy, write_config
from tests.test_commit_failures import stored_subjects
from tests.test_metrics import samples_of, value

pytestmark = [pytest.mark.slow, pytest.mark.backend_independent]

LIMIT_BYTES = 3 * 1024 * 1024
"""The most any file of the gateway may hold: room for the schema and a few messages."""
BODY = ("x" * 76 + "\r\n") * 8000
"""About 600 kB: the limit is met within a few messages."""


def smtp_reply(port: int, subject: str) -> str:
    """The reply to DATA of one message to bot@agents.test: `250`, or the refusal's code and
    enhanced status code (`452 4.3.1`)."""
    raw = f"From: a@example.org\r\nTo: bot@agents.test\r\nSubject: {subject}\r\n\r\n{BODY}"
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        try:
            client.sendmail("a@example.org", ["bot@agents.test"], raw.encode())
        except smtplib.SMTPDataError as refused:
            return f"{refused.smtp_code} {refused.smtp_error.decode().split()[0]}"
    return "250"


def storage_up(url: str) -> float:
    """`e2a_storage_up` as `GET /metrics` reports it now."""
    scraped = httpx.get(f"{url}/metrics", timeout=10)
    assert scraped.status_code == 200, scraped.text
    return value(samples_of(scraped.text), "e2a_storage_up")


def test_a_full_disk_refuses_mail_shows_in_health_and_recovers(tmp_path: Path) -> None:
    smtp_port, http_port = free_port(), free_port()
    config = write_config(tmp_path, smtp_port, http_port)
    config.write_text(config.read_text() + "[metrics]\nenabled = true\n")
    boot = run_e2a("bootstrap", "--email", "me@example.com", "--config", str(config), cwd=tmp_path)
    assert boot.returncode == 0, boot.stderr
    headers = {"Authorization": f"Bearer {boot.stdout.strip()}"}

    def small_disk() -> None:
        # the soft limit only: lifting it later (freeing space) needs no privilege
        resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT_BYTES, resource.RLIM_INFINITY))

    env = {k: v for k, v in os.environ.items() if not k.startswith("E2A_")}
    process = subprocess.Popen(
        [*E2A, "serve", "--config", str(config)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=small_disk,
    )
    url = f"http://127.0.0.1:{http_port}"
    try:
        wait_healthy(url, process)
        assert storage_up(url) == 1
        agent = {"slug": "bot", "agent_mode": "local"}
        created = httpx.post(f"{url}/api/v1/agents", headers=headers, json=agent, timeout=10)
        assert created.status_code == 201, created.text
        answers = []
        while answers[-1:] in ([], ["250"]):
            assert len(answers) < 40, "the file-size limit was never met"
            answers.append(smtp_reply(smtp_port, f"m{len(answers)}"))
        accepted = [f"m{number}" for number, code in enumerate(answers) if code == "250"]
        assert accepted and set(answers) == {"250", "452 4.3.1"}

        health = httpx.get(f"{url}/api/health", timeout=10)
        assert health.status_code == 503, health.text
        storage = health.json()["storage"]
        assert storage["state"] == "down"
        assert "is its disk full" in storage["detail"] and f"df -h {tmp_path}" in storage["detail"]
        ready = httpx.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 503, ready.text
        assert ready.json() == {"status": "not_ready", "reason": storage["detail"]}
        assert storage_up(url) == 0

        # Room again (the operator freed space): up within DISK_REFUSAL_SECONDS, without
        # waiting for mail to show that the disk takes writes.
        unlimited = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        resource.prlimit(process.pid, resource.RLIMIT_FSIZE, unlimited)
        deadline = time.monotonic() + DISK_REFUSAL_SECONDS + 10
        while httpx.get(f"{url}/api/health", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "the health check did not come up again"
            time.sleep(0.5)
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
        assert storage_up(url) == 1
        assert smtp_reply(smtp_port, "after") == "250"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    stderr = process.stderr.read() if process.stderr else ""
    assert f"df -h {tmp_path}" in stderr  # the log of the refused mail says what to check
    assert BODY[:200] not in stderr
    assert stored_subjects(f"sqlite:///{tmp_path / 'e2a.db'}") == [*accepted, "after"]
