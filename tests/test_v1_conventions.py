"""e2a's `/v1` conventions, over HTTP against a live gateway: the error envelope and request id
on every answer, strict request bodies (422 naming the field), cursor pages with tamper-evident
cursors, Idempotency-Key on the writes e2a lists, and keys of account or agent scope."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import trio

from e2a_gateway.accounts import issue_api_key
from e2a_gateway.api.v1.errors import refusal
from e2a_gateway.app import RunningGateway
from e2a_gateway.clock import parse_timestamp
from e2a_gateway.operations.errors import NotFound, PreconditionUnmet, RateLimited, Undeliverable
from e2a_gateway.signing.credentials import hash_api_key
from e2a_gateway.web.errors import status_of
from tests.conftest import Account
from tests.databases import gateway_backend
from tests.delivery_support import create_agent

KEYS = "/v1/account/api-keys"


def envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The error of an answer that must be `status` with e2a's envelope and `code`; its
    request id is the one in the X-Request-Id header."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"]
    assert error["request_id"] == response.headers["X-Request-Id"]
    return error


async def test_info_needs_no_key(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/v1/info")
    assert response.status_code == 200, response.text
    info = response.json()
    assert info["version"] == "1.0.0" and info["shared_domain"] == "agents.test"
    assert info["slug_registration_enabled"] is True and info["public_url"]
    assert response.headers["X-Request-Id"].startswith("req_")


async def test_every_refusal_is_the_envelope(anonymous: httpx.AsyncClient) -> None:
    envelope(await anonymous.get("/v1/nowhere"), 404, "not_found")
    envelope(await anonymous.get("/v1"), 404, "not_found")
    refused = await anonymous.delete("/v1/info")
    envelope(refused, 405, "method_not_allowed")
    assert "GET" in refused.headers["Allow"]
    unauthenticated = await anonymous.get(KEYS)
    assert "missing API key" in envelope(unauthenticated, 401, "unauthorized")["message"]
    assert unauthenticated.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = await anonymous.get(KEYS, headers={"Authorization": "Bearer e2a_" + "0" * 64})
    envelope(wrong, 401, "unauthorized")
    # /api/v1 keeps its own shape; its answers name their request id in the header only.
    legacy = await anonymous.get("/api/v1/nowhere")
    assert legacy.json() == {
        "error": {"code": "not_found", "message": legacy.json()["error"]["message"]}
    }
    assert legacy.headers["X-Request-Id"].startswith("req_")


async def test_a_sane_request_id_is_echoed(anonymous: httpx.AsyncClient) -> None:
    mine = await anonymous.get("/v1/nowhere", headers={"X-Request-Id": "trace-42.a"})
    assert envelope(mine, 404, "not_found")["request_id"] == "trace-42.a"
    odd = await anonymous.get("/v1/info", headers={"X-Request-Id": "a b;c"})
    assert odd.headers["X-Request-Id"].startswith("req_")


async def test_request_bodies_are_strict(make_account: Any) -> None:
    alice: Account = await make_account("alice@example.com")
    unknown = await alice.http.post(KEYS, json={"name": "ci", "nickname": "x"})
    error = envelope(unknown, 422, "invalid_request")
    assert error["details"]["fields"] == [{"location": "body.nickname", "message": "unknown field"}]
    wrong_type = await alice.http.post(KEYS, json={"name": 5})
    error = envelope(wrong_type, 422, "invalid_request")
    assert [field["location"] for field in error["details"]["fields"]] == ["body.name"]
    bad_scope = await alice.http.post(KEYS, json={"scope": "everything"})
    envelope(bad_scope, 422, "invalid_request")
    malformed = await alice.http.post(KEYS, content=b"{not json")
    error = envelope(malformed, 400, "invalid_request")
    assert error["details"]["fields"][0]["location"] == "body"
    empty = await alice.http.post(KEYS, content=b"")
    envelope(empty, 400, "invalid_request")


async def test_a_field_sent_as_null_is_refused_not_read_as_left_out(
    make_account: Any, running: RunningGateway
) -> None:
    alice: Account = await make_account("alice@example.com")
    agent = await create_agent(alice, "nulls")
    nameless = await alice.http.post(KEYS, json={"name": None})
    error = envelope(nameless, 422, "invalid_request")
    assert error["details"]["fields"] == [
        {"location": "body.name", "message": "null is not allowed; leave the field out"}
    ]
    send = {"to": ["bob@example.org"], "subject": "s", "text": "t", "html": None}
    refused = await alice.http.post(f"/v1/agents/{agent}/messages", json=send)
    assert envelope(refused, 422, "invalid_request")["details"]["fields"][0]["location"] == (
        "body.html"
    )
    template = {"name": "T", "subject": "s", "text": "t", "html": "<p>h</p>"}
    created = await alice.http.post("/v1/templates", json=template)
    assert created.status_code == 201, created.text
    path = f"/v1/templates/{created.json()['id']}"
    envelope(await alice.http.patch(path, json={"html": None}), 422, "invalid_request")
    assert (await alice.http.get(path)).json()["html"] == "<p>h</p>"
    validate = {"subject": "s", "text": "t", "html": None}
    envelope(await alice.http.post("/v1/templates/validate", json=validate), 422, "invalid_request")
    free_form = {"subject": "{{a}}", "text": "t", "test_data": {"a": None}}
    assert (await alice.http.post("/v1/templates/validate", json=free_form)).status_code == 200


@pytest.mark.parametrize("limit", ["0", "101", "x", "1.5"])
async def test_a_page_limit_is_1_to_100(make_account: Any, limit: str) -> None:
    alice: Account = await make_account("alice@example.com")
    error = envelope(await alice.http.get(KEYS, params={"limit": limit}), 422, "invalid_request")
    assert error["details"]["fields"][0]["location"] == "query.limit"


async def test_cursor_pages_walk_every_key_once(make_account: Any) -> None:
    alice: Account = await make_account("alice@example.com")
    for index in range(4):
        created = await alice.http.post(KEYS, json={"name": f"k{index}"})
        assert created.status_code == 201, created.text
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await alice.http.get(KEYS, params=params)).json()
        assert len(page["items"]) <= 2
        seen += [key["name"] for key in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(["bootstrap", "k0", "k1", "k2", "k3"])
    everything = (await alice.http.get(KEYS)).json()
    assert everything["next_cursor"] is None and len(everything["items"]) == 5
    assert {key["scope"] for key in everything["items"]} == {"account"}
    assert all("key" not in key and "agent_email" not in key for key in everything["items"])


async def test_a_tampered_cursor_is_refused(make_account: Any) -> None:
    alice: Account = await make_account("alice@example.com")
    await alice.http.post(KEYS, json={"name": "second"})
    cursor = (await alice.http.get(KEYS, params={"limit": "1"})).json()["next_cursor"]
    payload, _, mac = cursor.partition(".")
    for forged in [payload[:-1] + ("A" if payload[-1] != "A" else "B") + "." + mac, "x.y", "é"]:
        answer = await alice.http.get(KEYS, params={"cursor": forged})
        envelope(answer, 400, "invalid_cursor")
    assert (await alice.http.get(KEYS, params={"cursor": cursor})).status_code == 200


async def test_an_idempotency_key_replays_the_first_answer(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    body = b'{"name": "deploy"}'
    headers = {"Idempotency-Key": "one", "Content-Type": "application/json"}
    first = await alice.http.post(KEYS, content=body, headers=headers)
    assert first.status_code == 201, first.text
    again = await alice.http.post(KEYS, content=body, headers=headers)
    assert (again.status_code, again.json()) == (201, first.json())
    names = [key["name"] for key in (await alice.http.get(KEYS)).json()["items"]]
    assert names.count("deploy") == 1
    # The same key with another body (even the same JSON spelled otherwise) is a caller bug.
    other = await alice.http.post(KEYS, content=b'{"name":"deploy"}', headers=headers)
    envelope(other, 422, "idempotency_key_reuse")
    # Another key writes again.
    fresh = await alice.http.post(KEYS, content=body, headers={**headers, "Idempotency-Key": "2"})
    assert fresh.status_code == 201 and fresh.json()["key"] != first.json()["key"]
    # The kept answer holds the new key sealed, never in clear.
    if gateway_backend() == "sqlite":
        path = running.gateway.settings.database.url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as db:
            answers = [row[0] for row in db.execute("SELECT answer FROM idempotency_keys")]
        assert len(answers) == 2
        assert all(first.json()["key"].encode() not in answer for answer in answers)


async def test_an_answer_replays_only_to_the_api_key_it_was_written_for(
    running: RunningGateway, make_account: Any
) -> None:
    """The same Idempotency-Key and request from another key of the account is refused, not
    answered with what the first key was given: an agent key never reads the account key's
    new API key that way, nor does it write a second time."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    body = b'{"name": "ci"}'
    headers = {"Idempotency-Key": "create-ci-key", "Content-Type": "application/json"}
    first = await alice.http.post(KEYS, content=body, headers=headers)
    assert first.status_code == 201, first.text
    agent_key = await alice.http.post(
        KEYS, json={"name": "bot", "scope": "agent", "agent_email": bot}
    )
    second_account_key = await alice.http.post(KEYS, json={"name": "second"})
    for made in (agent_key, second_account_key):
        assert made.status_code == 201, made.text
        async with httpx.AsyncClient(
            base_url=running.addresses.http_url,
            headers={"Authorization": f"Bearer {made.json()['key']}"},
            timeout=10,
        ) as other:
            answer = await other.post(KEYS, content=body, headers=headers)
            error = envelope(answer, 422, "idempotency_key_reuse")
            assert "API key" in error["message"]
            assert first.json()["key"] not in answer.text
    names = [key["name"] for key in (await alice.http.get(KEYS)).json()["items"]]
    assert names.count("ci") == 1
    again = await alice.http.post(KEYS, content=body, headers=headers)
    assert (again.status_code, again.json()) == (201, first.json())


