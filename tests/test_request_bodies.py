"""Malformed and oversized requests over real HTTP get a JSON 4xx naming the problem, never a
500: JSON nested 100,000 deep, bodies over `http.max_request_bytes` (declared or chunked, on
REST, the dashboard and MCP alike), page tokens past a 64-bit integer."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2a_gateway.mailauth.resolver import FixtureResolver
from tests.conftest import SHARED_DOMAIN, Account, agent_path, make_settings
from tests.delivery_support import open_account, quiet_gateway

SMALL_LIMIT = 65_536
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
DEEP = 100_000
JSON_ROUTES = [
    ("POST", "/api/v1/agents"),
    ("PUT", f"/api/v1/agents/deep@{SHARED_DOMAIN}"),
    ("POST", "/api/v1/send"),
    ("POST", "/api/v1/domains"),
    ("POST", "/api/v1/users/me/api-keys"),
    ("POST", "/api/v1/users/me/signing-secrets"),
    ("POST", "/api/v1/messages/msg_x/approve"),
]


def assert_json_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    return str(error["message"])


@pytest.mark.parametrize(
    "body",
    [
        b"[" * DEEP + b"]" * DEEP,
        b'{"a":' * DEEP + b"1" + b"}" * DEEP,
        b'{"slug": "deep", "name": ' + b"[" * 33 + b"]" * 33 + b"}",
    ],
    ids=["arrays-100000", "objects-100000", "arrays-33"],
)
@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
async def test_json_nested_too_deep_is_a_400(
    make_account: Any, method: str, path: str, body: bytes
) -> None:
    alice: Account = await make_account("alice@example.com")
    await alice.http.post("/api/v1/agents", json={"slug": "deep", "agent_mode": "local"})
    response = await alice.http.request(method, path, content=body)
    message = assert_json_error(response, 400, "invalid_json")
    assert "more than 32 levels deep" in message


async def test_json_nested_too_deep_on_mcp_is_a_parse_error(make_account: Any) -> None:
    alice: Account = await make_account("alice@example.com")
    response = await alice.http.post(
        "/mcp",
        content=b'{"a":' * DEEP + b"1" + b"}" * DEEP,
        headers=MCP_HEADERS,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == -32700


@pytest.mark.parametrize(
    ("seq", "status"),
    [
        ("9" * 25, 400),
        (str(2**63), 400),
        ("9" * 5000, 400),
        ("\u0661\u0662", 400),
        (str(2**63 - 1), 200),
    ],
    ids=["25-digits", "2-to-the-63", "5000-digits", "arabic-digits", "largest"],
)
async def test_page_tokens_past_64_bits_are_refused(
    make_account: Any, seq: str, status: int
) -> None:
    alice: Account = await make_account("alice@example.com")
    await alice.http.post("/api/v1/agents", json={"slug": "paged", "agent_mode": "local"})
    token = base64.urlsafe_b64encode(f"v1:{seq}".encode()).decode().rstrip("=")
    response = await alice.http.get(
        agent_path(f"paged@{SHARED_DOMAIN}", f"/messages?status=all&token={token}")
    )
    if status == 400:
        assert_json_error(response, 400, "invalid_token")
    else:
        assert response.status_code == 200, response.text
        assert response.json() == {"messages": [], "next_token": None}


# -- the body bound, on a gateway whose bound is small ------------------------------------------


@pytest.fixture
async def small(tmp_path: Path) -> AsyncIterator[Account]:
    """An account on a gateway that takes request bodies of at most SMALL_LIMIT bytes."""
    settings = make_settings(
        tmp_path, http={"listen": "127.0.0.1:0", "max_request_bytes": SMALL_LIMIT}
    )
    async with quiet_gateway(settings, FixtureResolver()) as quiet:
        account = await open_account(quiet.gateway, quiet.http_url, "alice@example.com")
        async with account.http:
            yield account


def padded(size: int) -> bytes:
    """A valid agent registration padded with spaces to `size` bytes."""
    body = b'{"slug": "padded", "agent_mode": "local"}'
    return body + b" " * (size - len(body))


async def chunks(body: bytes, size: int = 8192) -> AsyncIterator[bytes]:
    """`body` sent chunked (no Content-Length), `size` bytes at a time."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    ("path", "headers"),
    [("/api/v1/agents", {}), ("/mcp", MCP_HEADERS), ("/signin", FORM)],
    ids=["rest", "mcp", "dashboard"],
)
async def test_bodies_over_the_bound_are_a_413_on_every_route(
    small: Account, path: str, headers: dict[str, str], chunked: bool
) -> None:
    body = padded(SMALL_LIMIT + 1)
    content: bytes | AsyncIterator[bytes] = chunks(body) if chunked else body
    response = await small.http.post(path, content=content, headers=headers)
    message = assert_json_error(response, 413, "payload_too_large")
    assert f"at most {SMALL_LIMIT} bytes (http.max_request_bytes)" in message
    assert response.headers["connection"] == "close"
    assert (await small.http.get("/api/v1/agents")).json() == {"agents": []}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_at_the_bound_is_served(small: Account, chunked: bool) -> None:
    body = padded(SMALL_LIMIT)
    content: bytes | AsyncIterator[bytes] = chunks(body) if chunked else body
    response = await small.http.post("/api/v1/agents", content=content)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_bodies_over_the_bound_on_v1_are_e2as_envelope(small: Account, chunked: bool) -> None:
    body = padded(SMALL_LIMIT + 1)
    content: bytes | AsyncIterator[bytes] = chunks(body) if chunked else body
    response = await small.http.post("/v1/account/api-keys", content=content)
    assert_json_error(response, 413, "payload_too_large")
    error = response.json()["error"]
    assert error["request_id"] == response.headers["X-Request-Id"]
    assert error["details"]["scope"] == "request_body"
    assert error["details"]["max_bytes"] == SMALL_LIMIT
    assert error["details"]["actual_bytes"] > SMALL_LIMIT


async def test_json_nested_too_deep_on_v1_is_a_400(make_account: Any) -> None:
    alice: Account = await make_account("alice@example.com")
    response = await alice.http.post("/v1/account/api-keys", content=b"[" * DEEP + b"]" * DEEP)
    message = assert_json_error(response, 400, "invalid_request")
    assert "more than 32 levels deep" in message
