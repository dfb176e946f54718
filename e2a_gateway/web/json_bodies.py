"""A request body as a JSON object, for every HTTP face: parsed, at most MAX_JSON_DEPTH deep,
an object at the top, holding nothing the gateway could neither store nor answer with. How a
refusal is answered is each face's own."""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_JSON_DEPTH = 32
"""The deepest nesting of arrays and objects a request body may have (the APIs need 4)."""
MAX_JSON_ITEMS = 100_000
"""The most strings (keys among them), commas and opening brackets a request body may hold: some
50,000 values, far more than any request needs. Parsing and checking a body costs per value,
on the event loop, and a 40 MiB body of tiny values took it for half a minute."""
_STRUCTURE = re.compile(rb'[",\[\]{}]')
_REST_OF_STRING = re.compile(rb'[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)
INTEGERS = range(-(2**63), 2**63)
"""The integers a request body may hold: a signed 64-bit integer, what PostgreSQL's bigint and
the JSON answers (orjson) both carry."""
MAX_INTEGER_DIGITS = len(str(INTEGERS.stop))
"""More digits than this, and an integer is outside INTEGERS whatever they are."""


class NotAJsonObject(ValueError):
    """The body is not a JSON object within the bounds; the message says what is wrong."""


class UnfitValue(NotAJsonObject):
    """The body is a JSON object, but a string (or key) or number in it is one the gateway
    cannot keep: `location` names where (`body.data.n`), `problem` says what is wrong."""

    def __init__(self, location: str, problem: str) -> None:
        super().__init__(f"{location}: {problem}")
        self.location = location
        self.problem = problem


def json_object(raw: bytes, *, numbers_as_written: str | None = None) -> dict[str, Any]:
    """`raw` parsed as a JSON object; NotAJsonObject saying why it is not one, UnfitValue
    naming a value in it that no request may carry (`unfit_value`). Numbers in the member
    `numbers_as_written` are kept only as the text they are written in (template data), so an
    integer there may be of any size a 64-bit float can hold, as e2a's server reads one."""
    within_item_bound(raw)
    try:
        data = json.loads(raw, parse_constant=_no_constant, parse_int=bounded_int)
    except RecursionError:
        raise _too_deep() from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise NotAJsonObject(f"request body is not valid JSON: {exc}") from None
    if json_depth(data) > MAX_JSON_DEPTH:
        raise _too_deep()
    if not isinstance(data, dict):
        raise NotAJsonObject("request body must be a JSON object")
    if numbers_as_written is not None and numbers_as_written in data:
        # read as floats: checked against a float's range (the reader keeps their text)
        written = json.loads(raw, parse_constant=_no_constant, parse_int=float)
        data[numbers_as_written] = written[numbers_as_written]
    found = unfit_value(data)
    if found is not None:
        raise UnfitValue("body" + found[0], found[1])
    return data


def within_item_bound(raw: bytes, *, max_depth: int | None = MAX_JSON_DEPTH) -> None:
    """NotAJsonObject when the JSON text `raw` holds more than MAX_JSON_ITEMS strings, commas
    and opening brackets outside strings, or nests deeper than `max_depth` before it does;
    found before parsing, in time linear in `raw` and with a Python step for at most twice
    MAX_JSON_ITEMS of them. Text that is no JSON may pass: parsing refuses it."""
    quotes, rest = raw.count(b'"'), raw.count(b",") + raw.count(b"[") + raw.count(b"{")
    if quotes // 2 + rest <= MAX_JSON_ITEMS:
        return  # each string has two quotes; commas and brackets in strings count too
    items, depth, position = 0, 0, 0
    while (found := _STRUCTURE.search(raw, position)) is not None:
        position = found.end()
        character = found.group()
        if character in b"]}":
            depth -= 1
            if depth < 0:
                return  # closes what never opened: not JSON
            continue
        items += 1
        if items > MAX_JSON_ITEMS:
            raise NotAJsonObject(
                f"request body holds too many JSON values: at most {MAX_JSON_ITEMS:,} "
                "strings, commas and opening brackets"
            )
        if character in b"[{":
            depth += 1
            if max_depth is not None and depth > max_depth:
                raise _too_deep()
        elif character == b'"':
            string = _REST_OF_STRING.match(raw, position)
            if string is None:
                return  # a string that never ends: not JSON
            position = string.end()


def json_depth(value: object) -> int:
    """How deeply `value` nests arrays and objects (a scalar is 0, `[]` and `{}` are 1)."""
    deepest = 0
    pending: list[tuple[object, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth + 1)
            pending.extend((child, depth + 1) for child in item)
    return deepest


def unfit_value(value: object) -> tuple[str, str] | None:
    """The first (path below `value`, problem) of what no request may carry: a string or key
    with NUL (PostgreSQL text cannot hold it) or a lone surrogate (not Unicode text, so never
    encoded as UTF-8), an integer outside INTEGERS, a number too large for a float (`1e400`);
    None when there is none. Recursive: `json_object` calls it only within MAX_JSON_DEPTH."""
    if isinstance(value, str):
        problem = text_problem(value)
        return None if problem is None else ("", problem)
    if isinstance(value, int) and value not in INTEGERS:
        return "", f"integer out of range: {INTEGERS.start} to {INTEGERS.stop - 1} (64 bits)"
    if isinstance(value, float) and math.isinf(value):
        return "", "number out of range: too large for a 64-bit float"
    if isinstance(value, dict):
        for key, child in value.items():
            problem = text_problem(key)
            if problem is not None:
                return "", f"keys {problem}"
            found = unfit_value(child)
            if found is not None:
                return f".{key}{found[0]}", found[1]
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found = unfit_value(child)
            if found is not None:
                return f"[{index}]{found[0]}", found[1]
    return None


def text_problem(text: str) -> str | None:
    """Why `text` cannot be kept as text (a NUL, a lone surrogate), or None."""
    if "\x00" in text:
        return "must not contain NUL (U+0000)"
    if text.isascii():
        return None
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        return f"must not contain a lone surrogate (U+{code:04X}), which is not Unicode text"
    return None


def bounded_int(digits: str) -> int:
    """`digits` (an optional `-` then decimal digits) as an integer; one too long to be in
    INTEGERS as just past them (`unfit_value` names it in a body, a range check refuses it in a
    form), rather than converted (Python refuses past 4300 digits, in words of its own)."""
    if len(digits.lstrip("-")) > MAX_INTEGER_DIGITS:
        return INTEGERS.start - 1 if digits.startswith("-") else INTEGERS.stop
    return int(digits)


def _no_constant(name: str) -> float:
    """Refuses `NaN`, `Infinity` and `-Infinity`, which Python's parser takes and JSON has not."""
    raise ValueError(f"{name} is not a JSON number")


def _too_deep() -> NotAJsonObject:
    return NotAJsonObject(
        f"request body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep; "
        "no request of this API needs more",
    )
