"""Mail an autoresponder must not answer (RFC 3834): automatic mail (`Auto-Submitted` other
than `no`, the vacation responders' `X-Autoreply` family), bulk and list mail (`Precedence`,
`List-Id`, `List-Unsubscribe`), bounces (an empty return path, a mailer daemon or postmaster),
and the agent's own mail coming back. Pure: the delivered bytes in, a reason out.
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import re

_DAEMON = re.compile(r"^(?:mailer-daemon|mail-daemon|postmaster)@", re.IGNORECASE)
_COMMENT = re.compile(r"\([^()]*\)")
_AUTORESPONDER_FIELDS = ("X-Autoreply", "X-Autorespond", "X-Autoresponder")
_LIST_FIELDS = ("List-Id", "List-Unsubscribe")
_BULK_PRECEDENCE = {"bulk", "list", "junk", "auto_reply"}


def _address(value: str | None) -> str:
    """The address of a From or Return-Path field, lower case ('' when none)."""
    if value is None:
        return ""
    return email.utils.parseaddr(str(value))[1].strip().lower()


def _keyword(value: str | None) -> str:
    """The first word of a structured field, comments removed, lower case."""
    text = _COMMENT.sub(" ", str(value or ""))
    return text.split(";")[0].strip().lower()


def not_to_answer(raw: bytes, sender: str, agent: str) -> str | None:
    """Why the message `raw` (as delivered to `agent`, `sender` its From address) must not get
    an automatic reply, or None when it may. The first Return-Path is the envelope sender,
    which the gateway puts on top of every delivered message."""
    fields = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
    return_path = fields.get("Return-Path")
    envelope = _address(return_path)
    if return_path is not None and not envelope:
        return "a bounce: its return path is empty"
    for address in (envelope, sender.strip().lower()):
        if _DAEMON.match(address):
            return f"a bounce: it comes from {address}"
    if agent.strip().lower() in (envelope, sender.strip().lower()):
        return "its own mail: it comes from the agent itself"
    auto_submitted = fields.get("Auto-Submitted")
    if auto_submitted is not None and _keyword(auto_submitted) != "no":
        return f"Auto-Submitted: {_keyword(auto_submitted)}"
    for name in _AUTORESPONDER_FIELDS:
        if fields.get(name) is not None:
            return f"{name} is set"
    precedence = _keyword(fields.get("Precedence"))
    if precedence in _BULK_PRECEDENCE:
        return f"Precedence: {precedence}"
    for name in _LIST_FIELDS:
        if fields.get(name) is not None:
            return f"list mail: {name} is set"
    return None
