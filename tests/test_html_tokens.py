"""HTML read as tokens in linear time (`e2a_gateway.html_tokens`): what received mail's HTML
is rendered from (the reply splitter, `/v1`'s parsed view, the trust map) and what a send
of HTML alone takes its text part from. Anyone can mail HTML, so markup that made
`html.parser` read the rest of the document again at each `<` must cost no more than any
other markup of that length."""

from __future__ import annotations

import time

import pytest

from e2a_gateway.html_text import html_text
from e2a_gateway.html_tokens import EndTag, StartTag, Text, html_tokens
from e2a_gateway.inbound.replies import split_reply

pytestmark = pytest.mark.backend_independent


def test_tags_attributes_and_text_are_read_as_html_parser_reads_them() -> None:
    html = (
        "<!DOCTYPE html><DIV Class=\"gmail_quote\" id=x data-a='1 2' hidden>"
        "Fish &amp; chips&nbsp;&#x263A;<!-- not shown --><br/>"
        '<p style="margin:0">a < b</P><img src="&quot;x&quot;" alt=y /></div>'
    )
    assert list(html_tokens(html)) == [
        StartTag("div", {"class": "gmail_quote", "id": "x", "data-a": "1 2", "hidden": ""}),
        Text("Fish & chips\xa0\u263a"),
        StartTag("br", {}, closed=True),
        StartTag("p", {"style": "margin:0"}),
        Text("a "),
        Text("<"),
        Text(" b"),
        EndTag("p"),
        StartTag("img", {"src": '"x"', "alt": "y"}, closed=True),
        EndTag("div"),
    ]


def test_script_and_style_content_is_raw_text_up_to_its_end_tag() -> None:
    html = "<style>p > a { x: '<b>' }</style><SCRIPT>if (a<b) {}</script>after"
    assert list(html_tokens(html)) == [
        StartTag("style", {}),
        Text("p > a { x: '<b>' }"),
        EndTag("style"),
        StartTag("script", {}),
        Text("if (a<b) {}"),
        EndTag("script"),
        Text("after"),
    ]
    assert html_text(html) == "after\n"


def test_a_tag_or_comment_left_open_runs_to_the_end() -> None:
    assert list(html_tokens("text<a href='x")) == [Text("text"), StartTag("a", {"href": "'x"})]
    assert list(html_tokens("text<!-- never closed <p>hidden")) == [Text("text")]
    assert list(html_tokens("<style>never closed")) == [
        StartTag("style", {}),
        Text("never closed"),
    ]


PATHOLOGICAL = {
    "tags left open": "<a " * 170_000,
    "attributes left open": '<div class="' + "x " * 250_000,
    "quotes in one tag": "<div " + "a=\" b='" * 70_000,
    "comments left open": "<!--" + "<p>" * 170_000,
    "end tags unopened": "</p" * 170_000,
    "script left open": "<script>" + "<a " * 170_000,
}


@pytest.mark.parametrize("html", PATHOLOGICAL.values(), ids=PATHOLOGICAL.keys())
def test_half_a_megabyte_of_any_markup_is_read_in_time(html: str) -> None:
    """`html.parser` took 20 s on 20,000 `<a ` (60 KB), and about 20 minutes of CPU on the
    half megabyte of received HTML the reply splitter renders."""
    body = "<p>Hello</p>" + html
    started = time.process_time()  # CPU time: other work on the machine does not count
    split = split_reply(None, body)
    text = html_text(body)
    assert time.process_time() - started < 3
    assert split.parts[0].text.startswith("Hello")
    assert text.startswith("Hello")
