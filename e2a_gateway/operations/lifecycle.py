"""The outbound message's approval lifecycle as a table, in the manner of h11's `_state.py`:
which event moves a message from which state to which, which states are final, and which keep
the body. Pure data and lookups, no I/O: storage makes each move inside one transaction (so
two approvals racing send once), and every check of a status in Python asks here.

    send/reply ─┬─ held ────▶ pending_approval ─┬─ approve ─────────▶ queued
                │                               ├─ reject ──────────▶ rejected
                │                               ├─ expire_approved ─▶ expired_approved
                │                               └─ expire_rejected ─▶ expired_rejected
                └─ not held ────────────────────────────────────────▶ queued

    queued            hand_off ▶ sent                retry ▶ queued
                      give_up  ▶ failed              bounce ▶ bounced
    sent              (a bounce report)  ▶ bounced
    expired_approved  hand_off ▶ expired_approved *  retry ▶ expired_approved
                      give_up  ▶ expired_rejected

    * An auto-approval handed on keeps its state, as docs/approvals.md says: it stays
      expired_approved, with its hand-off time (`sent_at`) and method recorded. A message is
      final once its state has no moves or once it was handed on; it then takes no event and
      its body is scrubbed.

    A message nobody got is `bounced` rather than `failed` when the relay refused any of its
    recipients with 5xx at RCPT (in whichever attempt) or a report bounced one; a sent message
    a permanent bounce report comes back for moves to `bounced` too (its body is long gone).
    A report about mail still being handed on to others (a recipient deferred) waits for its
    send job, which makes it `bounced` once it ends.
    `bounced` is final.
"""

from __future__ import annotations

from typing import Literal

from e2a_gateway.storage.base import OutboundStatus
from e2a_gateway.storage.vocabulary import (
    BOUNCED,
    EXPIRED_APPROVED,
    EXPIRED_REJECTED,
    FAILED,
    OUTBOUND_STATUSES,
    PENDING_APPROVAL,
    QUEUED,
    REJECTED,
    SENT,
)

STATES: tuple[OutboundStatus, ...] = OUTBOUND_STATUSES
"""Every state, in the order the contract lists them."""

Event = Literal[
    "approve",
    "reject",
    "expire_approved",
    "expire_rejected",
    "hand_off",
    "retry",
    "give_up",
    "bounce",
]
"""What happens to a message: a reviewer approves or rejects it; its approval deadline passes
with the agent's action; the send worker hands it off, will retry, or gives up."""

TRANSITIONS: dict[OutboundStatus, dict[Event, OutboundStatus]] = {
    PENDING_APPROVAL: {
        "approve": QUEUED,
        "reject": REJECTED,
        "expire_approved": EXPIRED_APPROVED,
        "expire_rejected": EXPIRED_REJECTED,
    },
    QUEUED: {"hand_off": SENT, "retry": QUEUED, "give_up": FAILED, "bounce": BOUNCED},
    # An auto-approval that cannot be sent ends rejected, with the reason (contract/hitl.md).
    EXPIRED_APPROVED: {
        "hand_off": EXPIRED_APPROVED,
        "retry": EXPIRED_APPROVED,
        "give_up": EXPIRED_REJECTED,
    },
    SENT: {},
    FAILED: {},
    REJECTED: {},
    EXPIRED_REJECTED: {},
    BOUNCED: {},
}
"""Every move there is: state → event → the state it leads to. A pair absent here is refused."""

TERMINAL: frozenset[OutboundStatus] = frozenset(
    state for state, moves in TRANSITIONS.items() if not moves
)
"""States nothing leaves; the body is scrubbed from storage on entering one."""

BODY_KEPT: frozenset[OutboundStatus] = frozenset(TRANSITIONS) - TERMINAL
"""States whose body (text, HTML, attachments) is stored until the message is handed on."""

AWAITING_HAND_OFF: frozenset[OutboundStatus] = frozenset(
    state for state, moves in TRANSITIONS.items() if "hand_off" in moves
)
"""States with a send job outstanding until the message is handed on: the send worker may
hand it off."""

SEND_ERROR_SHOWN: frozenset[OutboundStatus] = frozenset(
    {QUEUED, SENT, FAILED, EXPIRED_APPROVED, EXPIRED_REJECTED, BOUNCED}
)
"""States in which the last hand-off error explains the state: a retry pending, the recipients
that refused a message handed on to the others, a failure, an auto-approval that could not be
sent."""


class TransitionRefused(Exception):
    """`event` cannot happen to a message in `state`."""

    def __init__(self, state: OutboundStatus, event: Event) -> None:
        super().__init__(f"an outbound message that is {state} cannot take {event}")
        self.state = state
        self.event = event


def initial_state(held: bool) -> OutboundStatus:
    """Where a new message starts: held for approval, or straight to the send worker."""
    return PENDING_APPROVAL if held else QUEUED


def next_state(state: OutboundStatus, event: Event, handed_on: bool = False) -> OutboundStatus:
    """The state `event` moves a message in `state` to; TransitionRefused when it cannot (a
    message already handed on takes no event)."""
    moves = {} if handed_on else TRANSITIONS[state]
    if event not in moves:
        raise TransitionRefused(state, event)
    return moves[event]


def is_final(state: OutboundStatus, handed_on: bool) -> bool:
    """Whether nothing more happens to a message: its state has no moves, or it was handed
    on (an auto-approval sent stays `expired_approved`)."""
    return state in TERMINAL or handed_on


def body_kept(state: OutboundStatus, handed_on: bool) -> bool:
    """Whether a message's body is still stored and shown: until it is final."""
    return not is_final(state, handed_on)


def awaits_review(state: OutboundStatus) -> bool:
    """Whether a reviewer may still approve or reject a message in `state`."""
    return "approve" in TRANSITIONS[state]
