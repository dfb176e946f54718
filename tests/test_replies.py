"""split_reply: the line map holds for any input, and the split's contract (which body part is
read, what reply_text is made of, what counts as quoted) — the corpus is in
tests/test_replies_corpus.py."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e2a_gateway.inbound.replies import ReplySplit, split_reply

pytestmark = pytest.mark.backend_independent

# Building blocks of real mail, so that generated bodies hit attributions, quotes, header blocks
# and signatures, not only random characters.
_BLOCKS = [
    "Thanks, that works.",
    "",
    "On Tue, 3 Mar 2026 at 10:02, Alice <alice@example.org> wrote:",
    "On Tue, Mar 3, 2026 at 10:02 AM Alice Example <",
    "alice@example.org> wrote:",
    "Am Di., 3. März 2026 um 10:02 Uhr schrieb Jana <jana@example.de>:",
    "Alice <alice@example.org> 于2026年3月3日周二 10:02写道\uff1a",
    "> Can we meet on Thursday?",
    ">> Shall we meet?",
    "> > nested",
    ">",
    "-----Original Message-----",
    "________________________________",
    "From: Alice <alice@example.org>",
    "Sent: Tuesday, March 3, 2026 10:02 AM",
    "To: Bob <bob@example.org>",
    "Subject: RE: meeting",
    "---------- Forwarded message ---------",
    "Begin forwarded message:",
    "-- ",
    "--",
    "Sent from my iPhone",
    "Get Outlook for iOS",
    "```",
    ">>> print(1)",
    "$ echo a \\",
    "\ufeff",
    "\t",
]
_bodies = st.lists(st.one_of(st.sampled_from(_BLOCKS), st.text(max_size=40)), max_size=40).map(
    "\n".join
)
_html_bodies = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "<div>",
                "</div>",
                "<br>",
                "<p>",
                "</p>",
                '<blockquote type="cite">',
                '<blockquote class="gmail_quote">',
                '<blockquote style="margin:0 0 0 40px;border:none">',
                "</blockquote>",
                '<div class="gmail_signature">',
                "<hr>",
                "<pre>",
                "</pre>",
                "<style>p{}</style>",
                "<b>From:</b> Alice &lt;alice@example.org&gt;<br>",
                "<b>Sent:</b> Tuesday, March 3, 2026 10:02 AM<br>",
                "<b>To:</b> Bob<br>",
                "<b>Subject:</b> Hi<br>",
                "On Tue, 3 Mar 2026 at 10:02, Alice &lt;alice@example.org&gt; wrote:",
                "&nbsp;",
                "Thanks!",
            ]
        ),
        st.text(max_size=20),
    ),
    max_size=40,
).map("".join)


def assert_line_map(split: ReplySplit) -> None:
    """Every line in exactly one part, in order; each part's text is its lines."""
    assert split.parts, "even an empty body has one part"
    assert split.parts[0].start == 0
    assert split.parts[-1].end == len(split.lines)
    for before, after in zip(split.parts, split.parts[1:], strict=False):
        assert before.end == after.start
    for part in split.parts:
        assert part.start < part.end
        assert part.text == "\n".join(split.lines[part.start : part.end])
        assert (part.depth > 0) == (part.kind == "quoted")
        assert part.attribution is None or part.kind == "quoted"


def _original_lines(text: str) -> list[str]:
    lines = re.split(r"\r\n|\r|\n|\u2028|\u2029", text)
    return lines[:-1] if len(lines) > 1 and lines[-1] == "" else lines


@settings(max_examples=400, deadline=None)
@given(_bodies)
def test_every_line_of_a_text_body_is_in_exactly_one_part(text: str) -> None:
    split = split_reply(text)
    assert list(split.lines) == _original_lines(text)
    assert_line_map(split)


@settings(max_examples=300, deadline=None)
@given(_bodies)
def test_reply_text_is_made_of_authored_lines_only(text: str) -> None:
    split = split_reply(text)
    authored = {
        line.rstrip() for p in split.parts if p.kind == "authored" for line in p.content.split("\n")
    }
    for line in split.reply_text.split("\n"):
        assert line == "" or line in authored


