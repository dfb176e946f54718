"""An account's export is streamed: read page by page from one snapshot held while it is sent
(`Accounts.export_user`, web.streamed_json), so exporting an account of many messages holds
a page of them at a time, sees no commit made after it began, and gives its snapshot back
however the answer ends, a client gone mid-way included."""

from __future__ import annotations

import json
import socket
import sqlite3
import tracemalloc
from contextlib import AsyncExitStack, aclosing
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import trio
import trio.lowlevel
from quart_trio import QuartTrio

from e2a_gateway.accounts import bootstrap_user
from e2a_gateway.app import RunningGateway, run_gateway
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.storage.base import MessageCounts, Storage
from e2a_gateway.storage.postgres import POOL_SIZE, PostgresStorage
from e2a_gateway.storage.sqlite import SqliteStorage
from tests.conftest import Account, make_settings
from tests.databases import query
from tests.delivery_support import create_agent, wait_until
from tests.export_support import whole_export
from tests.test_storage import (  # noqa: F401  (storage, storage_url, postgres_db: fixtures)
    add_user,
    make_agent,
    make_message,
    make_outbound,
    postgres_db,
    storage,
    storage_url,
)

MANY = 20_000
BATCH = 2_000
PEAK_BYTES = 4_000_000
"""At most what an export of MANY messages may allocate at once (its documents are 7 and 21
MB; a page of 200 messages costs some 2.5 MB on `/v1`)."""


async def store_many(store: Storage, agent: str, count: int) -> None:
    """`count` inbound messages for `agent`, in a few large transactions."""
    for start in range(0, count, BATCH):
        await store.store_inbound(
            [
                make_message(f"msg_{number:06d}", agent)
                for number in range(start, min(start + BATCH, count))
            ],
            1.0,
        )


async def test_an_export_of_many_messages_holds_a_page_of_them_at_a_time(
    running: RunningGateway, make_account: Any, tmp_path: Path
) -> None:
    """Exporting an account of 20,000 messages keeps the process's traced allocations far
    below the size of the document it sends (it used to build the whole document, and then
    its JSON text, in memory), and the document it streams is whole and in order."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    await store_many(running.gateway.storage, bot, MANY)
    for path in ("/v1/account/export", "/api/v1/users/me/export"):
        saved = tmp_path / "export.json"
        tracemalloc.start()
        try:
            async with alice.http.stream("GET", path, timeout=120) as response:
                assert response.status_code == 200
                with saved.open("wb") as file:
                    async for chunk in response.aiter_raw():
                        file.write(chunk)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        size = saved.stat().st_size
        assert size > 7_000_000, size
        assert peak < PEAK_BYTES, (path, peak, size)
        exported = json.loads(saved.read_bytes())
        ids = [message["id"] for message in exported["messages"]]
        assert ids == [f"msg_{number:06d}" for number in range(MANY)]


async def test_an_export_sees_no_message_stored_while_it_is_sent(
    running: RunningGateway, make_account: Any
) -> None:
    """A message stored while the export is on its way (after its first bytes) is not in
    it: the whole document is read from the snapshot its first read took."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    await store_many(running.gateway.storage, bot, 3_000)
    paths = ("/v1/account/export", "/api/v1/users/me/export")
    for stored, path in enumerate(paths):
        body = bytearray()
        async with alice.http.stream("GET", path) as response:
            assert response.status_code == 200
            chunks = response.aiter_raw()
            body += await chunks.__anext__()
            late = make_message(f"msg_late{stored}", bot)
            await running.gateway.storage.store_inbound([late], 2.0)
            async for chunk in chunks:
                body += chunk
        ids = [message["id"] for message in json.loads(body)["messages"]]
        assert len(ids) == 3_000 + stored and f"msg_late{stored}" not in ids
    after = (await alice.http.get("/api/v1/users/me/export")).json()["messages"]
    assert [message["id"] for message in after[-2:]] == ["msg_late0", "msg_late1"]


