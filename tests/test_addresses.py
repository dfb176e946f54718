"""One domain rule for the whole gateway: what the API registers, what SMTP routes and what
DMARC judges is the same name."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from e2a_gateway.addresses import (
    AddressError,
    Mailbox,
    a_label_domain,
    comparable_address,
    format_mailbox,
    normalise_address,
    normalise_domain,
    normalise_recipient,
    parse_mailbox,
    parse_mailboxes,
    unsendable,
)
from e2a_gateway.mailauth.dmarc import normalise_domain as dmarc_domain
from e2a_gateway.smtp.protocol import ServerSession, SessionLimits

pytestmark = pytest.mark.backend_independent

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


@pytest.mark.parametrize(
    ("text", "mailbox", "formatted"),
    [
        ("Help@Example.COM", Mailbox("", "help@example.com"), "help@example.com"),
        (" <help@example.com> ", Mailbox("", "help@example.com"), "help@example.com"),
        (
            "Support Desk <help@example.com>",
            Mailbox("Support Desk", "help@example.com"),
            "Support Desk <help@example.com>",
        ),
        (
            "  Support   Desk<help@example.com>",
            Mailbox("Support Desk", "help@example.com"),
            "Support Desk <help@example.com>",
        ),
        (
            '"Doe, Jane" <jane@example.com>',
            Mailbox("Doe, Jane", "jane@example.com"),
            '"Doe, Jane" <jane@example.com>',
        ),
        (
            r'"The \"Desk\" \\ 1" <d@example.com>',
            Mailbox('The "Desk" \\ 1', "d@example.com"),
            r'"The \"Desk\" \\ 1" <d@example.com>',
        ),
        (
            "J. R. R. Tolkien <jrr@example.com>",
            Mailbox("J. R. R. Tolkien", "jrr@example.com"),
            '"J. R. R. Tolkien" <jrr@example.com>',
        ),
        (
            "Støtte Ålesund <hjelp@bücher.example>",
            Mailbox("Støtte Ålesund", "hjelp@xn--bcher-kva.example"),
            "Støtte Ålesund <hjelp@xn--bcher-kva.example>",
        ),
        ('"" <a@example.com>', Mailbox("", "a@example.com"), "a@example.com"),
    ],
)
def test_a_mailbox_is_read_with_its_display_name_and_written_back(
    text: str, mailbox: Mailbox, formatted: str
) -> None:
    assert parse_mailbox(text) == mailbox
    assert format_mailbox(mailbox) == formatted
    assert parse_mailbox(formatted) == mailbox


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "is empty"),
        ("help@example.com\r\nBcc: victim@example.org", "line breaks or control characters"),
        ("Desk <help@example.com>\nBcc: victim@example.org", "line breaks or control characters"),
        ("Desk\u2028 <help@example.com>", "line breaks or control characters"),
        ("a@example.com, b@example.com", "more than one address"),
        ("Doe, Jane <jane@example.com>", "more than one address"),
        ("Desk <a@example.com>, Desk <b@example.com>", "more than one address"),
        ("Desk help@example.com", "write a display name as Name <addr@example.com>"),
        ("Desk <help@example.com", "write a display name as Name <addr@example.com>"),
        ("Desk <<help@example.com>>", "unbalanced angle brackets"),
        ('"Desk <help@example.com>', "never closed"),
        ('"Desk" x <help@example.com>', "one double-quoted string"),
        ("Desk (help) <help@example.com>", "in double quotes"),
        ("Desk@home <help@example.com>", "in double quotes"),
        ("=?utf-8?q?Bank?= <help@example.com>", "encoded word"),
        ("Desk <not an address>", "not a valid email address"),
        ("Desk <help@localhost>", "not a fully qualified domain name"),
        ("Desk <>", "not a valid email address"),
    ],
)
def test_a_malformed_mailbox_is_refused_saying_why(text: str, problem: str) -> None:
    with pytest.raises(AddressError, match=re.escape(problem)):
        parse_mailbox(text)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("x" * 100_000 + "@example.com", "x" * 50),
        ("Desk <" + "x" * 100_000 + ">", "x" * 50),
        ("a@" + "b" * 100_000, "b" * 50),
        ('"' + "Desk " * 20_000, "'\"Desk Desk Desk"),
    ],
    ids=["local part", "in a mailbox", "domain", "display name"],
)
def test_a_long_refused_address_is_named_by_its_start_not_echoed_whole(
    text: str, named: str
) -> None:
    """An error says what was refused and how long it was, in a few hundred characters: a
    100,000-character address was repeated whole in the answer (and in every log line)."""
    with pytest.raises(AddressError) as refused:
        parse_mailbox(text)
    message = str(refused.value)
    assert len(message) < 400, message
    assert named in message and "characters more" in message


def test_mailboxes_joined_by_commas_are_read_back_one_by_one() -> None:
    mailboxes = [
        Mailbox("Doe, Jane", "jane@example.com"),
        Mailbox("", "desk@example.com"),
        Mailbox('Say "hi", <now>', "hi@example.com"),
    ]
    joined = ", ".join(format_mailbox(mailbox) for mailbox in mailboxes)
    assert parse_mailboxes(joined) == mailboxes


@given(
    st.text(alphabet=st.characters(codec="utf-8", categories=["L", "N", "P", "S"]) | st.just(" "))
)
def test_any_display_name_survives_formatting_and_parsing(name: str) -> None:
    """Any printable name, quoted, is read as itself and written so that it reads back the same
    (but a name that looks like an RFC 2047 encoded word, refused)."""
    quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '" <a@example.com>'
    if "=?" in name:
        with pytest.raises(AddressError, match="encoded word"):
            parse_mailbox(quoted)
        return
    mailbox = parse_mailbox(quoted)
    assert mailbox == Mailbox(name.strip(), "a@example.com")
    assert parse_mailbox(format_mailbox(mailbox)) == mailbox
    assert parse_mailboxes(format_mailbox(mailbox) + ", b@example.com")[0] == mailbox


def test_unsendable_says_why_e2a_sends_no_mail_to_an_address() -> None:
    assert unsendable("bob@example.com") is None
    assert unsendable("bob@Bücher.example") is None  # sent to as A-labels
    assert unsendable("josé@example.com") is None  # sent with SMTPUTF8 (RFC 6531)
    assert "not in Unicode NFC" in (unsendable("\u212aate@example.com") or "")
    assert "quoted local part" in (unsendable('"sales team"@example.com') or "")
    assert "not a fully qualified domain name" in (unsendable("admin@intranet") or "")
    assert "not a valid domain name" in (unsendable("lab@[192.0.2.1]") or "")


def test_a_recipient_beyond_ascii_keeps_its_local_part_and_gets_a_labels() -> None:
    """RFC 6531: the local part as given (its case too: only ASCII ones are lowercased), the
    domain as lowercase A-labels, which the relay looks it up by."""
    assert normalise_recipient("José@Bücher.Example") == "José@xn--bcher-kva.example"
    assert normalise_recipient("Bob@Bücher.example") == "bob@xn--bcher-kva.example"
    assert normalise_recipient("用户@例子.测试") == "用户@xn--fsqu00a.xn--0zwm56d"


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("\u212aate@example.org", "not in Unicode NFC"),  # NFC makes it kate@: never sent there
        ("jos\u0065\u0301@example.com", "not in Unicode NFC"),
        ("jos\x85é@example.com", "U+0085"),
        ("jos\ud800é@example.com", "U+D800"),  # no valid UTF-8
        ("jo\u3000sé@example.com", "U+3000"),
        ("jo..sé@example.com", "not a valid email address"),
        ('"josé"@example.com', "not a valid email address"),
        ("é" * 33 + "@example.com", "over 64 octets"),
        ("bob@☃.example", "not a valid internationalised domain name"),
        ("bob@bü--cher.example", "not a valid internationalised domain name"),
        ("bob@\u0301bücher.example", "not a valid internationalised domain name"),
        ("josé@intranet", "not a fully qualified domain name"),
    ],
)
def test_a_recipient_that_is_no_valid_address_is_refused_saying_why(
    address: str, reason: str
) -> None:
    with pytest.raises(AddressError, match=re.escape(reason)):
        normalise_recipient(address)


def test_an_agent_address_stays_plain_ascii() -> None:
    with pytest.raises(AddressError, match="an agent's address is plain ASCII"):
        normalise_address("josé@example.com")


@pytest.mark.parametrize(
    ("address", "compared"),
    [
        ('"Friend"@Example.org', "friend@example.org"),
        ('"first.last"@example.org', "first.last@example.org"),
        ("friend@example.org.", "friend@example.org"),
        ('"a..b"@example.org', '"a..b"@example.org'),  # no atom: the quotes are needed
        ('"a\\b"@example.org', '"a\\b"@example.org'),
        ('""@example.org', '""@example.org'),
    ],
)
def test_gates_compare_a_needlessly_quoted_local_part_as_its_atom(
    address: str, compared: str
) -> None:
    assert comparable_address(address) == compared
