"""The SQLite backend's storage upkeep in trouble while `e2a serve` runs: a copy of the
write-ahead log into the database file that the disk refuses (here a file-size limit, which
SQLite meets as a failing disk), and the log's `-wal` and `-shm` files deleted under the running
gateway (an operator cleaning up, a backup tool). Either is said in one line of the log, with
what to do, and in the health and readiness checks while it lasts; nothing acknowledged is lost.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import sqlite3
import time
from collections.abc import Awaitable, Callable
from contextlib import closing
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from e2a_gateway.app import RunningGateway, run_gateway
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.storage import sqlite as sqlite_backend
from e2a_gateway.storage.base import StorageUnavailable
from e2a_gateway.storage.sqlite import SqliteStorage
from tests.conftest import make_settings
from tests.test_storage import add_user, make_agent, make_message

pytestmark = [pytest.mark.backend_independent]

AGENT = "bot@agents.test"
WAIT_SECONDS = 5.0
"""The longest any state below may take to show."""


def in_database_file(path: Path, copy: Path) -> list[str]:
    """The ids of the messages the database file at `path` holds on its own, without its log
    (read from a copy at `copy`); empty for a copy taken while a checkpoint wrote the file."""
    shutil.copyfile(path, copy)
    with closing(sqlite3.connect(copy)) as db:
        try:
            rows = db.execute("SELECT id FROM messages ORDER BY seq").fetchall()
        except sqlite3.DatabaseError:
            return []
    copy.unlink()
    return [str(message_id) for (message_id,) in rows]


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait, at most WAIT_SECONDS, until `check` holds."""
    for _ in range(round(WAIT_SECONDS / 0.05)):
        if await check():
            return
        await trio.sleep(0.05)
    pytest.fail(f"{what} within {WAIT_SECONDS:g} s")


def warnings_saying(caplog: pytest.LogCaptureFixture, words: str) -> list[str]:
    """The lines logged at WARNING or above that contain `words`."""
    said = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    return [line for line in said if words in line]


async def start_gateway(nursery: trio.Nursery, path: Path) -> RunningGateway:
    """A gateway on the SQLite file at `path`, with agent AGENT."""
    settings = make_settings(path.parent, database={"url": f"sqlite:///{path}"})
    running: RunningGateway = await nursery.start(
        partial(run_gateway, settings, resolver=FixtureResolver())
    )
    storage = running.gateway.storage
    assert isinstance(storage, SqliteStorage)
    user = await add_user(storage)
    await storage.add_agent(make_agent(user, AGENT))
    return running


async def health(url: str) -> tuple[int, str]:
    """`/api/health`'s and `/readyz`'s status when they agree (0 while they do not: the state
    changed between the two requests), and the health check's storage detail ("" when up),
    asked from this machine."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        answer = await http.get("/api/health")
        ready = await http.get("/readyz")
    agreed = answer.status_code if ready.status_code == answer.status_code else 0
    return agreed, answer.json()["storage"].get("detail", "")


def truncate_log(path: Path) -> None:
    """Copy the whole log into the database file and empty it, as a backup tool may."""
    with closing(sqlite3.connect(path, isolation_level=None, timeout=10)) as db:
        for _ in range(100):
            (busy, _, _) = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                return
    pytest.fail("the log could not be emptied")


async def test_a_copy_of_the_log_the_disk_refuses_is_retried_by_itself_and_shows_in_health(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The disk takes the log's commits (its file was emptied, so they fit where it was) but
    not the database file's growth: mail is still accepted, while the health check and
    `/readyz` say the log cannot be copied and to free space, in one line of the log, not a
    traceback; the copy is retried on its own schedule, without new commits, and once there is
    room again it succeeds by itself and the database file holds every message."""
    monkeypatch.setattr(sqlite_backend, "CHECKPOINT_RETRY_SECONDS", 0.05)
    monkeypatch.setattr(sqlite_backend, "CHECKPOINT_RETRY_MAX_SECONDS", 0.2)
    path = tmp_path / "e2a.db"
    copy = tmp_path / "copy" / "e2a.db"
    copy.parent.mkdir()
    caplog.set_level(logging.INFO, logger="e2a")
    async with trio.open_nursery() as gateway_nursery:
        running = await start_gateway(gateway_nursery, path)
        storage = running.gateway.storage
        url = running.addresses.http_url
        early = [make_message(f"msg_early{n}", AGENT, os.urandom(200_000)) for n in range(8)]
        await storage.store_inbound(early, 0.0)
        await trio.to_thread.run_sync(truncate_log, path)
        limits = resource.getrlimit(resource.RLIMIT_FSIZE)
        # The database file may not grow: SQLite meets it as a failing disk (SQLITE_IOERR).
        resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size, limits[1]))
        try:
            late = make_message("msg_late", AGENT, os.urandom(100_000))
            await storage.store_inbound([late], 0.0)  # acknowledged: it is in the log

            async def refused() -> bool:
                return (await health(url))[0] == 503

            await eventually(refused, "the health check did not say the copy failed")
            _, detail = await health(url)
            assert "write-ahead log" in detail and f"df -h {tmp_path}" in detail, detail
            await trio.sleep(1.0)  # retried meanwhile, several times
            assert (await health(url))[0] == 503
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, limits)  # the space freed

        async def up() -> bool:
            return (await health(url))[0] == 200

        await eventually(up, "the health check did not come up by itself")
        expected = [*(message.id for message in early), "msg_late"]
        assert in_database_file(path, copy) == expected
        gateway_nursery.cancel_scope.cancel()
    assert not [record for record in caplog.records if record.exc_info], caplog.text
    (failed,) = warnings_saying(caplog, "write-ahead log")
    assert f"df -h {tmp_path}" in failed and "Free space" in failed
    assert "crashed" not in caplog.text
    assert any("copied into the database file again" in r.getMessage() for r in caplog.records)