async def test_a_client_gone_mid_export_frees_the_snapshot(
    running: RunningGateway, make_account: Any
) -> None:
    """A client that hangs up after the first bytes of an export ends its read: the SQLite
    reader it held is free again and a checkpoint copies the whole log, what was committed
    after the export's snapshot included."""
    store = running.gateway.storage
    if not isinstance(store, SqliteStorage):
        pytest.skip("SQLite's checkpoint: the PostgreSQL half is the storage test below")
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    await store_many(store, bot, MANY)  # more than the sockets between hold
    client = await _export_request(running, alice.key)
    assert (await client.recv(65_536)).startswith(b"HTTP/1.1 200 ")
    await store.store_inbound([make_message("msg_after", bot)], 2.0)
    assert not _checkpoint_completes(store.path)  # the export's snapshot holds the log
    client.close()  # gone, the rest of the export unread

    await wait_until(lambda: _checkpoint_completes(store.path))
    with trio.fail_after(5):  # both readers serve again
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(store.list_agents, "nobody")


async def test_exports_to_clients_that_stop_reading_leave_the_reads_served(
    running: RunningGateway, make_account: Any
) -> None:
    """Two exports sent to clients that stop reading (a download paused, a client stuck) are
    held for as long as their answers may take; meanwhile every other read is served: they
    take none of the readers the gateway's other work shares."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    store = running.gateway.storage
    await store_many(store, bot, MANY)  # more than the sockets between hold
    clients = [await _export_request(running, alice.key) for _ in range(2)]
    try:
        for client in clients:
            assert (await client.recv(65_536)).startswith(b"HTTP/1.1 200 ")
        with trio.fail_after(5):
            assert await store.list_agents("nobody") == []
        answer = await alice.http.get("/v1/agents")
        assert answer.status_code == 200, answer.text
    finally:
        for client in clients:
            client.close()


async def test_exports_beyond_the_gateway_s_cap_are_refused_until_one_ends(
    running: RunningGateway, make_account: Any
) -> None:
    """Two exports sent to clients that stopped reading are as many as the gateway sends at
    once (`http.max_concurrent_exports`, 2 by default), each holding a database connection of
    its own: a third, from another account too and on either face, is refused with 429, a
    JSON error naming the setting and `Retry-After`, and opens no connection. Once one of the
    two ends, an export is sent again."""
    alice: Account = await make_account("alice@example.com")
    bob: Account = await make_account("bob@example.com")
    bot = await create_agent(alice, "bot")
    await store_many(running.gateway.storage, bot, MANY)  # more than the sockets between hold
    clients = [await _export_request(running, alice.key) for _ in range(2)]
    try:
        for client in clients:
            assert (await client.recv(65_536)).startswith(b"HTTP/1.1 200 ")
        refused = await bob.http.get("/api/v1/users/me/export")
        assert refused.status_code == 429, refused.text
        assert refused.headers["Content-Type"] == "application/json"
        assert refused.headers["Retry-After"] == "30"
        error = refused.json()["error"]
        assert error["code"] == "too_many_exports"
        assert "http.max_concurrent_exports" in error["message"]
        refused = await bob.http.get("/v1/account/export")
        assert refused.status_code == 429, refused.text
        assert refused.headers["Retry-After"] == "30"
        error = refused.json()["error"]
        assert error["code"] == "rate_limited" and error["details"]["retry_after_seconds"] == 30
        assert "http.max_concurrent_exports" in error["message"]
    finally:
        clients[0].close()
    try:

        async def exported() -> bool:
            answer = await bob.http.get("/api/v1/users/me/export")
            return answer.status_code == 200 and answer.json()["user"]["email"] == bob.email

        await wait_until(exported)
    finally:
        clients[1].close()


async def test_exports_held_open_take_no_connection_other_work_needs(
    storage: Storage,  # noqa: F811
) -> None:
    """More exports held open at once (each sent to a client that stopped reading) than the
    connections the gateway's other work shares: reads and writes are served meanwhile."""
    alice = await add_user(storage, "alice@example.com")
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    with trio.fail_after(10):
        async with AsyncExitStack() as held:
            for _ in range(POOL_SIZE + 1):
                export = await held.enter_async_context(storage.export_user(alice))
                records = await export.records()
                assert [agent["email"] for agent in records["agents"]] == ["a@agents.test"]
            listed = await storage.list_agents(alice)
            assert [agent.email for agent in listed] == ["a@agents.test"]
            await storage.store_inbound([make_message("msg_meanwhile", "a@agents.test")], 2.0)


