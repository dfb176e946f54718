"""Scheduled sending (`send_at`) survives `e2a serve` killed with SIGKILL.

A real subprocess on SQLite, handing outbound mail to an aiosmtpd relay on 127.0.0.1: a send
scheduled a few seconds ahead, the process killed before its time and started again, reaches
the relay once and not before its time; one whose time had come and whose hand-off had not
reached DATA when the process was killed reaches it once after the restart.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from bench._gateway_process import AGENT, GatewayProcess
from bench._quiet_dns import QuietDns
from tests.relay_support import StallingRelay, relay_on_loopback
from tests.test_restart_durability import started_with_relay

pytestmark = [pytest.mark.slow, pytest.mark.backend_independent]

AHEAD_SECONDS = 4.0
"""How far ahead the sends are scheduled: past a restart, short to run."""
DELIVERY_SECONDS = 10.0
"""The bound on waiting for a hand-off that is due."""
SETTLE_SECONDS = 2.0
"""Past a delivery: a second hand-off (the worker polls every second) would have come by now."""
RECIPIENT = "someone@example.org"


@pytest.fixture
def quiet_dns() -> Iterator[str]:
    with QuietDns() as dns:
        yield dns.address


class TimedRelay(StallingRelay):
    """A relay noting when each message's end of DATA reached it; while `stalled` is clear it
    holds each RCPT unanswered (the hand-off has begun and not reached DATA)."""

    def __init__(self) -> None:
        super().__init__(holding=False)
        self.arrivals: list[float] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.arrivals.append(time.time())
        return await super().handle_DATA(server, session, envelope)


def schedule(gateway: GatewayProcess, api: httpx.Client, subject: str, seconds: float) -> float:
    """Send `subject` from AGENT to RECIPIENT over `/v1`, due `seconds` from now; the instant
    the gateway scheduled it for (whole seconds)."""
    send_at = datetime.now(UTC) + timedelta(seconds=seconds)
    answer = api.post(
        f"{gateway.url}/v1/agents/{quote(AGENT, safe='')}/messages",
        json={
            "to": [RECIPIENT],
            "subject": subject,
            "text": "Later.",
            "send_at": send_at.isoformat(),
        },
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "scheduled"
    return datetime.fromisoformat(answer.json()["scheduled_at"]).timestamp()


def wait_for(condition: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return bool(condition())


def test_a_send_scheduled_ahead_is_handed_on_once_at_its_time_after_a_sigkill(
    tmp_path: Path, quiet_dns: str
) -> None:
    relay = TimedRelay()
    with relay_on_loopback(relay) as relay_port:
        gateway = started_with_relay(tmp_path, quiet_dns, relay_port)
        try:
            api = gateway.bootstrap()
            due = schedule(gateway, api, "after the crash", AHEAD_SECONDS)
            gateway.kill()
            assert time.time() < due, "the restart was not before the send's time"
            gateway.start()
            assert wait_for(lambda: relay.received, due - time.time() + DELIVERY_SECONDS)
            time.sleep(SETTLE_SECONDS)
            api.close()
        finally:
            gateway.kill()
    assert len(relay.received) == 1, "the scheduled send was handed on more than once"
    assert relay.arrivals[0] >= due, "the scheduled send was handed on before its time"


def test_a_due_send_killed_before_its_hand_off_is_handed_on_once_after_the_restart(
    tmp_path: Path, quiet_dns: str
) -> None:
    relay = TimedRelay()
    relay.stalled.clear()  # the worker's hand-off begins at the send's time, and hangs at RCPT
    with relay_on_loopback(relay) as relay_port:
        gateway = started_with_relay(tmp_path, quiet_dns, relay_port)
        try:
            api = gateway.bootstrap()
            due = schedule(gateway, api, "due at the crash", 2.0)
            assert relay.rcpt_seen.wait(due - time.time() + DELIVERY_SECONDS)
            assert time.time() >= due
            gateway.kill()
            assert relay.received == []
            relay.stalled.set()
            restarted = time.time()
            gateway.start()
            assert wait_for(lambda: relay.received, DELIVERY_SECONDS)
            time.sleep(SETTLE_SECONDS)
            sent = api.get("/messages", params={"status": "sent"}).json()["messages"]
            api.close()
        finally:
            gateway.kill()
    assert len(relay.received) == 1, "the send due at the kill was handed on more than once"
    assert relay.arrivals[0] >= restarted
    assert [message["subject"] for message in sent] == ["due at the crash"]
