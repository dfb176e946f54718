"""The `email.received` events of one message's copies for many agents are one row per account,
on every backend: each copy's event still reads, lists, exports, redelivers and goes to webhooks
with its own id, message, agent and conversation — the same bytes the copy's own envelope would
be — and its id finds it for its account only. Rows of the earlier layout (a row per copy, the
envelope kept once in `event_bodies`) read as they did."""

from __future__ import annotations

import json
from dataclasses import replace

import orjson
import pytest

from e2a_gateway.events import derived_event_id, received_envelope
from e2a_gateway.storage import open_storage
from e2a_gateway.storage.base import EventFilter, Storage
from e2a_gateway.storage.new_inbound import NewInboundMessage
from tests.export_support import whole_export
from tests.test_storage import (  # noqa: F401  (storage and storage_url are fixtures)
    NOW,
    add_user,
    make_agent,
    make_message,
    migrated_to,
    run_sql,
    storage,
    storage_url,
)
from tests.test_webhook_auto_disable import new_webhook

pytestmark = pytest.mark.backend_independent

RECEIVED = 1_767_225_600.0
"""NOW as an epoch: when every copy was received."""
RAW = b"From: sender@example.org\r\nSubject: hi\r\n\r\nTo everyone.\r\n"


def copies_of_one_message(
    agents: list[str], conversations: list[str | None]
) -> list[NewInboundMessage]:
    """One message's copies (its raw bytes the same object, as the pipeline makes them)."""
    first = replace(make_message("msg_shared0", agents[0], RAW), to=list(agents))
    return [
        replace(first, id=f"msg_shared{number}", agent_email=agent, conversation_id=conversation)
        for number, (agent, conversation) in enumerate(zip(agents, conversations, strict=True))
    ]


async def received_events(storage: Storage, user_id: str) -> dict[str, bytes]:  # noqa: F811
    """The user's `email.received` envelopes by message id, as the list gives them."""
    events = await storage.list_events(user_id, EventFilter(type="email.received"), 50, None)
    return {event.message_id or "": event.envelope for event in events}


async def test_copies_read_their_own_envelopes_from_one_row(
    storage: Storage,  # noqa: F811
    storage_url: str,  # noqa: F811
) -> None:
    owner = await add_user(storage, "owner@example.com")
    other = await add_user(storage, "other@example.com")
    mine = [f"bot{number}@agents.example" for number in range(3)]
    theirs = ["helper@agents.example", "aide@agents.example"]
    for agent in mine:
        await storage.add_agent(make_agent(owner, agent))
    for agent in theirs:
        await storage.add_agent(make_agent(other, agent))
    await new_webhook(storage, owner, "all")
    # the first copy starts no conversation, later ones are in one each: the field is put in
    copies = copies_of_one_message(mine + theirs, [None, "cnv_b", "cnv_c", "cnv_d", None])
    await storage.store_inbound(copies, RECEIVED)

    expected = {copy.id: received_envelope(copy) for copy in copies}
    assert len(set(expected.values())) == 5
    for user_id, group in ((owner, copies[:3]), (other, copies[3:])):
        found = await received_events(storage, user_id)
        assert found == {copy.id: expected[copy.id] for copy in group}
    # one row per account: the first copy's, its envelope whole, the others listed in it
    rows = run_sql(storage_url, "SELECT message_id, body_id, copies FROM events ORDER BY seq")
    assert [(row[0], row[1], [copy[1] for copy in json.loads(row[2])]) for row in rows] == [
        ("msg_shared0", None, ["msg_shared1", "msg_shared2"]),
        ("msg_shared3", None, ["msg_shared4"]),
    ]
    assert run_sql(storage_url, "SELECT count(*) FROM event_bodies")[0][0] == 0
    assert run_sql(storage_url, "SELECT count(*) FROM event_copies")[0][0] == 3

    further = next(
        event
        for event in await storage.list_events(
            owner, EventFilter(message_id="msg_shared2"), 5, None
        )
    )
    assert further.id == derived_event_id("msg_shared2", "email.received")
    got = await storage.get_event(owner, further.id)
    assert got is not None and got.envelope == expected["msg_shared2"]
    assert orjson.loads(got.envelope)["data"]["conversation_id"] == "cnv_c"
    assert await storage.get_event(other, further.id) is None  # another account's: not found
    conversation = EventFilter(conversation_id="cnv_b")
    assert [e.message_id for e in await storage.list_events(owner, conversation, 5, None)] == [
        "msg_shared1"
    ]

    # the fan-out's webhook bodies and a redelivery carry each copy's own envelope
    queued = await storage.redeliver_event(owner, further.id, "wh_all", RECEIVED + 1)
    assert queued is not None and len(queued) == 1
    bodies = run_sql(storage_url, "SELECT event_id, envelope FROM webhook_deliveries")
    assert len(bodies) == 4
    by_event = {
        event.id: event.envelope
        for event in await storage.list_events(owner, EventFilter(), 50, None)
    }
    for event_id, body in bodies:
        assert bytes(body) == by_event[event_id]
    counted = await storage.get_event(owner, further.id)
    assert counted is not None and counted.deliveries.matched_webhooks == 2

    exported = await whole_export(storage, owner)
    assert [json.loads(expected[copy.id]) for copy in copies[:3]] == [
        {
            name: value
            for name, value in item.items()
            if name not in ("agent_email", "conversation_id", "message_id")
        }
        for item in exported["events"]
    ]

    # an account deleted takes its row and its copies' ids, not the other's
    await storage.delete_user(other)
    assert run_sql(storage_url, "SELECT count(*) FROM event_copies")[0][0] == 2
    assert await received_events(storage, owner) == {
        copy.id: expected[copy.id] for copy in copies[:3]
    }