async def test_a_refused_write_is_not_remembered(make_account: Any) -> None:
    alice: Account = await make_account("alice@example.com")
    headers = {"Idempotency-Key": "retry-me"}
    refused = await alice.http.post(KEYS, json={"name": "x", "scope": "agent"}, headers=headers)
    envelope(refused, 400, "invalid_request")
    fixed = await alice.http.post(KEYS, json={"name": "x"}, headers=headers)
    assert fixed.status_code == 201, fixed.text
    too_long = await alice.http.post(KEYS, json={}, headers={"Idempotency-Key": "k" * 256})
    envelope(too_long, 400, "invalid_request")


async def test_a_key_still_running_is_in_flight(running: RunningGateway, make_account: Any) -> None:
    alice: Account = await make_account("alice@example.com")
    storage = running.gateway.storage
    holder = await storage.key_holder(hash_api_key(alice.key))
    assert holder is not None
    key_hash = hashlib.sha256(b"busy").hexdigest()
    claim = await storage.claim_idempotency_key(
        holder.user.id, key_hash, "elsewhere", time.time(), 0.0
    )
    assert claim.outcome == "acquired"
    answer = await alice.http.post(KEYS, json={}, headers={"Idempotency-Key": "busy"})
    envelope(answer, 409, "idempotency_in_flight")


