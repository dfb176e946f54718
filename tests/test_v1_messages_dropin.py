"""Where `/v1` messages answer as e2a does (220fe0a7: internal/httpapi/outbound.go, messages.go,
conversations.go, internal/identity/store.go), over real HTTP against a gateway whose relay is
an SMTP sink on loopback: `?wait=sent` when the relay refuses or defers, the recipient and
attachment bounds, labels, the listing's filters, how mail sent reads, and a conversation's
participants. `/api/v1` keeps the 2.x contract's own bounds."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from tests.conftest import Account, make_settings
from tests.delivery_support import accept, create_agent, mail, store_with_conversation
from tests.relay_support import Sink, relay_port, sink
from tests.sdk_v1 import run_sdk, sdk5_python, value

pytestmark = pytest.mark.slow

__all__ = ["relay_port", "sdk5_python", "sink"]  # fixtures

CAROL = "carol@example.org"
CARL = "carl@example.org"
DAVE = "dave@example.org"
ERIN = "erin@example.org"
MIB = 1024 * 1024


@pytest.fixture
def settings(tmp_path: Path, relay_port: int) -> Settings:
    relay = {"host": "127.0.0.1", "port": relay_port, "tls": "none", "timeout_seconds": 10}
    return make_settings(tmp_path, outbound_smtp=relay)


def messages(agent: str, suffix: str = "") -> str:
    return f"/v1/agents/{quote(agent, safe='')}/messages{suffix}"


def refusal(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The error of `response`, which must be `status` with e2a's `code`."""
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    return error


async def held_agent(account: Account, slug: str) -> str:
    """An agent whose mail waits for a reviewer (nothing of it reaches the relay)."""
    agent = await create_agent(account, slug)
    changed = await account.http.put(
        f"/api/v1/agents/{quote(agent, safe='')}", json={"hitl_enabled": True}
    )
    assert changed.status_code == 200, changed.text
    return agent


def attachment(name: str, size: int) -> dict[str, str]:
    data = base64.b64encode(b"\0" * size).decode()
    return {"filename": name, "content_type": "application/octet-stream", "data": data}


async def test_wait_sent_answers_sent_for_mail_the_relay_refuses_or_defers(
    running: RunningGateway, make_account: Any, sink: Sink, sdk5_python: Path
) -> None:
    """e2a's waitForSent: bounced and deferred are `sent` (200), never a 500 nor a 15 s wait."""
    sink.rcpt_answers[CAROL] = sink.rcpt_answers[CARL] = "550 5.1.1 no such user"
    sink.rcpt_answers[DAVE] = "451 4.3.0 try again later"
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    started = time.monotonic()
    for recipient, rollup in ((CAROL, "bounced"), (DAVE, "deferred")):
        body = {"to": [recipient], "subject": "Hi", "text": "Hello"}
        sent = await alice.http.post(messages(bot), params={"wait": "sent"}, json=body)
        assert sent.status_code == 200, sent.text
        answer = sent.json()
        assert (answer["status"], answer["method"]) == ("sent", "smtp")
        shown = (await alice.http.get(messages(bot, f"/{answer['message_id']}"))).json()
        assert shown["delivery_status"] == rollup, shown
    assert time.monotonic() - started < 10  # the deferral answered at once, as e2a does
    made = await run_sdk(
        sdk5_python,
        running.addresses.http_url,
        {"default": alice.key},
        [
            {
                "do": "messages.send",
                "args": [bot, {"to": [CARL], "subject": "Hi", "text": "Hello"}],
                "kwargs": {"wait": "sent"},
            }
        ],
    )
    assert value(made[0], "SendResultView")["status"] == "sent"


