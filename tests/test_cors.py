"""CORS over real HTTP: off by default; with `http.cors_allowed_origins`, preflights answered and
answers labelled for the listed origins only, on the REST API and on `/mcp`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from e2a_gateway.accounts import bootstrap_user
from e2a_gateway.app import RunningGateway, run_gateway
from e2a_gateway.mailauth.resolver import FixtureResolver
from tests.conftest import make_settings
from tests.mcp_support import INITIALIZE

UI = "https://ui.example.com"
OTHER = "https://evil.example"
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


def cors_headers(response: httpx.Response) -> dict[str, str]:
    """The response's Access-Control-* headers."""
    return {
        name: value
        for name, value in response.headers.items()
        if name.lower().startswith("access-control-")
    }


def listed(value: str) -> set[str]:
    """A comma-separated header value as a set of lowercase items."""
    return {item.strip().lower() for item in value.split(",")}


async def serve(nursery: trio.Nursery, tmp_path: Path, origins: list[str]) -> RunningGateway:
    """A gateway allowing `origins`, in the test's nursery."""
    settings = make_settings(
        tmp_path, http={"listen": "127.0.0.1:0", "cors_allowed_origins": origins}
    )
    running: RunningGateway = await nursery.start(
        partial(run_gateway, settings, resolver=FixtureResolver())
    )
    return running


@pytest.fixture
async def http(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a gateway that allows the origin `UI` (given as `UI:443/`, normalised)."""
    running = await serve(nursery, tmp_path, [UI + ":443/"])
    async with httpx.AsyncClient(base_url=running.addresses.http_url, timeout=10) as client:
        gateway = running.gateway
        _, issued, _ = await bootstrap_user(gateway.storage, gateway.server_key, "c@example.com")
        client.headers["X-Test-Key"] = issued.plaintext
        yield client


def key_of(http: httpx.AsyncClient) -> dict[str, str]:
    """The Authorization header of the test user."""
    return {"Authorization": f"Bearer {http.headers['X-Test-Key']}"}


def preflight(origin: str, method: str, headers: str) -> dict[str, str]:
    """The headers of a browser's preflight request."""
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


async def test_cors_is_off_by_default(nursery: trio.Nursery, tmp_path: Path) -> None:
    running = await serve(nursery, tmp_path, [])
    async with httpx.AsyncClient(base_url=running.addresses.http_url, timeout=10) as client:
        asked = await client.options(
            "/api/v1/send", headers=preflight(UI, "POST", "authorization, content-type")
        )
        assert cors_headers(asked) == {}
        answered = await client.get("/api/health", headers={"Origin": UI})
        assert answered.status_code == 200 and cors_headers(answered) == {}


@pytest.mark.parametrize(
    ("path", "method", "headers"),
    [
        ("/api/v1/send", "POST", "Authorization, Content-Type, Idempotency-Key"),
        ("/api/v1/agents/bot%40agents.test", "DELETE", "authorization"),
        (
            "/mcp",
            "POST",
            "authorization,content-type,mcp-session-id,mcp-protocol-version,x-e2a-agent-email",
        ),
        ("/mcp", "GET", "authorization, mcp-session-id, last-event-id"),
    ],
)
async def test_a_preflight_from_an_allowed_origin_is_answered(
    http: httpx.AsyncClient, path: str, method: str, headers: str
) -> None:
    answer = await http.options(path, headers=preflight(UI, method, headers))
    assert answer.status_code == 200
    allowed = cors_headers(answer)
    assert allowed["access-control-allow-origin"] == UI
    assert method.lower() in listed(allowed["access-control-allow-methods"])
    assert listed(headers) <= listed(allowed["access-control-allow-headers"])
    assert int(allowed["access-control-max-age"]) > 0
    assert "access-control-allow-credentials" not in allowed  # keys, never cookies
    assert "origin" in listed(answer.headers["vary"])


async def test_a_preflight_for_a_header_not_allowed_does_not_allow_it(
    http: httpx.AsyncClient,
) -> None:
    answer = await http.options("/api/v1/send", headers=preflight(UI, "POST", "x-secret"))
    assert answer.status_code == 400
    assert "x-secret" not in listed(answer.headers.get("access-control-allow-headers", ""))


async def test_answers_to_an_allowed_origin_are_labelled(http: httpx.AsyncClient) -> None:
    for answer in (
        await http.get("/api/v1/agents", headers=key_of(http) | {"Origin": UI}),
        await http.get("/api/v1/agents", headers={"Origin": UI}),  # a 401 the page can read
    ):
        assert answer.status_code in (200, 401)
        labels = cors_headers(answer)
        assert labels["access-control-allow-origin"] == UI
        assert {"mcp-session-id", "www-authenticate", "retry-after"} <= listed(
            labels["access-control-expose-headers"]
        )
        assert "origin" in listed(answer.headers["vary"])
    opened = await http.post(
        "/mcp", json=INITIALIZE, headers=MCP_HEADERS | key_of(http) | {"Origin": UI}
    )
    assert opened.status_code == 200, opened.text
    assert opened.headers["access-control-allow-origin"] == UI
    assert "mcp-session-id" not in opened.headers  # stateless, as e2a's /mcp


async def test_a_page_can_read_the_v1_answer_headers_a_client_reads(
    http: httpx.AsyncClient,
) -> None:
    """`/v1` answers carry a request id, e2a's `RateLimit-*` headers and, on downloads, a file
    name: a page reads them only when they are exposed. It may send its own request id too."""
    answer = await http.get(
        "/v1/agents/bot@agents.test/messages",
        headers=key_of(http) | {"Origin": UI, "X-Request-Id": "page-1"},
    )
    assert answer.status_code == 404, answer.text  # a counted read, answered with the headers
    rate_headers = {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"}
    assert answer.headers["x-request-id"] == "page-1"
    assert rate_headers <= set(answer.headers)
    exposed = listed(answer.headers["access-control-expose-headers"])
    assert {"x-request-id", "content-disposition"} | rate_headers <= exposed
    asked = await http.options(
        "/v1/agents", headers=preflight(UI, "GET", "authorization, x-request-id")
    )
    assert asked.status_code == 200
    assert "x-request-id" in listed(asked.headers["access-control-allow-headers"])


async def test_other_origins_get_no_cors_headers(http: httpx.AsyncClient) -> None:
    asked = await http.options(
        "/api/v1/send", headers=preflight(OTHER, "POST", "authorization, content-type")
    )
    assert cors_headers(asked) == {}
    answered = await http.get("/api/v1/agents", headers=key_of(http) | {"Origin": OTHER})
    assert answered.status_code == 200 and cors_headers(answered) == {}
    mcp = await http.options("/mcp", headers=preflight(OTHER, "POST", "authorization"))
    assert mcp.status_code == 403 and cors_headers(mcp) == {}
    no_origin = await http.get("/api/v1/agents", headers=key_of(http))
    assert cors_headers(no_origin) == {}


@pytest.mark.parametrize(
    "origin",
    ["*", "ui.example.com", "https://ui.example.com/app", "ftp://ui.example.com", "https://"],
)
def test_an_allowed_origin_must_be_an_origin(tmp_path: Path, origin: str) -> None:
    with pytest.raises(ValueError, match="origin"):
        make_settings(tmp_path, http={"cors_allowed_origins": [origin]})
