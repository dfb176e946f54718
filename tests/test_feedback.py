"""`POST /api/feedback` over HTTP against a live gateway: accepted and stored as e2a answers,
malformed bodies refused with clear errors, 10 an hour per client address, and the operators'
dashboard page (operators only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from tests.conftest import Account, make_settings
from tests.test_dashboard import sign_in

OPERATOR = "ops@example.com"
FEEDBACK = "/api/feedback"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The test gateway, with one operator."""
    return make_settings(tmp_path, operators={"accounts": [OPERATOR.upper()]})


async def stored(running: RunningGateway) -> list[Any]:
    return await running.gateway.storage.list_feedback(100)


async def test_feedback_is_accepted_and_stored_as_sent(
    running: RunningGateway, anonymous: httpx.AsyncClient, make_account: Any
) -> None:
    sent = {
        "message": "The inbox page\nloses its filter.",
        "category": "bug",
        "email": "a@b.example",
    }
    answer = await anonymous.post(FEEDBACK, json=sent)
    assert answer.status_code == 200 and answer.json() == {"status": "ok"}

    alice: Account = await make_account("alice@example.com")
    answer = await alice.http.post(FEEDBACK, json={"message": "More webhooks, please"})
    assert answer.status_code == 200
    # A bad key is no reason to refuse feedback: it is just not anyone's.
    bad = {"Authorization": "Bearer e2a_" + "0" * 64}
    answer = await anonymous.post(FEEDBACK, json={"message": "hi", "email": ""}, headers=bad)
    assert answer.status_code == 200

    newest, from_alice, first = await stored(running)
    assert (first.category, first.message, first.email) == (
        "bug",
        "The inbox page\nloses its filter.",
        "a@b.example",
    )
    assert first.id.startswith("fbk_") and first.created_at.endswith("Z")
    assert (from_alice.category, from_alice.email) == ("general", "alice@example.com")
    assert (newest.message, newest.email) == ("hi", None)


@pytest.mark.parametrize(
    ("body", "code", "says"),
    [
        (b"", "invalid_json", "request body is empty"),
        (b"message=hi", "invalid_json", "JSON"),
        (b'["hi"]', "invalid_json", "object"),
        (b"{}", "invalid_request", "missing required field 'message'"),
        (b'{"message": "   "}', "invalid_request", "field 'message'"),
        (b'{"message": 5}', "invalid_request", "field 'message'"),
        (json.dumps({"message": "x" * 5001}).encode(), "invalid_request", "5000 characters"),
        (b'{"message": "hi", "category": "praise"}', "invalid_request", "'bug', 'feature'"),
        (b'{"message": "hi", "email": "not an address"}', "invalid_request", "email address"),
        (
            json.dumps({"message": "hi", "email": "a" * 250 + "@b.co"}).encode(),
            "invalid_request",
            "254",
        ),
        (b'{"message": "hi", "name": "Bob"}', "invalid_request", "unknown field 'name'"),
        (json.dumps({"message": "hi", "pad": "x" * 70_000}).encode(), "payload_too_large", "65536"),
    ],
)
async def test_malformed_feedback_is_refused_with_a_clear_error(
    running: RunningGateway, anonymous: httpx.AsyncClient, body: bytes, code: str, says: str
) -> None:
    answer = await anonymous.post(FEEDBACK, content=body)
    assert answer.status_code == (413 if code == "payload_too_large" else 400)
    error = answer.json()["error"]
    assert error["code"] == code and says in error["message"], error
    assert await stored(running) == []


async def test_the_eleventh_in_an_hour_from_one_address_is_refused(
    running: RunningGateway, anonymous: httpx.AsyncClient
) -> None:
    for number in range(10):
        answer = await anonymous.post(FEEDBACK, json={"message": f"note {number}"})
        assert answer.status_code == 200, answer.text
    refused = await anonymous.post(FEEDBACK, json={"message": "one more"})
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 3600
    error = refused.json()["error"]
    assert error["code"] == "rate_limited"
    assert "10 feedback submissions per hour from this address" in error["message"]
    assert len(await stored(running)) == 10


async def test_operators_see_feedback_on_the_dashboard_and_nobody_else(
    running: RunningGateway, anonymous: httpx.AsyncClient, make_account: Any
) -> None:
    await anonymous.post(FEEDBACK, json={"message": "<b>Great</b> gateway", "category": "general"})
    await anonymous.post(FEEDBACK, json={"message": "Add IMAP", "category": "feature"})
    operator: Account = await make_account(OPERATOR)
    alice: Account = await make_account("alice@example.com")
    base = running.addresses.http_url
    async with httpx.AsyncClient(base_url=base) as ops, httpx.AsyncClient(base_url=base) as other:
        await sign_in(ops, operator.key)
        await sign_in(other, alice.key)

        listing = await ops.get("/feedback")
        assert listing.status_code == 200
        html = listing.text
        assert html.index("Add IMAP") < html.index("&lt;b&gt;Great&lt;/b&gt; gateway")
        assert "<b>Great" not in html and ">feature<" in html
        assert 'href="/feedback"' in (await ops.get("/agents")).text

        refused = await other.get("/feedback")
        assert refused.status_code == 404
        assert "Add IMAP" not in refused.text
        assert 'href="/feedback"' not in (await other.get("/agents")).text
        assert (await anonymous.get("/feedback")).status_code == 303  # to the sign-in page
