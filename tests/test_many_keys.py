"""An account with many API keys (rotated often, so mostly revoked): the dashboard's Keys page
reads and shows one page of them at a time, and the `/api/v1` key list reads only the keys
that still work, never every key the account ever had."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from e2a_gateway.app import RunningGateway
from e2a_gateway.dashboard import account as dashboard_account
from e2a_gateway.storage.sql.transaction import Transaction
from tests.test_dashboard import sign_in

KEYS = 12
"""Keys made besides the account's bootstrap key."""
REVOKED = 9
"""Of them, the oldest ones revoked."""


@pytest.fixture
def key_rows(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many rows each read of `api_keys` gave (more than one row: a list), from here on."""
    seen: list[int] = []
    original_all = Transaction.all

    def counted_all(self: Transaction, query: str, *args: Any, **kwargs: Any) -> list[Any]:
        rows = original_all(self, query, *args, **kwargs)
        if re.search(r"\bFROM api_keys\b", query):
            seen.append(len(rows))
        return rows

    monkeypatch.setattr(Transaction, "all", counted_all)
    yield seen


async def _many_keys(account: Any) -> list[str]:
    """KEYS keys of `account`, named key00…, the first REVOKED of them revoked; their names,
    oldest first."""
    names = [f"key{number:02d}" for number in range(KEYS)]
    for number, name in enumerate(names):
        made = await account.http.post("/api/v1/users/me/api-keys", json={"name": name})
        assert made.status_code == 201, made.text
        if number < REVOKED:
            revoked = await account.http.delete(f"/api/v1/users/me/api-keys/{made.json()['id']}")
            assert revoked.status_code == 204
    return names


def _shown_keys(html: str) -> list[str]:
    return re.findall(r'<th scope="row">(key\d\d|bootstrap)</th><td><code>', html)


async def test_the_dashboard_lists_api_keys_a_page_at_a_time(
    running: RunningGateway,
    make_account: Any,
    monkeypatch: pytest.MonkeyPatch,
    key_rows: list[int],
) -> None:
    """Revoked keys too (marked so), a page of KEYS_PAGE_SIZE read at a time, newest first,
    with a link to the older ones."""
    monkeypatch.setattr(dashboard_account, "KEYS_PAGE_SIZE", 5)
    account = await make_account("owner@example.com")
    names = await _many_keys(account)
    async with httpx.AsyncClient(base_url=running.addresses.http_url, timeout=10) as browser:
        await sign_in(browser, account.key)
        shown: list[str] = []
        revoked = pages = 0
        path: str | None = "/credentials"
        while path is not None and pages <= KEYS:
            key_rows.clear()
            html = (await browser.get(path)).text
            pages += 1
            on_page = _shown_keys(html)
            assert 0 < len(on_page) <= 5, html[-3000:]
            assert max(key_rows) <= 6, key_rows  # the page and one more, no more
            shown += on_page
            revoked += html.count('<span class="badge bad">revoked</span>')
            older = re.search(r'href="(/credentials\?page=[^"]+)">Older keys', html)
            path = older.group(1).replace("&amp;", "&") if older else None
    assert pages == 3
    assert sorted(shown) == sorted([*names, "bootstrap"]) and len(set(shown)) == len(shown)
    assert revoked == REVOKED


@pytest.mark.parametrize(
    "position",
    ["not-a-token", "[" * 5000 + "]" * 5000, '["2026-01-01T00:00:00Z", "a\\u0000b"]', "[1, 2]"],
    ids=["garbage", "nested-thousands-deep", "nul-in-id", "numbers"],
)
async def test_a_forged_key_page_token_is_refused(
    running: RunningGateway, make_account: Any, position: str
) -> None:
    account = await make_account("owner@example.com")
    token = base64.urlsafe_b64encode(position.encode()).decode().rstrip("=")
    async with httpx.AsyncClient(base_url=running.addresses.http_url, timeout=10) as browser:
        await sign_in(browser, account.key)
        answer = await browser.get("/credentials", params={"page": token})
    assert answer.status_code == 400, answer.status_code
    assert "invalid page token" in answer.text


async def test_the_api_v1_key_list_reads_only_the_keys_that_still_work(
    make_account: Any, key_rows: list[int]
) -> None:
    """`{"api_keys": [...]}` has no pages, so it lists every key not revoked (expired ones
    too, as e2a lists them); revoked keys, which pile up as keys are rotated, are not read."""
    account = await make_account("owner@example.com")
    names = await _many_keys(account)
    key_rows.clear()
    listed = (await account.http.get("/api/v1/users/me/api-keys")).json()["api_keys"]
    assert sorted(key["name"] for key in listed) == ["bootstrap", "key09", "key10", "key11"]
    assert all(key["revoked_at"] is None for key in listed)
    assert max(key_rows) <= len(names) - REVOKED + 1, key_rows
