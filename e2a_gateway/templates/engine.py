"""e2a's template engine: a flat subset of Mustache, sans-IO.

A template is literal text with two kinds of tag: `{{name}}`, whose value is HTML-escaped when
the part is HTML, and `{{{name}}}`, which is never escaped. Names are identifiers whose dots
reach into nested objects (`{{user.name}}`). A variable the data does not have renders as the
empty string, as do null, objects and arrays; rendering never fails over missing data.

Mustache's structural syntax (`{{#section}}`, `{{^inverted}}`, `{{/end}}`, `{{>partial}}`,
`{{!comment}}`) is refused at parse time rather than read as text or as a name, so that adding
sections later is purely additive: nothing that parses today changes meaning.

No Mustache library is used: they accept sections and escape quotes differently (e2a escapes
like Go's `html.EscapeString`), so a template could render here otherwise than under e2a's
server. This module reproduces that engine, error messages included.
"""

from __future__ import annotations

import decimal
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

MAX_SOURCE_BYTES = 256 * 1024
"""The largest source of one part, in UTF-8 bytes."""
MAX_DATA_DEPTH = 8
"""How deeply template data may nest; the top-level mapping, each dict and each list count."""
MAX_RENDERED_BYTES = 2 * 1024 * 1024
"""The largest rendered part, in UTF-8 bytes."""

_IDENTIFIER = re.compile(r"[a-zA-Z_][a-zA-Z0-9_.]*")
_RESERVED = "#/^>!"
# Go's unicode.IsSpace, which strings.TrimSpace trims (str.strip() would also trim \x1c-\x1f).
_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)
_HTML_ESCAPES = str.maketrans({"<": "&lt;", ">": "&gt;", "&": "&amp;", "'": "&#39;", '"': "&#34;"})
_GO_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    '"': '\\"',
}


class TemplateError(ValueError):
    """A template that does not parse, or data it cannot be rendered with; str(exc) is the
    message."""


@dataclass(frozen=True)
class _Tag:
    """One `{{…}}` (raw=False) or `{{{…}}}` (raw=True) tag: its identifier, split at dots."""

    path: tuple[str, ...]
    raw: bool


@dataclass(frozen=True)
class Template:
    """A parsed part: literal segments and tags, and the variables it names."""

    variables: tuple[str, ...]
    """The identifiers the tags name, in order of first appearance, each once."""
    _segments: tuple[str | _Tag, ...] = field(repr=False)


def parse(source: str) -> Template:
    """Parse one part's `source`; raise `TemplateError` if it is too large or a tag is
    unclosed, empty, reserved syntax or not an identifier."""
    size = _utf8_len(source)
    if size > MAX_SOURCE_BYTES:
        raise TemplateError(f"template too large: {size} bytes (max {MAX_SOURCE_BYTES})")
    segments: list[str | _Tag] = []
    variables: dict[str, None] = {}
    pos = 0
    while (start := source.find("{{", pos)) >= 0:
        if start > pos:
            segments.append(source[pos:start])
        raw = source.startswith("{{{", start)
        opener, closer = ("{{{", "}}}") if raw else ("{{", "}}")
        end = source.find(closer, start + len(opener))
        if end < 0:
            _fail(source, start, f'unclosed "{opener}" tag')
        name = source[start + len(opener) : end].strip(_SPACE)
        if not name:
            _fail(source, start, "empty tag")
        if name[0] in _RESERVED:
            _fail(
                source,
                start,
                f'reserved syntax "{{{{{name[0]}\u2026}}}}": '
                "sections/partials/comments are not supported yet",
            )
        if not _IDENTIFIER.fullmatch(name):
            _fail(
                source,
                start,
                f"invalid identifier {_go_quote(name)}: expected [a-zA-Z_][a-zA-Z0-9_.]*",
            )
        segments.append(_Tag(tuple(name.split(".")), raw))
        variables.setdefault(name, None)
        pos = end + len(closer)
    if pos < len(source):
        segments.append(source[pos:])
    return Template(tuple(variables), tuple(segments))


def render(template: Template, data: Mapping[str, Any], *, escape_html: bool) -> str:
    """Render `template` with `data`, HTML-escaping `{{…}}` values if `escape_html`; raise
    `TemplateError` if `data` nests deeper than `MAX_DATA_DEPTH` or the output would exceed
    `MAX_RENDERED_BYTES`."""
    if _deeper_than(data, MAX_DATA_DEPTH):
        raise TemplateError(f"template_data nests deeper than {MAX_DATA_DEPTH} levels")
    out: list[str] = []
    size = 0
    for segment in template._segments:
        if isinstance(segment, str):
            text = segment
        else:
            text = _format(_resolve(data, segment.path))
            if escape_html and not segment.raw:
                text = text.translate(_HTML_ESCAPES)
        size += _utf8_len(text)
        if size > MAX_RENDERED_BYTES:
            raise TemplateError(f"rendered output exceeds {MAX_RENDERED_BYTES} bytes")
        out.append(text)
    return "".join(out)


def suggest(variables: Iterable[str], into: dict[str, Any]) -> None:
    """Fill `into` with a placeholder value (`"<ident>_value"`) for each identifier in
    `variables`, creating nested dicts along dot paths and keeping every value already there;
    an identifier whose path runs into a non-dict value is skipped."""
    for ident in variables:
        *leading, last = ident.split(".")
        node = into
        for key in leading:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node.setdefault(last, f"{ident}_value")


def _fail(source: str, start: int, problem: str) -> NoReturn:
    """Raise the parse error for the tag at code point `start`, reported by its byte offset."""
    raise TemplateError(f"template parse error at byte {_utf8_len(source[:start])}: {problem}")


def _utf8_len(text: str) -> int:
    """The length of `text` in UTF-8 bytes (a lone surrogate counting three, as U+FFFD does)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _go_quote(text: str) -> str:
    """`text` in double quotes, escaped as Go's `%q` (`strconv.Quote`) escapes it."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether `value` nests deeper than `limit` (a scalar is 0 deep, a dict or list one more
    than its deepest value); looks no further than `limit` levels down."""
    if isinstance(value, Mapping):
        children: Iterable[Any] = value.values()
    elif isinstance(value, list | tuple):
        children = value
    else:
        return False
    return limit == 0 or any(_deeper_than(child, limit - 1) for child in children)


def _resolve(data: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at `path` in `data`, or None if a key is missing or a value on the way is not
    a mapping."""
    value: Any = data
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _format(value: Any) -> str:
    """`value` as text: strings as they are, booleans as `true`/`false`, numbers in plain
    decimal notation, anything else (null, objects, arrays, missing) as the empty string."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        text = format(decimal.Decimal(repr(value)), "f")
        return text.removesuffix(".0")
    return ""