async def test_keys_of_agent_scope(make_account: Any, running: RunningGateway) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    made = await alice.http.post(
        KEYS, json={"name": "bot", "scope": "agent", "agent_email": bot.upper()}
    )
    assert made.status_code == 201, made.text
    key = made.json()
    assert (key["scope"], key["agent_email"]) == ("agent", bot)
    listed = {k["id"]: k for k in (await alice.http.get(KEYS)).json()["items"]}
    assert listed[key["id"]]["agent_email"] == bot and "key" not in listed[key["id"]]
    async with httpx.AsyncClient(
        base_url=running.addresses.http_url,
        headers={"Authorization": f"Bearer {key['key']}"},
        timeout=10,
    ) as agent:
        error = envelope(await agent.get(KEYS), 403, "forbidden")
        assert bot in error["message"]
        envelope(await agent.post(KEYS, json={}), 403, "forbidden")
    nobody = await alice.http.post(
        KEYS, json={"scope": "agent", "agent_email": "nobody@agents.test"}
    )
    envelope(nobody, 404, "not_found")
    envelope(await alice.http.post(KEYS, json={"agent_email": bot}), 400, "invalid_scope")
    past = await alice.http.post(KEYS, json={"expires_at": "2001-01-01T00:00:00Z"})
    envelope(past, 400, "invalid_expires_at")
    # not a date-time at all: refused by e2a's schema, 422 naming the field
    for loose in (
        "soon",
        "2999-01-31T12:00Z",
        "2999-01-31",
        "2999-01-31T12:00:00",
        "29990131T1200Z",
    ):
        error = envelope(
            await alice.http.post(KEYS, json={"expires_at": loose}), 422, "invalid_request"
        )
        assert error["details"]["fields"][0]["location"] == "body.expires_at"
    beyond = await alice.http.post(KEYS, json={"expires_at": "9999-12-31T23:59:59-01:00"})
    envelope(beyond, 400, "invalid_expires_at")  # 10000-01-01 in UTC: no four-digit year
    last = await alice.http.post(KEYS, json={"expires_at": "9999-12-31T23:59:59Z"})
    assert last.status_code == 201 and last.json()["expires_at"] == "9999-12-31T23:59:59Z"
    later = await alice.http.post(KEYS, json={"expires_at": "2999-01-01T02:00:00+02:00"})
    assert later.json()["expires_at"] == "2999-01-01T00:00:00Z"
    # a fraction of a second ahead is kept to the whole second, which has begun: refused, not
    # a key born expired (201, then 401 on every use)
    if time.time() % 1 > 0.7:  # leave the request time to arrive within this second
        await trio.sleep(1 - time.time() % 1 + 0.01)
    this_second = datetime.fromtimestamp(int(time.time()), UTC)
    blink = this_second.replace(microsecond=999_000).isoformat(timespec="milliseconds")
    envelope(await alice.http.post(KEYS, json={"expires_at": blink}), 400, "invalid_expires_at")


