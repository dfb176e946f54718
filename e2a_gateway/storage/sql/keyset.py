"""Keyset pages, newest first: the condition that continues a listing ordered by
`(created_at, key)` descending strictly after the last row of the previous page.

A position is the pair a page ended on; the next page never repeats or skips a row, whatever
was added or removed meanwhile. Pure: it builds SQL text and parameters, it runs nothing.
"""

from __future__ import annotations

Position = tuple[str, str]
"""Where a page ended: the `created_at` and the unique key of its last row."""


def after_newest_first(
    after: Position | None, created: str, key: str
) -> tuple[str, tuple[str, ...]]:
    """`AND …` keeping the rows after `after` in an order of `created DESC, key DESC`, and its
    parameters; nothing for the first page."""
    if after is None:
        return "", ()
    created_at, last_key = after
    condition = f"AND ({created} < ? OR ({created} = ? AND {key} < ?))"
    return condition, (created_at, created_at, last_key)
