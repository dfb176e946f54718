"""The Authentication an inbound message's events carry, read from the gateway's own
Authentication-Results field: in the header section only, never from the body."""

from __future__ import annotations

import pytest

from e2a_gateway.events import inbound_authentication

pytestmark = pytest.mark.backend_independent

RESULTS = {"spf": "pass", "dkim": "none", "dmarc": "pass"}
OURS = (
    b"Authentication-Results: mx.agents.test; spf=pass smtp.mailfrom=example.org;\r\n"
    b" dmarc=pass header.from=example.org policy.dmarc=quarantine\r\n"
)
BEFORE = (
    b"Authentication-Results: mx.agents.test; spf=pass smtp.mailfrom=example.org;\r\n"
    b" dmarc=pass (p=quarantine) header.from=example.org\r\n"
)
"""Our field as the gateway wrote it before the policy was a property: in a comment."""


@pytest.mark.parametrize("ours", [OURS, BEFORE])
def test_the_policy_comes_from_the_gateways_field_folded_over_lines(ours: bytes) -> None:
    raw = ours + b"From: alice@example.org\r\nSubject: hi\r\n\r\nHello.\r\n"
    found = inbound_authentication("alice@example.org", RESULTS, raw)
    assert found["dmarc"] == {
        "status": "pass",
        "domain": "example.org",
        "policy": "quarantine",
        "aligned_by": [],
    }
    assert found["spf"]["status"] == "pass"


def test_a_field_written_in_the_body_is_not_read() -> None:
    raw = (
        b"From: alice@example.org\r\nSubject: hi\r\n\r\n"
        + OURS.replace(b"quarantine", b"reject")
        + b"x" * 100_000
    )
    found = inbound_authentication("alice@example.org", RESULTS, raw)
    assert found["dmarc"]["policy"] is None


def test_only_the_first_field_is_the_gateways() -> None:
    """Ours names no policy (the domain publishes none); the next field is the sender's."""
    ours = OURS.replace(b" policy.dmarc=quarantine", b"")
    theirs = b"Authentication-Results: mx.google.com; dmarc=pass (p=reject)\r\n"
    raw = ours + theirs + b"From: alice@example.org\r\n\r\nHello.\r\n"
    found = inbound_authentication("alice@example.org", RESULTS, raw)
    assert found["dmarc"]["policy"] is None


def test_unknown_verdicts_read_none() -> None:
    raw = b"From: alice@example.org\r\n\r\nHello.\r\n"
    found = inbound_authentication("alice@example.org", {"spf": "bogus"}, raw)
    assert (found["spf"]["status"], found["dmarc"]["status"]) == ("none", "none")