def _checkpoint_completes(path: str) -> bool:
    """Whether a checkpoint can copy the whole log into the database now (no reader holds
    a snapshot older than the log's end)."""
    connection = sqlite3.connect(path, timeout=1)
    try:
        busy, logged, copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        connection.close()
    return bool(busy == 0 and logged == copied)


async def test_the_storage_export_reads_one_snapshot_page_by_page(
    storage: Storage,  # noqa: F811
) -> None:
    """Between two pages of an export, a message stored, labels put on an exported one and
    a new event are not seen: every page is read from the snapshot its first read took. The
    agents' counts of mail come from that snapshot too."""
    alice = await add_user(storage, "alice@example.com")
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    await store_many(storage, "a@agents.test", 1_200)
    await storage.add_outbound(
        make_outbound(alice, "a@agents.test", "out_1", "pending_approval", 1e12)
    )
    async with storage.export_user(alice) as export:
        records = await export.records()
        assert [agent["email"] for agent in records["agents"]] == ["a@agents.test"]
        pages = export.messages()
        async with aclosing(pages):
            first = await pages.__anext__()
            await storage.store_inbound([make_message("msg_late", "a@agents.test")], 2.0)
            assert await storage.change_labels(
                alice, "a@agents.test", "msg_001100", ["late"], [], 100
            )
            await storage.add_outbound(
                make_outbound(alice, "a@agents.test", "out_2", "pending_approval", 1e12)
            )
            rest = [message async for page in pages for message in page]
        counts = await export.message_counts("1900-01-01T00:00:00Z")
    exported = first + rest
    assert len(first) < 1_201
    ids = [message["id"] for message, _ in exported]
    assert ids == [f"msg_{number:06d}" for number in range(1_200)] + ["out_1"]
    # no label nor trash the export did not see when it began (the sent one's delivery aside)
    assert all(filed.keys() <= {"delivery"} for _, filed in exported)
    assert counts == {"a@agents.test": MessageCounts(1_200, 1, 1)}

    after = await whole_export(storage, alice)
    assert [message["id"] for message in after["messages"][-2:]] == ["msg_late", "out_2"]
    assert after["mailbox"] == {"msg_001100": {"labels": ["late"]}}


async def test_an_export_cancelled_mid_way_gives_its_connection_back(
    storage_url: str,  # noqa: F811
) -> None:
    """An export cancelled while it holds its snapshot (its client gone) ends its
    transaction and frees its connection: no PostgreSQL session is left idle in a
    transaction, a SQLite checkpoint copies the whole log, and two exports at once (one
    connection each, all a two-connection pool has) can then be read."""
    if storage_url.startswith("sqlite"):
        store: Storage = SqliteStorage.open(storage_url.removeprefix("sqlite:///"))
    else:
        store = PostgresStorage(storage_url, pool_size=2)
    await store.migrate()
    try:
        alice = await add_user(store, "alice@example.com")
        await store.add_agent(make_agent(alice, "a@agents.test"))
        await store_many(store, "a@agents.test", 1_200)
        with trio.CancelScope() as gone:
            async with store.export_user(alice) as export:
                await export.records()
                async with aclosing(export.messages()) as pages:
                    async for _ in pages:
                        await store.store_inbound([make_message("msg_x", "a@agents.test")], 2)
                        assert await _holds_snapshot(store, storage_url)
                        gone.cancel()
                        await trio.lowlevel.checkpoint()
        assert gone.cancelled_caught
        assert not await _holds_snapshot(store, storage_url)
        with trio.fail_after(5):
            async with store.export_user(alice) as first, store.export_user(alice) as second:
                assert (await first.records())["user"] == (await second.records())["user"]
    finally:
        await store.close()


