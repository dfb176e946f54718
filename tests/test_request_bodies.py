"""Malformed and oversized requests over real HTTP get a JSON 4xx naming the problem, never a
500: JSON nested 100,000 deep, bodies over `http.max_request_bytes` (declared or chunked, on
REST, the dashboard and MCP alike), page tokens past a 64-bit integer, NUL in a body, a query
or a path, and JSON values no store can keep (integers past 64 bits, lone surrogates, NaN)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio

from e2a_gateway.mailauth.resolver import FixtureResolver
from tests.conftest import SHARED_DOMAIN, Account, agent_path, make_settings
from tests.delivery_support import create_agent, open_account, quiet_gateway
from tests.test_v1_conventions import envelope

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
    assert ("x-request-id" in response.headers) == path.startswith("/api/v1/")
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


def messages_path(agent: str) -> str:
    return f"/v1/agents/{quote(agent, safe='')}/messages"


async def test_nul_anywhere_in_a_v1_body_is_a_400_naming_where(make_account: Any) -> None:
    """PostgreSQL text cannot hold NUL: in a value or a key, at any depth, it is refused as
    the body is read, before any model or database sees it."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    template_data = {"items": [{"name": "a", "k\x00": "v"}]}
    for path, body, location in (
        ("/v1/account/api-keys", {"name": "a\x00b"}, "body.name"),
        ("/v1/agents", {"email": "pgbot2", "name": "a\x00b"}, "body.name"),
        ("/v1/account/api-keys", {"name": "ci", "\x00": 1}, "body"),
        (
            messages_path(bot),
            {"to": [bot], "template_alias": "t", "template_data": template_data},
            "body.template_data.items[0]",
        ),
    ):
        error = envelope(await alice.http.post(path, json=body), 400, "invalid_request")
        assert "NUL (U+0000)" in error["message"] and error["message"].startswith(location)
        assert [field["location"] for field in error["details"]["fields"]] == [location]
    keys = (await alice.http.get("/v1/account/api-keys")).json()["items"]
    assert [key["name"] for key in keys if "\x00" in key["name"]] == []


