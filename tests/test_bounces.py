"""Reading returned mail: the corpus under tests/data/bounces (e2a-written samples of the MTAs
we meet, and GNU Mailman's flufl.bounce samples), the classification rules, and robustness."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from e2a_gateway.outbound.bounces import (
    AutoReply,
    Bounce,
    Complaint,
    Letter,
    Verdict,
    classify,
    read_returned_mail,
    returned_message_id,
)

pytestmark = pytest.mark.backend_independent

DATA = Path(__file__).parent / "data" / "bounces"
SAMPLES = sorted(
    p for p in DATA.glob("*/*") if p.suffix in {".eml", ".txt"} and "LICENSE" not in p.name
)


def read(name: str) -> Verdict | None:
    return read_returned_mail((DATA / name).read_bytes())


# file, [(address, bounce_type, status, action)], Message-ID of the returned message
E2A_BOUNCES = [
    (
        "gmail_address_not_found.eml",
        [("no-such-user@example.net", "permanent", "5.1.1", "failed")],
        "<3f1c9e0a7b2d4c5e8f6a1b2c3d4e5f60@agents.example.com>",
    ),
    (
        "gmail_delay.eml",
        [("slow-inbox@example.org", "transient", "4.4.2", "delayed")],
        "<9b0e7d6c5a4f3e2d1c0b9a8f7e6d5c4b@agents.example.com>",
    ),
    (
        "office365_ndr.eml",
        [("j.doe@contoso.example.com", "permanent", "5.1.10", "failed")],
        "<7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d@agents.example.com>",
    ),
    (
        "exchange2003_legacy.eml",
        [("ana.lopez@fabrikam.example.com", "permanent", "5.1.1", None)],
        None,
    ),
    (
        "postfix_user_unknown.eml",
        [("olduser@example.net", "permanent", "5.1.1", "failed")],
        "<d41d8cd98f00b204e9800998ecf8427e@agents.example.com>",
    ),
    (
        "postfix_delayed.eml",
        [("team@example.org", "transient", "4.4.1", "delayed")],
        "<0cc175b9c0f1b6a831c399e269772661@agents.example.com>",
    ),
    (
        "postfix_old_format.eml",
        [("tanaka@example.jp", "permanent", "5.2.1", None)],
        "<92eb5ffee6ae2fec3ad71c777531578f@agents.example.com>",
    ),
    (
        "exim_user_unknown.eml",
        [("m.smith@example.co.uk", "permanent", "5.1.1", "failed")],
        "<4a8a08f09d37b73795649038408b5f33@agents.example.com>",
    ),
    (
        "exim_quota_retry_timeout.eml",
        [("full.box@example.com", "transient", "4.2.2", None)],
        "<8277e0910d750195b448797616e091ad@agents.example.com>",
    ),
    (
        "qmail_remote_rejected.eml",
        [("lee@example.com", "permanent", "5.1.1", None)],
        "<e4da3b7fbbce2345d7772b0674a318d5@agents.example.com>",
    ),
    (
        "qmail_no_mailbox.eml",
        [("gone@example.org", "permanent", "5.1.1", None)],
        "<1679091c5a880faf6fb5e6087eb1b2dc@agents.example.com>",
    ),
    (
        "yahoo_failure_notice.eml",
        [("nobody.here.2024@yahoo.com", "permanent", "554", None)],
        "<c9f0f895fb98ab9159f51fd0297e236d@agents.example.com>",
    ),
    (
        "sendmail_v5_transcript.eml",
        [("prof.jones@legacy.example.edu", "permanent", "550", None)],
        "<45c48cce2e2d7fbdea1afc51c7c6ad26@agents.example.com>",
    ),
    (
        "sendmail_dsn.eml",
        [("r.kumar@example.com", "permanent", "5.1.1", "failed")],
        "<d3d9446802a44259755d38e6d163e820@agents.example.com>",
    ),
    (
        "sendmail_fatal_errors_plain.eml",
        [("hans@nonexistent.example.de", "permanent", "5.1.2", None)],
        "<6512bd43d9caa6e02c990b0a82652dca@agents.example.com>",
    ),
    (
        "dsn_mailbox_full.eml",
        [("busy@example.net", "transient", "5.2.2", "failed")],
        None,
    ),
    (
        "dsn_several_recipients.eml",
        [
            ("a.one@example.com", "permanent", "5.1.1", "failed"),
            ("b.two@example.org", "permanent", "5.7.1", "failed"),
            ("c.three@example.net", "transient", "4.7.1", "delayed"),
        ],
        "<c20ad4d76fe97759aa27a0c99bff6710@agents.example.com>",
    ),
    (
        "dsn_base64_status.eml",
        [("archive@example.org", "permanent", "5.1.2", "failed")],
        "<aab3238922bcc25a6f606eb525ffdc56@agents.example.com>",
    ),
    (
        "dsn_global_utf8.eml",
        [("fran\u00e7oise@exemple.example.fr", "permanent", "5.1.1", "failed")],
        "<9bf31c7ff062936a96d3c8bd1f8f2ff3@agents.example.com>",
    ),
]

# flufl.bounce's samples: the addresses are the ones its own tests expect; the types and codes
# are what the notices say (None where they give no code).
FLUFL_BOUNCES = [
    ("dsn_01.txt", [("userx@example.com", "permanent", "5.0.0")]),
    ("dsn_02.txt", [("zzzzz@example.uk", "transient", "4.4.7")]),
    ("dsn_03.txt", [("userx@example.be", "permanent", "553")]),
    ("dsn_04.txt", [("userx@example.ch", "permanent", "5.0.0")]),
    ("dsn_05.txt", [("userx@example.cz", "transient", "4.4.1")]),
    ("dsn_06.txt", [("userx@example.com", "transient", "4.4.0")]),
    ("dsn_07.txt", [("userx@example.nz", "transient", "4.4.1")]),
    ("dsn_08.txt", [("userx@example.de", "transient", "4.0.0")]),
    ("dsn_09.txt", [("userx@example.com", "permanent", "5.0.0")]),
    ("dsn_10.txt", [("anne.person@dom.ain", "permanent", "5.0.0")]),
    ("dsn_11.txt", [("joem@example.com", "permanent", "5.1.1")]),
    ("dsn_12.txt", [("userx@example.jp", "permanent", "5.1.1")]),
    ("dsn_13.txt", [("userx@example.com", "permanent", "5.1.1")]),
    ("dsn_14.txt", [("userx@example.com.dk", "permanent", "5.1.1")]),
    ("dsn_15.txt", [("userx@example.com", "undetermined", None)]),
    ("dsn_16.txt", [("userx@example.com", "permanent", "5.0.0")]),
    ("dsn_17.txt", [("userx@example.fi", "transient", "4.3.0")]),
    ("dsn_18.txt", [("email@replaced.net", "permanent", "5.0.0")]),
    ("exim_01.txt", [("userx@its.example.nl", "permanent", "5.1.1")]),
    ("groupwise_02.txt", [("userx@example.com", "undetermined", None)]),
    ("microsoft_01.txt", [("userx@example.COM", "undetermined", None)]),
    ("microsoft_02.txt", [("userx@example.COM", "undetermined", None)]),
    ("microsoft_03.txt", [("userx@example.com", "undetermined", None)]),
    ("microsoft_04.txt", [("userx@example.COM", "undetermined", None)]),
    ("postfix_01.txt", [("xxxxx@local.ie", "permanent", "5.1.1")]),
    ("postfix_02.txt", [("yyyyy@digicool.com", "undetermined", None)]),
    ("postfix_03.txt", [("ttttt@ggggg.com", "undetermined", None)]),
    ("postfix_04.txt", [("userx@mail1.example.com", "undetermined", None)]),
    ("postfix_05.txt", [("userx@example.net", "permanent", "554")]),
    ("qmail_01.txt", [("userx@example.de", "permanent", None)]),
    ("qmail_02.txt", [("userx@example.com", "undetermined", None)]),
    ("qmail_03.txt", [("userx@example.jp", "permanent", "5.1.1")]),
    ("qmail_04.txt", [("userx@example.au", "permanent", "550")]),
    ("qmail_05.txt", [("userx@example.com", "permanent", "550")]),
    ("qmail_06.txt", [("ntl@xxx.com", "permanent", None)]),
    ("qmail_07.txt", [("user@example.net", "transient", "480")]),
    (
        "sendmail_01.txt",
        [("zzzzz@nfg.nl", "permanent", "554"), ("zzzzz@shaft.coal.nl", "permanent", None)],
    ),
    ("simple_03.txt", [("userx@example.za", "transient", None)]),
    ("simple_21.txt", [("userx@example.com", "transient", None)]),
    ("simple_38.txt", [("userx@example.com", "undetermined", None)]),
    ("yahoo_01.txt", [("userx@example.com", "transient", "4.4.1")]),
    ("yahoo_02.txt", [("userx@example.es", "undetermined", None)]),
    ("yahoo_03.txt", [("userx@example.com", "undetermined", None)]),
    (
        "yahoo_04.txt",
        [("userx@example.es", "undetermined", None), ("usery@example.uk", "undetermined", None)],
    ),
    (
        "yahoo_05.txt",
        [("userx@example.com", "undetermined", None), ("usery@example.com", "undetermined", None)],
    ),
    (
        "yahoo_06.txt",
        [
            ("usera@example.com", "undetermined", None),
            ("userx@example.com", "undetermined", None),
            ("usery@example.com", "undetermined", None),
            ("userz@example.com", "undetermined", None),
        ],
    ),
    (
        "yahoo_07.txt",
        [
            ("userw@example.com", "undetermined", None),
            ("userx@example.com", "undetermined", None),
            ("usery@example.com", "undetermined", None),
            ("userz@example.com", "undetermined", None),
        ],
    ),
    (
        "yahoo_08.txt",
        [
            ("usera@example.com", "undetermined", None),
            ("userb@example.com", "undetermined", None),
            ("userc@example.com", "undetermined", None),
            ("userd@example.com", "undetermined", None),
            ("usere@example.com", "undetermined", None),
            ("userf@example.com", "undetermined", None),
        ],
    ),
    (
        "yahoo_09.txt",
        [("userx@example.com", "undetermined", None), ("usery@example.com", "undetermined", None)],
    ),
    (
        "yahoo_10.txt",
        [
            ("userx@example.com", "undetermined", None),
            ("usery@example.com", "undetermined", None),
            ("userz@example.com", "undetermined", None),
        ],
    ),
    ("yahoo_11.txt", [("bad_user@aol.com", "permanent", "5.1.1")]),
    ("yahoo_12.txt", [("user@yahoo.com", "permanent", None)]),
    ("yahoo_13.txt", [("bogus-address@example.net", "permanent", "5.1.1")]),
]


@pytest.mark.parametrize(("name", "expected", "message_id"), E2A_BOUNCES)
def test_bounce_recipients_codes_and_types(
    name: str, expected: list[tuple[str, str, str | None, str | None]], message_id: str | None
) -> None:
    verdict = read(f"e2a/{name}")
    assert isinstance(verdict, Bounce)
    got = [(r.address, r.bounce_type, r.status, r.action) for r in verdict.recipients]
    assert got == expected
    assert verdict.original_message_id == message_id


@pytest.mark.parametrize(("name", "expected"), FLUFL_BOUNCES)
def test_flufl_samples(name: str, expected: list[tuple[str, str, str | None]]) -> None:
    verdict = read(f"flufl/{name}")
    assert isinstance(verdict, Bounce)
    assert [(r.address, r.bounce_type, r.status) for r in verdict.recipients] == expected


def test_dsn_details_diagnostic_remote_and_reporting_mta() -> None:
    verdict = read("e2a/gmail_address_not_found.eml")
    assert isinstance(verdict, Bounce)
    assert verdict.source == "rfc3464"
    assert verdict.reporting_mta == "googlemail.com"
    [recipient] = verdict.recipients
    assert recipient.remote_mta == "mx1.example.net"  # the comment after the name is dropped
    assert recipient.diagnostic is not None
    assert recipient.diagnostic.startswith("smtp; 550-5.1.1 The email account")
    assert "\n" not in recipient.diagnostic


def test_original_recipient_is_the_address_and_final_recipient_is_kept() -> None:
    verdict = read("e2a/dsn_several_recipients.eml")
    assert isinstance(verdict, Bounce)
    forwarded = verdict.recipients[2]
    assert (forwarded.address, forwarded.final_address) == (
        "c.three@example.net",
        "forwarded@example.net",
    )
    assert verdict.recipients[0].final_address is None  # the same address: not repeated


def test_relayed_recipient_of_a_report_is_not_a_bounce() -> None:
    verdict = read("e2a/dsn_several_recipients.eml")
    assert isinstance(verdict, Bounce)
    assert "d.four@example.com" not in {r.address for r in verdict.recipients}


def test_report_of_successful_delivery_only_is_none() -> None:
    assert read("e2a/dsn_delivered_only.eml") is None


def test_diagnostic_code_refines_an_unspecific_status() -> None:
    """Exim's report says `Status: 5.0.0` and the diagnostic `550 5.1.1`: the latter is kept."""
    verdict = read("e2a/exim_user_unknown.eml")
    assert isinstance(verdict, Bounce)
    assert verdict.recipients[0].status == "5.1.1"


