"""The template engine (a flat Mustache subset, reproducing e2a's server byte for byte) and the
starter catalog written in it."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from e2a_gateway.templates.engine import (
    MAX_DATA_DEPTH,
    MAX_RENDERED_BYTES,
    MAX_SOURCE_BYTES,
    Template,
    TemplateError,
    parse,
    render,
    suggest,
)
from e2a_gateway.templates.starters import STARTERS, Starter, starter

pytestmark = pytest.mark.backend_independent


def html(source: str, data: dict[str, Any]) -> str:
    return render(parse(source), data, escape_html=True)


def text(source: str, data: dict[str, Any]) -> str:
    return render(parse(source), data, escape_html=False)


def parse_error(source: str) -> str:
    with pytest.raises(TemplateError) as caught:
        parse(source)
    return str(caught.value)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("Hi {{name", 'template parse error at byte 3: unclosed "{{" tag'),
        ("Hi {{name}", 'template parse error at byte 3: unclosed "{{" tag'),
        ("{{{name}}", 'template parse error at byte 0: unclosed "{{{" tag'),
        ("{{a}} {{{b", 'template parse error at byte 6: unclosed "{{{" tag'),
        ("é{{", 'template parse error at byte 2: unclosed "{{" tag'),
        ("日本{{x", 'template parse error at byte 6: unclosed "{{" tag'),
        ("😀 {{{x", 'template parse error at byte 5: unclosed "{{{" tag'),
        ("ab{{}}", "template parse error at byte 2: empty tag"),
        ("{{ \t\n }}", "template parse error at byte 0: empty tag"),
        ("é{{{ }}}", "template parse error at byte 2: empty tag"),
        *(
            (
                f"x {{{{{ch}section}}}}",
                f'template parse error at byte 2: reserved syntax "{{{{{ch}\u2026}}}}": '
                "sections/partials/comments are not supported yet",
            )
            for ch in "#/^>!"
        ),
        (
            "{{{ #raw }}}",
            'template parse error at byte 0: reserved syntax "{{#\u2026}}": '
            "sections/partials/comments are not supported yet",
        ),
        (
            "{{1abc}}",
            'template parse error at byte 0: invalid identifier "1abc": '
            "expected [a-zA-Z_][a-zA-Z0-9_.]*",
        ),
        (
            "é {{ first name }}",
            'template parse error at byte 3: invalid identifier "first name": '
            "expected [a-zA-Z_][a-zA-Z0-9_.]*",
        ),
        (
            "{{na-me}}",
            'template parse error at byte 0: invalid identifier "na-me": '
            "expected [a-zA-Z_][a-zA-Z0-9_.]*",
        ),
        (
            "{{ nämé }}",
            'template parse error at byte 0: invalid identifier "nämé": '
            "expected [a-zA-Z_][a-zA-Z0-9_.]*",
        ),
        (
            '{{a"b\\c}}',
            'template parse error at byte 0: invalid identifier "a\\"b\\\\c": '
            "expected [a-zA-Z_][a-zA-Z0-9_.]*",
        ),
        (
            "{{&name}}",
            'template parse error at byte 0: invalid identifier "&name": '
            "expected [a-zA-Z_][a-zA-Z0-9_.]*",
        ),
        (
            "{{a\tb}}",
            'template parse error at byte 0: invalid identifier "a\\tb": '
            "expected [a-zA-Z_][a-zA-Z0-9_.]*",
        ),
    ],
)
def test_parse_errors(source: str, message: str) -> None:
    assert parse_error(source) == message


def test_parse_reports_the_first_bad_tag() -> None:
    assert parse_error("{{ok}} {{}} {{1}}") == "template parse error at byte 7: empty tag"


def test_source_size_limit() -> None:
    parse("a" * MAX_SOURCE_BYTES)
    assert parse_error("a" * (MAX_SOURCE_BYTES + 1)) == (
        "template too large: 262145 bytes (max 262144)"
    )


def test_source_size_counts_utf8_bytes() -> None:
    parse("é" * (MAX_SOURCE_BYTES // 2))
    assert parse_error("é" * (MAX_SOURCE_BYTES // 2) + "a") == (
        "template too large: 262145 bytes (max 262144)"
    )


def test_literal_text_and_stray_braces_render_as_is() -> None:
    source = "plain } text {single} and }} closers { {"
    assert parse(source).variables == ()
    assert text(source, {}) == source
    assert text("", {}) == ""


def test_whitespace_inside_braces_is_trimmed() -> None:
    template = parse("{{ name }}|{{\tname\n}}|{{{  raw  }}}")
    assert template.variables == ("name", "raw")
    assert render(template, {"name": "N", "raw": "R"}, escape_html=False) == "N|N|R"


def test_trimming_follows_go_unicode_spaces() -> None:
    # Go's strings.TrimSpace: Unicode spaces are trimmed, the ASCII separators \x1c-\x1f
    # (which Python's str.strip() would trim) are not.
    assert text("{{\u00a0name\u3000}}", {"name": "N"}) == "N"
    assert parse_error("{{\x1c}}") == (
        'template parse error at byte 0: invalid identifier "\\x1c": '
        "expected [a-zA-Z_][a-zA-Z0-9_.]*"
    )


def test_variables_in_first_appearance_order_each_once() -> None:
    template = parse("{{b}} {{{a}}} {{ b }} {{c.d}} {{a}} {{c}}")
    assert template.variables == ("b", "a", "c.d", "c")
    assert isinstance(template, Template)


def test_identifiers_allow_underscores_digits_and_dots() -> None:
    assert parse("{{_x}}{{A9}}{{a.b_2.c}}").variables == ("_x", "A9", "a.b_2.c")


def test_html_mode_escapes_double_tags_only() -> None:
    data = {"v": "<b>Tom & 'Jerry' \"x\"</b>"}
    assert html("{{v}}", data) == "&lt;b&gt;Tom &amp; &#39;Jerry&#39; &#34;x&#34;&lt;/b&gt;"
    assert html("{{{v}}}", data) == data["v"]


@pytest.mark.parametrize(
    ("char", "escaped"),
    [("<", "&lt;"), (">", "&gt;"), ("&", "&amp;"), ("'", "&#39;"), ('"', "&#34;")],
)
def test_each_escaped_character(char: str, escaped: str) -> None:
    assert html("[{{v}}]", {"v": f"a{char}b"}) == f"[a{escaped}b]"


def test_escaping_is_single_pass() -> None:
    assert html("{{v}}", {"v": "&lt;"}) == "&amp;lt;"


def test_text_mode_escapes_nothing() -> None:
    data = {"v": "<a href='x'>\"&\"</a>"}
    assert text("{{v}} {{{v}}}", data) == f"{data['v']} {data['v']}"


def test_literal_text_is_never_escaped() -> None:
    assert html('<p class="x">&amp; {{v}}</p>', {"v": "<"}) == '<p class="x">&amp; &lt;</p>'


def test_dot_paths_reach_nested_dicts() -> None:
    data = {"user": {"name": "Ada", "address": {"city": "London"}}, "user.name": "flat"}
    assert text("{{user.name}} in {{ user.address.city }}", data) == "Ada in London"


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"a": None},
        {"a": {"b": None}},
        {"a": {}},
        {"a": "scalar"},
        {"a": ["b"]},
        {"a": {"b": {"c": 1}}},
        {"a": {"b": [1, 2]}},
    ],
)
def test_missing_none_dict_and_list_render_empty(data: dict[str, Any]) -> None:
    assert text("[{{a.b}}]", data) == "[]"
    assert html("[{{{a.b}}}]", data) == "[]"


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        ("text", "text"),
        ("", ""),
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (42, "42"),
        (-7, "-7"),
        (12345678901234567890, "12345678901234567890"),
        (42.0, "42"),
        (0.1, "0.1"),
        (1e16, "10000000000000000"),
        (1.5e-7, "0.00000015"),
        (-2.5, "-2.5"),
        (3.14159, "3.14159"),
        (1.25e20, "125000000000000000000"),
        (0.0, "0"),
        (None, ""),
        ({"k": "v"}, ""),
        (["x"], ""),
    ],
)
def test_value_formatting(value: Any, rendered: str) -> None:
    assert text("{{v}}", {"v": value}) == rendered


def nested(levels: int) -> dict[str, Any]:
    """A mapping `levels` deep: {"a": {"a": ... {"a": 1}}}."""
    data: dict[str, Any] = {"a": 1}
    for _ in range(levels - 1):
        data = {"a": data}
    return data


def test_depth_limit() -> None:
    assert text("{{a.a.a.a.a.a.a.a}}", nested(MAX_DATA_DEPTH)) == "1"
    with pytest.raises(TemplateError) as caught:
        text("no tags", nested(MAX_DATA_DEPTH + 1))
    assert str(caught.value) == "template_data nests deeper than 8 levels"


def test_depth_counts_lists_and_empty_containers() -> None:
    inner: Any = []
    for _ in range(MAX_DATA_DEPTH - 3):
        inner = [inner]
    # The top-level mapping, a dict, then six lists: eight levels, the innermost empty.
    text("x", {"a": {"b": inner}})
    with pytest.raises(TemplateError, match="nests deeper than 8 levels"):
        text("x", {"a": {"b": [inner]}})
    with pytest.raises(TemplateError, match="nests deeper than 8 levels"):
        text("x", {"ok": 1, "deep": {"b": [inner]}})


def test_rendered_size_limit() -> None:
    exactly = "é" * (MAX_RENDERED_BYTES // 2)
    assert text("{{v}}", {"v": exactly}) == exactly
    with pytest.raises(TemplateError) as caught:
        text("{{v}}!", {"v": exactly})
    assert str(caught.value) == "rendered output exceeds 2097152 bytes"


def test_rendered_size_counts_escaped_output() -> None:
    value = "&" * (MAX_RENDERED_BYTES // 5 + 1)
    assert len(text("{{v}}", {"v": value})) == len(value)
    with pytest.raises(TemplateError, match="rendered output exceeds 2097152 bytes"):
        html("{{v}}", {"v": value})


class CountingData(Mapping[str, Any]):
    """A mapping that counts how often a value is looked up."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values_ = values
        self.lookups = 0

    def __getitem__(self, key: str) -> Any:
        self.lookups += 1
        return self.values_[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values_)

    def __len__(self) -> int:
        return len(self.values_)


