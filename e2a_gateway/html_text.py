"""The plain text an HTML body shows, one line per block element, without markup: the
text/plain alternative of mail composed as HTML alone (by the CLI, or by the gateway for a
send that gives no text), and what `e2a listen` shows of HTML-only mail. Pure, stdlib only.
"""

from __future__ import annotations

import re

from e2a_gateway.html_tokens import EndTag, Text, html_tokens

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


class _TextOfHtml:
    """The visible text of an HTML document, a line per block element."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._line: list[str] = []
        self._hidden = 0

    def feed(self, html: str) -> None:
        """Read the whole document (`html_tokens`: in linear time)."""
        for token in html_tokens(html):
            if isinstance(token, Text):
                if not self._hidden:
                    self._line.append(token.text)
            elif token.name in _HIDDEN_TAGS:
                if isinstance(token, EndTag) or not token.closed:
                    self._hidden = max(0, self._hidden + (-1 if isinstance(token, EndTag) else 1))
            else:
                self._break(token.name)

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