def report_with_status(status: str, diagnostic: str | None) -> bytes:
    """An RFC 3464 report of one failed recipient with `Status: <status>`."""
    diagnostic_field = f"Diagnostic-Code: {diagnostic}\r\n" if diagnostic else ""
    return (
        "From: MAILER-DAEMON@mx.example.org\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n'
        "\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n\r\n"
        f"Final-Recipient: rfc822; gone@example.net\r\nAction: failed\r\nStatus: {status}\r\n"
        f"{diagnostic_field}--b--\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("status", "diagnostic", "expected"),
    [
        ("5.1", None, (None, "undetermined", "Status: 5.1 (not an RFC 3463 status code)")),
        ("5.1.1.1", None, (None, "undetermined", "Status: 5.1.1.1 (not an RFC 3463 status code)")),
        ("abc", None, (None, "undetermined", "Status: abc (not an RFC 3463 status code)")),
        (
            "5.1",
            "smtp; 550 5.1.1 no such user",
            ("5.1.1", "permanent", "smtp; 550 5.1.1 no such user"),
        ),
        ("5.1.1 (user unknown)", None, ("5.1.1", "permanent", "5.1.1")),
        ("5.1.10", None, ("5.1.10", "permanent", "5.1.10")),
    ],
)
def test_a_status_that_is_no_status_code_is_not_guessed_at(
    status: str, diagnostic: str | None, expected: tuple[str | None, str, str]
) -> None:
    """`5.1`, `5.1.1.1` and `abc` are no RFC 3463 codes: the code is the Diagnostic-Code's, else
    none (`undetermined`: no address suppressed on a guess), and the detail quotes the Status."""
    verdict = read_returned_mail(report_with_status(status, diagnostic))
    assert isinstance(verdict, Bounce)
    (recipient,) = verdict.recipients
    assert (recipient.status, recipient.bounce_type, recipient.detail) == expected