def test_huge_render_stops_early() -> None:
    data = CountingData({"v": "x" * 1_000_000})
    with pytest.raises(TemplateError, match="rendered output exceeds 2097152 bytes"):
        render(parse("{{v}}" * 50_000), data, escape_html=False)
    # The depth check reads the value once, then the third tag overflows.
    assert data.lookups <= 4


def test_suggest() -> None:
    into: dict[str, Any] = {}
    suggest(["user.name", "user", "code"], into)
    assert into == {"user": {"name": "user.name_value"}, "code": "code_value"}


def test_suggest_keeps_existing_values() -> None:
    into: dict[str, Any] = {"code": "1234", "user": {"name": "Ada"}}
    suggest(["code", "user.name", "user.email", "a.b.c"], into)
    assert into == {
        "code": "1234",
        "user": {"name": "Ada", "email": "user.email_value"},
        "a": {"b": {"c": "a.b.c_value"}},
    }


def test_suggest_skips_paths_through_a_scalar() -> None:
    into: dict[str, Any] = {"user": "Ada", "list": [1]}
    suggest(["user.name", "list.x", "user.address.city"], into)
    assert into == {"user": "Ada", "list": [1]}


def test_suggest_fills_a_template_it_renders() -> None:
    template = parse("{{a.b}} {{{c}}}")
    data: dict[str, Any] = {}
    suggest(template.variables, data)
    assert render(template, data, escape_html=True) == "a.b_value c_value"


