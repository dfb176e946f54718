"""Group commit: callers share transactions, each waits for its own, one bad message fails alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trio.testing

from e2a_gateway.storage import open_storage
from e2a_gateway.storage.base import Agent, Storage, StorageUnavailable
from e2a_gateway.storage.group_commit import GroupCommitter
from e2a_gateway.storage.new_inbound import NewInboundMessage

pytestmark = pytest.mark.backend_independent

NOW = "2026-01-01T00:00:00Z"


def make_message(
    message_id: str, agent: str = "bot@agents.test", size: int = 10
) -> NewInboundMessage:
    return NewInboundMessage(
        id=message_id,
        agent_email=agent,
        envelope_from="sender@example.org",
        from_addr="sender@example.org",
        reply_to=None,
        to=[agent],
        cc=[],
        subject="hi",
        conversation_id=None,
        rfc_message_id=None,
        raw_message=b"x" * size,
        auth_headers={},
        authentication_results={},
        received_at=NOW,
    )


class FakeStore:
    """Records each transaction; holds commits while `gate` is closed; refuses "bad" ids."""

    def __init__(self) -> None:
        self.transactions: list[list[str]] = []
        self.committed: list[str] = []
        self.gate = trio.Event()
        self.gate.set()
        self.failure: Exception | None = None
        self.in_commit = trio.Event()

    async def store_inbound(self, messages: list[NewInboundMessage], now: float) -> None:
        ids = [message.id for message in messages]
        self.transactions.append(ids)
        self.in_commit.set()
        await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        if any(message_id.startswith("bad") for message_id in ids):
            raise StorageUnavailable(f"cannot store {ids}")
        self.committed += ids


async def commit_in_background(
    nursery: trio.Nursery,
    committer: GroupCommitter,
    message_ids: list[str],
    results: dict[str, str],
) -> None:
    """Start one caller per id; `results[id]` becomes "ok" or the error's text."""

    async def one(message_id: str) -> None:
        try:
            await committer.store_inbound([make_message(message_id)], 1.0)
        except StorageUnavailable as error:
            results[message_id] = f"failed: {error}"
        else:
            results[message_id] = "ok"

    for message_id in message_ids:
        nursery.start_soon(one, message_id)
    await trio.testing.wait_all_tasks_blocked()


async def test_a_lone_caller_commits_at_once() -> None:
    store = FakeStore()
    committer = GroupCommitter(store)
    await committer.store_inbound([make_message("a1"), make_message("a2")], 1.0)
    assert store.transactions == [["a1", "a2"]]
    assert committer.batches == 1


async def test_callers_arriving_during_a_commit_share_the_next_one() -> None:
    store = FakeStore()
    store.gate = trio.Event()
    committer = GroupCommitter(store)
    results: dict[str, str] = {}
    async with trio.open_nursery() as nursery:
        await commit_in_background(nursery, committer, ["first"], results)
        await commit_in_background(nursery, committer, ["b", "c", "d"], results)
        assert store.transactions == [["first"]]
        assert results == {}
        store.gate.set()
    assert [sorted(ids) for ids in store.transactions] == [["first"], ["b", "c", "d"]]
    assert results == dict.fromkeys(["first", "b", "c", "d"], "ok")


async def test_nobody_returns_before_their_commit() -> None:
    store = FakeStore()
    store.gate = trio.Event()
    committer = GroupCommitter(store)
    results: dict[str, str] = {}
    async with trio.open_nursery() as nursery:
        await commit_in_background(nursery, committer, ["a"], results)
        await commit_in_background(nursery, committer, ["b"], results)
        assert results == {}
        store.gate.set()
        await trio.testing.wait_all_tasks_blocked()
    assert store.committed == ["a", "b"]
    assert results == {"a": "ok", "b": "ok"}


async def test_a_bad_message_fails_alone() -> None:
    store = FakeStore()
    store.gate = trio.Event()
    committer = GroupCommitter(store)
    results: dict[str, str] = {}
    async with trio.open_nursery() as nursery:
        await commit_in_background(nursery, committer, ["first"], results)
        await commit_in_background(nursery, committer, ["b", "bad", "d"], results)
        store.gate.set()
    assert [sorted(ids) for ids in store.transactions[:2]] == [["first"], ["b", "bad", "d"]]
    assert sorted(store.transactions[2:]) == [["b"], ["bad"], ["d"]]
    assert sorted(store.committed) == ["b", "d", "first"]
    assert results["bad"].startswith("failed")
    assert [results[key] for key in ("first", "b", "d")] == ["ok"] * 3