def test_non_standard_bounce_reads_code_and_remote_host_from_text() -> None:
    verdict = read("e2a/qmail_remote_rejected.eml")
    assert isinstance(verdict, Bounce)
    assert verdict.source == "flufl.bounce"
    [recipient] = verdict.recipients
    assert recipient.remote_mta == "203.0.113.44"
    assert recipient.diagnostic is not None
    assert "Recipient address rejected: User unknown" in recipient.diagnostic
    assert "Below this line" not in recipient.diagnostic  # the returned message is not read


def test_crlf_line_endings_read_the_same() -> None:
    for name in ("e2a/postfix_user_unknown.eml", "e2a/qmail_remote_rejected.eml"):
        raw = (DATA / name).read_bytes()
        assert read_returned_mail(raw.replace(b"\n", b"\r\n")) == read_returned_mail(raw)


@pytest.mark.parametrize(
    ("name", "recipients", "feedback_type", "message_id"),
    [
        (
            "e2a/arf_abuse_report.eml",
            ("deals.reader@example.net",),
            "abuse",
            "<3c59dc048e8850243be8079a5c74d079@agents.example.com>",
        ),
        (  # its returned headers' To is no complainant: the Cc or Bcc may have complained
            "e2a/arf_redacted_headers.eml",
            (),
            "abuse",
            "<b6d767d2f8ed5d21a44b0e5886680cb9@agents.example.com>",
        ),
    ],
)
def test_feedback_report_is_a_complaint(
    name: str, recipients: tuple[str, ...], feedback_type: str, message_id: str
) -> None:
    verdict = read(name)
    assert isinstance(verdict, Complaint)
    assert verdict.recipients == recipients
    assert verdict.feedback_type == feedback_type
    assert verdict.original_message_id == message_id