async def test_recipients_are_bounded_together_and_refused_with_e2a_codes(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    http = alice.http
    bot = await create_agent(alice, "bot")
    held = await held_agent(alice, "held")
    many = [f"r{i}@example.net" for i in range(51)]
    text = {"subject": "s", "text": "x"}

    over = await http.post(
        messages(held), json={"to": many[:20], "cc": many[20:40], "bcc": many[40:], **text}
    )
    error = refusal(over, 400, "too_many_recipients")
    assert error["details"] == {"max_recipients": 50, "provided": 51}
    fifty = await http.post(messages(held), json={"to": many[:50], **text})
    assert fifty.status_code == 202, fifty.text  # one field may hold all fifty
    bad = await http.post(messages(held), json={"to": ["not an address"], **text})
    refusal(bad, 400, "invalid_recipient")

    cc = ", ".join(many[:50])
    inbound = await accept(running.gateway, [bot], mail("Many", f"Cc: {cc}\r\n"))
    forward = {"to": many[:30], "cc": many[30:], "text": "FYI"}
    refusal(
        await http.post(messages(bot, f"/{inbound}/forward"), json=forward),
        400,
        "too_many_recipients",
    )
    nobody = {"to": [], "bcc": ["hidden@example.net"], "text": "FYI"}
    error = refusal(
        await http.post(messages(bot, f"/{inbound}/forward"), json=nobody), 400, "invalid_request"
    )
    assert error["message"] == "at least one recipient in to or cc is required"
    cc_only = {"to": [], "cc": ["colleague@example.net"], "text": "FYI"}
    forwarded = await http.post(messages(bot, f"/{inbound}/forward"), json=cc_only)
    assert forwarded.status_code == 202, forwarded.text  # a Cc is enough, as on e2a
    wrong = {"to": ["bad@@example.net"], "text": "FYI"}
    refusal(
        await http.post(messages(bot, f"/{inbound}/forward"), json=wrong), 400, "invalid_recipient"
    )
    reply_all = await http.post(
        messages(bot, f"/{inbound}/reply"), json={"text": "All of you", "reply_all": True}
    )
    error = refusal(reply_all, 400, "too_many_recipients")  # counted once expanded:
    assert error["details"] == {"max_recipients": 50, "provided": 52}  # alice, To, 50 Cc
    refused = await http.post(
        messages(bot, f"/{inbound}/reply"), json={"text": "x", "cc": ["no-at-sign"]}
    )
    refusal(refused, 400, "invalid_recipient")

    pending = fifty.json()["message_id"]
    approve = await http.post(f"/v1/reviews/{pending}/approve", json={"bcc": [many[50]]})
    error = refusal(approve, 400, "too_many_recipients")
    assert error["details"] == {"max_recipients": 50, "provided": 51}
    approved = await http.post(f"/v1/reviews/{pending}/approve", json={"to": many[:49]})
    assert approved.status_code == 202, approved.text

    # /api/v1 keeps the 2.x contract's bounds: 100 per field, `invalid_email`.
    legacy = {"from": held, "to": many, "subject": "s", "body": "x"}
    assert (await http.post("/api/v1/send", json=legacy)).status_code == 202
    legacy_bad = await http.post("/api/v1/send", json={**legacy, "to": ["not an address"]})
    refusal(legacy_bad, 400, "invalid_email")


async def test_attachments_take_wrapped_base64_within_e2a_size_bounds(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    held = await held_agent(alice, "held")
    text = {"to": [ERIN], "subject": "Files", "text": "See attached."}
    wrapped = base64.encodebytes(bytes(range(256)) * 4).decode().replace("\n", "\r\n")
    assert "\r\n" in wrapped.strip()  # 76 columns, as MIME bodies are
    item = {"filename": "a.bin", "content_type": "application/octet-stream", "data": wrapped}
    sent = await alice.http.post(messages(held), json={**text, "attachments": [item]})
    assert sent.status_code == 202, sent.text
    shown = (await alice.http.get(messages(held, f"/{sent.json()['message_id']}"))).json()
    assert [(a["filename"], a["size_bytes"]) for a in shown["attachments"]] == [("a.bin", 1024)]

    for attachments, scope, actual, limit in (
        ([attachment("big.bin", 10 * MIB + 1)], "attachment", 10 * MIB + 1, 10 * MIB),
        (
            [attachment(f"{n}.bin", 9 * MIB) for n in range(3)],
            "attachments_total",
            27 * MIB,
            25 * MIB,
        ),
        ([attachment(f"{n}.bin", 6 * MIB) for n in range(2)], "composed_message", None, 10 * MIB),
    ):
        refused = await alice.http.post(
            messages(held), json={**text, "attachments": attachments}, timeout=60
        )
        details = refusal(refused, 413, "payload_too_large")["details"]
        assert (details["scope"], details["max_bytes"]) == (scope, limit), details
        if actual is not None:
            assert details["actual_bytes"] == actual
        if scope == "attachment":
            assert details["filename"] == "big.bin"
        else:
            assert details["actual_bytes"] > limit and "filename" not in details


async def test_labels_are_trimmed_and_lowercased_and_filter_by_up_to_50(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    tagged = await store_with_conversation(running.gateway, bot, None, subject="Tagged")
    added = await alice.http.patch(
        messages(bot, f"/{tagged}"), json={"add_labels": ["  Urgent ", "FOLLOW-up", "urgent"]}
    )
    assert added.status_code == 200, added.text
    assert added.json()["labels"] == ["follow-up", "urgent"]
    removed = await alice.http.patch(
        messages(bot, f"/{tagged}"), json={"remove_labels": ["URGENT"]}
    )
    assert removed.json()["labels"] == ["follow-up"]

    async def listed(labels: str) -> httpx.Response:
        return await alice.http.get(messages(bot), params={"read_status": "all", "labels": labels})

    found = await listed(" Follow-Up ")
    assert [m["subject"] for m in found.json()["items"]] == ["Tagged"]
    fifty = ",".join(["follow-up", *(f"l{n}" for n in range(49))])
    assert (await listed(fifty)).json()["items"] == []  # 50 labels: a filter e2a takes
    refusal(await listed(fifty + ",l49"), 400, "invalid_filter")  # counted once split
    refusal(await listed("bad label"), 400, "invalid_filter")


async def test_list_filters_e2a_refuses_are_invalid_filter(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    moment = "2026-01-31T12:00:00Z"
    for params in (
        {"direction": "outbound", "read_status": "unread"},
        {"direction": "outbound", "read_status": "read"},
        {"since": moment, "until": moment},
        {"since": "2026-01-31T13:00:00+02:00", "until": "2026-01-31T10:30:00Z"},
        {"from": "a" * 201},
        {"subject_contains": "é" * 101},  # 202 bytes: e2a counts bytes
        {"since": "yesterday"},
        {"until": "2026-01-31"},
        {"conversation_id": "c" * 201},
    ):
        answer = await alice.http.get(messages(bot), params=params)
        refusal(answer, 400, "invalid_filter")
    for params in (
        {"direction": "outbound", "read_status": "all"},
        {"from": "a" * 200, "subject_contains": "é" * 100},
        {"since": "2026-01-31T13:00:00+02:00", "until": moment},
    ):
        answer = await alice.http.get(messages(bot), params=params)
        assert answer.status_code == 200, (params, answer.text)
    conversations = f"/v1/agents/{quote(bot, safe='')}/conversations"
    for params in ({"since": moment, "until": moment}, {"until": "noon"}):
        refusal(await alice.http.get(conversations, params=params), 400, "invalid_filter")


async def test_mail_sent_reads_as_e2a_shows_it_and_conversations_list_every_participant(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    body = {
        "to": ["zed@example.org", ERIN],
        "cc": ["kim@example.org"],
        "bcc": ["bob@example.org"],
        "subject": "Out",
        "text": "Hello",
        "conversation_id": "conv-p",
    }
    sent = await alice.http.post(messages(bot), params={"wait": "sent"}, json=body)
    assert sent.status_code == 200 and sent.json()["status"] == "sent", sent.text
    message_id = sent.json()["message_id"]
    shown = (await alice.http.get(messages(bot, f"/{message_id}"))).json()
    (listed,) = (await alice.http.get(messages(bot), params={"direction": "outbound"})).json()[
        "items"
    ]
    for view in (shown, listed):
        assert view["read_status"] == ""  # a read state is for mail received
        assert view["delivered_to"] == "zed@example.org"  # the first To address
        assert view["review_status"] == "sent"  # never held
        assert view["delivery_status"] == "sent"

    await store_with_conversation(running.gateway, bot, "conv-p", subject="Re: Out")
    detail = await alice.http.get(f"/v1/agents/{quote(bot, safe='')}/conversations/conv-p")
    assert detail.status_code == 200, detail.text
    assert detail.json()["participants"] == [
        "alice@example.org",
        "bob@example.org",
        bot,
        ERIN,
        "kim@example.org",
        "zed@example.org",
    ]


async def test_a_client_that_leaves_while_waiting_and_retries_sends_once(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    """The SDK retries a timed-out `?wait=sent` with its Idempotency-Key: the key is settled
    with the stored message, so the retry answers that message and nothing goes out twice."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    sink.data_seconds = 3.0  # the relay takes its time: the first request waits
    body = {"to": [CAROL], "subject": "Once", "text": "Only once."}
    headers = {"Idempotency-Key": "send-once-1"}
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and leaves
        await alice.http.post(
            messages(bot), params={"wait": "sent"}, json=body, headers=headers, timeout=0.5
        )
    retried = await alice.http.post(messages(bot), json=body, headers=headers)
    assert retried.status_code == 202, retried.text
    again = await alice.http.post(
        messages(bot), params={"wait": "sent"}, json=body, headers=headers, timeout=20
    )
    assert again.status_code == 200 and again.json()["status"] == "sent", again.text
    assert again.json()["message_id"] == retried.json()["message_id"]
    listed = await alice.http.get(messages(bot), params={"direction": "outbound"})
    assert [item["subject"] for item in listed.json()["items"]] == ["Once"]
    assert [recipients for _, recipients, _ in sink.received] == [[CAROL]]


async def test_a_reply_to_mail_outside_any_conversation_starts_one_the_answer_joins(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    """As e2a resolves a reply's conversation (the request's, else the original's, else a new
    one): a reply to mail that named none anchors a new thread, which the answer to it joins by
    its In-Reply-To, so the exchange reads as one conversation."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    first = await accept(
        running.gateway, [bot], mail("Question", "Message-ID: <q1@example.org>\r\n")
    )
    replied = await alice.http.post(messages(bot, f"/{first}/reply"), json={"text": "Answer"})
    assert replied.status_code == 202, replied.text
    reply_id = replied.json()["message_id"]
    reply = (await alice.http.get(messages(bot, f"/{reply_id}"))).json()
    conversation = reply["conversation_id"]
    assert conversation.startswith("conv_"), reply

    sent = (await alice.http.get(f"/api/v1/messages/{reply_id}")).json()
    headers = f"Message-ID: <q2@example.org>\r\nIn-Reply-To: {sent['email_message_id']}\r\n"
    answer = await accept(running.gateway, [bot], mail("Re: Re: Question", headers))
    answered = (await alice.http.get(messages(bot, f"/{answer}"))).json()
    assert answered["conversation_id"] == conversation
    thread = await alice.http.get(f"/v1/agents/{quote(bot, safe='')}/conversations/{conversation}")
    assert thread.status_code == 200, thread.text
    assert [item["id"] for item in thread.json()["messages"]] == [reply_id, answer]


async def test_a_send_or_reply_with_an_empty_body_is_refused_never_sent_blank(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    """e2a requires the text of a send and of a reply (400 `invalid_request`): an empty `text`
    (an agent's empty output, say) is refused rather than mailed blank; `html` alone is a body."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    first = await accept(running.gateway, [bot], mail("Question"))
    for path, body in (
        (messages(bot), {"to": [CAROL], "subject": "Hi", "text": ""}),
        (messages(bot, f"/{first}/reply"), {"text": ""}),
        (messages(bot, f"/{first}/reply"), {"text": "", "html": ""}),
    ):
        refused = refusal(await alice.http.post(path, json=body), 400, "invalid_request")
        assert "body" in refused["message"], refused
    listed = await alice.http.get(messages(bot), params={"direction": "outbound"})
    assert listed.json()["items"] == []
    for path, body in (
        (messages(bot), {"to": [CAROL], "subject": "Hi", "text": "", "html": "<p>Hi</p>"}),
        (messages(bot, f"/{first}/reply"), {"text": "", "html": "<p>Thanks</p>"}),
    ):
        answered = await alice.http.post(path, json=body)
        assert answered.status_code == 202, answered.text


async def test_a_reply_to_sent_mail_with_no_to_is_refused_not_stored_to_nobody(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    """A reply to mail the agent sent goes to its To; mail sent to Cc alone (a forward may be)
    has none, and e2a refuses the reply (400 `invalid_recipient`) rather than accept a message
    addressed to nobody that can only fail."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    first = await accept(running.gateway, [bot], mail("Question"))
    forwarded = await alice.http.post(
        messages(bot, f"/{first}/forward"),
        params={"wait": "sent"},
        json={"to": [], "cc": [CAROL], "text": "FYI"},
    )
    assert forwarded.json()["status"] == "sent", forwarded.text
    reply = messages(bot, f"/{forwarded.json()['message_id']}/reply")
    for body in ({"text": "Again"}, {"text": "Again", "reply_all": True, "cc": [DAVE]}):
        refused = refusal(await alice.http.post(reply, json=body), 400, "invalid_recipient")
        assert "no recipients" in refused["message"], refused
    listed = await alice.http.get(messages(bot), params={"direction": "outbound"})
    assert [item["id"] for item in listed.json()["items"]] == [forwarded.json()["message_id"]]


async def test_recipients_may_carry_a_display_name_as_e2a_takes_them(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    """e2a takes each of `to`, `cc` and `bcc` as one RFC 5322 mailbox, optionally with a display
    name (`Carol Example <carol@example.org>`); the mail goes to its address."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    body = {
        "to": ["Carol Example <Carol@example.org>"],
        "cc": ['"Dave, D." <dave@example.org>'],
        "bcc": ["<erin@example.org>"],
        "subject": "Hi",
        "text": "Hello",
    }
    sent = await alice.http.post(messages(bot), params={"wait": "sent"}, json=body)
    assert sent.status_code == 200 and sent.json()["status"] == "sent", sent.text
    assert sorted(rcpt for _, recipients, _ in sink.received for rcpt in recipients) == [
        CAROL,
        DAVE,
        ERIN,
    ]
    shown = (await alice.http.get(messages(bot, f"/{sent.json()['message_id']}"))).json()
    assert (shown["to"], shown["cc"]) == ([CAROL], [DAVE])

    first = await accept(running.gateway, [bot], mail("Question"))
    replied = await alice.http.post(
        messages(bot, f"/{first}/reply"), json={"text": "Hi", "cc": ["Carl <carl@example.org>"]}
    )
    assert replied.status_code == 202, replied.text
    for wrong in ("Carol <carol@example.org", "Carol <not an address>", "a@example.org, b@x.org"):
        refused = await alice.http.post(messages(bot), json={**body, "to": [wrong]})
        refusal(refused, 400, "invalid_recipient")


async def test_a_reply_goes_to_every_reply_to_address(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    """A reply to mail received goes to every mailbox its Reply-To names (RFC 5322 section
    3.6.2; e2a takes them all as To), not only the first."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    headers = f"Reply-To: Carol <{CAROL}>, {DAVE}\r\n"
    first = await accept(running.gateway, [bot], mail("Question", headers))
    replied = await alice.http.post(
        messages(bot, f"/{first}/reply"), params={"wait": "sent"}, json={"text": "Answer"}
    )
    assert replied.status_code == 200 and replied.json()["status"] == "sent", replied.text
    assert sorted(rcpt for _, recipients, _ in sink.received for rcpt in recipients) == [
        CAROL,
        DAVE,
    ]
    shown = (await alice.http.get(messages(bot, f"/{replied.json()['message_id']}"))).json()
    assert shown["to"] == [CAROL, DAVE]


async def test_the_agent_is_never_among_the_copies_of_its_own_reply_or_forward(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    """Copying the agent on its own reply or forward (Cc or Bcc, any case) would deliver it
    its own mail, which an agent may answer in turn: as e2a does, the agent's address is left
    out of both, and the mail goes to the others."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    first = await accept(running.gateway, [bot], mail("Question"))
    own = bot.upper()
    replied = await alice.http.post(
        messages(bot, f"/{first}/reply"),
        params={"wait": "sent"},
        json={"text": "Answer", "cc": [own, DAVE], "bcc": [bot]},
    )
    assert replied.status_code == 200 and replied.json()["status"] == "sent", replied.text
    forwarded = await alice.http.post(
        messages(bot, f"/{first}/forward"),
        params={"wait": "sent"},
        json={"to": [CAROL], "cc": [bot], "bcc": [own], "text": "See below"},
    )
    assert forwarded.status_code == 200 and forwarded.json()["status"] == "sent", forwarded.text
    for sent in (replied, forwarded):
        shown = (await alice.http.get(messages(bot, f"/{sent.json()['message_id']}"))).json()
        assert bot not in shown["cc"] and bot not in (shown.get("bcc") or [])
    reached = sorted(rcpt for _, recipients, _ in sink.received for rcpt in recipients)
    assert bot not in reached and DAVE in reached and CAROL in reached
    listed = (await alice.http.get(messages(bot, ""), params={"direction": "all"})).json()
    received = [item["id"] for item in listed["items"] if item["direction"] == "inbound"]
    assert received == [first]
