"""HeaderSectionCheck, the streaming header limits, against a plain line-by-line reading."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e2a_gateway.smtp.header_limits import HeaderProblem, HeaderSectionCheck

pytestmark = pytest.mark.backend_independent

FIELD = re.compile(rb"[!-~][!-9;-~]*:")


def reference(content: bytes, fields: int, size: int, folded: int) -> HeaderProblem | None:
    """The limits applied to whole lines, one at a time: the rules as HeaderSectionCheck
    documents them, without its shortcuts."""
    count = octets = continuation = 0
    over: set[HeaderProblem] = set()
    for line in re.split(rb"(?<=\n)", content):  # LF ends a line, a bare CR does not
        if line[:1] in (b" ", b"\t") or line.startswith(b"From "):
            continuation += 1
        elif FIELD.match(line):
            count += 1
            continuation = 0
        else:
            break
        octets += len(line)
        if count > fields:
            return HeaderProblem.TOO_MANY_FIELDS
        if continuation > folded:
            over.add(HeaderProblem.FOLDED_TOO_OFTEN)
        if octets > size:
            over.add(HeaderProblem.TOO_LARGE)
    return next((problem for problem in HeaderProblem if problem in over), None)


def checked(
    pieces: list[bytes], fields: int = 3, size: int = 60, folded: int = 2
) -> HeaderSectionCheck:
    check = HeaderSectionCheck(max_fields=fields, max_bytes=size, max_continuation_lines=folded)
    for piece in pieces:
        check.feed(piece)
    return check


def split_at(content: bytes, points: list[int]) -> list[bytes]:
    cuts = sorted({0, len(content), *(point for point in points if point <= len(content))})
    return [content[a:b] for a, b in itertools.pairwise(cuts)]


LINES = st.sampled_from(
    [
        b"Subject: hi\r\n",
        b"X:\r\n",
        b":odd:name\r\n",
        b"\tfolded\r\n",
        b" folded\r\n",
        b"From sender Mon Jan  1\r\n",
        b"From: a@b.test\r\n",
        b"Fro\r\n",
        b"no colon here\r\n",
        b"\r\n",
        b"\n",
        b"body\r\n",
        b"\xc3\xa9: 8-bit\r\n",
        b"a\rb: bare CR\r\n",
        b"x" * 30 + b":\r\n",
    ]
)
CONTENTS = st.lists(st.one_of(LINES, st.binary(max_size=12)), max_size=25).map(b"".join)


@settings(max_examples=500, deadline=None)
@given(
    content=CONTENTS,
    points=st.lists(st.integers(0, 400), max_size=8),
    limits=st.tuples(st.integers(1, 4), st.integers(1, 80), st.integers(1, 3)),
)
def test_the_check_agrees_with_a_line_by_line_reading_however_the_content_is_split(
    content: bytes, points: list[int], limits: tuple[int, int, int]
) -> None:
    fields, size, folded = limits
    expected = reference(content, fields, size, folded)
    assert checked(split_at(content, points), fields, size, folded).problem == expected
    assert checked([bytes([byte]) for byte in content], fields, size, folded).problem == expected


def test_each_limit_is_inclusive() -> None:
    three_fields = b"A: 1\r\nB: 2\r\nC: 3\r\n\r\nbody\r\n"
    assert checked([three_fields], fields=3).problem is None
    assert checked([b"D: 0\r\n" + three_fields], fields=3).problem is HeaderProblem.TOO_MANY_FIELDS
    folded_twice = b"A: 1\r\n 2\r\n\t3\r\n\r\n"
    assert checked([folded_twice], folded=2).problem is None
    assert checked([folded_twice], folded=1).problem is HeaderProblem.FOLDED_TOO_OFTEN
    header = b"Subject: 0123456789\r\n"  # 21 octets; the empty line does not count
    assert checked([header + b"\r\n" + b"x" * 100], size=21).problem is None
    assert checked([header + b"\r\n"], size=20).problem is HeaderProblem.TOO_LARGE


def test_folding_counts_per_field() -> None:
    content = b"A: 1\r\n 2\r\n 3\r\nB: 1\r\n 2\r\n 3\r\n\r\n"
    assert checked([content], folded=2).problem is None


def test_too_many_fields_decides_before_folding_and_size() -> None:
    content = b"A: 1\r\n 2\r\n 3\r\n 4\r\nB: x\r\nC: " + b"y" * 100 + b"\r\nD: z\r\n\r\n"
    assert checked([content], fields=3, folded=2, size=50).problem is (
        HeaderProblem.TOO_MANY_FIELDS
    )
    assert checked([content], fields=4, folded=2, size=50).problem is (
        HeaderProblem.FOLDED_TOO_OFTEN
    )
    assert checked([content], fields=4, folded=3, size=50).problem is HeaderProblem.TOO_LARGE


def test_body_lines_after_the_empty_line_are_not_header() -> None:
    content = b"Subject: x\r\n\r\n" + b"Field: like\r\n" * 10 + b" folded\r\n" * 10
    assert checked([content], fields=1, folded=1, size=12).problem is None


def test_the_section_ends_at_the_first_line_that_is_not_a_header_line() -> None:
    """What Postfix, Exim and the email package do with a missing empty line; dkimpy stops
    there with an error. Many body lines are then not many fields."""
    body = b"".join(b"line %06d: text\r\n" % number for number in range(50))
    assert checked([b"Subject: no empty line\r\nplain text\r\n" + body]).problem is None
    assert checked([b"line 000001 text\r\n" + body]).problem is None


def test_mbox_from_lines_do_not_end_the_field_before_them() -> None:
    """dkimpy skips `From ` lines and appends what follows to the field before them: for the
    limits they are that field's continuation lines."""
    content = b"A: 1\r\n 2\r\nFrom x\r\n 3\r\n\r\n"
    assert checked([content], folded=3).problem is None
    assert checked([content], folded=2).problem is HeaderProblem.FOLDED_TOO_OFTEN
    assert checked([b"From: a@b.test\r\n 1\r\n\r\n"], folded=1).problem is None


HEADS = b"A: 1\r\n 2\r\nFrom x\r\nFrom: y\r\nFromage: z\r\n 1\r\n\r\n"


@pytest.mark.parametrize("cut", range(len(HEADS) + 1))
def test_a_line_cut_between_pieces_is_judged_as_a_whole(cut: int) -> None:
    pieces = split_at(HEADS, [cut])
    assert checked(pieces, folded=1).problem is HeaderProblem.FOLDED_TOO_OFTEN
    assert checked(pieces, folded=2).problem is None
