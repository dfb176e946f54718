"""An SMTP relay on 127.0.0.1 for the tests that send mail out: aiosmtpd serving a test's
handler on a free loopback port, stopped when the test is done."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

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
