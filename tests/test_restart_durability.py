"""Work in flight when `e2a serve` is killed with SIGKILL resumes as soon as it restarts.

A real subprocess on SQLite, killed while a worker holds a lease on its work: after the restart
the work is done again at once (the process frees its own leases), not only once the lease it
held has run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import smtplib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench._gateway_process import AGENT, GatewayProcess
from bench._quiet_dns import QuietDns
from tests.relay_support import Sink, StallingRelay, relay_on_loopback

pytestmark = [pytest.mark.slow, pytest.mark.backend_independent]

LEASE_SECONDS = 600
"""Far longer than the test waits: work found again is found because its lease was freed."""
REDELIVERY_SECONDS = 20.0
DATA_SECONDS = 2.0
"""How long the slow relay takes to answer the end of DATA."""


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


def send_quietly(api: httpx.Client, body: dict[str, Any], key: str | None = None) -> None:
    """POST /send (with Idempotency-Key `key`, if any), whatever becomes of the answer."""
    headers = {"Idempotency-Key": key} if key else {}
    with contextlib.suppress(httpx.HTTPError):
        api.post("/send", json=body, headers=headers)


class SlowRelay(Sink):
    """A relay that, as a real MTA does, has a message once it has its end of DATA, and then
    takes `answer_seconds` to say so (its queue's disk is slow)."""

    def __init__(self, answer_seconds: float = DATA_SECONDS) -> None:
        super().__init__()
        self.answer_seconds = answer_seconds
        self.data_arrived = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        self.data_arrived.set()
        await asyncio.sleep(self.answer_seconds)
        return "250 OK"


def started_with_relay(folder: Path, dns: str, relay_port: int) -> GatewayProcess:
    """`e2a serve` in `folder`, handing outbound mail to the relay on `relay_port`."""
    gateway = GatewayProcess(folder, dns, log_level=None)
    with gateway.config.open("a") as config:
        config.write(f'[outbound_smtp]\nhost = "127.0.0.1"\nport = {relay_port}\ntls = "none"\n')
    gateway.start()
    return gateway


def test_sigterm_lets_a_hand_off_in_flight_finish_so_a_restart_sends_nothing_twice(
    tmp_path: Path, quiet_dns: str
) -> None:
    """The relay has the whole message and has not answered yet when the gateway is told to
    stop: the gateway waits for the answer and records the message sent, so the restarted
    gateway does not hand it to the relay again (its recipient would get it twice)."""
    relay = SlowRelay()
    with relay_on_loopback(relay) as relay_port:
        gateway = started_with_relay(tmp_path, quiet_dns, relay_port)
        try:
            api = gateway.bootstrap()
            body = {"from": AGENT, "to": ["someone@example.org"], "subject": "once", "body": "hi"}
            # The answer waits for the first attempt, which the gateway's stop cuts short.
            sending = threading.Thread(target=send_quietly, args=(api, body), daemon=True)
            sending.start()
            assert relay.data_arrived.wait(REDELIVERY_SECONDS)
            assert gateway.terminate() == 0
            gateway.start()
            time.sleep(DATA_SECONDS + 2)  # a second hand-off would have reached the relay now
            sent = api.get("/messages", params={"status": "sent"}).json()["messages"]
            api.close()
        finally:
            gateway.kill()
    assert len(relay.received) == 1, "the message was handed to the relay twice"
    assert [message["subject"] for message in sent] == ["once"]


def test_an_approval_notice_killed_in_its_hand_off_is_mailed_after_the_restart(
    tmp_path: Path, quiet_dns: str
) -> None:
    """The owner's approval notice is in the relay's hands (RCPT unanswered) when the gateway
    is killed: the restarted gateway mails it at once, not after its lease runs out, and the
    held message still waits for review."""
    relay = StallingRelay()
    with relay_on_loopback(relay) as relay_port:
        gateway = started_with_relay(tmp_path, quiet_dns, relay_port)
        try:
            api = gateway.bootstrap()
            changed = api.put(f"/agents/{AGENT}", json={"hitl_enabled": True})
            assert changed.status_code == 200, changed.text
            body = {"from": AGENT, "to": ["someone@example.org"], "subject": "held", "body": "hi"}
            answer = api.post("/send", json=body)
            assert answer.status_code == 202 and answer.json()["status"] == "pending_approval"
            assert relay.rcpt_seen.wait(REDELIVERY_SECONDS), gateway.log_text()
            gateway.kill()
            assert relay.received == []
            relay.stalled.set()
            gateway.start()
            deadline = time.monotonic() + REDELIVERY_SECONDS
            while not relay.received:
                assert time.monotonic() < deadline, "the notice was not mailed after the restart"
                time.sleep(0.1)
            pending = api.get("/messages", params={"status": "pending_approval"}).json()
            api.close()
        finally:
            gateway.kill()
    [(_, recipients, notice)] = relay.received
    assert recipients == ["owner@example.com"]
    assert b"held" in notice
    assert [message["subject"] for message in pending["messages"]] == ["held"]
