"""The SDK (`e2a_gateway.v1`) making its writes once and waiting out the gateway's refusals, as
e2a's SDK 5.x does: an `idempotency_key` on replies and approvals as on sends, a key of its
own on each of them otherwise, and 429 and 503 answers tried again after their Retry-After,
only for calls a repeat cannot make twice.

Against a live gateway over real HTTP (tests.test_sdk_client's `live`); the 503s come from a
proxy in front of it that refuses the first requests it is given.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trio

from e2a_gateway.operations import sending
from e2a_gateway.v1 import (
    AsyncE2AClient,
    E2AApiError,
    E2AClient,
    ReplyToMessageRequest,
    SendEmailRequest,
)
from tests.test_sdk_client import LiveGateway, live, wait_for_inbox  # noqa: F401  (fixture)


def client_for(live: LiveGateway, name: str, **options: Any) -> E2AClient:  # noqa: F811
    """A client of a new account holding the local agents `name` (its default) and
    `name-peer`."""
    key = live.new_key(f"{name}@example.com")
    client = E2AClient(api_key=key, base_url=live.url, **options)
    client.register_agent(name, agent_mode="local")
    client.register_agent(f"{name}-peer", agent_mode="local")
    client.agent_email = f"{name}@agents.test"
    return client


def test_a_reply_is_made_once_per_idempotency_key(live: LiveGateway) -> None:  # noqa: F811
    """A reply repeated with its key, from the client, the email or the raw API, answers the
    first reply; the person it answers gets one."""
    with client_for(live, "keyed-reply") as client:
        peer = "keyed-reply-peer@agents.test"
        client.send([peer], "Question", "?")
        (asked,) = wait_for_inbox(lambda: client.get_messages(agent_email=peer)).messages
        email = client.get_message(asked.message_id, agent_email=peer)

        first = email.reply("Answer", idempotency_key="r-1")
        again = client.reply(asked.message_id, "Answer", agent_email=peer, idempotency_key="r-1")
        raw = client.api.reply_to_message(
            peer, asked.message_id, ReplyToMessageRequest(body="Answer"), idempotency_key="r-1"
        )
        assert first.method == "local"
        assert again.message_id == first.message_id == raw.message_id
        other = email.reply("Answer", idempotency_key="r-2")
        assert other.message_id != first.message_id

        answers = wait_for_inbox(lambda: client.get_messages(), count=3)
        assert [m.subject for m in answers.messages] == ["Re: Question"] * 2


def test_an_approval_is_made_once_per_idempotency_key(live: LiveGateway) -> None:  # noqa: F811
    """An approval repeated with its key answers the first approval instead of a 409; without
    the key, a second approval is refused as before."""
    with client_for(live, "keyed-approval") as client:
        client.update_agent("keyed-approval@agents.test", hitl_enabled=True)
        peer = ["keyed-approval-peer@agents.test"]
        held = client.send(peer, "Quote", "one")
        other = client.send(peer, "Other", "two")
        assert held.status == other.status == "pending_approval"

        first = client.approve_message(held.message_id, subject="Quote, ok", idempotency_key="a-1")
        again = client.approve_message(held.message_id, subject="Quote, ok", idempotency_key="a-1")
        assert first.edited is True and again.message_id == first.message_id == held.message_id
        with pytest.raises(E2AApiError) as reused:
            client.approve_message(held.message_id, idempotency_key="a-1")  # another request
        assert (reused.value.status_code, reused.value.code) == (422, "idempotency_key_reuse")

        raw = client.api.approve_message(other.message_id, idempotency_key="a-2")
        assert client.api.approve_message(other.message_id, idempotency_key="a-2") == raw
        with pytest.raises(E2AApiError) as twice:
            client.approve_message(other.message_id)
        assert twice.value.status_code == 409

        got = wait_for_inbox(lambda: client.get_messages(agent_email=peer[0]), count=3)
        assert sorted(m.subject for m in got.messages) == ["Other", "Quote, ok"]


def test_the_async_client_replies_and_approves_once_per_key(
    live: LiveGateway,  # noqa: F811
) -> None:
    """The async client, under trio, takes the same keys."""
    peer = "keyed-async-peer@agents.test"

    async def main(key: str, held_id: str) -> None:
        async with AsyncE2AClient(key, peer, base_url=live.url) as client:
            approved = [
                await client.approve_message(held_id, idempotency_key="aa-1") for _ in range(2)
            ]
            assert approved[0] == approved[1]
            for _ in range(200):
                page = await client.get_messages()
                if page.messages:
                    break
                await trio.sleep(0.05)
            email = await client.get_message(page.messages[0].message_id)
            replies = [await email.reply("Got it", idempotency_key="ar-1") for _ in range(2)]
            again = await client.reply(email.message_id, "Got it", idempotency_key="ar-1")
            assert replies[0].message_id == replies[1].message_id == again.message_id

    with client_for(live, "keyed-async") as sync:
        sync.update_agent("keyed-async@agents.test", hitl_enabled=True)
        held = sync.send([peer], "Held", "x")
        trio.run(main, sync.api_key, held.message_id)
        answers = wait_for_inbox(lambda: sync.get_messages(), count=2)
        assert [m.subject for m in answers.messages] == ["Re: Held"]


@pytest.fixture
def one_send_per_two_seconds(monkeypatch: pytest.MonkeyPatch, live: LiveGateway) -> None:  # noqa: F811
    """Each agent may send once per 2-second window."""
    monkeypatch.setattr(sending, "SEND_RATE_WINDOW_SECONDS", 2)
    monkeypatch.setattr(live.running.gateway.settings.limits, "sends_per_agent_per_minute", 1)


@pytest.mark.usefixtures("one_send_per_two_seconds")
def test_a_rate_limited_send_waits_as_retry_after_asks(live: LiveGateway) -> None:  # noqa: F811
    """Over the send limit, the send waits the 429's Retry-After and goes, once; with
    `max_retries=0` the 429 is raised at once, saying how long to wait."""
    with client_for(live, "limited") as client:
        peer = "limited-peer@agents.test"
        client.send([peer], "One", "1")
        started = time.monotonic()
        second = client.send([peer], "Two", "2")
        assert second.status == "sent" and time.monotonic() - started >= 0.5
        got = wait_for_inbox(lambda: client.get_messages(agent_email=peer), count=2)
        assert sorted(m.subject for m in got.messages) == ["One", "Two"]

    with client_for(live, "impatient", max_retries=0) as client:
        client.send(["impatient-peer@agents.test"], "One", "1")
        with pytest.raises(E2AApiError) as limited:
            client.send(["impatient-peer@agents.test"], "Two", "2")
        assert (limited.value.status_code, limited.value.code) == (429, "rate_limited")
        assert limited.value.retry_after is not None and 0 < limited.value.retry_after <= 2


@pytest.mark.usefixtures("one_send_per_two_seconds")
def test_the_async_client_waits_out_a_429_under_trio(live: LiveGateway) -> None:  # noqa: F811
    with client_for(live, "limited-trio") as sync:
        sync.send(["limited-trio-peer@agents.test"], "One", "1")

    async def main() -> None:
        async with AsyncE2AClient(sync.api_key, sync.agent_email, base_url=live.url) as client:
            sent = await client.send(["limited-trio-peer@agents.test"], "Two", "2")
            assert sent.status == "sent"

    trio.run(main)


def test_a_wait_longer_than_a_minute_is_not_waited(
    live: LiveGateway,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The conversation limit asks to wait most of an hour: the 429 is raised at once."""
    monkeypatch.setattr(live.running.gateway.settings.limits, "sends_per_conversation_per_hour", 1)
    with client_for(live, "looping") as client:
        peer = ["looping-peer@agents.test"]
        client.send(peer, "One", "1", conversation_id="conv-loop")
        started = time.monotonic()
        with pytest.raises(E2AApiError) as limited:
            client.send(peer, "Two", "2", conversation_id="conv-loop")
        assert time.monotonic() - started < 5
        assert limited.value.status_code == 429
        assert limited.value.retry_after is not None and limited.value.retry_after > 60


