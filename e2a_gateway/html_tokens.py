"""HTML read as a stream of tokens in time linear in its length, whatever markup it holds:
start tags with their attributes, end tags and text, as `html.parser` reports them (names
lowercased, character references in text and attribute values resolved, the content of
`script` and `style` as raw text). Pure, stdlib only, sans-IO: a string in, tokens out.

`html.parser` reads the rest of the document again at each `<` of a tag left open: 20,000
copies of `<a ` took it 20 s, and anyone can mail half a megabyte of them. Here a tag left open
runs to the end of the document, as HTML's parsing rules end it, so each character is read
once; a tag's attributes are read from its first MAX_ATTRIBUTE_CHARS characters alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape

MAX_ATTRIBUTE_CHARS = 4096
"""How much of one tag is read for attributes: a class, an id, a style, a type."""
RAW_TEXT_TAGS = frozenset({"script", "style"})
"""Elements whose content is no markup: given whole as one text, up to their end tag."""

_TOKEN = re.compile(
    r"<!--.*?(?:-->|\Z)|<[!?][^>]*(?:>|\Z)|<(/?)([a-zA-Z][^\s/>]*)([^>]*)(?:>|\Z)|[^<]+|<", re.S
)
"""One piece of HTML: a comment, a declaration or processing instruction, a start or end tag
(groups 1-3: the slash of an end tag, the name, the rest), text, or a `<` that opens nothing."""
_ATTRIBUTE = re.compile(r"""([^\s"'>/=][^\s>/=]*)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]*)))?""")
"""One attribute: its name and its value, double-quoted, single-quoted or bare."""


@dataclass(frozen=True)
class StartTag:
    """`<name attr=value …>`; `closed` for `<name … />`."""

    name: str
    attributes: dict[str, str]
    closed: bool = False


@dataclass(frozen=True)
class EndTag:
    """`</name>`."""

    name: str


@dataclass(frozen=True)
class Text:
    """Text between tags, its character references resolved (raw inside script and style)."""

    text: str


Token = StartTag | EndTag | Text


def html_tokens(html: str) -> Iterator[Token]:
    """The tokens of `html` in order; comments and declarations are left out."""
    lowered: str | None = None
    position = 0
    while position < len(html):
        token = _TOKEN.match(html, position)
        assert token is not None  # `<` alone matches what nothing else does
        position = token.end()
        closing, name, rest = token.group(1, 2, 3)
        if name is None:
            piece = token.group()
            if piece == "<" or not piece.startswith("<"):
                yield Text(unescape(piece))
            continue
        tag = name.lower()
        if closing:
            yield EndTag(tag)
            continue
        closed = rest.rstrip().endswith("/")
        yield StartTag(tag, _attributes(rest[:MAX_ATTRIBUTE_CHARS]), closed)
        if tag in RAW_TEXT_TAGS and not closed:
            lowered = html.lower() if lowered is None else lowered
            end = lowered.find(f"</{tag}", position)
            end = len(html) if end < 0 else end
            if end > position:
                yield Text(html[position:end])
            position = end


def _attributes(text: str) -> dict[str, str]:
    """The attributes written in a tag's `text` after its name (the first of a name wins)."""
    found: dict[str, str] = {}
    for attribute in _ATTRIBUTE.finditer(text):
        name = attribute.group(1).lower()
        if name not in found:
            value = next((v for v in attribute.group(2, 3, 4) if v is not None), "")
            found[name] = unescape(value)
    return found
