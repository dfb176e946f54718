"""The outbound approval lifecycle (e2a_gateway/operations/lifecycle.py): the table itself, every
pair of state and event, and storage moving messages exactly as the table says, on the suite's
database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal, get_args

import pytest

from e2a_gateway.config import Settings
from e2a_gateway.gateway import open_gateway
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.operations import lifecycle
from e2a_gateway.operations.lifecycle import (
    AWAITING_HAND_OFF,
    BODY_KEPT,
    STATES,
    TERMINAL,
    TRANSITIONS,
    Event,
    TransitionRefused,
    awaits_review,
    body_kept,
    initial_state,
    is_final,
    next_state,
)
from e2a_gateway.storage.base import (
    TERMINAL_STATUSES,
    Agent,
    BouncedRecipient,
    NotPending,
    OutboundMessage,
    OutboundStatus,
    SendAttempt,
    SendOutcome,
    Storage,
)

EVENTS: tuple[Event, ...] = get_args(Event)
NOW = "2026-01-01T00:00:00Z"
DEADLINE = 100.0
OUTCOMES: dict[Event, SendOutcome] = {
    "hand_off": "sent",
    "retry": "retry",
    "give_up": "failed",
    "bounce": "failed",
}
"""What the send worker records for each of its events."""


def test_every_state_has_a_row_and_every_move_leads_to_a_state() -> None:
    assert set(TRANSITIONS) == set(STATES)
    for moves in TRANSITIONS.values():
        assert set(moves) <= set(EVENTS)
        assert set(moves.values()) <= set(STATES)


def test_final_states_are_those_storage_scrubs() -> None:
    assert {"sent", "failed", "rejected", "expired_rejected", "bounced"} == TERMINAL
    assert TERMINAL == TERMINAL_STATUSES  # the SQL's list of finished messages
    assert {"pending_approval", "queued", "expired_approved"} == BODY_KEPT


def test_every_state_is_reached_and_every_path_can_end() -> None:
    reached = {initial_state(True), initial_state(False)}
    frontier = list(reached)
    while frontier:
        for target in TRANSITIONS[frontier.pop()].values():
            if target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(STATES)
    for state in set(STATES) - TERMINAL:
        ends = {next_state(state, event) for event in TRANSITIONS[state]} & TERMINAL
        assert ends, f"{state} can never finish"


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("event", EVENTS)
def test_each_pair_moves_as_the_table_says_or_is_refused(
    state: OutboundStatus, event: Event
) -> None:
    if event in TRANSITIONS[state]:
        assert next_state(state, event) == TRANSITIONS[state][event]
        return
    with pytest.raises(TransitionRefused) as refused:
        next_state(state, event)
    assert (refused.value.state, refused.value.event) == (state, event)
    assert str(refused.value) == f"an outbound message that is {state} cannot take {event}"


def test_who_may_act_on_which_state() -> None:
    assert [state for state in STATES if awaits_review(state)] == ["pending_approval"]
    assert {"queued", "expired_approved"} == AWAITING_HAND_OFF
    assert (initial_state(True), initial_state(False)) == ("pending_approval", "queued")
    assert {"queued", "sent", "failed", "expired_approved", "expired_rejected", "bounced"} == (
        lifecycle.SEND_ERROR_SHOWN
    )


def test_an_auto_approval_handed_on_stays_expired_approved_and_is_final() -> None:
    assert next_state("expired_approved", "hand_off") == "expired_approved"
    assert next_state("expired_approved", "give_up") == "expired_rejected"
    assert body_kept("expired_approved", handed_on=False)
    assert not body_kept("expired_approved", handed_on=True)
    assert is_final("expired_approved", handed_on=True)
    assert not is_final("expired_approved", handed_on=False)
    for state in STATES:
        for event in EVENTS:
            with pytest.raises(TransitionRefused):
                next_state(state, event, handed_on=True)
        assert is_final(state, False) == (state in TERMINAL)
        assert body_kept(state, False) == (state in BODY_KEPT)


# Storage against the table: each move made by the storage call that makes it.


@pytest.fixture
async def storage(settings: Settings) -> AsyncIterator[Storage]:
    """The suite's database, migrated, without the gateway's workers (they would move
    messages on their own)."""
    async with open_gateway(settings, FixtureResolver()) as gateway:
        yield gateway.storage


async def _agent(storage: Storage, action: Literal["approve", "reject"]) -> str:
    """A user whose agent `{action}@agents.test` holds mail and applies `action` on expiry."""
    user, _ = await storage.ensure_user(f"usr_{action}", f"{action}@example.com", NOW)
    email = f"{action}@agents.test"
    await storage.add_agent(
        Agent(email, user.id, "agents.test", action, None, "local", True, 60, action, NOW)
    )
    return user.id


async def _message(storage: Storage, user_id: str, name: str, held: bool) -> OutboundMessage:
    """A new message of the agent, held or queued as a send or reply would store it."""
    agent_email = f"{user_id.removeprefix('usr_')}@agents.test"
    message = OutboundMessage(
        id=f"msg_{name}",
        user_id=user_id,
        agent_email=agent_email,
        kind="send",
        to=["x@example.org"],
        cc=[],
        bcc=[],
        subject="s",
        body_text="draft",
        body_html=None,
        attachments=[],
        conversation_id=None,
        in_reply_to=None,
        references=[],
        email_message_id=f"<{name}@agents.test>",
        status=initial_state(held),
        approval_expires_at=DEADLINE if held else None,
        created_at=NOW,
        created_epoch=1.0,
    )
    await storage.add_outbound(message)
    return message


async def _status(storage: Storage, message_id: str) -> tuple[OutboundStatus, bool]:
    """The message's state, and whether its body is still stored."""
    found = await storage.get_outbound(None, message_id)
    assert found is not None
    return found.status, found.body_text is not None


