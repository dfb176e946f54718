"""Approving by reply, the rules: the command a reply gives and whether it may act. Pure.

A reply acts only when it comes from the reviewer the notice was mailed to, with DMARC passing
for that address's domain, answers the notice itself (its Message-ID in In-Reply-To or
References), is not automatic mail (by any of the markers `e2a_gateway.automatic_mail` knows),
and its first line of new text is `approve`, `reject` or `reject: <reason>`. Anything else is
a `Refusal`, explained to the reviewer by `answer_text` (automatic mail never is).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from e2a_gateway.addresses import comparable_entry
from e2a_gateway.inbound.replies import split_reply

Refusal = Literal[
    "automatic",
    "wrong_sender",
    "no_dmarc_pass",
    "not_a_reply",
    "already_decided",
    "past_deadline",
    "agent_in_trash",
    "no_command",
    "recipient_suppressed",
]
MAX_REASON_LENGTH = 1000

_COMMAND = re.compile(
    r"(?P<verb>approve|reject)[.!]?(?:\s*[:\uff1a]\s*(?P<reason>.*))?", re.IGNORECASE | re.DOTALL
)


@dataclass(frozen=True)
class ReplyCommand:
    """What a reply asks: approve, or reject with an optional reason."""

    approve: bool
    reason: str | None = None


@dataclass(frozen=True)
class ReplyFacts:
    """What the gateway knows of a reply to a notice, from its headers and authentication."""

    from_addr: str
    """The From address, '' when there is none."""
    dmarc: str
    """The DMARC result for the From domain (pass, fail, none, temperror…)."""
    dmarc_domain: str | None
    """The From domain DMARC was evaluated for."""
    referenced: tuple[str, ...]
    """The Message-IDs in In-Reply-To and References."""
    automatic: str | None
    """Why the reply is automatic mail no one may answer (`automatic_mail.automatic_mail_reason`:
    an out-of-office reply by any of its markers, a bounce, bulk or list mail), None when it
    is not."""
    message_id: str | None = None
    """The reply's own Message-ID, None when it has none."""


def unflow(text: str, delsp: bool = False) -> str:
    """Plain text sent as format=flowed (RFC 3676) with its soft line breaks joined: a line
    ending in a space goes on in the next line of the same quote depth (the space dropped with
    DelSp=yes); space-stuffing is undone; the signature separator `-- ` stays a line of its own.
    Quoted lines come back as `> ` per level."""
    lines: list[str] = []
    pending: tuple[int, str] | None = None  # (depth, text) of a line that goes on
    for raw in text.split("\n"):
        depth = len(raw) - len(raw.lstrip(">"))
        content = raw[depth:]
        content = content.removeprefix(" ")  # space-stuffed (or after the quote marks)
        goes_on = content.endswith(" ") and content != "-- "  # this line's own soft break
        if goes_on and delsp:
            content = content[:-1]
        if pending is not None:
            if pending[0] == depth:
                content = pending[1] + content
            else:
                lines.append(_quoted(*pending))
            pending = None
        if goes_on:
            pending = (depth, content)
        else:
            lines.append(_quoted(depth, content))
    if pending is not None:
        lines.append(_quoted(*pending))
    return "\n".join(lines)


def _quoted(depth: int, content: str) -> str:
    return f"{'>' * depth} {content}" if depth else content


def parse_command(
    text: str | None, html: str | None = None, *, flowed: bool = False, delsp: bool = False
) -> ReplyCommand | None:
    """The command in the first non-blank line of the reply's new text (quoted history and
    signature left out, whatever the client's quoting style); None when that line is not
    `approve`, `reject` or `reject: <reason>` (any case; a trailing '.' or '!' is allowed).
    A `flowed` text (format=flowed, with `delsp` as its DelSp says) is read with its soft line
    breaks joined (`unflow`), so a long reason its client wrapped is read whole.
    A NUL in the reason reads as U+FFFD, as in header text: PostgreSQL's text cannot hold it."""
    if flowed and text is not None:
        text = unflow(text, delsp)
    new_text = split_reply(text, html).reply_text
    first = next((line.strip() for line in new_text.splitlines() if line.strip()), "")
    found = _COMMAND.fullmatch(first)
    if found is None:
        return None
    if found["verb"].lower() == "approve":
        return None if found["reason"] is not None else ReplyCommand(approve=True)
    reason = (found["reason"] or "").strip()[:MAX_REASON_LENGTH].replace("\x00", "\ufffd")
    return ReplyCommand(approve=False, reason=reason or None)


