"""How `e2a serve` writes where it listens (its `e2a ready` line, the URLs tests use): an IPv6
host in brackets before the port, as URLs and mail clients write it."""

from __future__ import annotations

import pytest

from e2a_gateway.app import BoundAddresses

pytestmark = pytest.mark.backend_independent


@pytest.mark.parametrize(
    ("host", "smtp", "http"),
    [
        ("127.0.0.1", "127.0.0.1:2525", "http://127.0.0.1:8080"),
        ("::1", "[::1]:2525", "http://[::1]:8080"),
        ("fd00::25", "[fd00::25]:2525", "http://[fd00::25]:8080"),
    ],
)
def test_an_ipv6_host_is_bracketed_before_its_port(host: str, smtp: str, http: str) -> None:
    bound = BoundAddresses(smtp_host=host, smtp_port=2525, http_host=host, http_port=8080)
    assert (bound.smtp_address, bound.http_url) == (smtp, http)
