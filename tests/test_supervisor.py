"""The supervisor restarts crashed tasks with backoff and lets finished ones end."""

from __future__ import annotations

import itertools
import logging

import pytest
import trio
import trio.testing

from e2a_gateway.workers.supervisor import supervise

pytestmark = pytest.mark.backend_independent


async def test_crashes_restart_with_doubling_backoff(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    starts: list[float] = []

    async def flaky() -> None:
        starts.append(trio.current_time())
        if len(starts) < 4:
            raise RuntimeError(f"boom {len(starts)}")

    with caplog.at_level(logging.ERROR, logger="e2a.workers"):
        await supervise("flaky", flaky, first_delay=1.0, max_delay=60.0)
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(starts)]
    assert gaps == [1.0, 2.0, 4.0]
    crashes = [r for r in caplog.records if "flaky crashed" in r.getMessage()]
    assert len(crashes) == 3 and crashes[0].exc_info is not None


async def test_backoff_resets_after_a_long_healthy_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[float] = []

    async def sometimes_long() -> None:
        starts.append(trio.current_time())
        if len(starts) == 3:
            await trio.sleep(100)
        if len(starts) < 5:
            raise RuntimeError("boom")

    await supervise("worker", sometimes_long, first_delay=1.0, max_delay=10.0)
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(starts)]
    assert gaps == [1.0, 2.0, 101.0, 2.0]


async def test_cancellation_is_not_a_crash(autojump_clock: trio.testing.MockClock) -> None:
    runs = 0

    async def forever() -> None:
        nonlocal runs
        runs += 1
        await trio.sleep_forever()

    with trio.move_on_after(5):
        await supervise("forever", forever)
    assert runs == 1


async def test_a_crash_during_shutdown_lets_the_shutdown_through(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A task whose nursery fails as the gateway stops (storage closed under it) raises a group
    of the failure and the cancellation: the failure is logged, the shutdown goes on."""
    runs = 0

    async def fails_when_stopped() -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            raise RuntimeError("storage is closed") from None

    async def worker() -> None:
        nonlocal runs
        runs += 1
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fails_when_stopped)
            nursery.start_soon(trio.sleep_forever)

    with caplog.at_level(logging.ERROR, logger="e2a.workers"), trio.move_on_after(5) as scope:
        await supervise("worker", worker)
    assert scope.cancelled_caught and runs == 1
    (logged,) = [r for r in caplog.records if "worker crashed while stopping" in r.getMessage()]
    assert logged.exc_info is not None and "storage is closed" in repr(logged.exc_info[1])


async def test_an_error_group_without_a_cancellation_is_a_crash(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs = 0

    async def worker() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep_forever)
                raise RuntimeError("boom")

    await supervise("worker", worker, first_delay=1.0)
    assert runs == 3