def test_microsofts_feedback_loop_names_the_complainant_in_the_returned_message() -> None:
    raw = (DATA / "e2a/arf_redacted_headers.eml").read_bytes()
    jmrp = raw.replace(
        b"To: spam.hater@example.com",
        b"X-HmXmrOriginalRecipient: <Cc.Reader@outlook.example>\nTo: spam.hater@example.com",
    )
    verdict = read_returned_mail(jmrp)
    assert isinstance(verdict, Complaint)
    assert verdict.recipients == ("Cc.Reader@outlook.example",)


@pytest.mark.parametrize("feedback_type", ["not-spam", "Not-Spam", "auth-failure"])
def test_feedback_report_that_complains_of_nothing_is_no_complaint(feedback_type: str) -> None:
    raw = (DATA / "e2a/arf_abuse_report.eml").read_bytes()
    assert isinstance(read_returned_mail(raw), Complaint)
    report = raw.replace(b"Feedback-Type: abuse", f"Feedback-Type: {feedback_type}".encode())
    assert read_returned_mail(report) is None


@pytest.mark.parametrize(
    ("name", "marker", "in_reply_to"),
    [
        (
            "e2a/autoreply_rfc3834_vacation.eml",
            "Auto-Submitted: auto-replied (vacation)",
            "<70efdf2ec9b086079795c442636b55fb@agents.example.com>",
        ),
        (
            "e2a/autoreply_outlook_automatic_reply.eml",
            "Auto-Submitted: auto-generated",
            "<1f0e3dad99908345f7439f8ffabdffc4@agents.example.com>",
        ),
        (
            "e2a/autoreply_x_autoreply.eml",
            "X-Autoreply: yes",
            "<98f13708210194c475687be6106a3b84@agents.example.com>",
        ),
        ("e2a/autoreply_precedence_subject.eml", "Precedence: auto_reply", None),
        ("flufl/qmail_08.txt", "Precedence: auto_reply", None),
    ],
)
def test_auto_reply_is_not_a_bounce(name: str, marker: str, in_reply_to: str | None) -> None:
    verdict = read(name)
    assert isinstance(verdict, AutoReply)
    assert verdict.marker == marker
    assert verdict.original_message_id == in_reply_to


