"""How much an MCP tool answers at most. A mail's sender chooses its subject, recipients and
body, and an MCP client takes at most 1 MiB in one message (the official client's bound on a
server-sent event), with every answer sent twice (text and structured content). So list rows
and bodies are cut here, with a mark; pure functions of plain data, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from e2a_gateway.utf8_cuts import utf8_prefix, utf8_size

CUT_MARK = "…[cut]"
"""Ends a string this module cut."""
MAX_ANSWER_BYTES = 768 * 1024
"""The most one tool answer may take, as JSON with both its copies: well under a client's
1 MiB, with room for the JSON-RPC envelope."""
MAX_BODY_BYTES = 120_000
"""The most UTF-8 bytes a message's bodies take in one answer together: text, HTML,
`reply_text` and the quoted passages of `trust` share them."""
MAX_QUOTED_BYTES = 30_000
"""The most UTF-8 bytes the texts of a verification block's unverified quotes take together."""
MAX_ROW_TEXT_CHARS = 200
"""A list row's strings (a subject, an address) are cut after this many characters."""
MAX_ROW_ADDRESSES = 10
"""A list row's lists of strings (To, Cc) keep this many, then say how many more there are."""
MIN_CUT_CHARS = 1_000
"""An answer too large is made to fit by cutting its longest strings, never below this."""


def kept_whole(key: str) -> bool:
    """Whether the string under `key` is never cut: ids, cursors, URLs and attachment data
    only work whole."""
    return (
        key == "id"
        or key.endswith(("_id", "_url", "cursor", "token", "next_page"))
        or key == "data"
    )


def cut_text(text: str, chars: int) -> str:
    """`text`, or its first `chars` characters and CUT_MARK when it is longer."""
    return text if len(text) <= chars else text[:chars] + CUT_MARK


def cut_list(items: list[Any], count: int) -> list[Any]:
    """`items`, or the first `count` and then `…[N more]` when there are more."""
    if len(items) <= count:
        return items
    return [*items[:count], f"…[{len(items) - count} more]"]


def bounded_row(node: Any, key: str = "") -> Any:
    """A row of a list answer with each string cut at MAX_ROW_TEXT_CHARS and each list of
    strings at MAX_ROW_ADDRESSES items, at any depth (ids, cursors and URLs stay whole)."""
    if isinstance(node, str):
        return node if kept_whole(key) else cut_text(node, MAX_ROW_TEXT_CHARS)
    if isinstance(node, dict):
        return {name: bounded_row(value, name) for name, value in node.items()}
    if isinstance(node, list):
        if node and all(isinstance(item, str) for item in node) and not kept_whole(key):
            node = cut_list(node, MAX_ROW_ADDRESSES)
        return [bounded_row(item, key) for item in node]
    return node


def byte_shares(sizes: dict[str, int], budget: int) -> dict[str, int]:
    """How many bytes each of several texts (their UTF-8 `sizes`) may keep so that together
    they take at most `budget`: equal shares, what a shorter text leaves going to the longer."""
    shares: dict[str, int] = {}
    left = budget
    order = sorted(sizes, key=lambda name: sizes[name])
    for index, name in enumerate(order):
        shares[name] = min(sizes[name], left // (len(order) - index))
        left -= shares[name]
    return shares


def cut_in_turn(texts: list[str | None], budget: int) -> list[str | None]:
    """`texts` cut in order to take at most `budget` UTF-8 bytes together: the first ones whole
    while they fit, the rest cut or empty."""
    kept: list[str | None] = []
    for text in texts:
        if text is None:
            kept.append(None)
            continue
        shown = utf8_prefix(text, budget)
        budget -= utf8_size(shown)
        kept.append(shown)
    return kept


def cut_strings(node: Any, chars: int, key: str = "") -> Any:
    """`node` with each string longer than `chars` cut there (CUT_MARK), but ids, cursors,
    URLs and data."""
    if isinstance(node, str):
        return node if kept_whole(key) else cut_text(node, chars)
    if isinstance(node, dict):
        return {name: cut_strings(value, chars, name) for name, value in node.items()}
    if isinstance(node, list):
        return [cut_strings(item, chars, key) for item in node]
    return node


def _longest(node: Any) -> int:
    if isinstance(node, str):
        return len(node)
    if isinstance(node, dict):
        return max((_longest(value) for value in node.values()), default=0)
    if isinstance(node, list):
        return max((_longest(item) for item in node), default=0)
    return 0


def fitted(answer: dict[str, Any], size: Callable[[dict[str, Any]], int]) -> dict[str, Any] | None:
    """`answer` with its longest strings cut as little as needed for `size` to be at most
    MAX_ANSWER_BYTES; None when cutting every string at MIN_CUT_CHARS is not enough (too many
    items: only a smaller page helps)."""
    smallest = cut_strings(answer, MIN_CUT_CHARS)
    if size(smallest) > MAX_ANSWER_BYTES:
        return None
    low, high = MIN_CUT_CHARS, _longest(answer)
    while low < high:
        middle = (low + high + 1) // 2
        if size(cut_strings(answer, middle)) <= MAX_ANSWER_BYTES:
            low = middle
        else:
            high = middle - 1
    shrunk: dict[str, Any] = cut_strings(answer, low)
    return shrunk
