"""Storage of readings on both backends: the earlier mail a message names (either direction,
the owner's agent only), a message read without marking it read, and the kept reading."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from e2a_gateway.storage import open_storage
from e2a_gateway.storage.base import Storage
from tests.test_storage import (  # noqa: F401  (storage_url is a fixture)
    add_user,
    make_agent,
    make_message,
    make_outbound,
    storage_url,
)

pytestmark = pytest.mark.backend_independent

AGENT = "a@agents.test"


@pytest.fixture
async def storage(storage_url: str) -> AsyncIterator[Storage]:  # noqa: F811
    """A migrated, empty storage of each backend."""
    store = open_storage(storage_url)
    await store.migrate()
    yield store
    await store.close()


async def test_earlier_messages_finds_the_agents_mail_of_either_direction(
    storage: Storage,
) -> None:
    owner = await add_user(storage)
    other = await add_user(storage, "other@example.com")
    await storage.add_agent(make_agent(owner, AGENT))
    await storage.add_agent(make_agent(other, "b@agents.test"))
    raw = b"From: sender@example.org\r\nSubject: hi\r\n\r\nearlier words\r\n"
    await storage.store_inbound(
        [make_message("msg_in", AGENT, raw), make_message("msg_theirs", "b@agents.test")], 1.0
    )
    await storage.add_outbound(make_outbound(owner, AGENT, "msg_out", "queued"))

    found = await storage.earlier_messages(
        owner,
        AGENT,
        ["<msg_in@example.org>", "<msg_out@agents.test>", "<msg_theirs@example.org>", "<x@y>"],
    )

    by_id = {mail.id: mail for mail in found}
    assert set(by_id) == {"msg_in", "msg_out"}  # not another owner's agent's mail
    assert by_id["msg_in"].direction == "inbound"
    assert by_id["msg_in"].raw_message == raw
    assert by_id["msg_in"].from_addr == "sender@example.org"
    assert by_id["msg_out"].direction == "outbound"
    assert by_id["msg_out"].from_addr == AGENT
    assert by_id["msg_out"].body_text == "draft body"
    assert by_id["msg_out"].raw_message is None
    assert await storage.earlier_messages(other, AGENT, ["<msg_in@example.org>"]) == []
    assert await storage.earlier_messages(owner, AGENT, []) == []

    # Once its reading is kept, that is what a later message is judged against: no raw bytes.
    reading = {"reply_text": "earlier words", "trust": {"parts": []}}
    await storage.keep_reading(owner, AGENT, "msg_in", reading)
    (kept,) = await storage.earlier_messages(owner, AGENT, ["<msg_in@example.org>"])
    assert kept.reading == reading and kept.raw_message is None


async def test_a_kept_reading_is_read_back_and_the_first_one_stays(storage: Storage) -> None:
    owner = await add_user(storage)
    await storage.add_agent(make_agent(owner, AGENT))
    await storage.store_inbound([make_message("msg_1", AGENT)], 1.0)

    peeked = await storage.peek_inbound(owner, AGENT, "msg_1")
    assert peeked is not None and peeked.reading is None
    await storage.keep_reading(owner, AGENT, "msg_1", {"reply_text": "first ☺", "trust": {}})
    await storage.keep_reading(owner, AGENT, "msg_1", {"reply_text": "second", "trust": {}})
    await storage.keep_reading("usr_nobody", AGENT, "msg_1", {"reply_text": "x", "trust": {}})

    peeked = await storage.peek_inbound(owner, AGENT, "msg_1")
    assert peeked is not None
    assert peeked.reading == {"reply_text": "first ☺", "trust": {}}
    assert peeked.status == "unread"  # peeking does not mark read
    read = await storage.read_inbound(owner, AGENT, "msg_1")
    assert read is not None and read.reading == peeked.reading
    page = await storage.list_inbound(owner, AGENT, "all", 10, None)
    assert page.messages[0].reading == peeked.reading
    assert await storage.peek_inbound("usr_nobody", AGENT, "msg_1") is None