async def _finish(storage: Storage, message_id: str, event: Event) -> None:
    """What the send worker records for `event` (hand_off, retry, give_up)."""
    [job] = [
        job
        for job in await storage.claim_jobs("outbound", 1e9, 100, 60)
        if job.message_id == message_id
    ]
    outcome = OUTCOMES[event]
    retry_at = 1e9 if outcome == "retry" else None
    # A relay's 5xx for the recipient: the message bounced (a hard bounce).
    bounce = event == "bounce"
    bounced = [BouncedRecipient("x@example.org", "permanent", "550 5.1.1")] if bounce else []
    results = {"x@example.org": "refused: RCPT TO: 550 5.1.1"} if bounce else None
    await storage.finish_outbound(
        [
            SendAttempt(
                job.id, message_id, outcome, "smtp", "451 busy", retry_at, results, bounced=bounced
            )
        ]
    )


async def test_storage_moves_messages_as_the_table_says(storage: Storage) -> None:
    approver = await _agent(storage, "approve")
    rejecter = await _agent(storage, "reject")
    checked: set[tuple[OutboundStatus, Event]] = set()

    async def expect(message_id: str, before: OutboundStatus, event: Event) -> None:
        found = await storage.get_outbound(None, message_id)
        assert found is not None
        state, handed_on = found.status, found.sent_at is not None
        assert state == next_state(before, event), (before, event)
        assert handed_on == (event == "hand_off"), (before, event)
        assert (found.body_text is not None) == body_kept(state, handed_on), (before, event)
        if handed_on:  # final, whatever its state says
            assert is_final(state, handed_on) and found.method == "smtp"
            with pytest.raises(TransitionRefused):
                next_state(state, "hand_off", handed_on)
        checked.add((before, event))

    reviews: tuple[Event, ...] = ("approve", "reject")
    for event in reviews:
        held = await _message(storage, approver, event, held=True)
        reviewed = await storage.review_outbound(
            approver, held.id, event == "approve", None, None, 1.0
        )
        assert reviewed is not None
        await expect(held.id, "pending_approval", event)
    expiries: dict[Event, str] = {"expire_approved": approver, "expire_rejected": rejecter}
    for event, user_id in expiries.items():
        held = await _message(storage, user_id, event, held=True)
        await storage.expire_outbound(DEADLINE)
        await expect(held.id, "pending_approval", event)
    for event in OUTCOMES:
        queued = await _message(storage, approver, f"queued_{event}", held=False)
        await _finish(storage, queued.id, event)
        await expect(queued.id, "queued", event)
        if event not in TRANSITIONS["expired_approved"]:
            continue
        expired = await _message(storage, approver, f"expired_{event}", held=True)
        await storage.expire_outbound(DEADLINE)
        await _finish(storage, expired.id, event)
        await expect(expired.id, "expired_approved", event)
    moves = {(state, event) for state, row in TRANSITIONS.items() for event in row}
    assert checked == moves

    # A review of a message that no longer awaits one is refused, and changes nothing.
    for state in set(STATES) - {"pending_approval"}:
        assert not awaits_review(state)
    queued = await _message(storage, approver, "queued_review", held=False)
    with pytest.raises(NotPending):
        await storage.review_outbound(approver, queued.id, True, None, None, 1.0)
    assert await _status(storage, queued.id) == ("queued", True)
