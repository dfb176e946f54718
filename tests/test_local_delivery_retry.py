"""Delivering an agent's mail to other agents here is done once, even when the outbound worker
runs the job again after a crash that came between storing the copies and recording the
outcome: each copy's id is derived from the sent message and the recipient, and copies found
stored are not stored (nor announced, nor logged) again. Over a real gateway and database;
the crash is the worker's retry of a job whose copies an earlier attempt had committed."""

from __future__ import annotations

import time
from urllib.parse import quote

from e2a_gateway.local_delivery import copy_id, deliver_locally
from e2a_gateway.workers.outbound import OutboundWorker
from tests.conftest import Account
from tests.delivery_support import QuietGateway, create_agent
from tests.test_local_delivery_gate import bob, events, gate, inbox, resolver
from tests.webhook_support import alice, quiet, settings

__all__ = ["alice", "bob", "quiet", "resolver", "settings"]  # fixtures


async def test_a_retried_job_stores_no_copy_twice(
    quiet: QuietGateway, alice: Account, bob: Account
) -> None:
    gateway = quiet.gateway
    storage = gateway.storage
    writer = await create_agent(alice, "writer")
    reader = await create_agent(alice, "reader")
    guarded = await create_agent(bob, "guarded")
    await gate(bob, guarded, ["boss@example.net"], "review")  # its copy is held
    sent = await alice.http.post(
        f"/v1/agents/{quote(writer, safe='')}/messages",
        json={"to": [reader, guarded], "subject": "Once", "text": "Hi."},
    )
    assert sent.status_code == 202, sent.text
    sent_id = sent.json()["message_id"]

    # The attempt that crashed: its copies were committed, its outcome never was.
    sender = await storage.find_agent(writer)
    message = await storage.get_outbound(None, sent_id)
    recipients = [await storage.find_agent(address) for address in (reader, guarded)]
    assert sender is not None and message is not None and None not in recipients
    worker = OutboundWorker(gateway)
    first = await deliver_locally(
        gateway,
        sent_id,
        worker.compose(message),
        sender,
        [agent for agent in recipients if agent is not None],
        message.conversation_id,
        time.time(),
    )
    copies = {reader: copy_id(sent_id, reader), guarded: copy_id(sent_id, guarded)}
    assert first == copies

    # The job, run again, finds the copies stored and records the outcome.
    assert await worker.deliver_due(time.time()) == 1
    outbound = await storage.get_outbound(None, sent_id)
    assert outbound is not None and outbound.status == "sent"
    assert await storage.stored_copies(list(copies.items())) == set(copies.values())

    assert await inbox(alice, reader) == ["Once"]
    received = await events(alice, "email.received")
    assert [event["data"]["message_id"] for event in received] == [copies[reader]]
    reviews = (await bob.http.get("/v1/reviews")).json()["items"]
    assert [(review["id"], review["subject"]) for review in reviews] == [(copies[guarded], "Once")]


async def test_stored_copies_names_only_the_agents_own(quiet: QuietGateway, alice: Account) -> None:
    storage = quiet.gateway.storage
    writer = await create_agent(alice, "writer")
    reader = await create_agent(alice, "reader")
    sent = await alice.http.post(
        f"/v1/agents/{quote(writer, safe='')}/messages",
        json={"to": [reader], "subject": "Hello", "text": "Hi."},
    )
    assert sent.status_code == 202, sent.text
    assert await OutboundWorker(quiet.gateway).deliver_due(time.time()) == 1
    stored = copy_id(sent.json()["message_id"], reader)
    assert await storage.stored_copies([(reader, stored)]) == {stored}
    assert await storage.stored_copies([(writer, stored)]) == set()  # another agent's id
    assert await storage.stored_copies([(reader, "msg_nothing")]) == set()
    assert await storage.stored_copies([]) == set()


async def test_an_agent_named_twice_gets_one_copy(quiet: QuietGateway, alice: Account) -> None:
    writer = await create_agent(alice, "writer")
    reader = await create_agent(alice, "reader")
    sent = await alice.http.post(
        f"/v1/agents/{quote(writer, safe='')}/messages",
        json={"to": [reader], "cc": [reader.upper()], "subject": "Twice", "text": "Hi."},
    )
    assert sent.status_code == 202, sent.text
    assert await OutboundWorker(quiet.gateway).deliver_due(time.time()) == 1
    outbound = await quiet.gateway.storage.get_outbound(None, sent.json()["message_id"])
    assert outbound is not None and outbound.status == "sent", outbound
    assert await inbox(alice, reader) == ["Twice"]