async def test_webhooks_filtered_by_agent_or_conversation_get_their_copies_events(
    storage: Storage,  # noqa: F811
    storage_url: str,  # noqa: F811
) -> None:
    """A folded copy's event goes to the webhooks its own agent and conversation match, with
    its own envelope, in the order the messages were stored (two messages in one batch: each
    message's copies before the next message's); copies made with `copy_for` (sharing one
    content key object) fold as those made apart do."""
    owner = await add_user(storage)
    agents = [f"bot{number}@agents.example" for number in range(4)]
    for agent in agents:
        await storage.add_agent(make_agent(owner, agent))
    template = await new_webhook(storage, owner, "all_agents")
    await storage.delete_webhook(owner, template.id)
    by_agent = replace(template, id="wh_agent", agent_emails=[agents[0], agents[3]])
    by_conversation = replace(template, id="wh_conversation", conversation_ids=["cnv_c"])
    for webhook in (by_agent, by_conversation):
        await storage.add_webhook(webhook, 20)
    batch: list[NewInboundMessage] = []
    for name, raw in (("a", RAW), ("b", RAW.replace(b"hi", b"again"))):
        first = replace(make_message(f"msg_{name}0", agents[0], raw), to=list(agents))
        batch += [first] + [
            first.copy_for(id=f"msg_{name}{number}", agent_email=agent, conversation_id=thread)
            for number, (agent, thread) in enumerate(
                zip(agents[1:], ["cnv_b", "cnv_c", None], strict=True), start=1
            )
        ]
    await storage.store_inbound(batch, RECEIVED)

    rows = run_sql(storage_url, "SELECT message_id, copies FROM events ORDER BY seq")
    assert [(row[0], [copy[1] for copy in json.loads(row[1])]) for row in rows] == [
        ("msg_a0", ["msg_a1", "msg_a2", "msg_a3"]),
        ("msg_b0", ["msg_b1", "msg_b2", "msg_b3"]),
    ]
    queued = run_sql(
        storage_url, "SELECT webhook_id, event_id, envelope FROM webhook_deliveries ORDER BY seq"
    )
    event = {copy.id: derived_event_id(copy.id, "email.received") for copy in batch}
    assert [(row[0], row[1]) for row in queued] == [
        (by_agent.id, event["msg_a0"]),
        (by_conversation.id, event["msg_a2"]),
        (by_agent.id, event["msg_a3"]),
        (by_agent.id, event["msg_b0"]),
        (by_conversation.id, event["msg_b2"]),
        (by_agent.id, event["msg_b3"]),
    ]
    expected = {event[copy.id]: received_envelope(copy) for copy in batch}
    for _, event_id, envelope in queued:
        assert bytes(envelope) == expected[event_id]


