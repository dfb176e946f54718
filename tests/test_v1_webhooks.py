"""`/v1` webhook subscribers and the events log, end to end: the 5.8.1 SDK creates webhooks,
the gateway logs events as mail moves, the delivery worker (driven with a fake clock) POSTs
signed envelopes to a receiver on loopback, and the SDK's `construct_event` verifies them."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import trio

from e2a_gateway.operations.caller import authenticate
from e2a_gateway.storage.base import EventFilter
from e2a_gateway.workers.outbound import OutboundWorker
from e2a_gateway.workers.retention import RetentionWorker
from e2a_gateway.workers.subscribers import SubscriberWorker
from e2a_gateway.workers.webhook_connections import WebhookConnections
from tests.conftest import Account
from tests.databases import query
from tests.delivery_support import QuietGateway, create_agent, open_account
from tests.http_receiver import Answer, HttpReceiver, Received
from tests.sdk_v1 import construct_events, error, run_sdk, sdk5_python, value
from tests.webhook_support import FakeClock, alice, quiet, settings, store_received

pytestmark = pytest.mark.slow

__all__ = ["alice", "quiet", "sdk5_python", "settings"]  # fixtures

FROZEN_DELAYS = [60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 8 * 3600.0, 16 * 3600.0]


def verification(request: Received, secret: str | list[str], now: float) -> dict[str, Any]:
    return {
        "body": request.body.decode(),
        "header": request.headers["x-e2a-signature"],
        "secret": secret,
        "now": now,
    }


async def send_local(
    quiet: QuietGateway, alice: Account, sender: str, recipient: str, subject: str
) -> None:
    """Send from one of alice's agents to another through `/api/v1`, and let the send worker
    deliver it locally."""
    sent = await alice.http.post(
        "/api/v1/send",
        json={"from": sender, "to": [recipient], "subject": subject, "body": "Hello"},
    )
    assert sent.status_code == 200, sent.text
    assert await OutboundWorker(quiet.gateway).deliver_due(time.time()) == 1


async def test_two_webhooks_filters_signatures_rotation_and_deliveries(
    quiet: QuietGateway, alice: Account, sdk5_python: Path, nursery: trio.Nursery
) -> None:
    receiver = HttpReceiver()
    await nursery.start(receiver.serve)
    writer = await create_agent(alice, "writer")
    reader = await create_agent(alice, "reader")
    made = await run_sdk(
        sdk5_python,
        quiet.http_url,
        {"default": alice.key},
        [
            {
                "do": "webhooks.create",
                "args": [
                    {
                        "url": receiver.url + "/reader-inbox",
                        "events": ["email.received"],
                        "filters": {"agent_emails": [reader]},
                    }
                ],
                "as": "inbox",
            },
            {
                "do": "webhooks.create",
                "args": [
                    {
                        "url": receiver.url + "/everything",
                        "events": ["email.sent", "email.received"],
                    }
                ],
                "as": "all",
            },
            {"do": "webhooks.list"},
            {"do": "webhooks.create", "args": [{"url": receiver.url, "events": ["email.nope"]}]},
        ],
    )
    inbox = value(made[0], "CreateWebhookResponse")
    everything = value(made[1], "CreateWebhookResponse")
    assert inbox["signing_secret"].startswith("whsec_")
    assert inbox["filters"]["agent_emails"] == [reader]
    listed = value(made[2], ["WebhookView", "WebhookView"])
    assert all("signing_secret" not in item for item in listed)
    error(made[3], "E2AValidationError", "invalid_request", 422)  # e2a: a schema enum

    await send_local(quiet, alice, writer, reader, "First")
    clock = FakeClock(time.time())
    async with WebhookConnections() as connections:
        worker = SubscriberWorker(quiet.gateway, connections, clock=clock, attempt_timeout=5.0)
        assert await worker.deliver_due(clock.now) == 3
    requests = await receiver.wait_for(3)
    by_target = sorted(
        ((request.target.rsplit("/", 1)[1], request) for request in requests),
        key=lambda pair: (pair[0], pair[1].headers["x-e2a-event-type"]),
    )
    assert [target for target, _ in by_target] == ["everything", "everything", "reader-inbox"]
    for request in requests:
        assert request.headers["user-agent"] == "e2a-webhooks/1"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["x-e2a-schema-version"] == "1"
    secrets = {
        "reader-inbox": inbox["signing_secret"],
        "everything": everything["signing_secret"],
    }
    verified = await construct_events(
        sdk5_python,
        [verification(request, secrets[target], clock.now) for target, request in by_target]
        + [verification(by_target[0][1], inbox["signing_secret"], clock.now)],
    )
    assert [item["type"] for item in verified[:3]] == [
        "email.received",
        "email.sent",
        "email.received",
    ]
    assert verified[2]["data"]["delivered_to"] == reader
    assert verified[1]["data"]["to"] == [reader] and verified[1]["data"]["method"] == "loopback"
    assert verified[3] == {"error": "webhook_signature_invalid"}  # another webhook's secret
    for (_, request), item in zip(by_target, verified, strict=False):
        assert request.headers["x-e2a-event-type"] == item["type"]

    rotated = await run_sdk(
        sdk5_python,
        quiet.http_url,
        {"default": alice.key},
        [
            {"do": "webhooks.rotate_secret", "args": [inbox["id"]]},
            {"do": "webhooks.deliveries", "args": [inbox["id"]]},
        ],
    )
    new_secret = value(rotated[0], "RotateSecretResponse")["signing_secret"]
    assert new_secret != inbox["signing_secret"]
    (delivery,) = value(rotated[1], ["WebhookDeliveryView"])
    assert (delivery["status"], delivery["attempts"], delivery["last_status_code"]) == (
        "delivered",
        1,
        200,
    )
    assert delivery["type"] == "email.received" and "last_latency_ms" in delivery

    await send_local(quiet, alice, writer, reader, "Second")
    clock.now = time.time()
    async with WebhookConnections() as connections:
        worker = SubscriberWorker(quiet.gateway, connections, clock=clock, attempt_timeout=5.0)
        assert await worker.deliver_due(clock.now) == 3
    later = [request for request in await receiver.wait_for(6) if request not in requests]
    (to_inbox,) = [request for request in later if request.target.endswith("/reader-inbox")]
    assert to_inbox.headers["x-e2a-signature"].count("v1=") == 2  # dual-signed in the grace
    both = await construct_events(
        sdk5_python,
        [
            verification(to_inbox, inbox["signing_secret"], clock.now),
            verification(to_inbox, new_secret, clock.now),
        ],
    )
    assert [item["type"] for item in both] == ["email.received", "email.received"]


async def test_retries_follow_the_frozen_schedule_then_redelivery_by_hand(
    quiet: QuietGateway, alice: Account, sdk5_python: Path, nursery: trio.Nursery
) -> None:
    receiver = HttpReceiver()
    async with trio.open_nursery() as first_life:
        await first_life.start(receiver.serve)
        first_life.cancel_scope.cancel()  # the receiver is down: connections are refused
    writer = await create_agent(alice, "writer")
    reader = await create_agent(alice, "reader")
    made = await run_sdk(
        sdk5_python,
        quiet.http_url,
        {"default": alice.key},
        [{"do": "webhooks.create", "args": [{"url": receiver.url, "events": ["email.received"]}]}],
    )
    hook = value(made[0], "CreateWebhookResponse")
    await send_local(quiet, alice, writer, reader, "Down")
    clock = FakeClock(time.time())
    due_times = [clock.now]
    async with WebhookConnections() as connections:
        worker = SubscriberWorker(quiet.gateway, connections, clock=clock, attempt_timeout=2.0)
        assert await worker.deliver_due(clock.now) == 1
        for delay in FROZEN_DELAYS:
            assert await worker.deliver_due(clock.now + delay - 1) == 0  # not due yet
            clock.now += delay
            due_times.append(clock.now)
            assert await worker.deliver_due(clock.now) == 1
        assert await worker.deliver_due(clock.now + 10 * 24 * 3600) == 0  # terminal

    steps = await run_sdk(
        sdk5_python,
        quiet.http_url,
        {"default": alice.key},
        [
            {"do": "webhooks.deliveries", "args": [hook["id"]], "kwargs": {"status": "failed"}},
            {"do": "events.list", "kwargs": {"type": "email.received"}},
        ],
    )
    (failed,) = value(steps[0], ["WebhookDeliveryView"])
    assert (failed["status"], failed["attempts"]) == ("failed", 8)
    assert failed["last_error"]
    (event,) = value(steps[1], ["EventView"])

    redone = await run_sdk(
        sdk5_python,
        quiet.http_url,
        {"default": alice.key},
        [
            {
                "do": "events.redeliver",
                "args": [event["id"], {"webhook_id": hook["id"]}],
            },
            {"do": "events.get", "args": [event["id"]]},
        ],
    )
    queued = value(redone[0], "RedeliverView")
    assert (queued["status"], queued["webhook_id"]) == ("pending", hook["id"])
    assert value(redone[1], "EventView")["delivery_status"]["pending"] == 1
    await nursery.start(receiver.serve)  # back up, on the same port
    async with WebhookConnections() as connections:
        worker = SubscriberWorker(quiet.gateway, connections, clock=clock, attempt_timeout=2.0)
        assert await worker.deliver_due(clock.now) == 1
    (replayed,) = await receiver.wait_for(1)
    verified = await construct_events(
        sdk5_python, [verification(replayed, hook["signing_secret"], clock.now)]
    )
    assert verified[0]["id"] == event["id"]  # the same event id: receivers de-duplicate


@pytest.mark.parametrize("retry_after", ["100000000000000000", "9" * 400, "31536000"])
async def test_a_retry_after_is_waited_out_only_up_to_the_longest_step(
    quiet: QuietGateway, alice: Account, nursery: trio.Nursery, retry_after: str
) -> None:
    """A receiver asking for a retry in a year, in 3 billion years or after a number of 400
    digits is tried again at most 16 hours on (the schedule's longest step), and its delivery
    lists with a `next_retry_at` that is an RFC 3339 time, not a 500 nor a year 33658."""
    receiver = HttpReceiver(lambda _: Answer(503, {"Retry-After": retry_after}))
    await nursery.start(receiver.serve)
    writer = await create_agent(alice, "writer")
    reader = await create_agent(alice, "reader")
    made = await alice.http.post(
        "/v1/webhooks", json={"url": receiver.url, "events": ["email.received"]}
    )
    assert made.status_code == 201, made.text
    await send_local(quiet, alice, writer, reader, "Later, much later")
    clock = FakeClock(time.time())
    async with WebhookConnections() as connections:
        worker = SubscriberWorker(quiet.gateway, connections, clock=clock, attempt_timeout=5.0)
        assert await worker.deliver_due(clock.now) == 1
        listed = await alice.http.get(f"/v1/webhooks/{made.json()['id']}/deliveries")
        assert listed.status_code == 200, listed.text
        (delivery,) = listed.json()["items"]
        next_retry = datetime.fromisoformat(delivery["next_retry_at"]).timestamp()
        assert clock.now + 60 <= next_retry <= clock.now + 16 * 3600 + 1
        assert await worker.deliver_due(clock.now + 16 * 3600 + 1) == 1  # tried again


async def test_events_list_with_each_filter_and_410_after_retention(
    quiet: QuietGateway, alice: Account, sdk5_python: Path
) -> None:
    writer = await create_agent(alice, "writer")
    reader = await create_agent(alice, "reader")
    other = await create_agent(alice, "other")
    await send_local(quiet, alice, writer, reader, "One")
    await send_local(quiet, alice, writer, other, "Two")
    steps = await run_sdk(
        sdk5_python,
        quiet.http_url,
        {"default": alice.key},
        [
            {"do": "events.list"},
            {"do": "events.list", "kwargs": {"type": "email.sent"}},
            {"do": "events.list", "kwargs": {"agent_email": other}},
            {"do": "events.list", "kwargs": {"limit": 1}, "limit": 100},
            {"do": "events.list", "kwargs": {"since": "2100-01-01T00:00:00Z"}},
            {"do": "events.list", "kwargs": {"until": "2000-01-01T00:00:00Z"}},
        ],
    )
    every = value(steps[0])
    assert {item["type"] for item in every} == {"email.sent", "email.delivered", "email.received"}
    assert len(every) == 6  # per message: sent, delivered, received
    assert {item["agent_email"] for item in value(steps[1])} == {writer}
    assert [item["type"] for item in value(steps[2])] == ["email.received"]
    assert len(value(steps[3])) == 6  # walked one per page
    assert value(steps[4]) == [] and value(steps[5]) == []
    received = value(steps[2])[0]
    by_message = await run_sdk(
        sdk5_python,
        quiet.http_url,
        {"default": alice.key},
        [
            {"do": "events.list", "kwargs": {"message_id": received["message_id"]}},
            {"do": "events.list", "kwargs": {"conversation_id": "no-such-thread"}},
            {"do": "events.get", "args": [received["id"]]},
            {"do": "events.get", "args": ["evt_unknown"]},
        ],
    )
    assert [item["id"] for item in value(by_message[0])] == [received["id"]]
    assert value(by_message[1]) == []
    got = value(by_message[2], "EventView")
    assert got["status"] == "no_match" and got["data"]["delivered_to"] == other
    error(by_message[3], "E2ANotFoundError", "not_found", 404)

    unknown = await alice.http.get("/v1/events", params={"typ": "email.sent"})
    assert unknown.status_code == 422, unknown.text
    assert unknown.json()["error"]["code"] == "invalid_request"

    old_id = await store_received(quiet, reader, time.time() - 31 * 24 * 3600)
    (old,) = await events_of(quiet, alice, old_id)
    gone = await alice.http.get(f"/v1/events/{old}")
    assert gone.status_code == 410, gone.text
    assert gone.json()["error"]["code"] == "gone"
    listed = (await alice.http.get("/v1/events", params={"message_id": old_id})).json()
    assert listed["items"] == []  # past retention: not listed
    swept = await RetentionWorker(quiet.gateway, pause=0).sweep(time.time())
    assert swept.events == 1
    assert (await alice.http.get(f"/v1/events/{old}")).status_code == 404


async def events_of(quiet: QuietGateway, alice: Account, message_id: str) -> list[str]:
    """The ids of the events about `message_id`, read from storage (the listing hides old ones)."""
    caller = await authenticate(quiet.gateway, alice.key)
    found = await quiet.gateway.storage.list_events(
        caller.user_id, EventFilter(message_id=message_id), 10, None
    )
    return [event.id for event in found]


async def test_events_since_and_until_are_rfc_3339_times_with_their_offset(
    quiet: QuietGateway, alice: Account
) -> None:
    """A time without its offset (read as the server's local time otherwise), a date alone or
    a malformed one is refused naming the filter; an offset other than Z counts exactly."""
    reader = await create_agent(alice, "reader")
    at = time.time() - 3600  # an hour ago, to the second
    message_id = await store_received(quiet, reader, at)
    for name, text in [
        ("since", "2026-01-01"),
        ("since", "2026-01-01T00:00:00"),
        ("until", "2026-01-01 00:00:00Z"),
        ("until", "yesterday"),
    ]:
        refused = await alice.http.get("/v1/events", params={name: text})
        assert refused.status_code == 400, (name, text, refused.text)
        assert refused.json()["error"]["code"] == "invalid_filter"
        assert refused.json()["error"]["message"].startswith(f"{name} must be an RFC 3339 time")

    def in_plus_two(epoch: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S+02:00", time.gmtime(epoch + 7200))

    async def listed(**params: str) -> list[str]:
        answer = await alice.http.get("/v1/events", params={"message_id": message_id, **params})
        assert answer.status_code == 200, answer.text
        return [item["message_id"] for item in answer.json()["items"]]

    assert await listed(since=in_plus_two(at - 1)) == [message_id]
    assert await listed(since=in_plus_two(at + 1)) == []
    assert await listed(until=in_plus_two(at + 1)) == [message_id]
    assert await listed(until=in_plus_two(at - 1)) == []


HOOK_URL = "http://127.0.0.1:9/hook"
"""A receiver nobody calls in these tests (loopback targets are allowed here)."""


def refusal(answer: Any, status: int, code: str) -> str:
    """The message of an e2a error answer with `status` and `code`."""
    assert answer.status_code == status, answer.text
    found = answer.json()["error"]
    assert found["code"] == code, found
    return str(found["message"])


async def make_hook(alice: Account, **fields: Any) -> dict[str, Any]:
    made = await alice.http.post(
        "/v1/webhooks", json={"url": HOOK_URL, "events": ["email.received"], **fields}
    )
    assert made.status_code == 201, made.text
    return dict(made.json())


async def test_event_types_outside_e2a_enum_are_refused_by_the_schema(alice: Account) -> None:
    """An unknown type is refused as e2a's schema enum refuses it (422 invalid_request), on
    create, update and test; an empty `events` is e2a's handler's 400."""
    hook = await make_hook(alice)
    path = f"/v1/webhooks/{hook['id']}"
    unknown = {"url": HOOK_URL, "events": ["email.received", "email.invented"]}
    message = refusal(await alice.http.post("/v1/webhooks", json=unknown), 422, "invalid_request")
    assert message.startswith('body.events[1]: expected value to be one of "email.received, ')
    patched = await alice.http.patch(path, json={"events": ["email.invented"]})
    refusal(patched, 422, "invalid_request")
    tested = await alice.http.post(f"{path}/test", json={"type": "email.invented"})
    refusal(tested, 422, "invalid_request")

    empty = await alice.http.post("/v1/webhooks", json={"url": HOOK_URL, "events": []})
    assert refusal(empty, 400, "invalid_request") == "events must be a non-empty array"
    for target in (path, "/v1/webhooks/wh_missing"):  # e2a refuses before looking it up
        cleared = await alice.http.patch(target, json={"events": []})
        assert refusal(cleared, 400, "invalid_request") == (
            "events must not be empty (DELETE the webhook to remove it)"
        )
    assert (await alice.http.get(path)).json()["events"] == ["email.received"]
    tested = await alice.http.post(f"{path}/test", json={"type": "email.sent"})
    assert tested.status_code == 200, tested.text


async def test_fields_are_checked_by_e2a_rules_in_its_words(
    quiet: QuietGateway, alice: Account
) -> None:
    """e2a's `validateWebhookFields`: lengths in bytes, one-line descriptions, at most 50 items
    per filter of 1-200 bytes, conversation ids and labels of their alphabets, and agents of
    the caller's own (not another account's, nor one in the trash); each a 400."""
    reader = await create_agent(alice, "reader")
    binned = await create_agent(alice, "binned")
    trashed = await alice.http.delete(f"/v1/agents/{binned}", params={"confirm": "DELETE"})
    assert trashed.status_code == 200, trashed.text
    bob = await open_account(quiet.gateway, quiet.http_url, "bob@example.com")
    async with bob.http:
        bobs = await create_agent(bob, "bobs")
    many = [f"c{number}" for number in range(51)]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"url": HOOK_URL + "/" + "a" * 2030}, "url too long (max 2048 chars)"),
        ({"description": "é" * 101}, "description too long (max 200 chars)"),  # 202 bytes
        ({"description": "line\nbreak"}, "description must not contain CR or LF"),
        ({"description": "trailing\r"}, "description must not contain CR or LF"),
        ({"filters": {"agent_emails": many}}, "filters.agent_emails exceeds cap of 50"),
        ({"filters": {"conversation_ids": many}}, "filters.conversation_ids exceeds cap of 50"),
        ({"filters": {"labels": many}}, "filters.labels exceeds cap of 50"),
        (
            {"filters": {"agent_emails": [reader, ""]}},
            "filters.agent_emails contains empty entry or one over 200 chars",
        ),
        (
            {"filters": {"agent_emails": [reader, bobs]}},
            f'filters.agent_emails references an agent you don\'t own: "{bobs}"',
        ),
        (
            {"filters": {"agent_emails": [binned]}},
            f'filters.agent_emails references an agent you don\'t own: "{binned}"',
        ),
        (
            {"filters": {"conversation_ids": ["x" * 201]}},
            "filters.conversation_ids contains empty entry or one over 200 chars",
        ),
        (
            {"filters": {"conversation_ids": ["ok", " padded"]}},
            'filters.conversation_ids[" padded"]: invalid character',
        ),
        (
            {"filters": {"labels": ["l" * 65]}},
            "filters.labels contains empty entry or one over 64 chars",
        ),
        (
            {"filters": {"labels": ["Urgent"]}},
            'filters.labels["Urgent"]: invalid character (expected [a-z0-9:_-]+, lowercase)',
        ),
    ]
    for fields, expected in cases:
        body = {"url": HOOK_URL, "events": ["email.received"]} | fields
        answer = await alice.http.post("/v1/webhooks", json=body)
        assert refusal(answer, 400, "invalid_request") == expected, fields
    assert (await alice.http.get("/v1/webhooks")).json()["items"] == []

    accepted = await make_hook(
        alice,
        description="é" * 100,
        filters={
            "agent_emails": [reader.upper()],
            "conversation_ids": ["Thread_9-x"],
            "labels": ["team:ops", "follow-up_2"],
        },
    )
    assert accepted["description"] == "é" * 100
    assert accepted["filters"] == {"agent_emails": [reader], "conversation_ids": ["Thread_9-x"]}


async def test_a_patch_is_checked_as_it_leaves_the_webhook(
    quiet: QuietGateway, alice: Account
) -> None:
    """PATCH validates the webhook after the change, the fields it keeps included: a filter on
    an agent gone to the trash since refuses even a pause; a refused PATCH changes nothing."""
    reader = await create_agent(alice, "reader")
    hook = await make_hook(alice, filters={"agent_emails": [reader]}, description="kept")
    path = f"/v1/webhooks/{hook['id']}"
    for change, expected in [
        ({"description": "x" * 201}, "description too long (max 200 chars)"),
        ({"description": "two\nlines"}, "description must not contain CR or LF"),
        ({"filters": {"labels": ["a b"]}}, 'filters.labels["a b"]: invalid character'),
        (
            {"filters": {"agent_emails": ["nobody@agents.test"]}},
            "filters.agent_emails references an agent you don't own",
        ),
    ]:
        answer = await alice.http.patch(path, json=change | {"enabled": False})
        assert refusal(answer, 400, "invalid_request").startswith(expected), change
    unchanged = (await alice.http.get(path)).json()
    assert (unchanged["description"], unchanged["enabled"]) == ("kept", True)
    assert unchanged["filters"] == {"agent_emails": [reader]}

    trashed = await alice.http.delete(f"/v1/agents/{reader}", params={"confirm": "DELETE"})
    assert trashed.status_code == 200, trashed.text
    paused = await alice.http.patch(path, json={"enabled": False})
    assert refusal(paused, 400, "invalid_request") == (
        f'filters.agent_emails references an agent you don\'t own: "{reader}"'
    )
    cleared = await alice.http.patch(path, json={"filters": {}, "enabled": False})
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["filters"] == {} and cleared.json()["enabled"] is False


async def test_a_disabled_webhook_cannot_be_tested(alice: Account) -> None:
    """testWebhook on a paused webhook is 409 webhook_disabled and queues nothing; once
    enabled again it queues its delivery. An unknown webhook stays 404."""
    hook = await make_hook(alice)
    path = f"/v1/webhooks/{hook['id']}"
    paused = await alice.http.patch(path, json={"enabled": False})
    assert paused.status_code == 200, paused.text
    refused = await alice.http.post(f"{path}/test", json={})
    assert refusal(refused, 409, "webhook_disabled") == "webhook is disabled"
    assert (await alice.http.get(f"{path}/deliveries")).json()["items"] == []
    missing = await alice.http.post("/v1/webhooks/wh_missing/test", json={})
    refusal(missing, 404, "not_found")

    resumed = await alice.http.patch(path, json={"enabled": True})
    assert resumed.status_code == 200, resumed.text
    tested = await alice.http.post(f"{path}/test", json={})
    assert tested.status_code == 200, tested.text
    (delivery,) = (await alice.http.get(f"{path}/deliveries")).json()["items"]
    assert delivery["id"] == tested.json()["delivery_id"]


async def test_the_view_names_only_the_filters_that_are_set(
    quiet: QuietGateway, alice: Account, sdk5_python: Path
) -> None:
    """As e2a's WebhookView (omitempty): `filters` is `{}` for a webhook of everything, and
    names one list when only it is set; the 5.x SDK reads both."""
    everything = await make_hook(alice)
    assert everything["filters"] == {}
    threads = await make_hook(alice, filters={"conversation_ids": ["t1"], "agent_emails": []})
    assert threads["filters"] == {"conversation_ids": ["t1"]}
    listed = await alice.http.get("/v1/webhooks")
    expected: list[dict[str, Any]] = [{"conversation_ids": ["t1"]}, {}]  # newest first
    assert [item["filters"] for item in listed.json()["items"]] == expected
    read = await run_sdk(
        sdk5_python,
        quiet.http_url,
        {"default": alice.key},
        [{"do": "webhooks.get", "args": [everything["id"]]}, {"do": "webhooks.list"}],
    )
    assert value(read[0], "WebhookView")["filters"] == {}
    sdk_listed = value(read[1], ["WebhookView", "WebhookView"])
    assert [item["filters"] for item in sdk_listed] == expected


async def test_webhooks_are_listed_newest_first_page_by_page(
    quiet: QuietGateway, alice: Account, sdk5_python: Path
) -> None:
    """As e2a's listWebhooks (`ORDER BY created_at DESC`): the webhook made last comes first,
    on one page and walked a page at a time by the 5.x SDK's pager."""
    made = [(await make_hook(alice, description=f"hook {n}"))["id"] for n in range(3)]
    newest_first = made[::-1]
    listed = await alice.http.get("/v1/webhooks")
    assert [item["id"] for item in listed.json()["items"]] == newest_first
    first = (await alice.http.get("/v1/webhooks", params={"limit": 2})).json()
    assert [item["id"] for item in first["items"]] == newest_first[:2]
    rest = await alice.http.get("/v1/webhooks", params={"cursor": first["next_cursor"]})
    assert [item["id"] for item in rest.json()["items"]] == newest_first[2:]
    assert rest.json()["next_cursor"] is None
    walked = await run_sdk(
        sdk5_python,
        quiet.http_url,
        {"default": alice.key},
        [{"do": "webhooks.list", "kwargs": {"limit": 1}}],
    )
    assert [item["id"] for item in value(walked[0])] == newest_first


async def test_a_test_events_data_is_bounded(alice: Account) -> None:
    """testWebhook's `data` is stored as the delivery's envelope, sent to the receiver and read
    with each page of the delivery log: over 64 KiB as JSON it is refused (413
    `payload_too_large`, with the sizes), and nothing is queued; at the bound it is queued."""
    hook = await make_hook(alice)
    path = f"/v1/webhooks/{hook['id']}"
    too_big = {"blob": "x" * (4 * 1024 * 1024)}
    refused = await alice.http.post(f"{path}/test", json={"data": too_big})
    message = refusal(refused, 413, "payload_too_large")
    assert "65536" in message, message
    details = refused.json()["error"]["details"]
    assert details["scope"] == "test_data" and details["max_bytes"] == 65536
    assert details["actual_bytes"] > 4 * 1024 * 1024
    assert (await alice.http.get(f"{path}/deliveries")).json()["items"] == []

    fits = {"blob": "x" * (65536 - len('{"blob":""}'))}
    tested = await alice.http.post(f"{path}/test", json={"data": fits})
    assert tested.status_code == 200, tested.text
    (delivery,) = (await alice.http.get(f"{path}/deliveries")).json()["items"]
    assert delivery["id"] == tested.json()["delivery_id"]


async def test_a_delivery_that_cannot_be_signed_is_recorded_and_the_others_go_on(
    quiet: QuietGateway, alice: Account, nursery: trio.Nursery
) -> None:
    """Whatever a delivery's data does to an attempt, the worker records it and goes on, as
    the `webhook_url` worker does: here one webhook's seed, written straight to the database,
    is unreadable (not ASCII). Its delivery is retried with the reason; the other is made."""
    receiver = HttpReceiver()
    await nursery.start(receiver.serve)
    broken = await make_hook(alice, url=receiver.url + "/broken")
    healthy = await make_hook(alice, url=receiver.url + "/healthy")
    query(
        quiet.gateway.settings.database.url,
        "UPDATE webhooks SET seed = ? WHERE id = ?",
        ("s\u00e9ed", broken["id"]),
    )
    for hook in (broken, healthy):
        tested = await alice.http.post(f"/v1/webhooks/{hook['id']}/test", json={})
        assert tested.status_code == 200, tested.text
    clock = FakeClock(time.time())
    async with WebhookConnections() as connections:
        worker = SubscriberWorker(quiet.gateway, connections, clock=clock, attempt_timeout=5.0)
        with trio.fail_after(10):
            assert await worker.deliver_due(clock.now) == 2
    (request,) = receiver.requests
    assert request.target.endswith("/healthy")
    path = f"/v1/webhooks/{broken['id']}/deliveries"
    (delivery,) = (await alice.http.get(path)).json()["items"]
    assert (delivery["status"], delivery["attempts"]) == ("pending", 1)
    assert delivery["last_error"] == "internal error: UnicodeEncodeError"
    assert delivery["next_retry_at"] is not None
