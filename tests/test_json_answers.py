"""JSON answers: written by orjson, the same documents as Quart's own provider."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from quart_trio import QuartTrio

from e2a_gateway.web.json_provider import OrjsonProvider

pytestmark = pytest.mark.backend_independent

DOCUMENT = {
    "b": [1, 2.5, None, True],
    "a": {"z": "é ü 日本", "y": "line\nbreak \u2028 \x00"},
    "when": datetime(2026, 1, 31, 12, 0, tzinfo=UTC),
}


@dataclass
class Point:
    x: int
    y: int


@pytest.fixture
def provider() -> Iterator[OrjsonProvider]:
    app = QuartTrio("test")  # the provider holds it weakly: kept alive here
    yield OrjsonProvider(app)


def stdlib(obj: object, **kwargs: object) -> object:
    return json.loads(json.dumps(obj, default=OrjsonProvider.default, sort_keys=True, **kwargs))


def test_answers_are_the_documents_quart_writes(provider: OrjsonProvider) -> None:
    compact = provider.dumps(DOCUMENT, separators=(",", ":"))
    assert json.loads(compact) == stdlib(DOCUMENT)
    assert json.loads(compact)["when"] == "Sat, 31 Jan 2026 12:00:00 GMT"
    assert compact == json.dumps(
        stdlib(DOCUMENT), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )  # keys sorted, nothing between tokens, UTF-8 as it is
    assert json.loads(provider.dumps(Point(1, 2))) == {"x": 1, "y": 2}
    indented = provider.dumps(DOCUMENT, indent=2)
    assert json.loads(indented) == stdlib(DOCUMENT) and '\n  "a": {' in indented


async def test_a_response_is_written_by_orjson(
    provider: OrjsonProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `response` asks for (compact separators) is written by orjson, not json.dumps."""

    def refuse(*args: object, **kwargs: object) -> str:
        raise AssertionError("json.dumps was used")

    monkeypatch.setattr(json, "dumps", refuse)
    answer = provider.response(DOCUMENT)
    assert json.loads(await answer.get_data()) == {
        **{key: value for key, value in DOCUMENT.items() if key != "when"},
        "when": "Sat, 31 Jan 2026 12:00:00 GMT",
    }


def test_what_orjson_cannot_write_is_written_as_before(provider: OrjsonProvider) -> None:
    huge = {"n": 2**70}
    assert json.loads(provider.dumps(huge, separators=(",", ":"))) == huge
    assert provider.dumps({"a": 1}, separators=(", ", ": ")) == '{"a": 1}'
