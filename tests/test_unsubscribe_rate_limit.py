"""The public managed-unsubscribe pages, `GET|POST /u/{token}`, limited per client address
(`limits.unsubscribe_requests_per_ip_per_minute`, counted in the database before the token is
looked up): past it, 429 with `Retry-After` in the pages' plain-text style and headers, and
nothing unsubscribed; other addresses are unaffected, and the limit frees after its minute.
Over real HTTP behind a trusted proxy (127.0.0.1), which names each client."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from e2a_gateway.operations import rate_limits
from tests.conftest import Account, make_settings
from tests.databases import age_rate_limits
from tests.delivery_support import create_agent
from tests.relay_support import Sink, relay_port, sink
from tests.test_v1_managed_unsubscribe import (
    CAROL,
    MANAGED,
    ONE_CLICK,
    PUBLIC_URL,
    key_record,
    listed,
    local,
    messages,
    relayed,
    security_headers,
    unsubscribe_url,
)

pytestmark = pytest.mark.slow

__all__ = ["key_record", "relay_port", "sink"]  # fixtures

LIMIT = 3
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def settings(tmp_path: Path, relay_port: int, key_record: bytes) -> Settings:
    return make_settings(
        tmp_path,
        http={"listen": "127.0.0.1:0", "public_url": PUBLIC_URL, "trusted_proxies": ["127.0.0.1"]},
        outbound_smtp={"host": "127.0.0.1", "port": relay_port, "tls": "none"},
        dkim={"selector": "e2a", "private_key_path": str(tmp_path / "dkim.pem")},
    )


def from_client(address: str, **headers: str) -> dict[str, str]:
    return {"X-Forwarded-For": address, **headers}


def assert_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    retry_after = response.headers["Retry-After"]
    assert retry_after.isdigit() and 1 <= int(retry_after) <= 60, retry_after
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.text == "Too Many Requests\n"
    security_headers(response)


async def test_a_client_past_the_limit_is_refused_others_are_not_and_it_frees(
    running: RunningGateway, make_account: Any, sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    running.gateway.settings.limits.unsubscribe_requests_per_ip_per_minute = LIMIT
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    sent = await alice.http.post(
        messages(bot), json={"to": [CAROL], "subject": "Hi", "text": "Hi", "unsubscribe": MANAGED}
    )
    assert sent.status_code == 202, sent.text
    url = local(running, unsubscribe_url(await relayed(sink, 0)))
    unknown = f"{running.addresses.http_url}/u/u1_{'A' * 43}"
    crowd, other = "198.51.100.7", "203.0.113.9"

    async with httpx.AsyncClient() as client:
        # unknown and malformed tokens count as much as the real link
        assert (await client.get(unknown, headers=from_client(crowd))).status_code == 404
        assert (await client.get(url, headers=from_client(crowd))).status_code == 200
        refused = await client.post(
            url + "x", content=ONE_CLICK, headers=from_client(crowd, **FORM)
        )
        assert refused.status_code == 404, refused.text

        # the limit+1st: 429, whatever the token, and the one-click POST unsubscribes no one
        assert_limited(
            await client.post(url, content=ONE_CLICK, headers=from_client(crowd, **FORM))
        )
        assert_limited(await client.get(url, headers=from_client(crowd)))
        assert_limited(await client.get(unknown, headers=from_client(crowd)))
        assert await listed(alice, bot) == []

        # another address has its own allowance
        page = await client.get(url, headers=from_client(other))
        assert page.status_code == 200, page.text
        assert bot in page.text

        # a minute later, the first address may ask again: the clock the limits read moves
        # on (it dates requests on SQLite), and so do the counted requests (PostgreSQL dates
        # them by its own clock)
        real = time.time
        monkeypatch.setattr(rate_limits, "time", SimpleNamespace(time=lambda: real() + 61))
        age_rate_limits(running.gateway.settings.database.url, 61)
        done = await client.post(url, content=ONE_CLICK, headers=from_client(crowd, **FORM))
        assert done.status_code == 200, done.text
    (block,) = await listed(alice, bot)
    assert block["address"] == CAROL
