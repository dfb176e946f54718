"""Announcements as PostgreSQL NOTIFY payloads: encoded by the replica that commits, decoded by
every replica's fan-out listener (`e2a_gateway.hub.fanout`). Pure: JSON text in and out, no I/O.

Every payload names the process that sent it (`origin`), so a listener can skip what its own
process already handled when the commit returned. Payloads stay well under NOTIFY's 8000 bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, get_args

from e2a_gateway.storage.announcements import (
    AccessEnded,
    Announcement,
    JobsAdded,
    MailErased,
    MessageStored,
    RevokedKind,
    SocketClaimed,
)
from e2a_gateway.storage.vocabulary import JOB_KINDS

MAX_NOTIFY_PAYLOAD_BYTES = 7000
REVOKED_KINDS = get_args(RevokedKind)


@dataclass(frozen=True)
class StoredSummary:
    """A message stored for the local agent `agent_id`, as much of it as its WebSocket
    notification frame shows."""

    agent_id: str
    id: str
    from_addr: str
    agent_email: str
    subject: str
    received_at: str
    conversation_id: str | None


@dataclass(frozen=True)
class Resync:
    """A message was stored for the local agent `agent_id` whose summary did not fit in a
    payload: that agent's live clients should reconnect and read it from storage."""

    agent_id: str


@dataclass(frozen=True)
class SchemaMigrated:
    """The database was migrated to schema `version`: every replica checks at once that it
    knows the schema (`e2a_gateway.schema_watch`)."""

    version: int


Heard = JobsAdded | AccessEnded | StoredSummary | Resync | SocketClaimed | SchemaMigrated


@dataclass(frozen=True)
class Payload:
    """One payload, decoded: the process that sent it (None when it does not say) and what it
    announced."""

    origin: str | None
    news: tuple[Heard, ...]


def encode_payloads(origin: str, announcements: Iterable[Announcement]) -> list[str]:
    """The payloads telling other replicas of `announcements`: each message stored, each
    access ended and each WebSocket claimed once, in order, then one payload naming every kind
    of job added. Mail erased is news for this process alone (`MailErased`)."""
    payloads: dict[str, None] = {}
    job_kinds: dict[str, None] = {}
    for announcement in announcements:
        if isinstance(announcement, JobsAdded):
            job_kinds[announcement.kind] = None
        elif isinstance(announcement, AccessEnded):
            payloads[_revocation_payload(origin, announcement)] = None
        elif isinstance(announcement, SocketClaimed):
            payloads[_claim_payload(origin, announcement)] = None
        elif isinstance(announcement, MailErased):
            continue
        else:
            payloads[_stored_payload(origin, announcement)] = None
    if job_kinds:
        payloads[json.dumps({"origin": origin, "jobs": list(job_kinds)})] = None
    return list(payloads)


def schema_payload(origin: str, version: int) -> str:
    """The payload a replica that migrated the database sends, in the migrating transaction:
    the running replicas check that they know the schema `version` it now has."""
    return json.dumps({"origin": origin, "schema": version})


def _stored_payload(origin: str, stored: MessageStored) -> str:
    """What the agent's WebSocket frame is built from; a payload too big for NOTIFY (a huge
    subject) says `resync` instead."""
    message = stored.message
    payload = json.dumps(
        {
            "origin": origin,
            "agent_id": stored.agent_id,
            "agent": message.agent_email,
            "id": message.id,
            "from": message.from_addr,
            "subject": message.subject,
            "received_at": message.received_at,
            "conversation_id": message.conversation_id,
        }
    )
    if len(payload.encode()) <= MAX_NOTIFY_PAYLOAD_BYTES:
        return payload
    return json.dumps({"origin": origin, "agent_id": stored.agent_id, "resync": True})


def _revocation_payload(origin: str, ended: AccessEnded) -> str:
    """Access that ended — an agent deleted (its id), an API key revoked (its hash), an account
    deleted (its id) — so every replica ends the live subscriptions that depended on it."""
    return json.dumps({"origin": origin, "revoke": ended.kind, "id": ended.value})


def _claim_payload(origin: str, claimed: SocketClaimed) -> str:
    """A `/v1` WebSocket that took an agent's slot, so every other replica closes its own
    connection for that agent if this claim is newer."""
    return json.dumps(
        {
            "origin": origin,
            "claimed": claimed.agent_id,
            "at": claimed.claimed_at,
            "claim": claimed.claim_id,
        }
    )


def decode_payload(payload: str) -> Payload:
    """What `payload` announced; ValueError when it is not a payload of ours. `{"jobs": true}`
    (which names no kind) announces jobs of every kind."""
    try:
        decoded = json.loads(payload)
        if not isinstance(decoded, dict):
            raise ValueError("not an object")
        origin = decoded.get("origin")
        return Payload(None if origin is None else str(origin), _news(decoded))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"missing or malformed field: {exc}") from None


def _news(decoded: dict[str, Any]) -> tuple[Heard, ...]:
    """The announcements of a decoded payload object (KeyError, TypeError, ValueError if
    malformed)."""
    if "jobs" in decoded:
        return tuple(JobsAdded(kind) for kind in _job_kinds(decoded["jobs"]))
    if "revoke" in decoded:
        kind, value = decoded["revoke"], decoded["id"]
        if kind not in REVOKED_KINDS or not isinstance(value, str) or not value:
            raise ValueError("not a revocation")
        return (AccessEnded(kind, value),)
    if "claimed" in decoded:
        return (_claimed(decoded),)
    if "schema" in decoded:
        version = decoded["schema"]
        if not isinstance(version, int) or isinstance(version, bool):
            raise ValueError("schema: expected an integer version")
        return (SchemaMigrated(version),)
    agent_id = str(decoded["agent_id"])
    if decoded.get("resync"):
        return (Resync(agent_id),)
    conversation = decoded.get("conversation_id")
    summary = StoredSummary(
        agent_id=agent_id,
        id=str(decoded["id"]),
        from_addr=str(decoded["from"]),
        agent_email=str(decoded["agent"]),
        subject=str(decoded["subject"]),
        received_at=str(decoded["received_at"]),
        conversation_id=None if conversation is None else str(conversation),
    )
    return (summary,)


def _claimed(decoded: dict[str, Any]) -> SocketClaimed:
    """The claim of a `claimed` payload (KeyError, ValueError if malformed)."""
    agent_id, claimed_at, claim_id = decoded["claimed"], decoded["at"], decoded["claim"]
    if (
        not isinstance(agent_id, str)
        or not agent_id
        or not isinstance(claim_id, str)
        or not claim_id
    ):
        raise ValueError("claimed: expected an agent id and a claim id")
    if not isinstance(claimed_at, int) or isinstance(claimed_at, bool):
        raise ValueError("claimed: expected an integer claim time")
    return SocketClaimed(agent_id, claimed_at, claim_id)


def _job_kinds(value: object) -> tuple[str, ...]:
    """The job kinds a `jobs` field names: every kind for `true`."""
    if value is True:
        return JOB_KINDS
    if isinstance(value, list) and value and all(isinstance(kind, str) for kind in value):
        return tuple(value)
    raise ValueError("jobs: expected true or a list of job kinds")