def test_auto_submitted_bounce_from_a_mailer_daemon_stays_a_bounce() -> None:
    """MTAs mark their bounces `Auto-Submitted: auto-replied` (RFC 3834 asks them to)."""
    raw = (DATA / "e2a/qmail_remote_rejected.eml").read_bytes()
    marked = raw.replace(
        b"Subject: failure notice", b"Subject: failure notice\nAuto-Submitted: auto-replied"
    )
    assert isinstance(read_returned_mail(marked), Bounce)


def test_auto_submitted_no_is_not_an_auto_reply() -> None:
    raw = (DATA / "e2a/ordinary_reply.eml").read_bytes()
    marked = raw.replace(b"MIME-Version", b"Auto-Submitted: no\nMIME-Version")
    assert read_returned_mail(marked) == Letter()


@pytest.mark.parametrize("name", ["e2a/ordinary_reply.eml", "e2a/ordinary_newsletter.eml"])
def test_ordinary_mail_is_a_letter(name: str) -> None:
    assert read(name) == Letter()


@pytest.mark.parametrize(
    "marking",
    [
        b"From: MAILER-DAEMON@mx.example.net\n",
        b"From: Kim Park <kim@example.com>\nContent-Type: multipart/report;"
        b' report-type=disposition-notification; boundary="b"\n',
    ],
)
def test_a_machines_notice_naming_no_failure_is_no_letter(marking: bytes) -> None:
    """A notice from a mailer daemon, or any report, is about delivery, not a person's
    letter, even when no failure in it can be read."""
    raw = marking + b"Subject: Re: Your ticket\n\nThanks, that fixed it.\n"
    assert read_returned_mail(raw) is None
    assert read_returned_mail(raw.replace(marking, b"From: Kim Park <kim@example.com>\n")) == (
        Letter()
    )


