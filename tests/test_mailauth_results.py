"""Removing Authentication-Results fields forged in our name (RFC 8601 section 5)."""

from __future__ import annotations

import time

import pytest

from e2a_gateway.mailauth.results import without_results_of

pytestmark = pytest.mark.backend_independent

OURS = "mx.agents.test"
REST = b"From: a@example.org\r\nSubject: hi\r\n\r\nAuthentication-Results: mx.agents.test; body\r\n"


@pytest.mark.parametrize(
    "field",
    [
        b"Authentication-Results: mx.agents.test; dkim=pass header.d=example.org\r\n",
        b"authentication-results: MX.Agents.Test; spf=pass\r\n",
        b"Authentication-Results:mx.agents.test;spf=pass\r\n",
        b"Authentication-Results : mx.agents.test; spf=pass\r\n",
        b"Authentication-Results: mx.agents.test 1; spf=pass\r\n",
        b'Authentication-Results: "mx.agents.test"; spf=pass\r\n',
        b'Authentication-Results: "mx.agents\\.test"; spf=pass\r\n',
        b"Authentication-Results: (from (our) \\) relay) mx.agents.test; spf=pass\r\n",
        b"Authentication-Results:\r\n mx.agents.test;\r\n\tdkim=pass\r\n",
        b"Authentication-Results: mx.agents.test;\r\n",
    ],
    ids=repr,
)
def test_a_field_naming_us_is_removed_with_its_folded_lines(field: bytes) -> None:
    message = b"Received: from x\r\n" + field + REST
    assert without_results_of(message, OURS) == b"Received: from x\r\n" + REST


@pytest.mark.parametrize(
    "field",
    [
        b"Authentication-Results: other.example; spf=pass\r\n",
        b"Authentication-Results: mx.agents.test.evil.example; spf=pass\r\n",
        b"Authentication-Results: (mx.agents.test) relay.example; spf=pass\r\n",
        b'Authentication-Results: "mx.agents.test "; spf=pass\r\n',
        b"X-Authentication-Results: mx.agents.test; spf=pass\r\n",
        b"Old-Authentication-Results: mx.agents.test; spf=pass\r\n",
        b"Subject: Authentication-Results: mx.agents.test; spf=pass\r\n",
    ],
    ids=repr,
)
def test_other_fields_are_kept(field: bytes) -> None:
    message = field + REST
    assert without_results_of(message, OURS) == message


def test_every_field_naming_us_goes_and_the_rest_stays_in_order() -> None:
    message = (
        b"Authentication-Results: mx.agents.test; dkim=pass\r\n"
        b"Authentication-Results: relay.example; spf=fail\r\n"
        b"DKIM-Signature: v=1; d=example.org;\r\n\th=from\r\n"
        b"Authentication-Results: MX.AGENTS.TEST;\r\n dmarc=pass\r\n" + REST
    )
    assert without_results_of(message, OURS) == (
        b"Authentication-Results: relay.example; spf=fail\r\n"
        b"DKIM-Signature: v=1; d=example.org;\r\n\th=from\r\n" + REST
    )


def test_a_message_without_such_fields_is_returned_as_it_is() -> None:
    assert without_results_of(REST, OURS) is REST
    assert without_results_of(b"", OURS) == b""


def test_time_is_linear_in_the_header() -> None:
    """A field folded over 200,000 lines takes milliseconds; grown line by line as bytes
    (quadratic, as in dkimpy) it would take tens of seconds."""
    folded = b"Authentication-Results: mx.agents.test;\r\n" + b" a\r\n" * 200_000
    started = time.process_time()  # CPU time: other work on the machine does not count
    assert without_results_of(folded + REST, OURS) == REST
    assert time.process_time() - started < 2.0
