"""The plain text an HTML body shows, one line per block element, without markup: the
text/plain alternative of mail composed as HTML alone (by the CLI, or by the gateway for a
send that gives no text), and what `e2a listen` shows of HTML-only mail. Pure, stdlib only.
"""

from __future__ import annotations

import re
from html import unescape

_PARAGRAPH_TAGS = frozenset(
    ["blockquote", "dl", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "ol", "p", "pre", "table", "ul"]
)
"""Blocks set apart by a blank line."""
_LINE_TAGS = frozenset(
    [
        "address",
        "article",
        "aside",
        "br",
        "dd",
        "div",
        "dt",
        "figcaption",
        "figure",
        "footer",
        "form",
        "header",
        "li",
        "main",
        "nav",
        "section",
        "tr",
    ]
)
"""Blocks that start a new line."""
_HIDDEN_TAGS = frozenset({"head", "script", "style", "template", "title"})


_TOKEN = re.compile(
    r"<!--.*?(?:-->|\Z)|<[!?][^>]*(?:>|\Z)|<(/?)([a-zA-Z][^\s/>]*)[^>]*(?:>|\Z)|[^<]+|<", re.S
)
"""One piece of HTML: a comment, a declaration, a start or end tag (its name in groups 1 and 2),
text, or a `<` that opens nothing. One left open runs to the end of the document (as HTML's
parsing rules end it), so each character is read once: `html.parser` reads the rest of the
document again at each `<` of a tag left open, which took hours for 1 MiB of `<a `."""
_RAW_TEXT_TAGS = frozenset({"script", "style"})
"""Elements whose content is no markup: skipped whole, up to their end tag."""


class _TextOfHtml:
    """The visible text of an HTML document, a line per block element."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._line: list[str] = []
        self._hidden = 0

    def feed(self, html: str) -> None:
        """Read the whole document."""
        lowered = html.lower()
        position = 0
        while position < len(html):
            token = _TOKEN.match(html, position)
            assert token is not None  # `<` alone matches what nothing else does
            position = token.end()
            closing, name = token.group(1, 2)
            if name is None:
                if token.group().startswith("<") and token.group() != "<":
                    continue  # a comment or a declaration
                if not self._hidden:
                    self._line.append(unescape(token.group()))
                continue
            tag = name.lower()
            if tag in _RAW_TEXT_TAGS and not closing:
                end = lowered.find(f"</{tag}", position)
                position = len(html) if end < 0 else end
            elif tag in _HIDDEN_TAGS:
                self._hidden = max(0, self._hidden + (-1 if closing else 1))
            else:
                self._break(tag)

    def close(self) -> None:
        """Finish the document, its last line included."""
        self._break("p")

    def _break(self, tag: str) -> None:
        if tag not in _PARAGRAPH_TAGS and tag not in _LINE_TAGS:
            return
        line = re.sub(r"\s+", " ", "".join(self._line)).strip()
        self._line = []
        if line:
            self.lines.append(line)
        if tag in _PARAGRAPH_TAGS and self.lines and self.lines[-1]:
            self.lines.append("")


def html_text(html: str) -> str:
    """The plain text an HTML body shows: its text, one line per block, no markup. Linear in
    the length of `html`, whatever markup it holds."""
    parser = _TextOfHtml()
    parser.feed(html)
    parser.close()
    text = "\n".join(parser.lines).strip("\n")
    return text + "\n" if text else ""
