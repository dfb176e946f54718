"""Work in flight when `e2a serve` is killed with SIGKILL resumes as soon as it restarts.

A real subprocess on SQLite, killed while a worker holds a lease on its work: after the restart
the work is done again at once (the process frees its own leases), not only once the lease it
held has run out.
"""

from __future__ import annotations

import json
import smtplib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench._gateway_process import AGENT, GatewayProcess
from bench._quiet_dns import QuietDns

pytestmark = pytest.mark.slow

LEASE_SECONDS = 600
"""Far longer than the test waits: work found again is found because its lease was freed."""
REDELIVERY_SECONDS = 20.0


class HangingReceiver:
    """A webhook receiver on loopback: it records every POST body, holds the first one without
    answering until `close()`, and answers the others 200 at once."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.first_arrived = threading.Event()
        self._release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.bodies.append(body)
                if len(receiver.bodies) == 1:
                    receiver.first_arrived.set()
                    receiver._release.wait(60)
                    return
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def quiet_dns() -> Iterator[str]:
    with QuietDns() as dns:
        yield dns.address


@pytest.fixture
def receiver() -> Iterator[HangingReceiver]:
    hanging = HangingReceiver()
    yield hanging
    hanging.close()


def send_one(port: int, subject: str) -> None:
    raw = f"From: a@example.org\r\nTo: {AGENT}\r\nSubject: {subject}\r\n\r\nhello\r\n"
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        assert client.sendmail("a@example.org", [AGENT], raw.encode()) == {}


def test_a_v1_webhook_delivery_in_flight_at_sigkill_is_made_again_at_restart(
    tmp_path: Path, quiet_dns: str, receiver: HangingReceiver
) -> None:
    gateway = GatewayProcess(tmp_path, quiet_dns)
    with gateway.config.open("a") as config:
        config.write(
            f"[webhooks]\nallow_private = true\ntimeout_seconds = 30\n"
            f"lease_seconds = {LEASE_SECONDS}\n"
        )
    gateway.start()
    try:
        api = gateway.bootstrap()
        made = api.post(
            f"{gateway.url}/v1/webhooks", json={"url": receiver.url, "events": ["email.received"]}
        )
        assert made.status_code in (200, 201), made.text
        send_one(gateway.smtp_port, "in flight")
        assert receiver.first_arrived.wait(REDELIVERY_SECONDS)
        gateway.kill()
        gateway.start()
        deadline = time.monotonic() + REDELIVERY_SECONDS
        while len(receiver.bodies) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        api.close()
    finally:
        gateway.kill()
    assert len(receiver.bodies) == 2, "the delivery in flight at the kill was not made again"
    first, again = (json.loads(body) for body in receiver.bodies)
    assert first["id"] == again["id"]  # the same event: the receiver can tell it is a repeat