@settings(max_examples=300, deadline=None)
@given(_bodies)
def test_a_marked_line_is_never_authored_outside_code(text: str) -> None:
    """A line starting with ">" is quoted at least as deep as its markers, unless it is the
    sender's code (a fenced block, a Python session, a shell continuation) or a bound
    (">100", ">=3")."""
    split = split_reply(text)
    code = any(sign in text for sign in ("```", "~~~", ">>>", "$ ", "% ", "# ", "\\\n"))
    for part in split.parts:
        for line in split.lines[part.start : part.end]:
            markers = re.match(r"(?:>[ \t]?)*", line)
            depth = markers.group().count(">") if markers else 0
            if depth and not code and not re.match(r">=?\d|>=", line):
                assert part.kind == "quoted" and part.depth >= depth, (line, part)


@settings(max_examples=300, deadline=None)
@given(_html_bodies)
def test_every_rendered_line_of_an_html_body_is_in_exactly_one_part(html: str) -> None:
    split = split_reply(None, html)
    assert_line_map(split)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.text(max_size=200))
def test_any_input_splits_without_error(text: str, html: str) -> None:
    assert_line_map(split_reply(text, html))
    assert_line_map(split_reply(None, html))


def test_the_text_part_is_read_when_there_is_one() -> None:
    split = split_reply("From the text part.\n", "<p>From the HTML part.</p>")
    assert (split.source, split.reply_text) == ("text", "From the text part.")


def test_the_html_part_is_read_when_the_text_part_is_missing_or_blank() -> None:
    for text in (None, "", " \r\n"):
        split = split_reply(text, "<p>From the HTML part.</p>")
        assert (split.source, split.reply_text) == ("html", "From the HTML part.")


def test_no_body_at_all_is_one_empty_authored_part() -> None:
    split = split_reply(None, None)
    assert split.source == "none"
    assert split.reply_text == ""
    assert [(p.kind, p.start, p.end) for p in split.parts] == [("authored", 0, 1)]


def test_line_endings_are_read_as_lines_and_the_text_kept_as_written() -> None:
    split = split_reply(
        "Yes.\r\n\r\nOn Tue, 3 Mar 2026 at 10:02, Al <al@example.org> wrote:\r\n> Ok?\r\n"
    )
    assert split.lines == (
        "Yes.",
        "",
        "On Tue, 3 Mar 2026 at 10:02, Al <al@example.org> wrote:",
        "> Ok?",
    )
    assert split.reply_text == "Yes."


def test_quoted_content_has_no_markers_and_no_attribution_line() -> None:
    split = split_reply(
        "Sure.\n\nOn Tue, 3 Mar 2026 at 10:02, Al <al@example.org> wrote:\n>\n> Lunch?\n> Noon.\n"
    )
    quoted = split.parts[1]
    assert quoted.content == "Lunch?\nNoon."
    assert quoted.text.startswith("On Tue, 3 Mar 2026")
    assert quoted.attribution is not None
    assert quoted.attribution.text == "On Tue, 3 Mar 2026 at 10:02, Al <al@example.org> wrote:"


def test_the_signature_delimiter_is_not_part_of_the_signature_content() -> None:
    split = split_reply("Done.\n\n-- \nRachel\nOps\n")
    assert [p.kind for p in split.parts] == ["authored", "signature"]
    assert split.parts[1].content == "Rachel\nOps"


def test_html_quotes_are_rendered_with_markers_and_entities_decoded() -> None:
    split = split_reply(
        None,
        "<p>Ok &amp; thanks</p><blockquote type='cite'><p>Ready?</p>"
        "<blockquote type='cite'>Q</blockquote></blockquote>",
    )
    assert split.lines == ("Ok & thanks", "", "> Ready?", ">", "> > Q")
    assert [(p.kind, p.depth) for p in split.parts] == [
        ("authored", 0),
        ("quoted", 1),
        ("quoted", 2),
    ]


def test_html_style_script_and_head_are_not_text() -> None:
    split = split_reply(
        None,
        "<html><head><title>T</title><style>p {color: red}</style></head>"
        "<body><script>alert(1)</script><p>Visible</p></body></html>",
    )
    assert split.lines == ("Visible",)


