"""JSON answers serialized with orjson: the same documents as Quart's own provider (keys
sorted, its conversions of dates and dataclasses), written several times faster. Non-ASCII
text is sent as UTF-8 rather than as `\\u` escapes; both are the same JSON.
"""

from __future__ import annotations

from typing import Any

import orjson
from quart.json.provider import DefaultJSONProvider

_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
"""Sorted keys as before; dates and dataclasses handed to Quart's conversions."""


class OrjsonProvider(DefaultJSONProvider):
    """Quart's JSON provider with `dumps` done by orjson."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        """`obj` as compact JSON (what `response` asks for with `separators`), or indented by
        two (`indent=2`, in debug mode); anything orjson cannot write (an integer beyond 64
        bits, other arguments of `json.dumps`) is written by Quart's provider."""
        options = _OPTIONS
        if kwargs.get("indent") == 2:
            options |= orjson.OPT_INDENT_2
        if kwargs.keys() <= {"separators", "indent"} and kwargs.get("separators") in (
            None,
            (",", ":"),
        ):
            try:
                return orjson.dumps(obj, default=self.default, option=options).decode()
            except orjson.JSONEncodeError:
                pass
        return super().dumps(obj, **kwargs)