async def _holds_snapshot(store: Storage, url: str) -> bool:
    """Whether a transaction of the export is still open on the database."""
    if isinstance(store, SqliteStorage):
        return not _checkpoint_completes(store.path)
    rows = query(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND state LIKE 'idle in transaction%%'",
    )
    return bool(rows[0][0])


async def test_a_database_lost_mid_export_cuts_the_body_short(
    postgres_db: str,  # noqa: F811
    nursery: trio.Nursery,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A database lost after the export's first bytes (its PostgreSQL session ended) cannot
    become an error answer any more: the connection closes before the body's last chunk, so
    the client is left with a truncated body, never a valid document, and the gateway logs
    why."""
    settings = make_settings(tmp_path, database={"url": postgres_db})
    running: RunningGateway = await nursery.start(
        partial(run_gateway, settings, resolver=FixtureResolver())
    )
    gateway = running.gateway
    alice, issued, _ = await bootstrap_user(gateway.storage, gateway.server_key, "a@example.com")
    await gateway.storage.add_agent(make_agent(alice.id, "bot@agents.test"))
    await store_many(gateway.storage, "bot@agents.test", MANY)
    client = await _export_request(running, issued.plaintext)
    received = await client.recv(65_536)
    assert received.startswith(b"HTTP/1.1 200 ") and b"chunked" in received.lower()
    ended = query(
        postgres_db,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND state LIKE 'idle in transaction%%'",
    )
    assert ended == [(True,)]
    with trio.fail_after(10):
        while chunk := await client.recv(1 << 20):
            received += chunk
    client.close()
    assert not received.endswith(b"\r\n0\r\n\r\n")  # never the body's last chunk
    assert "a streamed answer was cut short after" in caplog.text
    assert await gateway.storage.get_user(alice.id) is not None  # the pool serves on


async def _export_request(running: RunningGateway, key: str) -> trio.socket.SocketType:
    """A client of the `/v1` export that reads slowly: its receive buffer holds a little of
    the document, so the gateway is still sending it while the test looks."""
    url = urlsplit(running.addresses.http_url)
    client = trio.socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65_536)
    await client.connect((url.hostname, url.port))
    await client.send(
        b"GET /v1/account/export HTTP/1.1\r\nHost: gateway\r\n"
        b"Authorization: Bearer " + key.encode() + b"\r\n\r\n"
    )
    return client


async def test_an_export_is_not_cut_by_the_limit_on_other_answers(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every other answer must be sent within the app's RESPONSE_TIMEOUT; an export that takes
    longer to send (here that limit made 50 ms, and a slow client reading a thousand messages)
    is sent whole, within its own limit (STREAM_SECONDS)."""
    defaults = {**QuartTrio.default_config, "RESPONSE_TIMEOUT": 0.05}
    monkeypatch.setattr(QuartTrio, "default_config", defaults)
    running: RunningGateway = await nursery.start(
        partial(run_gateway, make_settings(tmp_path), resolver=FixtureResolver())
    )
    gateway = running.gateway
    alice, issued, _ = await bootstrap_user(gateway.storage, gateway.server_key, "a@example.com")
    await gateway.storage.add_agent(make_agent(alice.id, "bot@agents.test"))
    await store_many(gateway.storage, "bot@agents.test", 1_000)
    headers = {"Authorization": f"Bearer {issued.plaintext}"}
    async with httpx.AsyncClient(base_url=running.addresses.http_url, headers=headers) as http:
        ordinary = await http.get("/api/health")  # well within the limit
        assert ordinary.status_code == 200
        for path in ("/v1/account/export", "/api/v1/users/me/export"):
            async with http.stream("GET", path, timeout=60) as response:
                assert response.status_code == 200
                body = b""
                async for chunk in response.aiter_raw():
                    body += chunk
                    await trio.sleep(0.02)  # a slow reader
            assert len(json.loads(body)["messages"]) == 1_000, path
