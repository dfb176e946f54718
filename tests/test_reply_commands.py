"""The approval-reply rules, sans-IO: the command read from a reply's new text in the quoting
styles of common clients and languages, and the checks a reply must pass to act."""

# ruff: noqa: RUF001  (other scripts' letters and the full-width colon on purpose)
from __future__ import annotations

import pytest

from e2a_gateway.inbound.reply_commands import (
    MAX_REASON_LENGTH,
    ReplyCommand,
    ReplyFacts,
    answer_text,
    parse_command,
    refusal_of,
    unflow,
)
from e2a_gateway.signing.reply_tokens import (
    generate_reply_token,
    hash_reply_token,
    redact_reply_tokens,
    reply_address,
    token_in_local_part,
)

pytestmark = pytest.mark.backend_independent

GMAIL_CITE = "On Mon, Dec 1, 2026 at 10:00 AM e2a <e2a@mx.agents.test> wrote:"
NOTICE = "Your agent bot@agents.test wants to send an email that needs your approval.\n"
QUOTED = "".join(f"> {line}\n" for line in NOTICE.splitlines())
APPROVE = ReplyCommand(approve=True)

REPLIES = {
    "gmail": f"approve\n\n{GMAIL_CITE}\n\n{QUOTED}",
    "gmail wrapped attribution": (
        f"Approve\n\nOn Mon, Dec 1, 2026 at 10:00 AM e2a <e2a@mx.agents.test>\nwrote:\n\n{QUOTED}"
    ),
    "apple mail": (
        f"APPROVE\n\n> On 1 Dec 2026, at 10:00, e2a <e2a@mx.agents.test> wrote:\n> \n{QUOTED}"
    ),
    "thunderbird": f"approve\n\nOn 01/12/2026 10:00, e2a wrote:\n{QUOTED}",
    "outlook": (
        "approve\r\n\r\n________________________________\r\nFrom: e2a <e2a@mx.agents.test>\r\n"
        "Sent: Monday, December 1, 2026 10:00 AM\r\nTo: owner@example.com\r\n"
        f"Subject: Approval needed: Hi\r\n\r\n{NOTICE}"
    ),
    "outlook original message": (
        "approve.\n\n-----Original Message-----\nFrom: e2a <e2a@mx.agents.test>\n"
        f"Sent: Monday, December 1, 2026 10:00\nSubject: Approval needed\n\n{NOTICE}"
    ),
    "german": f"approve\n\nAm 01.12.2026 um 10:00 schrieb e2a <e2a@mx.agents.test>:\n{QUOTED}",
    "french": (
        f"approve\n\nLe lun. 1 déc. 2026 à 10:00, e2a <e2a@mx.agents.test> a écrit :\n{QUOTED}"
    ),
    "spanish": (
        f"approve\n\nEl lun, 1 dic 2026 a las 10:00, e2a (<e2a@mx.agents.test>) escribió:\n{QUOTED}"
    ),
    "dutch": f"approve\n\nOp ma 1 dec. 2026 om 10:00 schreef e2a <e2a@mx.agents.test>:\n{QUOTED}",
    "bare > quoting": f"approve\n{QUOTED}",
    "bottom posting": f"{QUOTED}\napprove\n",
    "leading blank lines and spaces": f"\n\n   approve  \n\n{QUOTED}",
    "signature below": "approve\n\n-- \nJane Doe\nExample Corp\n",
    "approve!": "Approve!\n",
}


@pytest.mark.parametrize("style", sorted(REPLIES))
def test_approve_is_read_in_every_quoting_style(style: str) -> None:
    assert parse_command(REPLIES[style]) == APPROVE


@pytest.mark.parametrize(
    ("first_line", "reason"),
    [
        ("reject", None),
        ("REJECT", None),
        ("Reject.", None),
        ("reject:", None),
        ("reject: too pushy for a first contact", "too pushy for a first contact"),
        ("Reject:   wrong recipient  ", "wrong recipient"),
        ("reject : spacing before the colon", "spacing before the colon"),
        ("reject：全角コロン", "全角コロン"),
    ],
)
def test_reject_with_and_without_a_reason(first_line: str, reason: str | None) -> None:
    text = f"{first_line}\n\nAm 01.12.2026 um 10:00 schrieb e2a <e2a@mx.agents.test>:\n{QUOTED}"
    assert parse_command(text) == ReplyCommand(approve=False, reason=reason)


