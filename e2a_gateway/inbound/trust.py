"""Whose words each part of a received message is: the trust map. Pure functions, no I/O.

Text the message's sender wrote (authored parts and the signature) is as trustworthy as the
gateway's verdict on that sender; text it quotes is only as trustworthy as the earlier mail it
came from, and only when that mail is in the agent's own store and really holds that text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from e2a_gateway.inbound.replies import Attribution, MessagePart, ReplySplit

Direction = Literal["inbound", "outbound"]
Contents = Literal["match", "differs", "not_kept"]
"""How a quote compares with the stored mail it names: its text is in that mail's own text
(`match`), is not (`differs`: edited, or not from that mail), or that mail's body is no longer
kept (`not_kept`: outbound bodies are dropped once sent), so nothing can be compared."""

__all__ = [
    "Contents",
    "Direction",
    "EarlierMail",
    "SenderVerdict",
    "authored_text",
    "reading",
    "sender_verdict",
]

MAX_QUOTE_SEARCH_CHARS = 200_000_000
"""Characters of earlier mail a reading may look through for its quotes (well under a second). Each
quoted part is looked for in each earlier mail named, so a message of thousands of quotes
naming mail of megabytes took hours; a quote past the budget is not found (`differs`)."""


@dataclass(frozen=True)
class SenderVerdict:
    """What the gateway concluded about the message's From: address when it arrived.

    `results` are the SPF, DKIM and DMARC (and ARC) results by method; `verified` is True only
    when SPF or DKIM passed for a domain aligned with the From: domain (or the mail came from
    an agent of this gateway, `entity_type` "agent"). `aligned_by` names the methods whose
    pass was so aligned (`spf`, `dkim`), as the gateway's Authentication-Results field records
    them; None when the message has no such field of this gateway's."""

    address: str
    verified: bool
    entity_type: str
    results: Mapping[str, str]
    aligned_by: tuple[str, ...] | None = None

    @property
    def basis(self) -> str | None:
        """The result that makes the sender verified: `dmarc=pass`, else the aligned pass
        (`dkim=pass`, else `spf=pass`), else `agent`; None when it is not verified."""
        if not self.verified:
            return None
        if self.results.get("dmarc") == "pass":
            return "dmarc=pass"
        for method in ("dkim", "spf"):
            # no field of ours to read it from (one naming an earlier smtp.hostname): a pass
            # is the likeliest basis, as it was named before alignment was read
            aligned = self.aligned_by is None or method in self.aligned_by
            if aligned and self.results.get(method) == "pass":
                return f"{method}=pass"
        return "agent" if self.entity_type == "agent" else None


@dataclass(frozen=True)
class EarlierMail:
    """A message of the agent's store that the new message names (In-Reply-To, References).

    `authored` is that mail's own text (its authored parts and signature, without what it
    quoted), or None when its body is no longer kept. `verified` is the gateway's verdict on
    its sender for inbound mail, and True for mail the agent itself sent through e2a."""

    message_id: str
    rfc_message_id: str
    direction: Direction
    sender: str
    verified: bool
    authored: str | None


def sender_verdict(
    address: str,
    verified: bool,
    entity_type: str,
    results: Mapping[str, str],
    aligned_by: tuple[str, ...] | None = None,
) -> SenderVerdict:
    """The verdict on a stored message's sender, from its identity claim, its results and the
    methods whose pass was aligned (`Evidence.aligned_by`)."""
    return SenderVerdict(
        address.lower(), verified, entity_type or "human", dict(results), aligned_by
    )


def authored_text(split: ReplySplit) -> str:
    """A message's own text: its authored parts and signature, one after another."""
    return "\n\n".join(
        part.content for part in split.parts if part.kind != "quoted" and part.content
    )


