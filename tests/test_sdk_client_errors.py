"""The SDK's errors (`e2a_gateway.v1`) in the shape of e2a's SDK 5.x: a subclass of
`E2AApiError` per family of refusal, with `retryable`, `details` and the answer's
`request_id`; and no answer at all (a refused connection, a dropped one, a timeout) raised as
`E2AConnectionError`, tried again like a 503 for the calls a repeat cannot make twice.

Against a live gateway over real HTTP (tests.test_sdk_client's `live`), and local servers that
drop or hold every connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import trio

from e2a_gateway.operations import agents as operations_agents
from e2a_gateway.v1 import (
    AsyncE2AClient,
    E2AApiError,
    E2AAuthError,
    E2AClient,
    E2AConflictError,
    E2AConnectionError,
    E2ANotFoundError,
    E2AServerError,
    E2AValidationError,
    fetch_info,
)
from tests.test_sdk_client import LiveGateway, live  # noqa: F401  (fixture)
from tests.test_sdk_client_retries import busy_proxy


def test_refusals_are_typed_by_family_and_name_their_request_id(
    live: LiveGateway,  # noqa: F811
) -> None:
    """Each refusal is a subclass of E2AApiError (so `except E2AApiError` still catches it),
    says whether a retry may help, and carries the X-Request-Id the gateway answered with."""
    key = live.new_key("typed@example.com")
    with E2AClient(key, base_url=live.url) as client:
        client.register_agent("typed", agent_mode="local")
        cases = [
            (lambda: client.get_agent("nobody@agents.test"), E2ANotFoundError, 404),
            (lambda: client.register_agent("typed", agent_mode="local"), E2AConflictError, 409),
            (lambda: client.register_agent("admin", agent_mode="local"), E2AValidationError, 400),
        ]
        for attempt, kind, status in cases:
            with pytest.raises(kind) as raised:
                attempt()
            error = raised.value
            assert isinstance(error, E2AApiError) and error.status_code == status
            assert error.retryable is False and error.details is None
            assert error.request_id is not None and error.request_id.startswith("req_")
    with (
        E2AClient("e2a_" + "0" * 64, base_url=live.url) as stranger,
        pytest.raises(E2AAuthError) as refused,
    ):
        stranger.list_agents()
    assert refused.value.status_code == 401 and refused.value.retryable is False

    with busy_proxy(live, refusals=1) as (url, _), E2AClient(key, base_url=url) as busy:
        with pytest.raises(E2AServerError) as unavailable:
            busy.register_agent("typed-other", agent_mode="local")
        assert unavailable.value.status_code == 503 and unavailable.value.retryable is True


def test_every_api_v1_answer_carries_a_request_id(live: LiveGateway) -> None:  # noqa: F811
    """As on /v1: a success and an error both name their request id, the client's own when it
    sent a sane one; the error the SDK raises holds the same id."""
    info = httpx.get(f"{live.url}/api/v1/info")
    assert info.status_code == 200 and info.headers["X-Request-Id"].startswith("req_")
    mine = httpx.get(f"{live.url}/api/v1/agents", headers={"X-Request-Id": "trace-42"})
    assert mine.status_code == 401 and mine.headers["X-Request-Id"] == "trace-42"
    odd = httpx.get(f"{live.url}/api/v1/agents", headers={"X-Request-Id": "a b"})
    assert odd.headers["X-Request-Id"].startswith("req_")
    assert "X-Request-Id" not in httpx.get(f"{live.url}/api/health").headers

    with (
        E2AClient("e2a_" + "0" * 64, base_url=live.url) as stranger,
        pytest.raises(E2AApiError) as refused,
    ):
        stranger.list_agents()
    assert refused.value.request_id and refused.value.request_id != mine.headers["X-Request-Id"]


def test_the_gateway_log_names_the_request_id_of_a_failed_call(
    live: LiveGateway,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug answered 500 (tried again, as any 5xx, with a new request id each time): the
    raised error's request id is in the gateway's log line about the last try."""

    async def broken(*_: object) -> None:
        raise RuntimeError("a bug")

    key = live.new_key("buggy@example.com")
    monkeypatch.setattr(operations_agents, "list_agents", broken)
    with E2AClient(key, base_url=live.url) as client, pytest.raises(E2AServerError) as failed:
        client.list_agents()
    error = failed.value
    assert error.status_code == 500 and error.request_id
    logged = [r for r in caplog.records if r.exc_info and "unhandled error" in r.getMessage()]
    assert len(logged) == 3 and error.request_id in logged[-1].getMessage()