def test_the_reason_is_only_the_first_line_and_bounded() -> None:
    assert parse_command("reject: not now\nMore words here.\n") == ReplyCommand(False, "not now")
    long = parse_command("reject: " + "x" * 5000)
    assert long is not None and long.reason is not None
    assert len(long.reason) == MAX_REASON_LENGTH


def test_html_only_replies_are_read() -> None:
    html = (
        "<div dir='ltr'>Reject: not this week</div><br>"
        "<div class='gmail_quote'><div class='gmail_attr'>On Mon, Dec 1, 2026 at 10:00 AM "
        "e2a &lt;e2a@mx.agents.test&gt; wrote:<br></div>"
        f"<blockquote class='gmail_quote'>{NOTICE}</blockquote></div>"
    )
    assert parse_command(None, html) == ReplyCommand(False, "not this week")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n\n",
        "approved\n",
        "I approve\n",
        "please approve this\n",
        "yes\napprove\n",
        "approve: with a reason\n",
        "rejected\n",
        "rejection: no\n",
        f"{QUOTED}",
        "> approve\n",
        f"Thanks!\n\n{GMAIL_CITE}\n> approve\n",
    ],
)
def test_anything_else_is_no_command(text: str) -> None:
    assert parse_command(text) is None


def facts(**changes: object) -> ReplyFacts:
    values: dict[str, object] = {
        "from_addr": "owner@example.com",
        "dmarc": "pass",
        "dmarc_domain": "example.com",
        "referenced": ("<notice@mx.agents.test>",),
        "automatic": None,
    }
    values.update(changes)
    return ReplyFacts(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "used", "refusal"),
    [
        ({}, False, None),
        ({"from_addr": "Owner@Example.COM", "dmarc_domain": "EXAMPLE.com"}, False, None),
        ({"automatic": "X-Autoreply: yes"}, False, "automatic"),
        ({"from_addr": "mallory@example.com"}, False, "wrong_sender"),
        ({"from_addr": ""}, False, "wrong_sender"),
        ({"dmarc": "fail"}, False, "no_dmarc_pass"),
        ({"dmarc": "none"}, False, "no_dmarc_pass"),
        ({"dmarc": "temperror"}, False, "no_dmarc_pass"),
        ({"dmarc_domain": "other.example"}, False, "no_dmarc_pass"),
        ({"referenced": ()}, False, "not_a_reply"),
        ({"referenced": ("<other@mx.agents.test>",)}, False, "not_a_reply"),
        ({}, True, "already_decided"),
        ({"from_addr": "mallory@example.com"}, True, "wrong_sender"),
    ],
)
def test_refusals(changes: dict[str, object], used: bool, refusal: str | None) -> None:
    found = refusal_of(facts(**changes), "owner@example.com", "<notice@mx.agents.test>", used)
    assert found == refusal


@pytest.mark.parametrize(
    ("from_addr", "refusal"),
    [
        ("owner@bücher.example", None),
        ("Owner@BÜCHER.example", None),
        ("owner@xn--bcher-kva.example", None),
        ("owner@bucher.example", "wrong_sender"),
        ("mallory@bücher.example", "wrong_sender"),
    ],
)
def test_the_reviewer_of_an_internationalised_domain_is_known_in_either_form(
    from_addr: str, refusal: str | None
) -> None:
    """A reviewer's address is stored with its domain in A-labels; a reply's From may give it
    in U-labels (RFC 6532), and DMARC names it in A-labels: all three are one address."""
    reply = facts(from_addr=from_addr, dmarc_domain="xn--bcher-kva.example")
    reviewer = "owner@xn--bcher-kva.example"
    assert refusal_of(reply, reviewer, "<notice@mx.agents.test>", False) == refusal


