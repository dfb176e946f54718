"""A page of an agent's mail in the order it arrived, read from the two indexes that hold it.

New inbound mail is unread, and unread mail is found by `messages_agent_status` (the agent's
address, the status, `seq`). The rest of an agent's mail (read, and everything it sent) is
also in `messages_agent_seq_settled` (the agent's address, `seq`; migration 0034). So a message
for fifty agents enters one index led by the agent's address per copy, not two: each such entry
dirties a page of its own (a page per agent), the larger part of what a fan-out commit writes.

A page of all of an agent's mail, whatever its status, takes the page's first rows from each
index in `seq` order and merges them: it costs two short index walks, never a walk or a sort of
all of the agent's mail. Pure: it builds SQL text and parameters, it runs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from e2a_gateway.storage.vocabulary import UNREAD

_ARM = (
    "SELECT m.seq FROM messages_with_content m WHERE {where} AND m.status {test} "
    "ORDER BY m.seq {order} LIMIT ?"
)


def page_in_order(
    where: str, params: Sequence[Any], limit: int, *, newest_first: bool = False
) -> tuple[str, list[Any]]:
    """A condition on `messages_with_content m` keeping the first `limit` messages, in `seq`
    order (descending when `newest_first`), among those `where` keeps (conditions on
    `messages_with_content m` naming the agent's address, and any bound on `m.seq`), followed
    by the `ORDER BY` that gives them in that order; and its parameters (`params` are those of
    `where`)."""
    order = "DESC" if newest_first else "ASC"
    unread = _ARM.format(where=where, test=f"= '{UNREAD}'", order=order)
    settled = _ARM.format(where=where, test=f"<> '{UNREAD}'", order=order)
    merged = (
        f"SELECT seq FROM ({unread}) AS unread_mail UNION ALL "
        f"SELECT seq FROM ({settled}) AS settled_mail ORDER BY 1 {order} LIMIT ?"
    )
    return f"m.seq IN ({merged}) ORDER BY m.seq {order}", [*params, limit, *params, limit, limit]