async def test_storage_failure_fails_every_caller_with_its_own_error() -> None:
    store = FakeStore()
    store.failure = StorageUnavailable("disk full")
    committer = GroupCommitter(store)
    results: dict[str, str] = {}
    store.gate = trio.Event()
    async with trio.open_nursery() as nursery:
        await commit_in_background(nursery, committer, ["a", "b", "c"], results)
        store.gate.set()
    assert results == dict.fromkeys(["a", "b", "c"], "failed: disk full")
    assert store.committed == []


async def test_other_errors_reach_the_caller() -> None:
    store = FakeStore()
    store.failure = RuntimeError("bug")
    with pytest.raises(RuntimeError, match="bug"):
        await GroupCommitter(store).store_inbound([make_message("a")], 1.0)


async def test_batches_respect_their_limits() -> None:
    store = FakeStore()
    store.gate = trio.Event()
    committer = GroupCommitter(store, max_batch_messages=2)
    results: dict[str, str] = {}
    async with trio.open_nursery() as nursery:
        await commit_in_background(nursery, committer, ["first"], results)
        await commit_in_background(nursery, committer, ["b", "c", "d", "e", "f"], results)
        store.gate.set()
    assert [len(ids) for ids in store.transactions] == [1, 2, 2, 1]
    assert sorted(message_id for ids in store.transactions for message_id in ids) == [
        "b",
        "c",
        "d",
        "e",
        "f",
        "first",
    ]


async def test_batches_respect_the_byte_limit() -> None:
    store = FakeStore()
    committer = GroupCommitter(store, max_batch_bytes=25)
    store.gate = trio.Event()
    async with trio.open_nursery() as nursery:
        for message_id in ["a", "b", "c", "d"]:
            nursery.start_soon(committer.store_inbound, [make_message(message_id)], 1.0)
            await trio.testing.wait_all_tasks_blocked()
        store.gate.set()
    assert store.transactions == [["a"], ["b", "c"], ["d"]]


