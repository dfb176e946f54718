"""`/v1`'s parsed view of a message (MessageParsedView), as e2a makes it: the text an agent
gives a model by default, only the words of the message's own author, and the HTML for display,
each bounded. Pure functions, but `split_off_loop`.

The text is read from the message's split (`e2a_gateway.inbound.replies.split_reply`: the
text/plain part, else the text/html part rendered to text): every part but the quoted ones —
the sender's words and signature, without the earlier mail a reply quotes or a forward carries,
where someone else's instructions would otherwise reach the model as the sender's. `body` keeps
the whole text; `raw_message` the whole message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import trio

from e2a_gateway.api.v1.views import present
from e2a_gateway.inbound.replies import split_reply
from e2a_gateway.utf8_cuts import utf8_prefix

MAX_TEXT_BYTES = 16 * 1024
"""The parsed text's bound, in UTF-8 (e2a's): enough for what people write, and a guard
against mail stuffed to fill a model's context."""
MAX_HTML_BYTES = 1024 * 1024
"""The parsed HTML's bound, in UTF-8 (e2a's): it is for display; `body.html` and the raw
message keep the whole."""

Parts = list[tuple[str, str]]
"""A message's split as `(kind, content)` in order: `authored`, `quoted` or `signature`."""


def parsed_view(parts: Iterable[tuple[str, str]], html: str | None) -> dict[str, Any]:
    """MessageParsedView of a message split into `parts`, with HTML part `html`: `text` the
    content of every part that is not quoted, a blank line apart, each line without trailing
    spaces, runs of blank lines made one and blank lines at either end dropped, cut to
    MAX_TEXT_BYTES between two characters (`truncated` true then); `html` cut to
    MAX_HTML_BYTES."""
    own = "\n\n".join(content for kind, content in parts if kind != "quoted" and content)
    text, truncated = _cut(_compact(own), MAX_TEXT_BYTES)
    shown = None if html is None else _cut(html, MAX_HTML_BYTES)[0]
    return present(text=text, html=shown, truncated=truncated)


async def split_off_loop(text: str | None, html: str | None) -> Parts:
    """The parts of a body with text part `text` and HTML part `html`, split in a worker thread
    (a split's cost grows with the body, up to its bounds)."""
    split = await trio.to_thread.run_sync(split_reply, text, html)
    return [(part.kind, part.content) for part in split.parts]


def reading_parts(reading: Mapping[str, Any]) -> Parts:
    """The parts of a message's kept reading (`e2a_gateway.operations.trust`: its trust map
    lists the parts of the same split)."""
    return [(part["kind"], part["content"]) for part in reading["trust"]["parts"]]


def _compact(text: str) -> str:
    lines: list[str] = []
    for line in text.split("\n"):
        line = line.rstrip()
        if line or (lines and lines[-1]):
            lines.append(line)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def _cut(text: str, limit: int) -> tuple[str, bool]:
    """`text` within `limit` bytes of UTF-8, cut between characters; and whether it was cut."""
    shown = utf8_prefix(text, limit)
    return (text, False) if shown is text else (shown.rstrip(), True)
