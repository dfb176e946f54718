"""Managed unsubscribe (beta) on `/v1`, as e2a has it (docs/api.md at 220fe0a7): a send, reply
or forward to one recipient with `"unsubscribe": {"mode": "managed"}` reaches the relay with
`List-Unsubscribe` and `List-Unsubscribe-Post` under its DKIM signature and a footer linking to
`/u/{token}`; a POST there (RFC 8058) blocks that recipient for that agent alone. Driven over
HTTP and e2a's 5.8.1 SDK against a gateway with a DKIM key and an aiosmtpd relay on 127.0.0.1."""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import dkim
import httpx
import pytest
import trio

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from tests.conftest import Account, make_settings
from tests.delivery_support import accept, create_agent, wait_until
from tests.relay_support import Sink, relay_port, sink
from tests.sdk_v1 import error, run_sdk, sdk5_python, value
from tests.test_dkim_signing import write_rsa_key
from tests.test_v1_messages import hitl_on

pytestmark = pytest.mark.slow

__all__ = ["relay_port", "sdk5_python", "sink"]  # fixtures

CAROL = "carol@example.org"
DAVE = "dave@example.org"
MANAGED = {"mode": "managed"}
PUBLIC_URL = "https://mail.example.com"
ONE_CLICK = "List-Unsubscribe=One-Click"


@pytest.fixture
def key_record(tmp_path: Path) -> bytes:
    return write_rsa_key(tmp_path / "dkim.pem")


@pytest.fixture
def settings(tmp_path: Path, relay_port: int, key_record: bytes) -> Settings:
    return make_settings(
        tmp_path,
        http={"listen": "127.0.0.1:0", "public_url": PUBLIC_URL},
        outbound_smtp={"host": "127.0.0.1", "port": relay_port, "tls": "none"},
        dkim={"selector": "e2a", "private_key_path": str(tmp_path / "dkim.pem")},
    )


def messages(agent: str, suffix: str = "") -> str:
    return f"/v1/agents/{quote(agent, safe='')}/messages{suffix}"


def suppressions(agent: str) -> str:
    return f"/v1/agents/{quote(agent, safe='')}/suppressions"