def refusal_of(
    facts: ReplyFacts, reviewer: str, notice_message_id: str, token_used: bool
) -> Refusal | None:
    """Why a reply to the notice `notice_message_id` mailed to `reviewer` may not act, or None
    when it may (its command still to be read). Checked in this order: an automatic reply,
    the sender, DMARC for the sender's domain, that it answers the notice, that the token is
    unspent."""
    if facts.automatic is not None:
        return "automatic"
    if not facts.from_addr or comparable_entry(facts.from_addr) != comparable_entry(reviewer):
        return "wrong_sender"  # compared with the domain as A-labels, as addresses are stored
    domain = reviewer.rpartition("@")[2].lower()
    if facts.dmarc != "pass" or (facts.dmarc_domain or "").lower() != domain:
        return "no_dmarc_pass"
    if notice_message_id not in facts.referenced:
        return "not_a_reply"
    if token_used:
        return "already_decided"
    return None


PLAIN_ADDRESS = re.compile(r"[a-z0-9._+-]{1,40}@(?:[a-z0-9-]{1,40}\.){1,4}[a-z0-9-]{2,40}", re.I)
"""A From address an answer to the reviewer may name: short, unquoted, a domain of a few
labels. Anything else could carry words of its own into mail e2a signs."""


def _named_sender(from_addr: str) -> str:
    """The reply's From address as the reviewer's answer names it: itself when plain
    (`PLAIN_ADDRESS`), else only that it was another address (whoever holds a leaked notice
    may reply from any address, and the answer goes to the reviewer)."""
    if not from_addr:
        return "no From address"
    return from_addr if PLAIN_ADDRESS.fullmatch(from_addr) else "another address"


def answer_text(
    refusal: Refusal, facts: ReplyFacts, reviewer: str, message_id: str, standing: str = ""
) -> str:
    """The short mail telling the reviewer why their reply about `message_id` did nothing;
    `standing` says how the message stands (for `already_decided`), what its deadline does to
    it (for `past_deadline`: `sent anyway` or `discarded`), its agent (for `agent_in_trash`),
    or which addresses are suppressed (for `recipient_suppressed`)."""
    why = {
        "automatic": f"it was automatic mail ({facts.automatic}).",
        "wrong_sender": (
            f"it came from {_named_sender(facts.from_addr)}, not from {reviewer}, the "
            "address the notice was sent to. If you did not send it, someone else has seen "
            "the notice: review the message on the dashboard instead."
        ),
        "no_dmarc_pass": (
            f"e2a could not verify that it came from {reviewer}: DMARC did not pass for "
            f"{reviewer.rpartition('@')[2]} (result: {facts.dmarc}). Ask your mail "
            "administrator to publish SPF, DKIM and DMARC for the domain, or use the dashboard."
        ),
        "not_a_reply": (
            "it does not answer the notice itself: reply to the notice email (its Message-ID "
            "must be in In-Reply-To or References) instead of writing a new message."
        ),
        "already_decided": (
            f"this message was already decided{f' ({standing})' if standing else ''}; "
            "a held message is decided once."
        ),
        "past_deadline": (
            "the message's review deadline had passed, so it can no longer be approved or "
            f"rejected: it will be {standing or 'decided'}, as its agent's expiration action says."
        ),
        "agent_in_trash": (
            f"the message's agent {standing} is in the trash, and its held mail waits until "
            "it is restored: restore the agent (on the dashboard, or POST "
            f"/v1/agents/{standing}/restore), then reply to the notice again."
        ),
        "no_command": (
            "its first line was not a command. Reply with the first line `approve`, `reject`, "
            "or `reject: <reason>`, above any quoted text."
        ),
        "recipient_suppressed": (
            f"a recipient of the message is on the suppression list ({standing}: a hard "
            "bounce, or added by hand). Remove it from the recipients, or lift the "
            "suppression, on the dashboard or with the API, and approve there."
        ),
    }[refusal]
    lines = [
        f"Your reply about the held message {message_id} did nothing, because {why}",
        "",
        "Nothing was approved or rejected by it. To edit the message, or to decide it "
        "another way, use the dashboard or the API.",
    ]
    return "\n".join(lines) + "\n"