def test_answers_explain_and_never_quote_the_reply() -> None:
    text = answer_text(
        "wrong_sender", facts(from_addr="mallory@example.com"), "owner@example.com", "msg_1"
    )
    assert "mallory@example.com" in text and "owner@example.com" in text and "msg_1" in text
    decided = answer_text(
        "already_decided", facts(), "owner@example.com", "msg_1", "queued by owner@example.com"
    )
    assert "already decided (queued by owner@example.com)" in decided
    assert "DMARC did not pass for example.com" in answer_text(
        "no_dmarc_pass", facts(dmarc="fail"), "owner@example.com", "msg_1"
    )


@pytest.mark.parametrize(
    "from_addr",
    [
        '"Cheap pills at https://pills.example, call 555 0100"@example.com',
        "buy.cheap.pills.now.at.pills.example.call.555.0100.today@example.com",
        "mallory@" + "spam-words-" * 20 + "example.com",
        "mallory@[192.0.2.1]",
    ],
)
def test_an_answer_to_a_stranger_never_carries_their_words(from_addr: str) -> None:
    """Whoever holds a leaked notice may reply from any address; the answer goes to the
    reviewer signed by e2a, so a From address that could carry a message of its own (quoted,
    long, an address literal) is not written into it: only that it was another address."""
    text = answer_text("wrong_sender", facts(from_addr=from_addr), "owner@example.com", "msg_1")
    assert from_addr not in text and "pills" not in text and "spam-words" not in text
    assert "came from another address, not from owner@example.com" in text


def test_reply_tokens_are_random_lowercase_and_read_back_from_any_case() -> None:
    first, second = generate_reply_token(), generate_reply_token()
    assert first.plaintext != second.plaintext and len(first.plaintext) == 26
    assert first.plaintext == first.plaintext.lower()
    assert first.token_hash == hash_reply_token(first.plaintext) != first.plaintext
    address = reply_address(first.plaintext, "mx.agents.test")
    local = address.partition("@")[0]
    assert token_in_local_part(local) == first.plaintext
    assert token_in_local_part(local.upper()) == first.plaintext
    for other in ("approvals", "approvals+", "approvals+short", "bot", local + "x", "x" + local):
        assert token_in_local_part(other) is None


def test_reply_tokens_are_redacted_from_log_lines() -> None:
    token = generate_reply_token().plaintext
    line = f"to=<approvals+{token}@mx.agents.test>,<bot@agents.test>"
    assert redact_reply_tokens(line) == "to=<approvals+…@mx.agents.test>,<bot@agents.test>"
    assert redact_reply_tokens(f"<APPROVALS+{token.upper()}@x>") == "<APPROVALS+…@x>"


@pytest.mark.parametrize(
    ("flowed_text", "delsp", "command"),
    [
        ("approve \n\nOn 01/12/2026 10:00, e2a wrote:\n> Your agent \n> wants\n", False, APPROVE),
        ("reject: too \npushy\n", False, ReplyCommand(False, "too pushy")),
        ("reject: too push \ny\n", True, ReplyCommand(False, "too pushy")),
        (" reject: stuffed \nline\n", False, ReplyCommand(False, "stuffed line")),
        ("reject: short\n-- \nJane\n", False, ReplyCommand(False, "short")),
        ("Thanks \n\n> approve\n", False, None),
        ("> approve \n> quoted\n", False, None),
    ],
)
def test_a_format_flowed_reply_is_read_with_its_soft_breaks_joined(
    flowed_text: str, delsp: bool, command: ReplyCommand | None
) -> None:
    assert parse_command(flowed_text, flowed=True, delsp=delsp) == command


def test_unflow_keeps_quote_depths_apart_and_the_signature_separator() -> None:
    text = "one \ntwo\n> q1 \n> q2\n>> deep \nnot deep\n-- \nsig\n"
    assert unflow(text) == "one two\n> q1 q2\n>> deep \nnot deep\n-- \nsig\n"
