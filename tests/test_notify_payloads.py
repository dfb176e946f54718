"""NOTIFY payloads (e2a_gateway/storage/notify_payloads.py): what one replica encodes, every replica
decodes to the same news; plain data, no database."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from e2a_gateway.storage.announcements import AccessEnded, JobsAdded, MailErased, MessageStored
from e2a_gateway.storage.new_inbound import NewInboundMessage
from e2a_gateway.storage.notify_payloads import (
    MAX_NOTIFY_PAYLOAD_BYTES,
    Resync,
    SchemaMigrated,
    StoredSummary,
    decode_payload,
    encode_payloads,
    schema_payload,
)
from e2a_gateway.storage.vocabulary import JOB_KINDS, OUTBOUND_JOB, WEBHOOK_JOB

pytestmark = pytest.mark.backend_independent

ORIGIN = "a1b2c3d4e5f60708"


def stored(subject: str = "Hello", conversation_id: str | None = "conv_1") -> MessageStored:
    message = NewInboundMessage(
        id="msg_1",
        agent_email="bot@agents.test",
        envelope_from="a@example.org",
        from_addr="a@example.org",
        reply_to=None,
        to=["bot@agents.test"],
        cc=[],
        subject=subject,
        conversation_id=conversation_id,
        rfc_message_id="<1@example.org>",
        raw_message=b"Subject: Hello\r\n\r\nHi.\r\n",
        auth_headers={},
        authentication_results={},
        received_at="2026-01-01T00:00:00Z",
    )
    return MessageStored("agt_bot", message)


def summary_of(announcement: MessageStored) -> StoredSummary:
    message = announcement.message
    return StoredSummary(
        agent_id=announcement.agent_id,
        id=message.id,
        from_addr=message.from_addr,
        agent_email=message.agent_email,
        subject=message.subject,
        received_at=message.received_at,
        conversation_id=message.conversation_id,
    )


@given(
    subject=st.text(max_size=300),
    conversation_id=st.one_of(st.none(), st.text(min_size=1, max_size=40)),
)
def test_a_stored_message_comes_back_as_its_summary(
    subject: str, conversation_id: str | None
) -> None:
    announcement = stored(subject, conversation_id)
    (payload,) = encode_payloads(ORIGIN, [announcement])
    decoded = decode_payload(payload)
    assert decoded.origin == ORIGIN
    assert decoded.news == (summary_of(announcement),)


def test_a_summary_too_big_for_notify_says_resync_instead() -> None:
    (payload,) = encode_payloads(ORIGIN, [stored("x" * MAX_NOTIFY_PAYLOAD_BYTES)])
    assert len(payload.encode()) < 100
    assert decode_payload(payload).news == (Resync("agt_bot"),)


@pytest.mark.parametrize(
    ("kind", "value"), [("agent", "agt_bot"), ("key", "9f" * 32), ("user", "usr_1")]
)
def test_ended_access_comes_back_as_it_went(kind: str, value: str) -> None:
    ended = AccessEnded(kind, value)  # type: ignore[arg-type]
    (payload,) = encode_payloads(ORIGIN, [ended])
    assert decode_payload(payload).news == (ended,)


def test_one_payload_names_every_kind_of_job_a_commit_added() -> None:
    announcements = [
        JobsAdded(WEBHOOK_JOB),
        AccessEnded("key", "hash"),
        JobsAdded(OUTBOUND_JOB),
        JobsAdded(WEBHOOK_JOB),
        AccessEnded("key", "hash"),
    ]
    revocation, jobs = encode_payloads(ORIGIN, announcements)
    assert decode_payload(revocation).news == (AccessEnded("key", "hash"),)
    assert decode_payload(jobs).news == (JobsAdded(WEBHOOK_JOB), JobsAdded(OUTBOUND_JOB))
    assert encode_payloads(ORIGIN, []) == []


def test_mail_erased_is_not_told_to_other_replicas() -> None:
    # this process forgets what it kept of the mail; another's can no longer reach what it kept
    erased = MailErased(("ab" * 32,))
    assert encode_payloads(ORIGIN, [erased]) == []
    (jobs,) = encode_payloads(ORIGIN, [erased, JobsAdded(WEBHOOK_JOB)])
    assert decode_payload(jobs).news == (JobsAdded(WEBHOOK_JOB),)


def test_jobs_true_without_origin_wakes_every_kind() -> None:
    decoded = decode_payload('{"jobs": true}')
    assert decoded.origin is None
    assert decoded.news == tuple(JobsAdded(kind) for kind in JOB_KINDS)


def test_a_migration_comes_back_as_its_schema_version() -> None:
    decoded = decode_payload(schema_payload("me", 43))
    assert decoded.origin == "me"
    assert decoded.news == (SchemaMigrated(43),)


@pytest.mark.parametrize(
    "payload",
    [
        "not json",
        '{"schema": "43"}',
        '{"schema": true}',
        "[1, 2]",
        "{}",
        '{"jobs": false}',
        '{"jobs": []}',
        '{"jobs": [1]}',
        '{"revoke": "all", "id": "x"}',
        '{"revoke": "key", "id": 1}',
        '{"revoke": "key"}',
        '{"agent_id": "agt_bot", "id": "msg_1"}',
    ],
)
def test_what_is_not_a_payload_of_ours_is_refused(payload: str) -> None:
    with pytest.raises(ValueError):
        decode_payload(payload)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
FIELDS = [
    "origin",
    "jobs",
    "revoke",
    "id",
    "agent_id",
    "resync",
    "agent",
    "from",
    "subject",
    "schema",
]


@given(
    st.text(max_size=200) | st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES).map(json.dumps)
)
def test_decoding_refuses_anything_else_with_value_error(payload: str) -> None:
    with contextlib.suppress(ValueError):
        decode_payload(payload)


def test_payloads_are_json_objects_naming_their_origin() -> None:
    payloads = encode_payloads(ORIGIN, [stored(), AccessEnded("user", "usr_1"), JobsAdded("x")])
    assert [json.loads(payload)["origin"] for payload in payloads] == [ORIGIN] * 3