@pytest.mark.parametrize(
    ("status", "action", "expected"),
    [
        ("5.1.1", "failed", "permanent"),
        ("5.7.1", "failed", "permanent"),
        ("5.1.10", "failed", "permanent"),
        ("4.4.7", "failed", "transient"),
        ("4.2.2", None, "transient"),
        ("5.1.1", "delayed", "transient"),
        ("5.2.2", "failed", "transient"),
        ("5.2.3", "failed", "transient"),
        ("5.3.4", "failed", "transient"),
        ("5.1.7", "failed", "transient"),
        ("5.1.8", "failed", "transient"),
        ("5.7.26", "failed", "transient"),
        ("5.7.23", "failed", "transient"),
        ("5.7.27", "failed", "transient"),
        ("5.7.28", "failed", "transient"),
        ("5.7.30", "failed", "permanent"),
        ("5.7.2", "failed", "permanent"),
        ("550", None, "permanent"),
        ("552", None, "transient"),
        ("421", None, "transient"),
        ("2.0.0", "failed", "undetermined"),
        (None, "failed", "undetermined"),
        (None, "delayed", "transient"),
    ],
)
def test_classify(status: str | None, action: str | None, expected: str) -> None:
    assert classify(status, action) == expected


def test_returned_message_id_from_inline_copy_and_parts() -> None:
    qmail = (DATA / "e2a/qmail_no_mailbox.eml").read_bytes()
    assert returned_message_id(qmail) == "<1679091c5a880faf6fb5e6087eb1b2dc@agents.example.com>"
    headers_part = (DATA / "e2a/postfix_delayed.eml").read_bytes()
    assert (
        returned_message_id(headers_part) == "<0cc175b9c0f1b6a831c399e269772661@agents.example.com>"
    )
    assert returned_message_id((DATA / "e2a/dsn_mailbox_full.eml").read_bytes()) is None


def test_corpus_is_fully_recognised() -> None:
    """Every sample of the corpus gets a verdict except the success report, which must get
    none; the ordinary mail alone reads as a letter."""
    letters = {"ordinary_reply.eml", "ordinary_newsletter.eml"}
    for path in SAMPLES:
        verdict = read_returned_mail(path.read_bytes())
        assert (verdict is None) == (path.name == "dsn_delivered_only.eml"), path.name
        assert isinstance(verdict, Letter) == (path.name in letters), path.name


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    logging.getLogger("flufl.bounce").disabled = True
    try:
        read_returned_mail(raw)
    finally:
        logging.getLogger("flufl.bounce").disabled = False


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(SAMPLES), st.floats(min_value=0, max_value=1), st.binary(max_size=64))
def test_truncated_or_garbled_samples_never_raise(path: Path, cut: float, noise: bytes) -> None:
    raw = path.read_bytes()
    at = int(len(raw) * cut)
    logging.getLogger("flufl.bounce").disabled = True
    try:
        read_returned_mail(raw[:at] + noise)
    finally:
        logging.getLogger("flufl.bounce").disabled = False


def test_a_charset_name_with_a_null_character_does_not_raise() -> None:
    """Found by test_truncated_or_garbled_samples_never_raise: such a name is no LookupError
    for bytes.decode but a ValueError; the part is read as UTF-8 like any unknown charset."""
    raw = (
        b"From: MAILER-DAEMON@example.org\r\nTo: x@agents.test\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\n"
        b'Content-Type: text/html; charset="ab\x00c"\r\n\r\n<p>delivery failed</p>\r\n'
    )
    read_returned_mail(raw)