def test_an_error_body_with_details_keeps_them() -> None:
    request = httpx.Request("POST", "https://e2a.test/api/v1/send")
    body = {
        "error": {
            "code": "idempotency_in_flight",
            "message": "wait",
            "request_id": "req_body",
            "details": {"key": "k1"},
        }
    }
    error = E2AApiError.from_response(httpx.Response(409, json=body, request=request))
    assert (error.code, error.details, error.request_id) == (
        "idempotency_in_flight",
        {"key": "k1"},
        "req_body",
    )
    assert error.retryable is True and isinstance(error, E2AApiError)
    gone = E2AApiError.from_response(
        httpx.Response(404, json={"error": {"code": "agent_not_found", "message": "no"}})
    )
    assert isinstance(gone, E2ANotFoundError) and gone.retryable is False


@contextlib.contextmanager
def dropping_server(*, hold: bool = False) -> Iterator[tuple[str, list[int]]]:
    """A loopback TCP server that closes each connection it accepts at once (or, with `hold`,
    keeps it open without a word); yields its URL and a list growing by one per connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(1)
            if hold:
                held.append(connection)
            else:
                connection.recv(65536)
                connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in held:
            connection.close()
        listener.close()


def closed_port() -> str:
    """The URL of a loopback port nothing listens on."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_no_answer_is_an_e2a_connection_error_tried_again_when_repeatable() -> None:
    """A dropped connection: a read is made three times (two retries), a bare POST once, and
    nothing again with max_retries=0; each raises E2AConnectionError holding the httpx error."""
    with dropping_server() as (url, accepted), E2AClient("e2a_x", base_url=url) as client:
        with pytest.raises(E2AConnectionError) as dropped:
            client.list_agents()
        assert len(accepted) == 3
        error = dropped.value
        assert isinstance(error, E2AApiError) and isinstance(error.__cause__, httpx.HTTPError)
        assert (error.status_code, error.code, error.retryable) == (0, "connection_error", True)
        assert error.request_id is None and url in error.message
        assert isinstance(error, httpx.TransportError)  # what the SDK raised before

        accepted.clear()
        with pytest.raises(E2AConnectionError):
            client.register_agent("bot", agent_mode="local")
        assert len(accepted) == 1
        accepted.clear()
        with pytest.raises(E2AConnectionError):
            client.send(["a@agents.test"], "Hi", "x", agent_email="bot@agents.test")
        assert len(accepted) == 3  # carries an Idempotency-Key: the gateway makes it once

    with dropping_server() as (url, accepted), E2AClient("e2a_x", base_url=url, max_retries=0) as c:
        with pytest.raises(E2AConnectionError):
            c.list_agents()
        assert len(accepted) == 1

    with pytest.raises(E2AConnectionError) as refused:
        E2AClient("e2a_x", base_url=closed_port()).get_agent("bot@agents.test")
    assert isinstance(refused.value.__cause__, httpx.ConnectError)
    with pytest.raises(E2AConnectionError):
        fetch_info(closed_port())


def test_a_timeout_is_an_e2a_connection_error() -> None:
    with (
        dropping_server(hold=True) as (url, accepted),
        E2AClient("e2a_x", base_url=url, timeout=0.2, max_retries=1) as client,
    ):
        started = time.monotonic()
        with pytest.raises(E2AConnectionError) as slow:
            client.list_agents()
        assert isinstance(slow.value.__cause__, httpx.TimeoutException)
        assert len(accepted) == 2 and time.monotonic() - started < 5


def test_the_async_client_under_trio_raises_and_retries_alike() -> None:
    async def main(url: str) -> None:
        async with AsyncE2AClient("e2a_x", base_url=url) as client:
            with pytest.raises(E2AConnectionError) as dropped:
                await client.list_agents()
            assert isinstance(dropped.value.__cause__, httpx.HTTPError)
            assert dropped.value.retryable is True
            with pytest.raises(E2AConnectionError):
                await client.register_agent("bot", agent_mode="local")

    with dropping_server() as (url, accepted):
        trio.run(main, url)
        assert len(accepted) == 4
