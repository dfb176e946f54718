"""One domain rule for the whole gateway: what the API registers, what SMTP routes and what
DMARC judges is the same name."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from e2a_gateway.addresses import AddressError, a_label_domain, normalise_address, normalise_domain
from e2a_gateway.mailauth.dmarc import normalise_domain as dmarc_domain
from e2a_gateway.smtp.protocol import ServerSession, SessionLimits

HOST = "mx.agents.test"


def smtp_recipient_domain(domain: str) -> str | None:
    """The domain the SMTP listener would route `alice@domain` to, None if it refuses it."""
    session = ServerSession(HOST, SessionLimits())
    session.receive_data(
        b"EHLO c.example\r\nMAIL FROM:<a@example.org> SMTPUTF8\r\n"
        + f"RCPT TO:<alice@{domain}>\r\n".encode()
    )
    while (event := session.next_event()) is not None:
        address = getattr(event, "address", None)
        if address is not None:
            return str(address.domain)
    return None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Agents.Example.", "agents.example"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.example", "xn--bcher-kva.example"),
        ("straße.example", "xn--strae-oqa.example"),  # not folded to "strasse" (IDNA 2003)
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("agents.test\u3002evil", "agents.xn--testevil-rm3g"),  # "。" is no dot here
    ],
)
def test_api_smtp_and_dmarc_agree_on_a_name(name: str, expected: str) -> None:
    assert a_label_domain(name) == expected
    assert normalise_domain(name) == expected
    assert smtp_recipient_domain(name) == expected
    assert dmarc_domain(name) == expected
    assert normalise_address(f"Alice@{name}") == f"alice@{expected}"


@pytest.mark.parametrize(
    "name",
    [
        "\u212aelvin.example",  # KELVIN SIGN lowercases to ASCII "k": never merged with it
        "-bad.example",
        "bad-.example",
        "a..example",
        "x" * 64 + ".example",
        ".".join(["abcdefghi"] * 26) + ".example",  # over 253 characters
        "localhost",
    ],
)
def test_names_the_api_refuses(name: str) -> None:
    with pytest.raises(AddressError):
        normalise_domain(name)


@given(st.text(alphabet="abcü-.ßA0\u3002", min_size=1, max_size=30))
def test_whatever_the_api_accepts_smtp_routes_to_the_same_name(name: str) -> None:
    try:
        registered = normalise_domain(name)
    except AddressError:
        return
    assert smtp_recipient_domain(name) == registered
    assert dmarc_domain(name) == registered
