"""`make bench-rest`'s peer, the bare Quart-Trio app (bench/_bare_quart.py), started as the
benchmark starts it (`bench.rest_read.bare_server`, without wrk), answers the benchmark's two
requests — the inbox page and a message — with the JSON it was given: a change to what it is
built on (e2a's HTTP server) that stops it starting fails here, not only in the benchmark."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from urllib.parse import quote

import httpx
import pytest

from bench._gateway_process import AGENT
from bench.rest_read import INBOX_QUERY, bare_server

pytestmark = [pytest.mark.slow, pytest.mark.backend_independent]

INBOX = {
    "messages": [
        {"message_id": "msg_1", "from": "load@example.org", "subject": "one", "status": "unread"}
    ],
    "next_cursor": None,
}
MESSAGE = {"message_id": "msg_1", "from": "load@example.org", "subject": "one", "text": "hi"}
SECONDS = 60
"""The most the app may take to start, answer both requests and stop."""


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Raise TimeoutError in the block after `seconds` (SIGALRM: it interrupts the wait for
    the app's `ready` line too, and the app is stopped on the way out)."""

    def expired(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"the bare Quart-Trio app took over {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_the_bare_app_answers_the_benchmarks_requests(tmp_path: Path) -> None:
    inbox, message = json.dumps(INBOX).encode(), json.dumps(MESSAGE).encode()
    path = f"/api/v1/agents/{quote(AGENT, safe='')}/messages"
    with deadline(SECONDS), bare_server(tmp_path, inbox, message) as url:
        assert url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=url, timeout=10) as client:
            listed = client.get(path + INBOX_QUERY)
            one = client.get(f"{path}/msg_1")
    for answer, expected in ((listed, INBOX), (one, MESSAGE)):
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/json"
        assert answer.json() == expected