async def test_log_files_deleted_under_the_gateway_are_noticed_copied_and_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The `-wal` and `-shm` files deleted while the gateway runs: it notices within its upkeep
    check, copies the log it still has open into the database file at once, and says so in
    one line of the log and in the health check, with what to do (restart it); mail committed
    afterwards still reaches the database file, and a restart finds every message."""
    monkeypatch.setattr(sqlite_backend, "UPKEEP_CHECK_SECONDS", 0.1)
    path = tmp_path / "e2a.db"
    copy = tmp_path / "copy" / "e2a.db"
    copy.parent.mkdir()
    async with trio.open_nursery() as gateway_nursery:
        running = await start_gateway(gateway_nursery, path)
        storage = running.gateway.storage
        url = running.addresses.http_url
        await storage.store_inbound([make_message("msg_before", AGENT)], 0.0)
        assert (await health(url))[0] == 200
        for suffix in ("-wal", "-shm"):
            os.unlink(f"{path}{suffix}")

        async def reported() -> bool:
            return (await health(url))[0] == 503

        await eventually(reported, "the health check did not say the log was deleted")
        _, detail = await health(url)
        assert f"{path}-wal" in detail and "restart" in detail, detail
        assert in_database_file(path, copy) == ["msg_before"]

        await storage.store_inbound([make_message("msg_after", AGENT)], 0.0)

        async def copied() -> bool:
            return await trio.to_thread.run_sync(in_database_file, path, copy) == [
                "msg_before",
                "msg_after",
            ]

        await eventually(copied, "mail committed afterwards did not reach the database file")
        assert (await health(url))[0] == 503  # until a restart
        gateway_nursery.cancel_scope.cancel()
    assert not [record for record in caplog.records if record.exc_info], caplog.text
    (said,) = warnings_saying(caplog, f"{path}-wal")
    assert "restart e2a" in said
    with closing(sqlite3.connect(path)) as restarted:
        stored = restarted.execute("SELECT id FROM messages ORDER BY seq").fetchall()
    assert stored == [("msg_before",), ("msg_after",)]


async def test_closing_waits_for_a_copy_of_the_log_under_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Storage closed (the gateway stopping, or a test taking the database away) while upkeep
    copies the log in a worker thread: the close waits for the copy, which ends as it would
    have, and upkeep then stops. Closing the connection under the thread crashed the
    interpreter (a segmentation fault), or failed the copy on a closed connection."""
    storage = SqliteStorage.open(str(tmp_path / "e2a.db"))
    copying, copied = trio.Event(), []
    token = trio.lowlevel.current_trio_token()
    checkpoint = storage._checkpoint

    def slow_checkpoint() -> None:
        token.run_sync_soon(copying.set)
        time.sleep(0.3)  # the close is asked for meanwhile
        checkpoint()
        copied.append(True)

    monkeypatch.setattr(storage, "_checkpoint", slow_checkpoint)
    caplog.set_level(logging.WARNING, logger="e2a")
    with pytest.raises(ExceptionGroup) as stopped:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(storage.upkeep)
            with trio.fail_after(WAIT_SECONDS):
                await copying.wait()
                await storage.close()
            assert copied == [True]
    assert stopped.group_contains(StorageUnavailable, match="is closed")
    assert not warnings_saying(caplog, "write-ahead log"), caplog.text