async def test_the_sweep_takes_a_message_s_copies_together(
    storage: Storage,  # noqa: F811
    storage_url: str,  # noqa: F811
) -> None:
    owner = await add_user(storage)
    agents = [f"bot{number}@agents.example" for number in range(3)]
    for agent in agents:
        await storage.add_agent(make_agent(owner, agent))
    copies = copies_of_one_message(agents, [None, None, None])
    await storage.store_inbound(copies, RECEIVED)
    later = [
        replace(copy, id=f"msg_later{number}", received_at="2026-01-02T00:00:00Z")
        for number, copy in enumerate(copies)
    ]
    await storage.store_inbound(later, RECEIVED + 86_400)
    expected = {copy.id: received_envelope(copy) for copy in later}

    # one row, three events: they go together, with their ids
    assert await storage.delete_events_before(RECEIVED + 1, 1) == 3
    assert await received_events(storage, owner) == expected
    assert run_sql(storage_url, "SELECT count(*) FROM event_copies")[0][0] == 2
    assert await storage.delete_events_before(RECEIVED + 1, 10) == 0
    assert await storage.delete_events_before(RECEIVED + 86_401, 10) == 3
    assert run_sql(storage_url, "SELECT count(*) FROM event_copies")[0][0] == 0


async def test_rows_of_the_earlier_layout_read_as_before(
    storage_url: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Events stored by migration 31's layout (each further copy a row naming the envelope it
    shares in `event_bodies`) list, read and sweep as before once migration 33 has run."""
    await migrated_to(storage_url, 32, monkeypatch)
    run_sql(storage_url, "INSERT INTO users VALUES ('usr_1', 'o@x', ?)", NOW)
    shared = orjson.dumps(
        {
            "type": "email.received",
            "id": "evt_first",
            "schema_version": "1",
            "created_at": NOW,
            "data": {
                "message_id": "msg_first",
                "agent_email": "a@agents.example",
                "direction": "inbound",
                "delivered_to": "a@agents.example",
                "subject": "hi",
            },
        }
    )
    run_sql(
        storage_url,
        "INSERT INTO event_bodies (id, user_id, created_epoch, envelope) VALUES (?, ?, ?, ?)",
        "evt_first",
        "usr_1",
        RECEIVED,
        shared,
    )
    for event_id, message_id, agent, own, body in (
        ("evt_first", "msg_first", "a@agents.example", shared, None),
        ("evt_second", "msg_second", "b@agents.example", b"", "evt_first"),
    ):
        run_sql(
            storage_url,
            "INSERT INTO events (id, user_id, type, agent_email, message_id, created_epoch, "
            "envelope, body_id) VALUES (?, 'usr_1', 'email.received', ?, ?, ?, ?, ?)",
            event_id,
            agent,
            message_id,
            RECEIVED,
            own,
            body,
        )
    store = open_storage(storage_url)
    try:
        assert (await store.migrate())[0] == 33
        listed = await store.list_events("usr_1", EventFilter(), 10, None)
        assert [(event.id, event.ordinal) for event in listed] == [
            ("evt_second", 0),
            ("evt_first", 0),
        ]
        second = await store.get_event("usr_1", "evt_second")
        assert second is not None
        data = orjson.loads(second.envelope)["data"]
        assert (orjson.loads(second.envelope)["id"], data["message_id"], data["delivered_to"]) == (
            "evt_second",
            "msg_second",
            "b@agents.example",
        )
        assert data["subject"] == "hi"
        assert await store.delete_events_before(RECEIVED + 1, 10) == 2
        assert run_sql(storage_url, "SELECT count(*) FROM event_bodies")[0][0] == 0
    finally:
        await store.close()