def reading(
    split: ReplySplit,
    sender: SenderVerdict,
    earlier: Sequence[EarlierMail],
    in_reply_to: str | None,
) -> dict[str, Any]:
    """`{"reply_text", "trust"}` for a message split as `split`, sent by `sender`, naming the
    `earlier` mail of the agent's store (`in_reply_to` is the Message-ID it answers).

    Every part of the trust map says who wrote it: authored text and the signature are the
    sender's, `verified` as the sender is; a quoted part is `verified` only when the mail it
    comes from is in the store, holds that text, and was itself verified. `quoted_unverified`
    is True when any quoted text is not."""
    own = _OwnTexts(earlier)
    parts = []
    for part in split.parts:
        if part.kind == "quoted":
            parts.append(_quoted_part(part, earlier, own, in_reply_to))
        else:
            parts.append(
                {**_part_fields(part), "author": sender.address, "verified": sender.verified}
            )
    quoted = [part for part in parts if part["kind"] == "quoted"]
    return {
        "reply_text": split.reply_text,
        "trust": {
            "sender": {
                "address": sender.address,
                "verified": sender.verified,
                "entity_type": sender.entity_type,
                "authentication_results": dict(sender.results),
                "basis": sender.basis,
            },
            "parts": parts,
            "quoted_unverified": any(not part["verified"] for part in quoted),
        },
    }


def _part_fields(part: MessagePart) -> dict[str, Any]:
    return {
        "kind": part.kind,
        "depth": part.depth,
        "start": part.start,
        "end": part.end,
        "content": part.content,
        "attribution": _attribution(part.attribution),
    }


def _attribution(attribution: Attribution | None) -> dict[str, Any] | None:
    if attribution is None:
        return None
    return {
        "text": attribution.text,
        "name": attribution.name,
        "address": attribution.address,
        "date": attribution.date,
        "subject": attribution.subject,
        "forwarded": attribution.forwarded,
    }


class _OwnTexts:
    """The earlier mails' own texts as quotes are looked for in them: each compared form made
    when first needed, and at most `MAX_QUOTE_SEARCH_CHARS` looked through in all."""

    def __init__(self, earlier: Sequence[EarlierMail]) -> None:
        self._earlier = earlier
        self._compared: dict[int, str] = {}
        self._budget = MAX_QUOTE_SEARCH_CHARS

    def hold(self, index: int, quote: str) -> bool:
        """Whether the own text of `earlier[index]` holds `quote` (False when the budget
        left cannot look through that text)."""
        authored = self._earlier[index].authored
        if authored is None or len(authored) > self._budget:
            return False
        self._budget -= len(authored)
        if index not in self._compared:
            self._compared[index] = _norm(authored)
        return quote in self._compared[index]


def _quoted_part(
    part: MessagePart,
    earlier: Sequence[EarlierMail],
    own: _OwnTexts,
    in_reply_to: str | None,
) -> dict[str, Any]:
    """A quoted part with the stored mail it comes from: the first whose own text holds it
    (the attributed sender's mail first), else the mail its attribution or, for the first
    level, In-Reply-To names, whose text then `differs` or is `not_kept`."""
    quote = _norm(part.content)
    named = (
        part.attribution.address.lower() if part.attribution and part.attribution.address else None
    )
    order = sorted(range(len(earlier)), key=lambda i: earlier[i].sender != named)
    source: tuple[EarlierMail, Contents] | None = None
    if quote:
        for index in order:
            if own.hold(index, quote):
                source = (earlier[index], "match")
                break
    if source is None:
        claimed = _claimed(part, earlier, named, in_reply_to)
        if claimed is not None:
            source = (claimed, "not_kept" if claimed.authored is None else "differs")
    fields = {**_part_fields(part), "author": named, "verified": False, "source": None}
    if source is not None:
        mail, contents = source
        fields["author"] = mail.sender
        fields["verified"] = contents == "match" and mail.verified
        fields["source"] = {
            "message_id": mail.message_id,
            "direction": mail.direction,
            "from": mail.sender,
            "verified": mail.verified,
            "contents": contents,
        }
    return fields


def _claimed(
    part: MessagePart, earlier: Sequence[EarlierMail], named: str | None, in_reply_to: str | None
) -> EarlierMail | None:
    """The stored mail a quote says it comes from: by its attribution's address, else (a
    first-level quote without one) the mail the message answers."""
    if named is not None:
        return next((mail for mail in earlier if mail.sender == named), None)
    if part.depth == 1 and in_reply_to is not None:
        return next((mail for mail in earlier if mail.rfc_message_id == in_reply_to), None)
    return None


def _norm(text: str) -> str:
    """Text as compared: whitespace runs (line wrapping, indentation) as one space."""
    return " ".join(text.split())
