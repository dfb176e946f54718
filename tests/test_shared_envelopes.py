"""The `email.received` events of one message's copies for many agents keep the envelope they
share once per account, on every backend: each copy's event still reads, lists, exports,
redelivers and goes to webhooks with its own id, message, agent and conversation — the same
bytes the copy's own envelope would be — and a shared envelope lasts as long as an event reads
it, and no longer."""

from __future__ import annotations

import json
from dataclasses import replace

import orjson

from e2a_gateway.events import received_envelope
from e2a_gateway.storage.base import EventFilter, Storage
from e2a_gateway.storage.new_inbound import NewInboundMessage
from tests.test_storage import (  # noqa: F401  (storage and storage_url are fixtures)
    NOW,
    add_user,
    make_agent,
    make_message,
    run_sql,
    storage,
    storage_url,
)
from tests.test_webhook_auto_disable import new_webhook

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


async def test_copies_read_their_own_envelopes_from_one_shared_one(
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
    # stored once per account: the first copy's event holds it, the others name it
    rows = run_sql(
        storage_url,
        "SELECT message_id, length(envelope), body_id FROM events ORDER BY seq",
    )
    assert [(row[1] > 0, row[2] is None) for row in rows] == [
        (True, True),
        (False, False),
        (False, False),
        (True, True),
        (False, False),
    ]
    assert run_sql(storage_url, "SELECT count(*) FROM event_bodies")[0][0] == 2

    further = next(
        event
        for event in await storage.list_events(
            owner, EventFilter(message_id="msg_shared2"), 5, None
        )
    )
    got = await storage.get_event(owner, further.id)
    assert got is not None and got.envelope == expected["msg_shared2"]
    assert orjson.loads(got.envelope)["data"]["conversation_id"] == "cnv_c"
    assert await storage.get_event(other, further.id) is None  # another account's: not found

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

    exported = await storage.export_user(owner)
    assert [json.loads(expected[copy.id]) for copy in copies[:3]] == [
        {
            name: value
            for name, value in item.items()
            if name not in ("agent_email", "conversation_id", "message_id")
        }
        for item in exported["events"]
    ]

    # an account deleted takes its shared envelope, not the other's
    await storage.delete_user(other)
    assert run_sql(storage_url, "SELECT count(*) FROM event_bodies")[0][0] == 1
    assert await received_events(storage, owner) == {
        copy.id: expected[copy.id] for copy in copies[:3]
    }


async def test_the_sweep_keeps_a_shared_envelope_while_an_event_reads_it(
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
    expected = {copy.id: received_envelope(copy) for copy in copies + later}

    # the first copy's event goes first; the others still read the envelope they share
    assert await storage.delete_events_before(RECEIVED + 1, 1) == 1
    assert await received_events(storage, owner) == {
        copy.id: expected[copy.id] for copy in copies[1:] + later
    }
    assert run_sql(storage_url, "SELECT count(*) FROM event_bodies")[0][0] == 2
    assert await storage.delete_events_before(RECEIVED + 1, 10) == 2
    assert run_sql(storage_url, "SELECT count(*) FROM event_bodies")[0][0] == 1  # the later one's
    assert await received_events(storage, owner) == {copy.id: expected[copy.id] for copy in later}
    assert await storage.delete_events_before(RECEIVED + 86_401, 10) == 3
    assert run_sql(storage_url, "SELECT count(*) FROM event_bodies")[0][0] == 0