async def test_nul_anywhere_in_an_api_v1_body_is_a_400_naming_where(
    make_account: Any, anonymous: httpx.AsyncClient
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    for path, body, location in (
        ("/api/v1/send", {"to": [bot], "subject": "s", "body": "b\x00"}, "body.body"),
        ("/api/v1/send", {"to": [bot, "x\x00@example.org"], "subject": "s"}, "body.to[1]"),
        ("/api/v1/agents", {"slug": "nul", "\x00agent_mode": "local"}, "body"),
    ):
        message = assert_json_error(await alice.http.post(path, json=body), 400, "invalid_request")
        assert message.startswith(f"{location}: ") and "NUL (U+0000)" in message
    inbox = (await alice.http.get(agent_path(bot, "/messages"))).json()["messages"]
    assert inbox == []
    feedback = await anonymous.post("/api/feedback", json={"message": "a\x00b"})
    assert "NUL (U+0000)" in assert_json_error(feedback, 400, "invalid_request")


async def test_nul_in_a_query_is_a_400(make_account: Any) -> None:
    """In a parameter's value or name, whether the route reads it or ignores it."""
    alice: Account = await make_account("alice@example.com")
    for path, params in (
        ("/v1/events", {"type": "\x00"}),
        ("/v1/account/api-keys", {"\x00": "1"}),
        ("/v1/account/suppressions/x@example.org", {"confirm": "DELETE\x00"}),
    ):
        method = "DELETE" if "suppressions" in path else "GET"
        answer = await alice.http.request(method, path, params=params)
        assert "NUL (U+0000)" in envelope(answer, 400, "invalid_request")["message"]
    for params in ({"status": "\x00"}, {"agent": "a\x00"}, {"\x00": ""}):
        answer = await alice.http.get("/api/v1/messages", params=params)
        assert "NUL (U+0000)" in assert_json_error(answer, 400, "invalid_request")


async def test_nul_in_a_path_names_nothing(make_account: Any) -> None:
    """A path value holding NUL is an id that names nothing: 404, on every face."""
    alice: Account = await make_account("alice@example.com")
    for method, path in (
        ("GET", "/v1/events/%00"),
        ("GET", "/v1/webhooks/%00"),
        ("POST", "/v1/webhooks/wh_%00/test"),
        ("DELETE", "/v1/account/suppressions/%00?confirm=DELETE"),
        ("GET", "/v1/templates/t%00"),
        ("GET", "/v1/agents/%00"),
    ):
        envelope(await alice.http.request(method, path), 404, "not_found")
    for method, path in (
        ("GET", "/api/v1/messages/%00"),
        ("POST", "/api/v1/messages/msg_%00/approve"),
        ("GET", "/api/v1/agents/a%00@agents.test"),
    ):
        assert_json_error(await alice.http.request(method, path), 404, "not_found")


UNKEPT = {
    "int-past-64-bits": ("18446744073709551616", "integer out of range"),
    "int-below-64-bits": ("-9223372036854775809", "integer out of range"),
    "int-of-5000-digits": ("1" * 5000, "integer out of range"),
    "int-of-minus-5000-digits": ("-" + "1" * 5000, "integer out of range"),
    "float-overflow": ("-1e400", "number out of range"),
    "lone-surrogate": ('"a\\ud800"', "lone surrogate (U+D800)"),
    "lone-low-surrogate": ('"\\udfff"', "lone surrogate (U+DFFF)"),
}
"""JSON values, as written, that Python's parser takes and no store or answer can keep: what
the refusal says of each."""
NOT_JSON = {
    name: (name, f"{name} is not a JSON number") for name in ("NaN", "Infinity", "-Infinity")
}
"""Constants Python's parser takes that JSON has not."""
HOOK_URL = "https://hooks.example.com/in"


@pytest.fixture
async def hooked(make_account: Any, resolver: FixtureResolver) -> tuple[Account, str, str]:
    """alice, her agent `bot`, and the id of her webhook; a template `t` whose subject and text
    are `{{s}}`."""
    resolver.load_zone({"hooks.example.com": {"A": ["93.184.216.34"]}})
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    hook = await alice.http.post("/v1/webhooks", json={"url": HOOK_URL, "events": ["email.sent"]})
    assert hook.status_code == 201, hook.text
    template = {"name": "T", "alias": "t", "subject": "{{s}}", "text": "{{s}}"}
    assert (await alice.http.post("/v1/templates", json=template)).status_code == 201
    return alice, bot, hook.json()["id"]


@pytest.mark.parametrize(
    ("written", "problem"), [*UNKEPT.values(), *NOT_JSON.values()], ids=[*UNKEPT, *NOT_JSON]
)
async def test_json_values_no_store_can_keep_are_a_400(
    hooked: tuple[Account, str, str], written: str, problem: str
) -> None:
    """Free-form objects (a webhook test's `data`, `template_data`) take any JSON, but not what
    the database, the webhook's JSON or UTF-8 cannot carry: refused as the body is read (it was
    a 500, or NaN stored), in /v1's envelope and /api/v1's. `template_data` keeps its numbers
    as written, so an integer there is refused only past what a float can hold (as e2a's
    server refuses it; tests/test_v1_templates.py renders a shorter one)."""
    alice, bot, hook = hooked
    unkept = written in {value for value, _ in UNKEPT.values()}
    cases = [
        (f"/v1/webhooks/{hook}/test", f'{{"data": {{"n": {written}}}}}', "body.data.n", problem)
    ]
    digits = written.lstrip("-")
    if not digits.isdigit() or len(digits) > 308:
        cases.append(
            (
                messages_path(bot),
                f'{{"to": ["{bot}"], "template_alias": "t", '
                f'"template_data": {{"s": [{written}]}}}}',
                "body.template_data.s[0]",
                "number out of range" if digits.isdigit() else problem,
            )
        )
    for path, body, location, said in cases:
        answer = await alice.http.post(path, content=body.encode())
        error = envelope(answer, 400, "invalid_request")
        assert said in error["message"]
        assert error["details"]["fields"][0]["location"] == (location if unkept else "body")
    legacy = f'{{"to": ["{bot}"], "subject": {written}, "body": "b"}}'
    answer = await alice.http.post("/api/v1/send", content=legacy.encode())
    message = assert_json_error(answer, 400, "invalid_request" if unkept else "invalid_json")
    assert problem in message
    assert not unkept or message.startswith("body.subject: ")
    inbox = (await alice.http.get(agent_path(bot, "/messages"))).json()["messages"]
    assert inbox == []


async def test_a_lone_surrogate_in_a_key_is_a_400(hooked: tuple[Account, str, str]) -> None:
    alice, _, hook = hooked
    answer = await alice.http.post(
        f"/v1/webhooks/{hook}/test", content=b'{"data": {"ok": 1, "\\ud800": 1}}'
    )
    error = envelope(answer, 400, "invalid_request")
    assert error["details"]["fields"] == [
        {
            "location": "body.data",
            "message": "keys must not contain a lone surrogate (U+D800), which is not Unicode text",
        }
    ]


async def test_json_values_at_the_edges_are_kept(hooked: tuple[Account, str, str]) -> None:
    """The widest 64-bit integers, the largest floats and characters beyond the BMP (written
    as a surrogate pair, as `ensure_ascii` writes them) are taken."""
    alice, bot, hook = hooked
    data = {"max": 2**63 - 1, "min": -(2**63), "big": -1.7e308, "s": "\U0001f600"}
    tested = await alice.http.post(
        f"/v1/webhooks/{hook}/test", content=json.dumps({"data": data}).encode()
    )
    assert tested.status_code == 200, tested.text
    body = {"to": [bot], "template_alias": "t", "template_data": data}
    sent = await alice.http.post(messages_path(bot), content=json.dumps(body).encode())
    assert sent.status_code == 202, sent.text
    stored = await alice.http.get(messages_path(bot) + f"/{sent.json()['message_id']}")
    assert stored.json()["subject"] == "\U0001f600"


async def test_a_body_of_millions_of_tiny_values_is_refused_before_it_is_parsed(
    make_account: Any,
) -> None:
    """Each value of a body cost the event loop a parse, a depth check and a value check: a
    20 MiB body of ten million zeros held every session and request up for seconds. A body of
    more than 100,000 strings, commas and opening brackets is refused before it is parsed."""
    alice: Account = await make_account("alice@example.com")
    body = b'{"name": "ci", "tags": [' + b"0," * 10_000_000 + b"0]}"
    started = time.perf_counter()
    response = await alice.http.post("/v1/account/api-keys", content=body)
    assert time.perf_counter() - started < 3
    message = assert_json_error(response, 400, "invalid_request")
    assert "too many JSON values" in message
    response = await alice.http.post("/api/v1/agents", content=body)
    message = assert_json_error(response, 400, "invalid_json")
    assert "at most 100,000 strings, commas and opening brackets" in message


async def test_an_mcp_body_of_millions_of_tiny_values_is_a_parse_error(make_account: Any) -> None:
    """/mcp parsed such a body twice on the event loop before any tool saw it."""
    alice: Account = await make_account("alice@example.com")
    arguments = b'{"a": [' + b"[]," * 5_000_000 + b"0]}"
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "list_agents", '
    body += b'"arguments": ' + arguments + b"}}"
    started = time.perf_counter()
    response = await alice.http.post("/mcp", content=body, headers=MCP_HEADERS)
    assert time.perf_counter() - started < 3
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == -32700
    assert "too many JSON values" in error["message"]


async def dribbled(http_url: str, head: bytes, wait: float) -> tuple[bytes, float]:
    """Send `head` announcing 1000 bytes of body, then a byte every 0.2 s (never a gap the
    idle timeout would end); what the gateway answered, and when, within `wait` seconds."""
    port = int(http_url.rsplit(":", 1)[1])
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    started = time.monotonic()
    answer = b""
    async with stream, trio.open_nursery() as nursery:

        async def drip() -> None:
            await stream.send_all(head + b"Content-Length: 1000\r\n\r\n")
            for _ in range(1000):
                await trio.sleep(0.2)
                await stream.send_all(b"x")

        nursery.start_soon(drip)
        with trio.move_on_after(wait):
            while chunk := await stream.receive_some(65536):
                answer += chunk
        nursery.cancel_scope.cancel()
    return answer, time.monotonic() - started


@pytest.mark.parametrize(
    "head",
    [
        b"POST /api/feedback HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n",
        b"POST /signin HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n",
    ],
)
async def test_a_body_that_takes_too_long_to_arrive_is_a_408(tmp_path: Path, head: bytes) -> None:
    """A body dribbled a byte at a time never lets the idle timeout end its connection: the
    whole body must arrive within `http.request_body_seconds`, on every route, anonymous
    ones (feedback, sign-in) included; else 408 and the connection is closed."""
    settings = make_settings(tmp_path, http={"listen": "127.0.0.1:0", "request_body_seconds": 1.5})
    async with quiet_gateway(settings, FixtureResolver()) as quiet:
        answer, seconds = await dribbled(quiet.http_url, head, wait=10)
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 408 Request Timeout", answer
    assert 1.5 <= seconds < 4, seconds
    head_part, _, body = rest.partition(b"\r\n\r\n")
    assert b"connection: close" in head_part.lower()
    error = json.loads(body)["error"]
    assert error["code"] == "request_timeout"
    assert "http.request_body_seconds" in error["message"]


# -- forms: how many fields, not only how many bytes -------------------------------------------

MANY_FIELDS = 2_000_000
"""Far more fields than any form has, in 4 MB: parsing them all held the event loop for over a
second (twenty million, under the 40 MiB bound, for thirteen) and took gigabytes."""


@pytest.mark.parametrize("path", ["/signin", "/api/v1/approve"], ids=["dashboard", "approval"])
async def test_a_form_of_too_many_fields_is_refused_before_it_is_parsed(
    anonymous: httpx.AsyncClient, path: str
) -> None:
    """An anonymous POST of a form with millions of empty fields (`a&a&a…`) is refused for
    its field count, saying so, before a field is parsed; the gateway goes on answering."""
    started = time.monotonic()
    response = await anonymous.post(path, content=b"a&" * MANY_FIELDS, headers=FORM)
    assert response.status_code == 400, response.text[-500:]
    assert "at most 1000 fields" in response.text
    assert time.monotonic() - started < 1.0
    assert (await anonymous.get("/api/health")).status_code == 200


@pytest.mark.parametrize("path", ["/signin", "/api/v1/approve"], ids=["dashboard", "approval"])
async def test_a_form_at_the_field_bound_is_read(anonymous: httpx.AsyncClient, path: str) -> None:
    """A thousand fields is what Quart's MAX_FORM_PARTS allows: read, then refused for what
    it lacks (no sign-in token, no approval token), not for its size."""
    response = await anonymous.post(path, content=b"&".join([b"a=1"] * 1000), headers=FORM)
    assert response.status_code in (400, 403), response.text[-500:]
    assert "fields" not in response.text
