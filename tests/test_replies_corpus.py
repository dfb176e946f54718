"""The reply-splitting corpus (tests/data/replies/*.yaml): every case split as a person splits it.

Each case is one test: the expected `reply_text`, and, where the case lists them, the expected
parts (kind, depth, attribution fields). Cases e2a does not split right yet carry an `xfail`
reason and run as strict xfails, so they stay visible and a fix shows up as an XPASS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2a_gateway.inbound.replies import MessagePart, split_reply

pytestmark = pytest.mark.backend_independent

CORPUS = Path(__file__).parent / "data" / "replies"
_ATTRIBUTION_FIELDS = ("name", "address", "date", "subject", "forwarded")


@dataclass(frozen=True)
class ExpectedPart:
    kind: str
    depth: int
    attribution: dict[str, Any] = field(default_factory=dict)

    def differences(self, part: MessagePart) -> list[str]:
        """What in `part` differs from this expectation (empty when it matches)."""
        found = []
        if (part.kind, part.depth) != (self.kind, self.depth):
            found.append(f"{part.kind} {part.depth} instead of {self.kind} {self.depth}")
        for name, value in self.attribution.items():
            actual = getattr(part.attribution, name, None)
            if actual != value:
                found.append(f"attribution {name}: {actual!r} instead of {value!r}")
        return found


@dataclass(frozen=True)
class Case:
    name: str
    group: str
    shape: str
    text: str | None
    html: str | None
    reply_text: str
    parts: tuple[ExpectedPart, ...] | None
    xfail: str | None


def _expected_part(item: str | dict[str, Any]) -> ExpectedPart:
    label, attribution = (item, {}) if isinstance(item, str) else next(iter(item.items()))
    kind, _, depth = label.partition(" ")
    unknown = set(attribution) - set(_ATTRIBUTION_FIELDS)
    if unknown:
        raise ValueError(f"unknown attribution fields {sorted(unknown)} in part {label!r}")
    return ExpectedPart(kind, int(depth or 0), dict(attribution))


def load_corpus() -> list[Case]:
    """Every case of the corpus, in file order."""
    cases: list[Case] = []
    for path in sorted(CORPUS.glob("*.yaml")):
        for raw in yaml.safe_load(path.read_text(encoding="utf-8")):
            parts = raw.get("parts")
            cases.append(
                Case(
                    name=raw["name"],
                    group=path.stem,
                    shape=raw["shape"],
                    text=raw.get("text"),
                    html=raw.get("html"),
                    reply_text=raw["reply_text"].rstrip("\n"),
                    parts=None if parts is None else tuple(_expected_part(p) for p in parts),
                    xfail=raw.get("xfail"),
                )
            )
    names = [case.name for case in cases]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"corpus case names used twice: {duplicates}")
    return cases


def split_differences(case: Case) -> list[str]:
    """How e2a's split of `case` differs from the person's (empty when it matches)."""
    split = split_reply(case.text, case.html)
    found = []
    if split.reply_text != case.reply_text:
        found.append(f"reply_text {split.reply_text!r} instead of {case.reply_text!r}")
    if case.parts is not None:
        if len(split.parts) != len(case.parts):
            kinds = [f"{p.kind} {p.depth}" for p in split.parts]
            found.append(f"{len(split.parts)} parts ({kinds}) instead of {len(case.parts)}")
        else:
            for number, (part, expected) in enumerate(zip(split.parts, case.parts, strict=True)):
                found.extend(f"part {number}: {d}" for d in expected.differences(part))
    return found


CASES = load_corpus()


def _param(case: Case) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
    return pytest.param(case, id=f"{case.group}/{case.name}", marks=marks)


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_corpus_case_is_split_as_a_person_would(case: Case) -> None:
    assert split_differences(case) == []


def test_corpus_is_large_and_varied() -> None:
    shapes = {case.shape for case in CASES}
    assert len(CASES) >= 100
    assert {"top-posting", "bottom-posting", "interleaved", "forward", "nested", "html"} <= shapes
    assert {"no-quote", "signature", "tricky"} <= shapes