def parsed(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def signed_fields(raw: bytes, key_record: bytes) -> list[str]:
    """The fields the message's DKIM signature covers (its `h=`), after checking that dkimpy
    verifies it against the key published for agents.test."""

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return key_record if name == b"e2a._domainkey.agents.test." else b""

    assert dkim.verify(raw, dnsfunc=dns)
    signature = parsed(raw)["DKIM-Signature"]
    found = re.search(r"\bh=([^;]+)", re.sub(r"\s+", "", str(signature)))
    assert found is not None, signature
    return [name.lower() for name in found.group(1).split(":")]


def unsubscribe_url(raw: bytes) -> str:
    """The URL of the message's `List-Unsubscribe`, checked to be the public one."""
    header = str(parsed(raw)["List-Unsubscribe"])
    found = re.fullmatch(r"<(https://mail\.example\.com/u/[A-Za-z0-9_-]+)>", header)
    assert found is not None, header
    return found.group(1)


def local(running: RunningGateway, url: str) -> str:
    """`url` (on the public address) as the running gateway serves it."""
    return running.addresses.http_url + urlsplit(url).path


async def relayed(sink: Sink, before: int) -> bytes:
    await wait_until(lambda: len(sink.received) > before)
    return sink.received[before][2]


async def listed(account: Account, agent: str) -> list[dict[str, Any]]:
    response = await account.http.get(suppressions(agent))
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def security_headers(response: httpx.Response) -> None:
    assert response.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "Set-Cookie" not in response.headers
    assert "Location" not in response.headers


async def test_a_managed_send_is_signed_with_one_click_headers_and_a_recipient_opts_out(
    running: RunningGateway,
    make_account: Any,
    sink: Sink,
    key_record: bytes,
    sdk5_python: Path,
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    sibling = await create_agent(alice, "sibling")
    hook = await alice.http.post(
        "/v1/webhooks",
        json={"url": "https://hooks.example.org/e2a", "events": ["agent.suppression_added"]},
    )
    assert hook.status_code == 201, hook.text
    hello = {"to": [CAROL], "subject": "Weekly", "text": "News.", "html": "<p>News.</p>"}
    before = len(sink.received)
    steps = await run_sdk(
        sdk5_python,
        running.addresses.http_url,
        {"default": alice.key},
        [
            {
                "do": "messages.send",
                "args": [bot, hello],
                "kwargs": {"unsubscribe": MANAGED, "wait": "sent"},
            }
        ],
    )
    assert value(steps[0], "SendResultView")["status"] == "sent"
    raw = await relayed(sink, before)

    url = unsubscribe_url(raw)
    message = parsed(raw)
    assert message["List-Unsubscribe-Post"] == ONE_CLICK
    covered = signed_fields(raw, key_record)
    assert "list-unsubscribe" in covered and "list-unsubscribe-post" in covered
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    assert url in text.get_content() and bot in text.get_content()
    assert f'href="{url}"' in html.get_content()
    token = urlsplit(url).path.rsplit("/", 1)[1]
    assert token not in raw.decode().replace(url, "")  # only in the link itself

    # the same message again, from the same agent to the same address, has the same link
    again = await alice.http.post(messages(bot), json={**hello, "unsubscribe": MANAGED})
    assert again.status_code == 202, again.text
    assert unsubscribe_url(await relayed(sink, before + 1)) == url

    async with httpx.AsyncClient() as stranger:  # no key: whoever holds the link
        page = await stranger.get(local(running, url))
    assert page.status_code == 200, page.text
    security_headers(page)
    assert 'method="post"' in page.text and bot in page.text and CAROL not in page.text
    assert await listed(alice, bot) == []  # a GET (a link scanner) changes nothing

    async with httpx.AsyncClient() as stranger:  # no key; posted from the mail provider
        answers = []

        async def post() -> None:
            answers.append(
                await stranger.post(
                    local(running, url),
                    content=ONE_CLICK,
                    headers={
                        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
                        "Origin": "https://mail.provider.example",
                    },
                )
            )

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(post)
    for answer in answers:
        assert answer.status_code == 200, answer.text
        security_headers(answer)
    (block,) = await listed(alice, bot)
    assert (block["address"], block["source"]) == (CAROL, "unsubscribe")
    assert await listed(alice, sibling) == []
    assert (await alice.http.get("/v1/account/suppressions")).json()["items"] == []

    logged = await alice.http.get("/v1/events", params={"type": "agent.suppression_added"})
    (event,) = logged.json()["items"]
    assert event["data"] == {"agent_email": bot, "address": CAROL, "source": "unsubscribe"}

    steps = await run_sdk(
        sdk5_python,
        running.addresses.http_url,
        {"default": alice.key},
        [
            {"do": "messages.send", "args": [bot, {**hello, "to": [CAROL]}]},
            {"do": "messages.send", "args": [sibling, hello], "kwargs": {"wait": "sent"}},
        ],
    )
    error(steps[0], "E2AValidationError", "recipient_suppressed", 422)
    assert value(steps[1], "SendResultView")["status"] == "sent"

    # mail without the option carries neither header nor footer
    plain = parsed(sink.received[-1][2])
    assert plain["List-Unsubscribe"] is None and plain["List-Unsubscribe-Post"] is None
    body = plain.get_body(("plain",))
    assert body is not None and "/u/" not in body.get_content()


async def test_mail_waiting_to_go_is_not_handed_on_to_a_recipient_who_unsubscribed_meanwhile(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    """A send accepted before the click (scheduled, or waiting for a retry) is checked again
    right before the hand-off: the unsubscribed recipient is refused there with an error that
    says how to lift the block, the others still get it; lifted by the owner, mail flows."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "news")
    first = {"to": [CAROL], "subject": "Weekly", "text": "News.", "unsubscribe": MANAGED}
    before = len(sink.received)
    assert (await alice.http.post(messages(bot), json=first)).status_code == 202
    url = unsubscribe_url(await relayed(sink, before))

    send_at = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    later = {"to": [CAROL], "cc": [DAVE], "subject": "Later", "text": "Hi.", "send_at": send_at}
    scheduled = await alice.http.post(messages(bot), json=later)
    assert scheduled.status_code == 202, scheduled.text
    assert scheduled.json()["status"] == "scheduled"
    async with httpx.AsyncClient() as provider:
        clicked = await provider.post(
            local(running, url),
            content=ONE_CLICK,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert clicked.status_code == 200, clicked.text

    storage = running.gateway.storage
    message_id = scheduled.json()["message_id"]

    async def settled() -> bool:
        stored = await storage.get_outbound(None, message_id)
        return stored is not None and stored.status not in ("queued", "sending")

    with trio.fail_after(15):
        while not await settled():  # noqa: ASYNC110 (the worker settles it)
            await trio.sleep(0.1)
    copies = [rcpts for _, rcpts, raw in sink.received[before + 1 :]]
    assert copies == [[DAVE]]
    stored = await storage.get_outbound(None, message_id)
    assert stored is not None and stored.send_error is not None
    assert CAROL in stored.send_error and "suppression list" in stored.send_error
    assert f"DELETE /v1/agents/{bot}/suppressions/{CAROL}?confirm=DELETE" in stored.send_error

    refused = await alice.http.post(
        messages(bot), json={"to": [CAROL], "subject": "No", "text": "."}
    )
    assert refused.status_code == 422, refused.text
    said = refused.json()["error"]["message"]
    assert f"DELETE /v1/agents/{bot}/suppressions/{CAROL}?confirm=DELETE" in said

    lifted = await alice.http.delete(
        f"{suppressions(bot)}/{quote(CAROL, safe='')}", params={"confirm": "DELETE"}
    )
    assert lifted.status_code in (200, 204), lifted.text
    assert await listed(alice, bot) == []
    count = len(sink.received)
    again = await alice.http.post(
        messages(bot), json={"to": [CAROL], "subject": "Back", "text": "."}
    )
    assert again.status_code == 202, again.text
    await relayed(sink, count)


async def test_a_reply_and_a_forward_may_opt_in_for_one_recipient(
    running: RunningGateway, make_account: Any, sink: Sink, key_record: bytes
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    received = (
        f"From: Dave <{DAVE}>\r\nTo: {bot}\r\nSubject: Question\r\n"
        "Message-ID: <q-1@example.org>\r\n\r\nHello?\r\n"
    ).encode()
    message_id = await accept(running.gateway, [bot], received, mail_from=DAVE)
    for action, body in (
        ("reply", {"text": "Answer."}),
        ("forward", {"text": "FYI", "to": [CAROL]}),
    ):
        before = len(sink.received)
        sent = await alice.http.post(
            messages(bot, f"/{message_id}/{action}"), json={**body, "unsubscribe": MANAGED}
        )
        assert sent.status_code == 202, (action, sent.text)
        raw = await relayed(sink, before)
        unsubscribe_url(raw)
        assert "list-unsubscribe-post" in signed_fields(raw, key_record)

    refused = await alice.http.post(
        messages(bot, f"/{message_id}/reply"),
        json={"text": "Answer.", "cc": [CAROL], "unsubscribe": MANAGED},
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize(
    "unsubscribe",
    [None, {}, {"mode": "list"}, {"mode": "MANAGED"}, {"mode": "managed", "topic": "x"}, "managed"],
)
async def test_a_malformed_option_is_refused_by_the_schema(
    running: RunningGateway, make_account: Any, sink: Sink, unsubscribe: object
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    body = {"to": [CAROL], "subject": "Hi", "text": "Hello", "unsubscribe": unsubscribe}
    refused = await alice.http.post(messages(bot), json=body)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "invalid_request"
    assert sink.received == []


@pytest.mark.parametrize(
    "recipients",
    [
        {"to": [CAROL, DAVE]},
        {"to": [CAROL], "cc": [DAVE]},
        {"to": [CAROL], "bcc": [DAVE]},
    ],
)
async def test_a_managed_send_must_have_exactly_one_recipient(
    running: RunningGateway, make_account: Any, sink: Sink, recipients: dict[str, Any]
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    body = {**recipients, "subject": "Hi", "text": "Hello", "unsubscribe": MANAGED}
    refused = await alice.http.post(messages(bot), json=body)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"] == (
        "managed unsubscribe requires exactly one recipient across to, cc and bcc; "
        "send one message per recipient"
    )
    assert sink.received == []


async def test_a_held_managed_message_keeps_the_option_and_edits_are_checked_again(
    running: RunningGateway, make_account: Any, sink: Sink, key_record: bytes
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "held")
    await hitl_on(alice, bot)
    held = await alice.http.post(
        messages(bot),
        json={"to": [CAROL], "subject": "Hi", "text": "Hello", "unsubscribe": MANAGED},
    )
    assert held.status_code == 202 and held.json()["status"] == "pending_review", held.text
    message_id = held.json()["message_id"]

    def to(address: str) -> list[bytes]:
        return [data for _, rcpts, data in sink.received if rcpts == [address]]

    widened = await alice.http.post(f"/v1/reviews/{message_id}/approve", json={"cc": [DAVE]})
    assert widened.status_code == 400, widened.text
    assert "exactly one recipient" in widened.json()["error"]["message"]
    still = await running.gateway.storage.get_outbound(None, message_id)
    assert still is not None and still.status == "pending_approval"
    assert still.unsubscribe == "managed"

    approved = await alice.http.post(f"/v1/reviews/{message_id}/approve", json={"to": [DAVE]})
    assert approved.status_code == 202, approved.text
    await wait_until(lambda: bool(to(DAVE)))
    assert to(CAROL) == []  # only the reviewer's notice besides
    (raw,) = to(DAVE)
    unsubscribe_url(raw)
    assert "list-unsubscribe" in signed_fields(raw, key_record)


async def test_the_public_route_refuses_what_is_not_a_one_click_post(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    sent = await alice.http.post(
        messages(bot), json={"to": [CAROL], "subject": "Hi", "text": "Hi", "unsubscribe": MANAGED}
    )
    assert sent.status_code == 202, sent.text
    url = local(running, unsubscribe_url(await relayed(sink, 0)))
    token = url.rsplit("/", 1)[1]

    async with httpx.AsyncClient() as stranger:
        unknown = "u1_" + "A" * 43
        for bad in (unknown, "nope", token[:-1] + ("B" if token[-1] != "B" else "C")):
            for method in ("GET", "POST"):
                answer = await stranger.request(
                    method,
                    f"{running.addresses.http_url}/u/{bad}",
                    content=ONE_CLICK,
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )
                assert answer.status_code == 404, (bad, method, answer.text)
                security_headers(answer)
                assert bot not in answer.text and CAROL not in answer.text

        form = {"Content-Type": "application/x-www-form-urlencoded"}
        padded = await stranger.post(url, content=ONE_CLICK + "&" + "x" * 1024, headers=form)
        assert padded.status_code == 400, padded.text
        security_headers(padded)
        for body in ("", "List-Unsubscribe=Two-Clicks", "confirm=yes"):
            refused = await stranger.post(url, content=body, headers=form)
            assert refused.status_code == 400, (body, refused.text)
        wrong_type = await stranger.post(
            url, content=ONE_CLICK, headers={"Content-Type": "text/plain"}
        )
        assert wrong_type.status_code == 400, wrong_type.text
        assert await listed(alice, bot) == []

        # the confirmation page's own form, as a browser posts it; then RFC 8058 multipart
        confirmed = await stranger.post(url, data={"confirm": "unsubscribe"})
        assert confirmed.status_code == 200, confirmed.text
        assert "text/html" in confirmed.headers["Content-Type"]
        security_headers(confirmed)
        multipart = await stranger.post(url, files={"List-Unsubscribe": (None, "One-Click")})
        assert multipart.status_code == 200, multipart.text
    (block,) = await listed(alice, bot)
    assert block["address"] == CAROL


async def test_the_mappings_are_hashes_exported_without_tokens_and_counted_when_erased(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    sent = await alice.http.post(
        messages(bot), json={"to": [CAROL], "subject": "Hi", "text": "Hi", "unsubscribe": MANAGED}
    )
    assert sent.status_code == 202, sent.text
    url = unsubscribe_url(await relayed(sink, 0))
    token = url.rsplit("/", 1)[1]

    user_id = (await alice.http.get("/v1/account")).json()["user"]["id"]
    storage = running.gateway.storage
    scope = await storage.find_unsubscribe_token(hashlib.sha256(token.encode()).hexdigest())
    assert scope is not None
    assert (scope.user_id, scope.agent_email, scope.address) == (user_id, bot, CAROL)
    assert await storage.find_unsubscribe_token(hashlib.sha256(b"u1_other").hexdigest()) is None

    export = await alice.http.get("/v1/account/export")
    assert export.status_code == 200, export.text
    assert token not in export.text
    (mapping,) = export.json()["unsubscribe_links"]
    assert (mapping["agent_email"], mapping["address"]) == (bot, CAROL)
    assert set(mapping) == {"agent_email", "address", "created_at"}

    erased = await alice.http.delete("/v1/account", params={"confirm": "DELETE"})
    assert erased.status_code == 200, erased.text
    assert erased.json()["agent_unsubscribe_tokens_deleted"] == 1
    assert await storage.find_unsubscribe_token(hashlib.sha256(token.encode()).hexdigest()) is None
