"""An SMTP relay on 127.0.0.1 for the tests that send mail out: aiosmtpd serving a test's
handler on a free loopback port, stopped when the test is done; `Sink`, a handler recording
what it accepted, and the fixtures `sink` and `relay_port` (import them by name)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiosmtpd.controller import Controller


def free_port() -> int:
    """A loopback port nothing listens on (right now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def relay_on_loopback(handler: object) -> Iterator[int]:
    """Serve `handler` (an aiosmtpd handler) as an SMTP relay on 127.0.0.1; yield its port."""
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@dataclass
class Sink:
    """Records what the relay accepted; `answer` is the reply to end of DATA."""

    answer: str = "250 OK"
    rcpt_answers: dict[str, str] = field(default_factory=dict)
    received: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    data_seconds: float = 0.0
    """How long the relay takes to answer the end of DATA (a slow relay)."""

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        answer = self.rcpt_answers.get(address, "250 OK")
        if answer.startswith("250"):
            envelope.rcpt_tos.append(address)
        return answer

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.data_seconds)
        if self.answer.startswith("250"):
            self.received.append(
                (envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
            )
        return self.answer

    def copy_to(self, recipient: str) -> tuple[str, bytes]:
        """The return path and bytes of the copy the relay accepted for `recipient`."""
        (found,) = [(path, raw) for path, rcpts, raw in self.received if recipient in rcpts]
        return found


@pytest.fixture
def sink() -> Sink:
    """A fresh recording handler."""
    return Sink()


@pytest.fixture
def relay_port(sink: Sink) -> Iterator[int]:
    """`sink` served as a relay on 127.0.0.1; its port."""
    with relay_on_loopback(sink) as port:
        yield port