async def test_an_expired_key_is_listed_with_its_expiry_and_refused(
    make_account: Any, running: RunningGateway
) -> None:
    """e2a lists every key not revoked, so a client sees which expired; none of them works."""
    alice: Account = await make_account("alice@example.com")
    storage = running.gateway.storage
    holder = await storage.key_holder(hash_api_key(alice.key))
    assert holder is not None
    expired = await issue_api_key(
        storage, holder.user.id, "expired", expires_at="2001-01-01T00:00:00Z"
    )
    listed = {key["id"]: key for key in (await alice.http.get(KEYS)).json()["items"]}
    assert listed[expired.key.id]["name"] == "expired" and "key" not in listed[expired.key.id]
    assert listed[expired.key.id]["expires_at"] == "2001-01-01T00:00:00Z"
    assert len(listed) == 2  # with the key in use, which has no expiry
    async with httpx.AsyncClient(
        base_url=running.addresses.http_url,
        headers={"Authorization": f"Bearer {expired.plaintext}"},
        timeout=10,
    ) as stale:
        envelope(await stale.get(KEYS), 401, "unauthorized")
        assert (await stale.get("/api/v1/agents")).status_code == 401
    # Revoked, it is listed no more.
    gone = await alice.http.delete(f"{KEYS}/{expired.key.id}", params={"confirm": "DELETE"})
    assert gone.status_code == 200, gone.text
    assert [key["id"] for key in (await alice.http.get(KEYS)).json()["items"]] == [
        key_id for key_id in listed if key_id != expired.key.id
    ]


async def test_a_revoked_key_is_refused_at_once(make_account: Any, running: RunningGateway) -> None:
    alice: Account = await make_account("alice@example.com")
    made = (await alice.http.post(KEYS, json={"name": "short-lived"})).json()
    envelope(await alice.http.delete(f"{KEYS}/{made['id']}"), 422, "invalid_request")
    gone = await alice.http.delete(f"{KEYS}/{made['id']}", params={"confirm": "DELETE"})
    assert (gone.status_code, gone.json()) == (200, {"deleted": True, "id": made["id"]})
    envelope(
        await alice.http.delete(f"{KEYS}/{made['id']}", params={"confirm": "DELETE"}),
        404,
        "not_found",
    )
    async with httpx.AsyncClient(
        base_url=running.addresses.http_url,
        headers={"Authorization": f"Bearer {made['key']}"},
        timeout=10,
    ) as revoked:
        envelope(await revoked.get(KEYS), 401, "unauthorized")


def test_v1_statuses_differ_from_the_other_faces_only_where_e2a_does() -> None:
    """/v1 shares the status table of every HTTP face but for e2a's: no 412, and no status of
    its own for an undeliverable send."""
    unmet = PreconditionUnmet("verification_record_missing", "publish the TXT record")
    assert (status_of(unmet), refusal(unmet).status) == (412, 400)
    undeliverable = Undeliverable("send_failed", "the message was not sent")
    assert (status_of(undeliverable), refusal(undeliverable).status) == (422, 500)
    for shared in (NotFound("not_found", "no such agent"), RateLimited("rate_limited", "wait")):
        assert refusal(shared).status == status_of(shared)


async def test_a_key_shows_when_it_was_last_used_and_may_go_nameless(
    make_account: Any, running: RunningGateway
) -> None:
    alice: Account = await make_account("alice@example.com")
    made = await alice.http.post(KEYS, json={})
    assert made.status_code == 201, made.text
    assert made.json()["name"] == ""  # e2a keeps a key made without a name nameless
    assert made.json().get("last_used_at") is None

    async def listed() -> dict[str, Any]:
        answer = await alice.http.get(KEYS)
        assert answer.status_code == 200, answer.text
        return {item["id"]: item for item in answer.json()["items"]}

    before = await listed()
    assert before[made.json()["id"]].get("last_used_at") is None  # never used yet
    in_use = [item for item in before.values() if item["id"] != made.json()["id"]]
    assert [item["last_used_at"] is not None for item in in_use] == [True]  # alice's own key
    async with httpx.AsyncClient(
        base_url=running.addresses.http_url,
        headers={"Authorization": f"Bearer {made.json()['key']}"},
        timeout=10,
    ) as fresh:
        assert (await fresh.get("/v1/account")).status_code == 200
    used = (await listed())[made.json()["id"]]["last_used_at"]
    assert used is not None and abs(parse_timestamp(used).timestamp() - time.time()) < 60
