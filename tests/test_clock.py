"""RFC 3339 times: written one way (`format_timestamp`), read strictly (`parse_timestamp`) by
everything that takes a time from a client, the database or a signed header."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from e2a_gateway.clock import format_timestamp, parse_timestamp

pytestmark = pytest.mark.backend_independent


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-31T12:00:00Z", datetime(2026, 1, 31, 12, tzinfo=UTC)),
        ("2026-01-31t12:00:00z", datetime(2026, 1, 31, 12, tzinfo=UTC)),
        ("2026-01-31T12:00:00+00:00", datetime(2026, 1, 31, 12, tzinfo=UTC)),
        (
            "2026-01-31T14:00:00.5+02:00",
            datetime(2026, 1, 31, 14, 0, 0, 500_000, tzinfo=timezone(timedelta(hours=2))),
        ),
        (
            "2026-01-31T12:00:00.123456789-05:30",
            datetime(2026, 1, 31, 12, 0, 0, 123_456, tzinfo=timezone(-timedelta(hours=5.5))),
        ),
    ],
)
def test_an_rfc_3339_time_is_read_with_its_offset(text: str, expected: datetime) -> None:
    moment = parse_timestamp(text)
    assert moment == expected and moment.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-31T12:00:00",  # no offset: which zone is meant?
        "2026-01-31",
        "2026-01-31T12:00Z",  # no seconds
        "2026-01-31 12:00:00Z",
        "20260131T120000Z",  # ISO 8601's basic format, not RFC 3339
        "2026-W05-6T12:00:00Z",
        "2026-02-30T00:00:00Z",  # no such day
        "2026-01-31T24:00:00Z",
        "2026-01-31T12:00:00+24:00",
        "2026-01-31T12:00:00+02:60",  # an offset's minutes run to 59, as a time's do
        "2026-01-31T12:00:00-00:99",
        "0000-01-01T00:00:00Z",
        "\uff12\uff10\uff12\uff16-01-31T12:00:00Z",  # digits, but not ASCII ones (fullwidth)
        " 2026-01-31T12:00:00Z",
        "2026-01-31T12:00:00Z\n",
        "yesterday",
        "",
    ],
)
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text)


@given(st.integers(min_value=-62_135_596_800, max_value=253_402_300_799))  # years 1 to 9999
def test_what_is_written_reads_back_as_the_same_second(seconds: int) -> None:
    assert parse_timestamp(format_timestamp(seconds)).timestamp() == seconds


def test_years_before_1000_are_written_in_four_digits() -> None:
    assert format_timestamp(-59_011_459_200) == "0100-01-01T00:00:00Z"