def examples(item: Starter) -> dict[str, str]:
    return {variable.name: variable.example for variable in item.variables}


def raw_names(source: str) -> set[str]:
    return {name.strip() for name in re.findall(r"\{\{\{([^}]*)\}\}\}", source)}


@pytest.mark.parametrize("item", STARTERS, ids=lambda item: item.alias)
def test_starter_parts_render_with_their_examples(item: Starter) -> None:
    data = examples(item)
    for source, escape in ((item.subject, False), (item.text, False), (item.html, True)):
        rendered = render(parse(source), data, escape_html=escape)
        assert "{{" not in rendered
        assert "}}" not in rendered
        assert rendered.strip()
    assert "\n" not in item.subject


@pytest.mark.parametrize("item", STARTERS, ids=lambda item: item.alias)
def test_starter_variables_match_their_parts(item: Starter) -> None:
    used = {
        name for source in (item.subject, item.text, item.html) for name in parse(source).variables
    }
    declared = [variable.name for variable in item.variables]
    assert len(declared) == len(set(declared))
    assert used == set(declared)
    assert any(variable.required for variable in item.variables)
    for variable in item.variables:
        assert variable.description.strip()
        assert variable.example.strip()


@pytest.mark.parametrize("item", STARTERS, ids=lambda item: item.alias)
def test_starter_raw_flags_match_triple_braces(item: Starter) -> None:
    raw_used = set().union(*(raw_names(s) for s in (item.subject, item.text, item.html)))
    assert {variable.name for variable in item.variables if variable.raw} == raw_used
    assert not raw_names(item.subject) and not raw_names(item.text)


@pytest.mark.parametrize("item", STARTERS, ids=lambda item: item.alias)
def test_starter_metadata(item: Starter) -> None:
    assert item.version == "1.0.0"  # as e2a versions its starters
    assert item.name.strip() and item.description.strip()
    assert starter(item.alias) is item
    assert item.html.lstrip().startswith("<!DOCTYPE html>")
    assert "http://" not in item.html and "<link" not in item.html and "<script" not in item.html


def test_starter_catalog() -> None:
    aliases = [item.alias for item in STARTERS]
    assert aliases == sorted(aliases)
    assert aliases == [
        "agent-status",
        "approval-request",
        "daily-digest",
        "follow-up",
        "password-reset",
        "receipt",
        "verify-code",
        "welcome",
    ]
    assert starter("no-such-starter") is None


def test_approval_request_details_are_raw_in_html_only() -> None:
    item = starter("approval-request")
    assert item is not None
    data = examples(item)
    details = data["details_html"]
    assert "<" in details
    assert details in render(parse(item.html), data, escape_html=True)
    assert details not in render(parse(item.text), data, escape_html=False)
    assert "GET" in item.description and "confirmation page" in item.description
    optional = {variable.name for variable in item.variables if not variable.required}
    assert optional == {"preheader"}


@pytest.mark.parametrize(
    ("alias", "optional"),
    [("follow-up", {"next_step"}), ("welcome", {"preheader"})],
)
def test_starter_optional_variables(alias: str, optional: set[str]) -> None:
    item = starter(alias)
    assert item is not None
    assert {variable.name for variable in item.variables if not variable.required} == optional