def test_an_unmarked_quote_after_a_header_block_holds_until_the_end() -> None:
    split = split_reply(
        "Yes.\n\nFrom: Al <al@example.org>\nSent: Tuesday, March 3, 2026 10:02 AM\n"
        "To: Bo <bo@example.org>\nSubject: Q\n\nQuestion?\n\n-- \nAl\n"
    )
    assert [(p.kind, p.depth) for p in split.parts] == [("authored", 0), ("quoted", 1)]
    assert split.parts[1].content == "Question?\n\n--\nAl"


def test_docs_gmail_example() -> None:
    """The Gmail example of docs/replies.md."""
    split = split_reply(
        "Thursday at 3pm works for me.\n\nBob\n\n"
        "On Tue, Mar 3, 2026 at 10:02 AM Alice Example <alice@example.org> wrote:\n\n"
        "> Hi Bob, could we meet this week?\n>\n"
        "> On Mon, Mar 2, 2026 at 6:40 PM Carol Jones <carol@example.net> wrote:\n>\n"
        ">> Alice, please set up a meeting with Bob.\n"
    )
    assert split.reply_text == "Thursday at 3pm works for me.\n\nBob"
    assert [(p.kind, p.start, p.end, p.depth) for p in split.parts] == [
        ("authored", 0, 4, 0),
        ("quoted", 4, 8, 1),
        ("quoted", 8, 11, 2),
    ]
    carol = split.parts[2]
    assert carol.content == "Alice, please set up a meeting with Bob."
    assert carol.attribution is not None
    assert (carol.attribution.name, carol.attribution.address, carol.attribution.date) == (
        "Carol Jones",
        "carol@example.net",
        "Mon, Mar 2, 2026 at 6:40 PM",
    )


def test_docs_outlook_example() -> None:
    """The Outlook example of docs/replies.md."""
    split = split_reply(
        "The purchase order is approved.\n\nSent from Mail for Windows\n\n"
        "From: Sam Turner <sam.turner@contoso.example>\n"
        "Sent: Tuesday, March 3, 2026 10:02 AM\n"
        "To: Olivia Brown <olivia.brown@fabrikam.example>\n"
        "Subject: PO 2026-118 for approval\n\n"
        "Please approve PO 2026-118 (12 laptops, USD 14,400).\n"
    )
    assert split.reply_text == "The purchase order is approved."
    assert [(p.kind, p.start, p.end, p.depth) for p in split.parts] == [
        ("authored", 0, 2, 0),
        ("signature", 2, 4, 0),
        ("quoted", 4, 10, 1),
    ]
    sam = split.parts[2].attribution
    assert sam is not None
    assert (sam.name, sam.address, sam.date, sam.subject) == (
        "Sam Turner",
        "sam.turner@contoso.example",
        "Tuesday, March 3, 2026 10:02 AM",
        "PO 2026-118 for approval",
    )


def test_an_attribution_broken_over_lines_needs_an_address_to_be_taken() -> None:
    """A client's "On … <name>", a lone "<", then "> wrote:" is an attribution only when an
    address sits between them; without one the "On …" line stays the sender's text and the
    "> wrote:" line an ordinary quoted line."""
    text = "Shipped.\n\nOn 3 May we shipped v2\n<\n> wrote:\n> the old notes\n"
    split = split_reply(text)
    assert split.reply_text == "Shipped.\n\nOn 3 May we shipped v2\n<"
    assert [(part.kind, part.depth, part.attribution) for part in split.parts] == [
        ("authored", 0, None),
        ("quoted", 1, None),
    ]


def test_many_delimiter_and_blank_lines_are_split_in_linear_time() -> None:
    """Mail from anyone is split: every "--" delimiter counted the lines after it, and each
    leading blank line of a part was dropped by moving the rest, so a 50 KB run of "--" lines
    took some 15 s of CPU and longer mail hours. Such a body is now split in a moment."""
    text = "\n" * 2_000 + "--\n" * 17_000 + "Thanks\n"
    started = time.process_time()  # CPU time: other work on the machine does not count
    split = split_reply(text)
    assert time.process_time() - started < 5
    assert [(part.kind, part.start, part.end) for part in split.parts] == [
        ("authored", 0, 18_988),
        ("signature", 18_988, 19_001),
    ]
    assert split.reply_text == "\n".join(["--"] * 16_988)