class _Busy(http.server.BaseHTTPRequestHandler):
    """In front of the gateway: answers the first `refusals` requests 503 (Retry-After: 0),
    forwards the others, and records each request's method, path and Idempotency-Key."""

    gateway = ""
    refusals = 0
    status, code = 503, "storage_unavailable"
    seen: list[tuple[str, str, str | None]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append((self.command, self.path, self.headers.get("Idempotency-Key")))
        if len(self.seen) <= self.refusals:
            page = json.dumps({"error": {"code": self.code, "message": "busy"}}).encode()
            self.send_response(self.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        passed = {name: value for name, value in self.headers.items() if name.lower() != "host"}
        answer = httpx.request(
            self.command, self.gateway + self.path, headers=passed, content=body, timeout=30
        )
        self.send_response(answer.status_code)
        for name in ("Content-Type", "Retry-After"):
            if name in answer.headers:
                self.send_header(name, answer.headers[name])
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def busy_proxy(
    live: LiveGateway,  # noqa: F811
    refusals: int,
    status: int = 503,
    code: str = "storage_unavailable",
) -> Iterator[tuple[str, list[tuple[str, str, str | None]]]]:
    """A `_Busy` proxy to the live gateway, refusing with `status` and error `code`; yields
    its URL and the requests it saw."""
    seen: list[tuple[str, str, str | None]] = []
    fields = {"gateway": live.url, "refusals": refusals, "seen": seen}
    handler = type("Handler", (_Busy,), {**fields, "status": status, "code": code})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_a_503_is_tried_again_with_the_same_idempotency_key(
    live: LiveGateway,  # noqa: F811
) -> None:
    """A send refused twice with 503 is made on the third try, under the key the SDK made for
    it; the recipient gets it once. Reads are tried again too; a registration (a bare POST,
    which a repeat could make twice) is not, and neither is anything with max_retries=0."""
    direct = client_for(live, "busy")
    key = direct.api_key
    peer = "busy-peer@agents.test"
    with busy_proxy(live, refusals=2) as (url, seen), E2AClient(key, "busy@agents.test", url) as c:
        sent = c.send([peer], "Through", "503s")
        assert sent.method == "local"
        assert [(method, path) for method, path, _ in seen] == [("POST", "/api/v1/send")] * 3
        keys = {idempotency for _, _, idempotency in seen}
        assert len(keys) == 1 and None not in keys
    got = wait_for_inbox(lambda: direct.get_messages(agent_email=peer))
    assert [m.subject for m in got.messages] == ["Through"]

    with busy_proxy(live, refusals=1) as (url, seen), E2AClient(key, base_url=url) as c:
        c.send([peer], "Keyed", "x", agent_email="busy@agents.test", idempotency_key="mine")
        assert [idempotency for *_, idempotency in seen] == ["mine", "mine"]
    with busy_proxy(live, refusals=1) as (url, seen), E2AClient(key, base_url=url) as c:
        assert len(c.list_agents().agents) == 2 and len(seen) == 2
    with busy_proxy(live, refusals=1) as (url, seen), E2AClient(key, base_url=url) as c:
        with pytest.raises(E2AApiError) as refused:
            c.register_agent("busy-other", agent_mode="local")
        assert refused.value.status_code == 503 and len(seen) == 1
    direct.close()
    with (
        busy_proxy(live, refusals=1) as (url, seen),
        E2AClient(key, base_url=url, max_retries=0) as c,
        pytest.raises(E2AApiError) as refused,
    ):
        c.api.send_email(SendEmailRequest(from_="busy@agents.test", to=[peer], subject="No"))
    assert refused.value.status_code == 503 and len(seen) == 1
    direct.close()


@pytest.mark.parametrize(
    ("status", "code", "tries"),
    [
        (500, "internal_error", 2),
        (408, "request_timeout", 2),
        (409, "idempotency_in_flight", 2),
        (429, "rate_limited", 2),
        (501, "not_implemented", 1),
        (409, "conflict", 1),
        (404, "not_found", 1),
    ],
)
def test_what_is_retryable_is_what_is_tried_again(
    live: LiveGateway,  # noqa: F811
    status: int,
    code: str,
    tries: int,
) -> None:
    """A repeatable call is made again exactly when its error says `retryable` (408, 429, any
    5xx but a 501 `not_implemented`, an `idempotency_in_flight` 409), as e2a's SDK 5.x does."""
    direct = client_for(live, f"retry-{status}-{code}".replace("_", "-"))
    with (
        busy_proxy(live, refusals=1, status=status, code=code) as (url, seen),
        E2AClient(direct.api_key, base_url=url) as client,
    ):
        if tries == 2:
            assert client.list_agents().agents
        else:
            with pytest.raises(E2AApiError) as refused:
                client.list_agents()
            assert refused.value.retryable is False
        assert len(seen) == tries
    direct.close()
