"""The bounds on MCP answers as plain data: shares of the body budget, cuts that never split a
character, list rows, and the cut that makes a too large answer fit."""

from __future__ import annotations

import json
from typing import Any

from e2a_gateway.mcp.bounds import (
    CUT_MARK,
    MAX_ANSWER_BYTES,
    MAX_ROW_ADDRESSES,
    MAX_ROW_TEXT_CHARS,
    MIN_CUT_CHARS,
    bounded_row,
    byte_shares,
    cut_in_turn,
    fitted,
)
from e2a_gateway.utf8_cuts import utf8_prefix


def test_shares_are_equal_and_what_is_left_goes_to_the_longer() -> None:
    assert byte_shares({"text": 500, "html": 500}, 600) == {"text": 300, "html": 300}
    assert byte_shares({"reply": 50, "text": 500, "html": 900}, 600) == {
        "reply": 50,
        "text": 275,
        "html": 275,
    }
    assert byte_shares({"text": 10, "html": 20}, 600) == {"text": 10, "html": 20}


def test_a_cut_never_splits_a_character() -> None:
    assert utf8_prefix("预算说明", 7) == "预算"
    assert utf8_prefix("预算说明", 12) == "预算说明"
    assert cut_in_turn(["预算", None, "说明书"], 9) == ["预算", None, "说"]


def test_a_row_keeps_ids_whole_and_cuts_text_and_lists() -> None:
    row = {
        "message_id": "m" * 300,
        "subject": "s" * 300,
        "cc": [f"p{n}@example.net" for n in range(15)],
        "data": {"subject": "x" * 300},
    }
    bounded = bounded_row(row)
    assert bounded["message_id"] == row["message_id"]
    assert bounded["subject"] == "s" * MAX_ROW_TEXT_CHARS + CUT_MARK
    assert bounded["cc"] == [*row["cc"][:MAX_ROW_ADDRESSES], "…[5 more]"]
    assert bounded["data"]["subject"].endswith(CUT_MARK)


def _size(answer: dict[str, Any]) -> int:
    return 2 * len(json.dumps(answer, ensure_ascii=False).encode())


def test_a_large_answer_is_cut_as_little_as_needed_or_refused() -> None:
    answer = {"id": "msg_1", "subject": "s" * 100_000, "text": "t" * 400_000}
    shrunk = fitted(answer, _size)
    assert shrunk is not None and MAX_ANSWER_BYTES - 100 < _size(shrunk) <= MAX_ANSWER_BYTES
    assert shrunk["subject"] == answer["subject"] and shrunk["text"].endswith(CUT_MARK)
    rows = {"messages": [{"subject": "s" * MIN_CUT_CHARS} for _ in range(1_000)]}
    assert fitted(rows, _size) is None