def exim_delay_warning(return_path: str, recipient: str) -> bytes:
    """Exim's delay warning in its plain form (no delivery-status part)."""
    return (
        "From: Mail Delivery System <Mailer-Daemon@mx.example.co.uk>\r\n"
        f"To: {return_path}\r\n"
        "Subject: Warning: message 1kXyZa-0001Ab-Cd delayed 24 hours\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "\r\n"
        "This message was created automatically by mail delivery software.\r\n"
        "A message that you sent has not yet been delivered to one or more of its\r\n"
        "recipients after more than 24 hours on the queue on mx.example.co.uk.\r\n"
        "\r\n"
        "The address to which the message has not yet been delivered is:\r\n"
        "\r\n"
        f"  {recipient}\r\n"
        "    host mx.example.org [192.0.2.5]\r\n"
        f"    Delay reason: SMTP error from remote mail server after RCPT TO:<{recipient}>:\r\n"
        "    451 4.7.1 Greylisted, try again later\r\n"
        "\r\n"
        "No action is required on your part. Delivery attempts will continue for\r\n"
        "some time, and this warning may be repeated at intervals if the message\r\n"
        "remains undelivered.\r\n"
    ).encode()


def test_a_plain_delay_warning_says_the_recipient_is_still_tried() -> None:
    verdict = read_returned_mail(exim_delay_warning("bounces+x@agents.example.com", "a@b.example"))
    assert isinstance(verdict, Bounce)
    ((address, bounce_type, action),) = [
        (item.address, item.bounce_type, item.action) for item in verdict.recipients
    ]
    assert (address, bounce_type, action) == ("a@b.example", "transient", "delayed")


def test_a_notice_whose_from_nests_comments_deeply_is_read() -> None:
    """The stdlib reads nested comments by recursion: a notice whose From nests a few thousand
    raised RecursionError out of the reading, so the notice was never taken."""
    nested = b"\r\n ".join([b"(" * 800] * 5 + [b")" * 800] * 5)
    raw = (
        b"From: " + nested + b" <MAILER-DAEMON@mx.example.org>\r\nTo: b@example.com\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\nContent-Type: text/plain\r\n\r\n"
        b"<carol@example.net>: host mx.example.org[192.0.2.5] said: 550 5.1.1 unknown user\r\n"
    )
    verdict = read_returned_mail(raw)
    assert isinstance(verdict, Bounce)
    assert [(r.address, r.bounce_type, r.status) for r in verdict.recipients] == [
        ("carol@example.net", "permanent", "5.1.1")
    ]


def nested_bounce(depth: int) -> bytes:
    """A delivery status notification whose returned message nests `depth` multiparts."""
    head = (
        b"From: MAILER-DAEMON@mx.example.net\r\nTo: bounce@agents.test\r\n"
        b"Subject: Undelivered Mail\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\r\n\r\n'
        b"--r\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        b"--r\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.example.net\r\n\r\n"
        b"Final-Recipient: rfc822; gone@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        b'--r\r\nContent-Type: multipart/mixed; boundary="b0"\r\n\r\n'
    )
    opened = b"".join(
        b'--b%d\r\nContent-Type: multipart/mixed; boundary="b%d"\r\n\r\n' % (level - 1, level)
        for level in range(1, depth)
    )
    inner = b"--b%d\r\nContent-Type: text/plain\r\n\r\nThe returned text.\r\n" % (depth - 1)
    closed = b"".join(b"--b%d--\r\n" % level for level in reversed(range(depth)))
    return head + opened + inner + closed + b"--r--\r\n"


def test_a_bounce_returning_mail_nested_past_the_parsers_reach_is_still_read() -> None:
    """Returned mail nested a thousand levels deep made the stdlib's parser raise
    RecursionError, so the bounce was never read (and its SMTP transaction failed); it is read
    to e2a's nesting bound, as received mail is, and its report found."""
    for depth in (5, 1200):
        verdict = read_returned_mail(nested_bounce(depth))
        assert isinstance(verdict, Bounce), depth
        assert [(r.address, r.status) for r in verdict.recipients] == [
            ("gone@example.net", "5.1.1")
        ]
        assert returned_message_id(nested_bounce(depth)) is None