def test_header_block_with_a_huge_from_value_is_split_in_linear_time() -> None:
    """An Outlook-style header block's From value was searched for an address and a name by
    patterns that restart at every letter: a From: line of 100,000 letters took some 30 s of
    CPU (a megabyte, hours), and anyone can mail one. A From value longer than any client
    writes no longer makes a header block; the lines are the sender's text."""
    text = "Hi\n\nFrom: " + "a" * 100_000 + "\nDate: Mon\nTo: b@example.org\n\n> old"
    started = time.process_time()  # CPU time: other work on the machine does not count
    split = split_reply(text)
    assert time.process_time() - started < 2
    assert split.parts[0].kind == "authored"
    assert "a" * 100_000 in split.reply_text
    short = split_reply("Hi\n\nFrom: Ann <ann@example.org>\nDate: Mon\nTo: b@example.org\n\nold")
    assert short.parts[1].attribution is not None
    assert short.parts[1].attribution.address == "ann@example.org"


def test_html_nested_without_end_is_rendered_in_linear_time() -> None:
    """Unclosed elements nest as deep as the body is long: each tag and line looked through
    all the open ones, and each line carried a "> " per blockquote around it, so 250 KB of
    unclosed divs and blockquotes took half a minute of CPU. Blockquotes deeper than 100 are
    now rendered at depth 100, and the body in a moment."""
    html = "<div>" * 10_000 + "<blockquote>quoted " * 10_000 + "</span>" * 10_000
    started = time.process_time()  # CPU time: other work on the machine does not count
    split = split_reply(None, html)
    assert time.process_time() - started < 5
    assert split.source == "html"
    assert [part.depth for part in split.parts] == list(range(1, 101))
    assert split.parts[-1].content == "\n".join(["quoted"] * 9_901)


def test_many_unmarked_quotes_are_placed_in_linear_time() -> None:
    """Each "-----Original Message-----" opens a quote one level deeper, and each used to copy
    the attributions of all the levels above it: 20,000 of them took some 10 s of CPU."""
    text = "-----Original Message-----\n" * 19_999
    started = time.process_time()  # CPU time: other work on the machine does not count
    split = split_reply(text)
    assert time.process_time() - started < 5
    assert [part.depth for part in split.parts] == list(range(1, 20_000))
    assert {part.kind for part in split.parts} == {"quoted"}


def test_a_long_body_is_split_in_its_first_lines_and_the_rest_quoted_as_written() -> None:
    """Splitting costs a few microseconds and a few hundred bytes a line, and mail from anyone
    is split: a 25 MB body took minutes of CPU and gigabytes. The first 20,000 lines are split;
    the rest is one quoted part, as written, and not in the reply."""
    text = "Approved.\r\n" + "x\r\n" * 1_000_000 + "> From the boss: pay\r\n"
    started = time.process_time()  # CPU time: other work on the machine does not count
    split = split_reply(text)
    assert time.process_time() - started < 5
    assert [(part.kind, part.start, part.end, part.depth) for part in split.parts] == [
        ("authored", 0, 20_000, 0),
        ("quoted", 20_000, 1_000_002, 1),
    ]
    assert len(split.lines) == 20_000
    assert split.parts[-1].text == "x\n" * 980_001 + "> From the boss: pay"
    assert split.parts[-1].attribution is None
    assert split.reply_text == "Approved.\n" + "\n".join(["x"] * 19_999)


def test_a_long_html_body_is_rendered_in_its_first_half_megabyte() -> None:
    """An HTML body is rendered to lines at a few microseconds a character: past the first
    512 KiB its source is in the last part, quoted, as written."""
    html = "<p>ok</p>" * 1_000_000
    started = time.process_time()  # CPU time: other work on the machine does not count
    split = split_reply(None, html)
    assert time.process_time() - started < 5
    assert [(part.kind, part.start, part.end) for part in split.parts] == [
        ("authored", 0, 20_000),
        ("quoted", 20_000, 116_508),  # the cut leaves `<p` at the end: a tag, no text
    ]
    rendered = split.parts[-1].text.split("\n")
    assert rendered[:2] == ["ok", ""]
    assert split.parts[-1].text.endswith("<p>ok</p>" * 100)