async def test_a_message_to_many_agents_weighs_its_bytes_once() -> None:
    """Its recipients share one stored copy, so a DATA to 50 agents weighs as one message's
    bytes and still shares a transaction with the next arrivals."""
    store = FakeStore()
    committer = GroupCommitter(store, max_batch_bytes=60)
    store.gate = trio.Event()
    shared = make_message("x").raw_message
    to_many = [replace(make_message(f"m{n}"), raw_message=shared) for n in range(50)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(committer.store_inbound, [make_message("first")], 1.0)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(committer.store_inbound, to_many, 1.0)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(committer.store_inbound, [make_message("last")], 1.0)
        await trio.testing.wait_all_tasks_blocked()
        store.gate.set()
    assert store.transactions == [["first"], [*(m.id for m in to_many), "last"]]


async def test_a_caller_cancelled_while_queued_stores_nothing() -> None:
    store = FakeStore()
    store.gate = trio.Event()
    committer = GroupCommitter(store)
    results: dict[str, str] = {}
    async with trio.open_nursery() as nursery:
        await commit_in_background(nursery, committer, ["first"], results)
        with trio.CancelScope() as scope:
            scope.cancel()
            await committer.store_inbound([make_message("cancelled")], 1.0)
        await commit_in_background(nursery, committer, ["b"], results)
        store.gate.set()
    assert store.committed == ["first", "b"]


async def test_a_commit_once_begun_finishes_even_if_its_leader_is_cancelled() -> None:
    """Cancelling the caller that runs a commit must not cut the commit off half-way."""
    store = FakeStore()
    store.gate = trio.Event()
    committer = GroupCommitter(store)
    results: dict[str, str] = {}
    leader_scope = trio.CancelScope()

    async def leader() -> None:
        with leader_scope:
            await committer.store_inbound([make_message("leader")], 1.0)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(leader)
            await trio.testing.wait_all_tasks_blocked()
            await commit_in_background(nursery, committer, ["b"], results)
            leader_scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert store.transactions == [["leader"]]
            store.gate.set()
    assert store.transactions == [["leader"], ["b"]]
    assert store.committed == ["leader", "b"]
    assert results["b"] == "ok"


async def test_a_commit_that_hangs_times_out(autojump_clock: trio.testing.MockClock) -> None:
    store = FakeStore()
    store.gate = trio.Event()
    committer = GroupCommitter(store, commit_timeout=5)
    with pytest.raises(StorageUnavailable, match="did not finish in 5"):
        await committer.store_inbound([make_message("a")], 1.0)


async def test_each_batch_is_heard_with_what_it_stored_and_its_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The observer (the gateway's commit metrics) hears every transaction once: the DATAs it
    held, the messages (one per agent) that were stored, and how long it took; a batch that
    fell back to one commit per DATA is heard once, with its failed DATA left out."""
    store = FakeStore()
    store.gate = trio.Event()
    heard: list[tuple[int, int, float]] = []
    committer = GroupCommitter(store, observe=lambda *batch: heard.append(batch))
    results: dict[str, str] = {}
    to_two = [make_message("t1", "one@agents.test"), make_message("t2", "two@agents.test")]

    async def open_gate_later() -> None:
        await trio.sleep(3)
        store.gate.set()

    async with trio.open_nursery() as nursery:
        await commit_in_background(nursery, committer, ["first"], results)
        await commit_in_background(nursery, committer, ["b", "bad"], results)
        nursery.start_soon(committer.store_inbound, to_two, 1.0)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(open_gate_later)
    assert heard == [(1, 1, 3.0), (3, 3, 0.0)]
    assert sorted(store.committed) == ["b", "first", "t1", "t2"]
    assert results["bad"].startswith("failed")


async def test_an_observer_that_fails_never_fails_a_stored_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeStore()

    def broken(transactions: int, stored: int, seconds: float) -> None:
        raise RuntimeError("metrics broke")

    await GroupCommitter(store, observe=broken).store_inbound([make_message("a")], 1.0)
    assert store.committed == ["a"]
    assert "observing a group commit" in caplog.text


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        GroupCommitter(FakeStore(), max_batch_messages=0)


# Over the real SQLite backend


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[Storage]:
    storage = open_storage(f"sqlite:///{tmp_path / 'e2a.db'}")
    await storage.migrate()
    user, _ = await storage.ensure_user("usr_1", "owner@example.com", NOW)
    await storage.add_agent(
        Agent(
            email="bot@agents.test",
            user_id=user.id,
            domain="agents.test",
            name="bot",
            webhook_url=None,
            agent_mode="local",
            hitl_enabled=False,
            hitl_ttl_seconds=604800,
            hitl_expiration_action="reject",
            created_at=NOW,
        )
    )
    yield storage
    await storage.close()


async def commit_concurrently(committer: GroupCommitter, agents: list[str]) -> list[str]:
    """One caller per agent address, all at once; returns the ids that failed."""
    failures: list[str] = []

    async def session(number: int, agent: str) -> None:
        try:
            await committer.store_inbound([make_message(f"msg_{number}", agent)], 1.0)
        except StorageUnavailable:
            failures.append(f"msg_{number}")

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for number, agent in enumerate(agents):
                nursery.start_soon(session, number, agent)
    return failures


async def stored_ids(storage: Storage) -> list[str]:
    page = await storage.list_inbound("usr_1", "bot@agents.test", "all", 100, None)
    return sorted(message.id for message in page.messages)


async def test_many_sessions_share_few_sqlite_transactions(sqlite: Storage) -> None:
    committer = GroupCommitter(sqlite)
    assert await commit_concurrently(committer, ["bot@agents.test"] * 100) == []
    assert await stored_ids(sqlite) == sorted(f"msg_{number}" for number in range(100))
    assert committer.batches <= 10


async def test_one_bad_message_in_a_sqlite_batch_fails_alone(sqlite: Storage) -> None:
    agents = ["bot@agents.test"] * 20
    agents[7] = "gone@agents.test"
    assert await commit_concurrently(GroupCommitter(sqlite), agents) == ["msg_7"]
    assert await stored_ids(sqlite) == sorted(f"msg_{n}" for n in range(20) if n != 7)
