"""The retry schedules (e2a_gateway/workers/retry_schedules.py) with plain data: the contract's
values (delivery.md, hitl.md) and the rules every `Backoff` keeps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from e2a_gateway.workers.retry_schedules import (
    APPROVAL_NOTICE,
    OUTBOUND_HAND_OFF,
    OUTBOUND_INTERNAL_ERROR,
    SUBSCRIBER_DELIVERY,
    WEBHOOK_DELIVERY,
    Backoff,
    RetrySchedule,
)

pytestmark = pytest.mark.backend_independent

NOW = 1_800_000_000.0
DAY = 24 * 3600.0
HOUR = 3600.0


def middle(low: float, high: float) -> float:
    return (low + high) / 2


def lowest(low: float, high: float) -> float:
    return low


def highest(low: float, high: float) -> float:
    return high


def delays(schedule: RetrySchedule, attempts: range) -> list[float | None]:
    """The wait after each failed attempt, every one made at NOW (jitter at its middle)."""
    waits: list[float | None] = []
    for attempt in attempts:
        at = schedule.next_attempt_at(attempt, now=NOW, first_at=NOW, uniform=middle)
        waits.append(None if at is None else at - NOW)
    return waits


@pytest.mark.parametrize("schedule", [WEBHOOK_DELIVERY, OUTBOUND_HAND_OFF])
def test_deliveries_and_hand_offs_double_from_30_seconds_to_an_hour_for_a_day(
    schedule: Backoff,
) -> None:
    assert delays(schedule, range(1, 10)) == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert schedule.jitter == 0.2
    assert schedule.delay(1, lowest) == pytest.approx(24.0)
    assert schedule.delay(1, highest) == pytest.approx(36.0)
    assert schedule.delay(50, highest) == pytest.approx(HOUR * 1.2)
    window_end = NOW + DAY
    assert schedule.next_attempt_at(9, now=window_end - 60, first_at=NOW) == window_end
    assert schedule.next_attempt_at(10, now=window_end, first_at=NOW) is None
    assert schedule.next_attempt_at(10, now=window_end + 1, first_at=NOW) is None


def test_webhook_delivery_honours_retry_after_as_a_minimum_within_the_day() -> None:
    def after(retry_after: float, now: float = NOW) -> float | None:
        return WEBHOOK_DELIVERY.next_attempt_at(
            1, now=now, first_at=NOW, retry_after=retry_after, uniform=middle
        )

    assert after(120.0) == NOW + 120
    assert after(5.0) == NOW + 30
    assert after(10 * DAY, now=NOW + DAY - 60) == NOW + DAY


def test_an_internal_error_is_retried_four_times_then_the_send_fails() -> None:
    assert delays(OUTBOUND_INTERNAL_ERROR, range(1, 7)) == [30, 60, 120, 240, None, None]
    far_later = NOW + 30 * DAY  # no window: only the attempts count
    assert OUTBOUND_INTERNAL_ERROR.next_attempt_at(1, now=far_later, first_at=NOW) is not None


def test_approval_notices_double_from_30_seconds_to_an_hour_without_jitter() -> None:
    assert delays(APPROVAL_NOTICE, range(1, 10)) == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert APPROVAL_NOTICE.next_attempt_at(1, now=NOW, first_at=NOW, uniform=highest) == NOW + 30
    assert APPROVAL_NOTICE.next_attempt_at(10_000, now=NOW, first_at=NOW) == NOW + HOUR


SCHEDULES = st.builds(
    Backoff,
    first_seconds=st.floats(0.1, 600),
    max_seconds=st.floats(1, 7200),
    jitter=st.sampled_from([0.0, 0.1, 0.2, 0.5]),
    window_seconds=st.none() | st.floats(1, 7 * DAY),
    max_attempts=st.none() | st.integers(1, 20),
)


@given(
    schedule=SCHEDULES,
    attempt=st.integers(1, 10_000),
    elapsed=st.floats(0, 10 * DAY),
    retry_after=st.none() | st.floats(0, 10 * DAY),
    draw=st.floats(0, 1),
)
def test_a_backoff_never_goes_back_in_time_nor_past_its_window_or_attempts(
    schedule: Backoff,
    attempt: int,
    elapsed: float,
    retry_after: float | None,
    draw: float,
) -> None:
    def jitter(low: float, high: float) -> float:
        return low + (high - low) * draw

    now = NOW + elapsed
    at = schedule.next_attempt_at(
        attempt, now=now, first_at=NOW, retry_after=retry_after, uniform=jitter
    )
    window_end = None if schedule.window_seconds is None else NOW + schedule.window_seconds
    over = (schedule.max_attempts is not None and attempt >= schedule.max_attempts) or (
        window_end is not None and now >= window_end
    )
    if over:
        assert at is None
        return
    assert at is not None and at > now
    if window_end is not None:
        assert at <= window_end
    cap = min(schedule.first_seconds * 2 ** min(attempt - 1, 32), schedule.max_seconds)
    wait = max(cap * (1 - schedule.jitter), retry_after or 0.0)
    if window_end is None or now + wait <= window_end:
        assert at - now >= wait - 1e-3  # epoch floats resolve to about 1e-6 s


@given(schedule=SCHEDULES, attempt=st.integers(1, 60))
def test_without_jitter_each_delay_is_at_least_the_one_before(
    schedule: Backoff, attempt: int
) -> None:
    steady = Backoff(schedule.first_seconds, schedule.max_seconds)
    assert steady.delay(attempt + 1) >= steady.delay(attempt)
    assert steady.delay(attempt) <= max(schedule.first_seconds, schedule.max_seconds)


def test_subscriber_deliveries_wait_out_a_retry_after_up_to_the_longest_step() -> None:
    def after(retry_after: float) -> float | None:
        return SUBSCRIBER_DELIVERY.next_attempt_at(
            1, now=NOW, first_at=NOW, retry_after=retry_after
        )

    assert after(5.0) == NOW + 60
    assert after(600.0) == NOW + 600
    assert after(365 * DAY) == NOW + 16 * HOUR
    assert after(float("inf")) == NOW + 16 * HOUR
