"""Agent protection, the review queue and the agent WebSocket on `/v1`, over real SMTP and HTTP:
the inbound gate (matched on a DMARC-aligned From) holds, flags or refuses mail; outbound
drafts and inbound holds wait in one queue that only account keys may list and resolve;
magic links answer under `/v1`; one WebSocket per agent, a newer one replacing the older."""

from __future__ import annotations

import json
import smtplib
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import jsonschema
import pytest
import referencing
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from e2a_gateway.app import RunningGateway
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.signing.magic_links import issue_token, link_key
from e2a_gateway.workers.approvals import ApprovalWorker
from tests.conftest import Account
from tests.databases import query
from tests.delivery_support import create_agent, deadline_passed, expiry_sweeps_paused
from tests.test_v1_openapi import e2a_document

WAIT = 10
ZONE = {
    "example.org": ["v=spf1 ip4:127.0.0.1 -all"],
    "_dmarc.example.org": ["v=DMARC1; p=reject"],
    "nodmarc.example": ["v=spf1 ip4:127.0.0.1 -all"],
}
"""Mail from 127.0.0.1 in example.org's name passes SPF and DMARC; nodmarc.example publishes
no DMARC record, so its From is never aligned."""


@pytest.fixture
def resolver() -> FixtureResolver:
    return FixtureResolver(ZONE)


DOCUMENT_URI = "urn:e2a:openapi"
_REGISTRY = referencing.Registry().with_resource(
    DOCUMENT_URI,
    referencing.Resource.from_contents(e2a_document(), referencing.jsonschema.DRAFT202012),
)


def conforms(answer: Any, schema: str) -> None:
    """`answer` is valid against e2a's component schema `schema` (its response oracle)."""
    reference = {"$ref": f"{DOCUMENT_URI}#/components/schemas/{schema}"}
    jsonschema.Draft202012Validator(reference, registry=_REGISTRY).validate(answer)


def v1_agent(address: str, suffix: str = "") -> str:
    return f"/v1/agents/{quote(address, safe='')}{suffix}"


def letter(sender: str, subject: str, to: str = "bot@agents.test") -> bytes:
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@example.org>\r\n\r\nHello agent.\r\n"
    ).encode()


def smtp_send(port: int, sender: str, recipients: list[str], data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=WAIT) as client:
        client.ehlo("mail.example.org")
        client.sendmail(sender, recipients, data)


async def send(running: RunningGateway, sender: str, data: bytes, *to: str) -> None:
    port = running.addresses.smtp_port
    await trio.to_thread.run_sync(smtp_send, port, sender, list(to) or ["bot@agents.test"], data)


def protection(
    *,
    inbound: dict[str, Any] | None = None,
    outbound_action: str = "flag",
    holds: dict[str, Any] | None = None,
    scan: str = "off",
) -> dict[str, Any]:
    return {
        "inbound": {"gate": inbound or {}, "scan": {"sensitivity": scan}},
        "outbound": {"gate": outbound_gate(outbound_action), "scan": {}},
        "holds": holds or {},
    }


def outbound_gate(action: str) -> dict[str, Any]:
    """e2a's outbound gate that holds every send (`review`: an allowlist with no entry), or
    one that holds none (`open`)."""
    if action == "review":
        return {"policy": "allowlist", "allowlist": [], "action": "review"}
    return {"policy": "open", "action": action}


async def protect(account: Account, agent: str, config: dict[str, Any]) -> dict[str, Any]:
    response = await account.http.put(v1_agent(agent, "/protection"), json=config)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def inbox_subjects(account: Account, agent: str) -> list[str]:
    listing = await account.http.get(f"/api/v1/agents/{quote(agent, safe='')}/messages")
    assert listing.status_code == 200, listing.text
    return [message["subject"] for message in listing.json()["messages"]]


async def queue(account: Account) -> list[dict[str, Any]]:
    response = await account.http.get("/v1/reviews")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def agent_key(account: Account, agent: str) -> str:
    made = await account.http.post(
        "/v1/account/api-keys", json={"name": "bot", "scope": "agent", "agent_email": agent}
    )
    assert made.status_code == 201, made.text
    return str(made.json()["key"])


async def draft(account: Account, agent: str, subject: str) -> str:
    sent = await account.http.post(
        "/api/v1/send",
        json={"from": agent, "to": ["carol@example.net"], "subject": subject, "body": "Draft."},
    )
    assert sent.status_code == 202 and sent.json()["status"] == "pending_approval", sent.text
    return str(sent.json()["message_id"])


@pytest.fixture
async def owner(make_account: Any) -> Account:
    account: Account = await make_account("owner@example.com")
    await create_agent(account, "bot")
    return account


BOT = "bot@agents.test"


async def test_protection_reads_and_replaces_the_agents_gates_and_holds(owner: Account) -> None:
    default = (await owner.http.get(v1_agent(BOT, "/protection"))).json()
    assert default == {
        "inbound": {
            "gate": {"policy": "open", "allowlist": [], "action": "flag"},
            "scan": {"sensitivity": "off"},
        },
        "outbound": {
            "gate": {"policy": "open", "allowlist": [], "action": "flag"},
            "scan": {"sensitivity": "off"},
        },
        "holds": {"ttl_seconds": 604800, "on_expiry": "reject", "suppress_notifications": False},
    }
    config = protection(
        inbound={"policy": "domain", "allowlist": ["Example.ORG "], "action": "review"},
        outbound_action="review",
        holds={"ttl_seconds": 3600, "on_expiry": "approve", "suppress_notifications": True},
    )
    answer = await protect(owner, BOT, config)
    assert answer["inbound"]["gate"] == {
        "policy": "domain",
        "allowlist": ["example.org"],
        "action": "review",
    }
    assert answer["outbound"]["gate"] == {
        "policy": "allowlist",
        "allowlist": [],
        "action": "review",
    }
    assert answer["holds"] == {
        "ttl_seconds": 3600,
        "on_expiry": "approve",
        "suppress_notifications": True,
    }
    assert (await owner.http.get(v1_agent(BOT, "/protection"))).json() == answer
    conforms(answer, "ProtectionConfigView")
    # the same settings, as /api/v1 has always shown them
    agent = (await owner.http.get(f"/api/v1/agents/{quote(BOT, safe='')}")).json()
    assert agent["hitl_enabled"] is True and agent["hitl_ttl_seconds"] == 3600
    assert agent["hitl_expiration_action"] == "approve"
    assert agent["approval_notifications"] is False
    (exported,) = (await owner.http.get("/api/v1/users/me/export")).json()["agents"]
    assert exported["inbound_gate"] == answer["inbound"]["gate"]  # the owner's data, all of it


@pytest.mark.parametrize(
    ("config", "status", "code"),
    [
        (protection(scan="low"), 501, "not_implemented"),
        (
            {
                **protection(),
                "outbound": {"gate": {"policy": "allowlist", "allowlist": ["x"]}, "scan": {}},
            },
            400,
            None,
        ),
        ({"inbound": protection()["inbound"], "outbound": protection()["outbound"]}, 422, None),
        ({**protection(), "extra": True}, 422, None),
        (protection(inbound={"policy": "allowlist", "allowlist": ["example.org"]}), 400, None),
        (protection(inbound={"policy": "domain", "allowlist": ["a@example.org"]}), 400, None),
        # entries that could never match anyone
        *[
            (protection(inbound={"policy": "allowlist", "allowlist": [entry]}), 400, None)
            for entry in ("a@b@c", "@", "x@", "<friend@example.com>", "friend@exa_mple.com")
        ],
        (protection(inbound={"policy": "domain", "allowlist": ["not_a_domain!"]}), 400, None),
        (protection(holds={"ttl_seconds": -1}), 422, None),
        (protection(holds={"ttl_seconds": 10**7}), 400, None),
    ],
)
async def test_protection_refuses_what_it_cannot_do_and_changes_nothing(
    owner: Account, config: dict[str, Any], status: int, code: str | None
) -> None:
    before = (await owner.http.get(v1_agent(BOT, "/protection"))).json()
    response = await owner.http.put(v1_agent(BOT, "/protection"), json=config)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == (code or "invalid_request") and error["request_id"]
    if status == 501:
        assert "not available" in error["message"]
    assert (await owner.http.get(v1_agent(BOT, "/protection"))).json() == before


async def test_allowlist_entries_are_kept_in_the_form_the_gates_compare(owner: Account) -> None:
    """An IDN entry written with U-labels matches the recipient the API normalised to A-labels;
    a trailing dot or capitals change nothing."""
    gate = {
        "policy": "allowlist",
        "allowlist": ["Friend@Bücher.example", "team@example.com."],
        "action": "block",
    }
    config = {**protection(), "outbound": {"gate": gate, "scan": {}}}
    answer = await protect(owner, BOT, config)
    assert answer["outbound"]["gate"]["allowlist"] == [
        "friend@xn--bcher-kva.example",
        "team@example.com",
    ]
    for to in ("friend@bücher.example", "TEAM@example.com"):
        sent = await owner.http.post(
            "/api/v1/send", json={"from": BOT, "to": [to], "subject": "Hi", "body": "Hello"}
        )
        # past the gate (this gateway has no relay, so the send itself then fails)
        assert sent.status_code != 403 and "blocked_by_policy" not in sent.text, (to, sent.text)
    stranger = await owner.http.post(
        "/api/v1/send", json={"from": BOT, "to": ["x@example.org"], "subject": "Hi", "body": "."}
    )
    assert stranger.status_code == 403 and "blocked_by_policy" in stranger.text, stranger.text


async def test_an_agent_key_may_not_see_or_resolve_reviews_nor_its_protection(
    running: RunningGateway, owner: Account
) -> None:
    await protect(owner, BOT, protection(outbound_action="review"))
    held = await draft(owner, BOT, "Needs approval")
    key = await agent_key(owner, BOT)
    async with httpx.AsyncClient(
        base_url=running.addresses.http_url, headers={"Authorization": f"Bearer {key}"}
    ) as bot:
        for method, path, body in [
            ("GET", "/v1/reviews", None),
            ("GET", f"/v1/reviews/{held}", None),
            ("POST", f"/v1/reviews/{held}/approve", {}),
            ("POST", f"/v1/reviews/{held}/reject", {}),
            ("GET", v1_agent(BOT, "/protection"), None),
            ("PUT", v1_agent(BOT, "/protection"), protection()),
        ]:
            response = await bot.request(method, path, json=body)
            assert response.status_code == 403, (path, response.text)
            assert response.json()["error"]["code"] == "forbidden"
    assert [item["id"] for item in await queue(owner)] == [held]  # still waiting


async def test_outbound_drafts_are_approved_with_edits_once_or_rejected(
    running: RunningGateway, owner: Account
) -> None:
    await protect(owner, BOT, protection(outbound_action="review"))
    first = await draft(owner, BOT, "First draft")
    second = await draft(owner, BOT, "Second draft")
    items = await queue(owner)
    assert [item["id"] for item in items] == [second, first]  # newest first
    assert items[0]["direction"] == "outbound" and items[0]["header_from"] == BOT
    assert items[0]["review_status"] == "pending_review" and items[0]["to"] == ["carol@example.net"]
    detail = (await owner.http.get(f"/v1/reviews/{first}")).json()
    assert detail["body"] == {"text": "Draft."} and detail["raw_message"] is None
    conforms(detail, "MessageView")
    conforms((await owner.http.get("/v1/reviews")).json(), "PageReviewView")

    page = (await owner.http.get("/v1/reviews", params={"limit": 1})).json()
    assert len(page["items"]) == 1 and page["next_cursor"]
    rest = await owner.http.get("/v1/reviews", params={"limit": 1, "cursor": page["next_cursor"]})
    assert [item["id"] for item in rest.json()["items"]] == [first]

    terms = {"filename": "terms.txt", "content_type": "text/plain", "data": "VGVybXMu"}
    edit = {"subject": "Edited", "to": ["dave@example.net"], "attachments": [terms]}
    keyed = {"Idempotency-Key": "approve-first"}
    approved = await owner.http.post(f"/v1/reviews/{first}/approve", json=edit, headers=keyed)
    assert approved.status_code == 202, approved.text
    assert approved.json() == {"status": "accepted", "message_id": first, "edited": True}
    conforms(approved.json(), "SendResultView")
    replay = await owner.http.post(f"/v1/reviews/{first}/approve", json=edit, headers=keyed)
    assert (replay.status_code, replay.json()) == (202, approved.json())
    again = await owner.http.post(f"/v1/reviews/{first}/approve", json={})
    assert again.status_code == 409 and again.json()["error"]["code"] == "message_not_pending"
    ((subject, to_json),) = query(
        running.gateway.settings.database.url,
        "SELECT subject, to_json FROM messages WHERE id = ?",
        (first,),
    )
    assert (subject, json.loads(to_json)) == ("Edited", ["dave@example.net"])

    rejected = await owner.http.post(f"/v1/reviews/{second}/reject", json={"reason": "No."})
    assert rejected.status_code == 200, rejected.text
    assert rejected.json() == {
        "status": "review_rejected",
        "message_id": second,
        "rejection_reason": "No.",
    }
    conforms(rejected.json(), "RejectResultView")
    assert await queue(owner) == []
    missing = await owner.http.post("/v1/reviews/msg_nothing/reject", json={})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


async def test_a_review_edit_takes_the_subjects_a_send_takes(
    running: RunningGateway, owner: Account
) -> None:
    """`/v1`'s sendMessage and approveReview's edits bound a subject alike, at e2a's 2000
    characters (its openapi's SendMessageRequest and ApproveRequest): the longest is taken by
    both, one more by neither."""
    await protect(owner, BOT, protection(outbound_action="review"))
    longest, longer = "s" * 2000, "s" * 2001
    path = v1_agent(BOT, "/messages")
    compose = {"to": ["carol@example.net"], "text": "Draft."}
    refused = await owner.http.post(path, json=compose | {"subject": longer})
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "invalid_request"
    held = await owner.http.post(path, json=compose | {"subject": longest})
    assert held.status_code == 202 and held.json()["status"] == "pending_review", held.text
    draft_id = held.json()["message_id"]

    approve = f"/v1/reviews/{draft_id}/approve"
    refused = await owner.http.post(approve, json={"subject": longer})
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "invalid_request"
    approved = await owner.http.post(approve, json={"subject": "e" * 2000})
    assert approved.status_code == 202, approved.text
    assert approved.json() == {"status": "accepted", "message_id": draft_id, "edited": True}
    ((subject,),) = query(
        running.gateway.settings.database.url,
        "SELECT subject FROM messages WHERE id = ?",
        (draft_id,),
    )
    assert subject == "e" * 2000


async def test_approvals_are_limited_as_sends_are(running: RunningGateway, owner: Account) -> None:
    """e2a weighs each approval of a held send against the agent's send limit: past
    `limits.sends_per_agent_per_minute` approvals in a minute, 429 `rate_limited` with
    `Retry-After`, and the draft stays held."""
    await protect(owner, BOT, protection(outbound_action="review"))
    held = [await draft(owner, BOT, f"Draft {n}") for n in range(3)]
    running.gateway.settings.limits.sends_per_agent_per_minute = 2
    for message_id in held[:2]:
        approved = await owner.http.post(f"/v1/reviews/{message_id}/approve", json={})
        assert approved.status_code == 202, approved.text
    refused = await owner.http.post(f"/v1/reviews/{held[2]}/approve", json={})
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    wait = int(refused.headers["Retry-After"])
    assert error["code"] == "rate_limited" and 1 <= wait <= 60
    assert error["details"] == {"retry_after_seconds": wait}
    assert f"retry in {wait} seconds" in error["message"]
    assert [item["id"] for item in await queue(owner)] == [held[2]]


async def test_a_draft_to_an_address_suppressed_meanwhile_is_not_approved(
    running: RunningGateway, owner: Account
) -> None:
    """e2a re-checks the final recipients against the suppression list when a hold is
    approved: 422 recipient_suppressed, and the draft stays held."""
    await protect(owner, BOT, protection(outbound_action="review"))
    held = await draft(owner, BOT, "To a bounced address")
    listed = await owner.http.post(
        v1_agent(BOT, "/suppressions"), json={"address": "carol@example.net"}
    )
    assert listed.status_code == 200, listed.text
    refused = await owner.http.post(f"/v1/reviews/{held}/approve", json={})
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "recipient_suppressed"
    assert "carol@example.net" in refused.json()["error"]["message"]
    assert [item["id"] for item in await queue(owner)] == [held]
    edited = await owner.http.post(f"/v1/reviews/{held}/approve", json={"to": ["dave@example.net"]})
    assert edited.status_code == 202, edited.text
    assert await queue(owner) == []


async def test_inbound_mail_the_gate_holds_waits_until_approved_or_rejected(
    running: RunningGateway, owner: Account
) -> None:
    inbound = {"policy": "allowlist", "allowlist": ["trusted@example.org"], "action": "review"}
    await protect(owner, BOT, protection(inbound=inbound))
    await send(running, "trusted@example.org", letter("trusted@example.org", "From a friend"))
    await send(running, "alice@example.org", letter("alice@example.org", "Hold me"))
    await send(running, "alice@example.org", letter("alice@example.org", "Drop me"))
    # an allowlisted address whose domain does not pass DMARC is not trusted
    await send(running, "trusted@nodmarc.example", letter("trusted@nodmarc.example", "Spoof"))

    assert await inbox_subjects(owner, BOT) == ["From a friend"]
    held = {item["subject"]: item for item in await queue(owner)}
    assert set(held) == {"Hold me", "Drop me", "Spoof"}
    hold = held["Hold me"]
    assert hold["direction"] == "inbound" and hold["agent_email"] == BOT
    assert (
        hold["header_from"] == "alice@example.org" and hold["envelope_from"] == "alice@example.org"
    )
    assert hold["verified_domain"] == "example.org"
    assert held["Spoof"]["verified_domain"] is None
    assert (hold["hold_reason"]["type"], hold["hold_reason"]["code"]) == ("gate", "sender_gate")
    assert hold["hold_reason"]["summary"] == "This sender isn't allowed by the inbox policy."
    assert "allowlist" in hold["hold_reason"]["detail"]  # the gate's own reason
    detail = (await owner.http.get(f"/v1/reviews/{hold['id']}")).json()
    conforms(detail, "MessageView")
    conforms((await owner.http.get("/v1/reviews")).json(), "PageReviewView")
    assert detail["authentication"]["dmarc"]["status"] == "pass"
    assert detail["authentication"]["dmarc"]["policy"] == "reject"
    assert detail["raw_message"] and detail["direction"] == "inbound"
    # what the reviewer decides on: the body as the agent would read it
    assert detail["body"] == {"text": "Hello agent.\n"}, detail["body"]
    assert detail["parsed"]["text"] == "Hello agent." and detail["attachments"] == []
    # held mail is not the agent's yet: not listed, not readable, no delivery job
    hidden = await owner.http.get(f"/api/v1/agents/{quote(BOT, safe='')}/messages/{hold['id']}")
    assert hidden.status_code == 404
    v1_path = f"/v1/agents/{quote(BOT, safe='')}"
    v1_hidden = await owner.http.get(f"{v1_path}/messages/{hold['id']}")
    assert v1_hidden.status_code == 404
    listed = (await owner.http.get(f"{v1_path}/messages", params={"read_status": "all"})).json()
    assert hold["id"] not in [item["id"] for item in listed["items"]]
    database = running.gateway.settings.database.url
    assert query(database, "SELECT kind FROM jobs WHERE message_id = ?", (hold["id"],)) == []
    events = {"type": "email.received"}

    async def received_ids() -> list[str]:
        items = (await owner.http.get("/v1/events", params=events)).json()["items"]
        return [item["message_id"] for item in items]

    assert hold["id"] not in await received_ids()  # held: the agent has not received it yet
    requested = await owner.http.get("/v1/events", params={"type": "email.review_requested"})
    asked = {item["data"]["message_id"]: item["data"] for item in requested.json()["items"]}
    assert asked[hold["id"]]["reason_source"] == "sender_gate"
    assert asked[hold["id"]]["reason"] == hold["hold_reason"]["detail"]
    expires = datetime.fromisoformat(asked[hold["id"]]["approval_expires_at"])
    assert expires > datetime.now(UTC)  # the hold's TTL, as the agent's holds set it
    assert hold["flagged"] is True and hold["flag_reason"] == hold["hold_reason"]["detail"]

    # edits are ignored for mail held on its way in, as e2a's server ignores them
    approved = await owner.http.post(f"/v1/reviews/{hold['id']}/approve", json={"subject": "x"})
    assert approved.status_code == 200, approved.text
    assert approved.json() == {"status": "review_approved", "message_id": hold["id"]}
    conforms(approved.json(), "SendResultView")
    assert sorted(await inbox_subjects(owner, BOT)) == ["From a friend", "Hold me"]
    assert (await received_ids()).count(hold["id"]) == 1  # received once it is released
    again = await owner.http.post(f"/v1/reviews/{hold['id']}/reject", json={})
    assert again.status_code == 409 and again.json()["error"]["code"] == "message_not_pending"

    dropped = held["Drop me"]["id"]
    rejected = await owner.http.post(f"/v1/reviews/{dropped}/reject", json={})
    assert rejected.json() == {"status": "review_rejected", "message_id": dropped}
    assert "Drop me" not in await inbox_subjects(owner, BOT)
    assert (await owner.http.get(f"/v1/reviews/{dropped}")).status_code == 404
    assert query(database, "SELECT hold FROM messages WHERE id = ?", (dropped,)) == [("rejected",)]
    assert [item["subject"] for item in await queue(owner)] == ["Spoof"]


async def test_an_agent_key_reads_no_event_of_mail_held_from_its_agent(
    running: RunningGateway, owner: Account
) -> None:
    """Held mail is the reviewer's, not the agent's: its agent key cannot read the events log
    (listEvents and getEvent are account-only, as e2a has them), where email.review_requested
    names the held mail's sender and subject."""
    inbound = {"policy": "allowlist", "allowlist": ["trusted@example.org"], "action": "review"}
    await protect(owner, BOT, protection(inbound=inbound))
    await send(running, "alice@example.org", letter("alice@example.org", "Secret hold"))
    (hold,) = await queue(owner)
    requested = await owner.http.get("/v1/events", params={"type": "email.review_requested"})
    (event,) = requested.json()["items"]
    assert event["data"]["subject"] == "Secret hold"

    key = await agent_key(owner, BOT)
    headers = {"Authorization": f"Bearer {key}"}
    for path in ("/v1/events", f"/v1/events/{event['id']}"):
        answer = await owner.http.get(path, headers=headers)
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["code"] == "forbidden"
        assert "Secret hold" not in answer.text
    assert hold["subject"] == "Secret hold"


async def review_events(account: Account, event_type: str) -> dict[str, dict[str, Any]]:
    """The `data` of the account's logged events of `event_type`, by message id."""
    listed = await account.http.get("/v1/events", params={"type": event_type})
    assert listed.status_code == 200, listed.text
    return {item["data"]["message_id"]: item["data"] for item in listed.json()["items"]}


async def test_an_inbound_review_is_told_as_email_review_approved_or_rejected(
    running: RunningGateway, owner: Account
) -> None:
    """A reviewer's (or the expiry's) decision on held inbound mail is an event, as e2a fires
    it with `direction` `inbound`: subscribers to email.review_rejected hear of a rejection,
    and of the reviewer's reason, which the answer gives back too."""
    inbound = {"policy": "allowlist", "allowlist": ["friend@example.org"], "action": "review"}
    await protect(owner, BOT, protection(inbound=inbound, holds={"on_expiry": "reject"}))
    for subject in ("Let in", "Keep out", "Too slow"):
        await send(running, "alice@example.org", letter("alice@example.org", subject))
    held = {item["subject"]: item["id"] for item in await queue(owner)}
    approved = await owner.http.post(f"/v1/reviews/{held['Let in']}/approve", json={})
    assert approved.status_code == 200, approved.text
    rejected = await owner.http.post(
        f"/v1/reviews/{held['Keep out']}/reject", json={"reason": "looks like phishing"}
    )
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["rejection_reason"] == "looks like phishing"
    await running.gateway.storage.expire_inbound_holds(time.time() + 604801)

    yes = await review_events(owner, "email.review_approved")
    assert set(yes) == {held["Let in"]}
    data = yes[held["Let in"]]
    assert (data["direction"], data["agent_email"]) == ("inbound", BOT)
    assert (data["from"], data["subject"]) == ("alice@example.org", "Let in")
    no = await review_events(owner, "email.review_rejected")
    assert set(no) == {held["Keep out"], held["Too slow"]}
    assert no[held["Keep out"]]["direction"] == "inbound"
    assert no[held["Keep out"]]["reason"] == "looks like phishing"
    assert no[held["Too slow"]]["reason"] == "approval expired"


async def test_an_inbound_hold_past_its_ttl_takes_the_agents_expiry_action(
    running: RunningGateway, owner: Account
) -> None:
    inbound = {"policy": "domain", "allowlist": ["partner.example"], "action": "review"}
    await protect(owner, BOT, protection(inbound=inbound, holds={"on_expiry": "approve"}))
    await send(running, "alice@example.org", letter("alice@example.org", "Late"))
    (item,) = await queue(owner)
    await running.gateway.storage.expire_inbound_holds(time.time() + 604801)
    assert await queue(owner) == []
    assert await inbox_subjects(owner, BOT) == ["Late"]
    assert item["subject"] == "Late"


async def test_a_hold_ttl_of_zero_means_the_default_week_not_an_instant_expiry(
    running: RunningGateway, owner: Account
) -> None:
    """`holds.ttl_seconds: 0` (the schema's minimum, a zero value a client may send for "not
    set") holds a draft for the default week, as e2a does, instead of expiring it at once."""
    config = protection(outbound_action="review", holds={"ttl_seconds": 0, "on_expiry": "approve"})
    answer = await protect(owner, BOT, config)
    assert answer["holds"]["ttl_seconds"] == 604800
    agent = (await owner.http.get(f"/api/v1/agents/{quote(BOT, safe='')}")).json()
    assert agent["hitl_ttl_seconds"] == 604800  # /api/v1's range is 1 to 604800
    sent = time.time()
    message_id = await draft(owner, BOT, "Wait for me")
    await running.gateway.storage.expire_outbound(sent + 60)
    (item,) = await queue(owner)
    assert item["id"] == message_id and item["review_status"] == "pending_review"
    outbound = (await owner.http.get(f"/api/v1/messages/{message_id}")).json()
    assert datetime.fromisoformat(outbound["approval_expires_at"]).timestamp() >= sent + 604799


async def test_an_inbound_hold_past_its_ttl_takes_no_late_review(
    running: RunningGateway, owner: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbound = {"policy": "domain", "allowlist": ["partner.example"], "action": "review"}
    await protect(owner, BOT, protection(inbound=inbound, holds={"on_expiry": "reject"}))
    await send(running, "alice@example.org", letter("alice@example.org", "Too late"))
    (item,) = await queue(owner)
    database = running.gateway.settings.database.url
    # the deadline passes before the worker's next sweep (every 15 s)
    deadline = expiry_sweeps_paused(monkeypatch)
    query(database, "UPDATE messages SET hold_expires_at = ? WHERE id = ?", (deadline, item["id"]))
    await deadline_passed(deadline)
    late = await owner.http.post(f"/v1/reviews/{item['id']}/approve", json={})
    assert late.status_code == 409, late.text
    assert late.json()["error"]["code"] == "message_not_pending"
    assert "past its review deadline" in late.json()["error"]["message"]
    assert await inbox_subjects(owner, BOT) == []
    await running.gateway.storage.expire_inbound_holds(time.time())
    assert await queue(owner) == [] and await inbox_subjects(owner, BOT) == []


async def test_a_blocking_gate_accepts_then_quarantines_and_logs_email_blocked(
    running: RunningGateway, owner: Account
) -> None:
    other = await create_agent(owner, "other")
    inbound = {"policy": "domain", "allowlist": ["partner.example"], "action": "block"}
    await protect(owner, BOT, protection(inbound=inbound))
    await send(running, "alice@example.org", letter("alice@example.org", "Blocked"))
    await send(running, "alice@example.org", letter("alice@example.org", "Both"), other, BOT)
    assert await inbox_subjects(owner, BOT) == []
    assert await inbox_subjects(owner, other) == ["Both"]  # one agent's block is its own
    assert await queue(owner) == []  # quarantined: no human is asked
    database = running.gateway.settings.database.url
    stored = query(
        database,
        "SELECT id, subject, hold, flag_reason FROM messages_with_content "
        "WHERE agent_email = ? ORDER BY seq",
        (BOT,),
    )
    reason = "example.org is not one of the agent's trusted domains"
    assert [row[1:] for row in stored] == [
        ("Blocked", "rejected", reason),
        ("Both", "rejected", reason),
    ]
    assert query(database, "SELECT count(*) FROM jobs") == [(0,)]
    listed = (await owner.http.get("/v1/events")).json()["items"]
    blocked = [event for event in listed if event["type"] == "email.blocked"]
    assert sorted(event["data"]["message_id"] for event in blocked) == sorted(
        row[0] for row in stored
    )
    received = [
        event["data"]["delivered_to"] for event in listed if event["type"] == "email.received"
    ]
    assert received == [other]  # the blocked copies were never received
    data = blocked[0]["data"]
    assert (data["direction"], data["delivered_to"], data["agent_email"]) == ("inbound", BOT, BOT)
    assert (data["reason"], data["reason_source"]) == (reason, "sender_gate")
    assert data["header_from"] == "alice@example.org"
    assert data["authentication"]["dmarc"]["status"] == "pass"
    assert blocked[0]["message_id"] == data["message_id"]  # it names a real message
    for message_id, *_ in stored:
        fetched = await owner.http.get(v1_agent(BOT, f"/messages/{message_id}"))
        assert fetched.status_code == 404, fetched.text
    await protect(owner, BOT, protection(inbound={**inbound, "allowlist": ["example.org"]}))
    await send(running, "alice@example.org", letter("alice@example.org", "Partner"))
    assert await inbox_subjects(owner, BOT) == ["Partner"]


async def test_a_listed_address_written_as_a_quoted_string_passes_the_gate(
    running: RunningGateway, owner: Account
) -> None:
    """`"trusted"@example.org` is the mailbox `trusted@example.org` (RFC 5321 section 4.1.2: a
    quoted string and the atom of the same characters are one local part): an allowlist naming
    it passes mail whose From quotes it, and an entry written quoted matches the plain From."""
    inbound = {"policy": "allowlist", "allowlist": ["trusted@example.org"], "action": "review"}
    await protect(owner, BOT, protection(inbound=inbound))
    await send(running, "trusted@example.org", letter('"Trusted"@example.org', "Quoted"))
    quoted = {**inbound, "allowlist": ['"friend.one"@example.org']}
    answer = await protect(owner, BOT, protection(inbound=quoted))
    assert answer["inbound"]["gate"]["allowlist"] == ["friend.one@example.org"]
    await send(running, "friend.one@example.org", letter("friend.one@example.org", "Plain"))
    # a quoted string that is no atom (here: an @ in it) stays another local part
    await send(running, "x@example.org", letter('"friend.one@example.org"@example.org', "Odd"))
    assert sorted(await inbox_subjects(owner, BOT)) == ["Plain", "Quoted"]
    assert [item["subject"] for item in await queue(owner)] == ["Odd"]


@pytest.mark.parametrize("action", ["block", "review"])
async def test_a_listed_sender_whose_dmarc_check_met_dns_trouble_is_deferred_not_screened(
    running: RunningGateway, owner: Account, resolver: FixtureResolver, action: str
) -> None:
    """A listed sender whose From could not be authenticated for now (its DMARC record's lookup
    failed: `temperror`) is answered 451, nothing stored, so its retry is judged once DNS
    answers: a blocking gate would quarantine it for good, a reviewing one hold it for a
    human, though the sender is one the gate trusts. A sender the gate would not pass even
    authenticated is screened at once, DNS or not."""
    inbound = {"policy": "allowlist", "allowlist": ["trusted@example.org"], "action": action}
    await protect(owner, BOT, protection(inbound=inbound))
    resolver.failing.add("_dmarc.example.org")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        await send(running, "trusted@example.org", letter("trusted@example.org", "Trusted"))
    assert refused.value.smtp_code == 451, refused.value
    assert b"4.7.0" in refused.value.smtp_error
    database = running.gateway.settings.database.url
    assert query(database, "SELECT count(*) FROM messages") == [(0,)]
    assert query(database, "SELECT count(*) FROM events") == [(0,)]
    # a sender the gate does not list is screened as before: DNS would not change its fate
    await send(running, "alice@example.org", letter("alice@example.org", "Stranger"))
    assert await inbox_subjects(owner, BOT) == []
    assert query(database, "SELECT count(*) FROM messages") == [(1,)]

    resolver.failing.clear()  # DNS answers again: the sender's retry is authenticated
    await send(running, "trusted@example.org", letter("trusted@example.org", "Trusted"))
    assert await inbox_subjects(owner, BOT) == ["Trusted"]
    held = [item["subject"] for item in await queue(owner)]
    assert held == (["Stranger"] if action == "review" else [])


async def test_the_api_v1_websocket_hears_of_held_mail_only_once_it_is_approved(
    running: RunningGateway, owner: Account
) -> None:
    inbound = {"policy": "allowlist", "allowlist": ["friend@example.org"], "action": "review"}
    await protect(owner, BOT, protection(inbound=inbound))
    base = running.addresses.http_url.replace("http://", "ws://")
    url = f"{base}/api/v1/agents/{quote(BOT, safe='')}/ws?token={owner.key}"
    async with open_websocket_url(url, connect_timeout=WAIT) as socket:
        await send(running, "alice@example.org", letter("alice@example.org", "Held"))
        (held,) = await queue(owner)
        with trio.move_on_after(0.5):
            frame = await socket.get_message()
            raise AssertionError(f"the agent heard of mail held for review: {frame}")
        approved = await owner.http.post(f"/v1/reviews/{held['id']}/approve", json={})
        assert approved.status_code == 200, approved.text
        with trio.fail_after(WAIT):
            frame = json.loads(await socket.get_message())
    assert (frame["message_id"], frame["subject"]) == (held["id"], "Held")


async def test_a_websocket_hears_of_held_mail_its_expiry_delivers(
    running: RunningGateway, owner: Account
) -> None:
    """A hold the agent's expiration action approves reaches its open WebSocket as one the
    reviewer approves does, without the agent reconnecting."""
    inbound = {"policy": "allowlist", "allowlist": ["friend@example.org"], "action": "review"}
    await protect(owner, BOT, protection(inbound=inbound, holds={"on_expiry": "approve"}))
    base = running.addresses.http_url.replace("http://", "ws://")
    url = f"{base}/api/v1/agents/{quote(BOT, safe='')}/ws?token={owner.key}"
    async with open_websocket_url(url, connect_timeout=WAIT) as socket:
        await send(running, "alice@example.org", letter("alice@example.org", "Expires"))
        (held,) = await queue(owner)
        await ApprovalWorker(running.gateway).expire_due(time.time() + 604801)
        with trio.fail_after(WAIT):
            frame = json.loads(await socket.get_message())
        assert (frame["message_id"], frame["subject"]) == (held["id"], "Expires")
        with trio.move_on_after(0.5):
            frame = await socket.get_message()
            raise AssertionError(f"the agent heard of the released mail twice: {frame}")


async def test_held_mail_released_reaches_pollers_that_paged_past_its_arrival(
    running: RunningGateway, owner: Account
) -> None:
    """Held mail enters the inbox when it is released, not when it arrived: a client paging
    the inbox with a cursor (`/v1`, `/api/v1`) or polling with `since` has already passed the
    place and time it arrived at, and still gets it from its next poll, once. Its
    `received_at` stays the time it arrived."""
    inbound = {"policy": "allowlist", "allowlist": ["friend@example.org"], "action": "review"}
    await protect(owner, BOT, protection(inbound=inbound))
    v1_messages = v1_agent(BOT, "/messages")
    api_messages = f"/api/v1/agents/{quote(BOT, safe='')}/messages"
    start = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    async def since_poll(since: str) -> list[dict[str, Any]]:
        params = {"read_status": "all", "since": since}
        answer = await owner.http.get(v1_messages, params=params)
        assert answer.status_code == 200, answer.text
        items: list[dict[str, Any]] = answer.json()["items"]
        return items

    async def cursor_page(cursor: str | None) -> tuple[list[str], str | None]:
        params = {"read_status": "all", "sort": "asc", "limit": "2"}
        answer = await owner.http.get(
            v1_messages, params={**params, **({"cursor": cursor} if cursor else {})}
        )
        assert answer.status_code == 200, answer.text
        page = answer.json()
        return [item["subject"] for item in page["items"]], page["next_cursor"]

    async def token_page(token: str | None) -> tuple[list[str], str | None]:
        params = {"status": "all", "page_size": "2", **({"token": token} if token else {})}
        answer = await owner.http.get(api_messages, params=params)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        return [item["subject"] for item in page["messages"]], page["next_token"]

    assert await since_poll(start) == []  # nothing newer yet
    await send(running, "friend@example.org", letter("friend@example.org", "First"))
    await send(running, "alice@example.org", letter("alice@example.org", "Held"))
    (held,) = await queue(owner)
    # it arrived an hour ago, and waited for a reviewer since
    database = running.gateway.settings.database.url
    arrived = datetime.fromtimestamp(time.time() - 3600, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    query(
        database,
        "UPDATE messages SET created_at = ?, received_at = ? WHERE id = ?",
        (arrived, arrived, held["id"]),
    )
    await send(running, "friend@example.org", letter("friend@example.org", "Second"))
    await send(running, "friend@example.org", letter("friend@example.org", "Third"))

    # each client has paged past where (and when) the held mail arrived
    seen = await since_poll(start)
    assert sorted(item["subject"] for item in seen) == ["First", "Second", "Third"]
    since = max(item["created_at"] for item in seen)
    cursor_seen, cursor = await cursor_page(None)
    token_seen, token = await token_page(None)
    assert cursor_seen == token_seen == ["First", "Second"]
    assert cursor is not None and token is not None

    approved = await owner.http.post(f"/v1/reviews/{held['id']}/approve", json={})
    assert approved.status_code == 200, approved.text

    polled = await since_poll(since)
    (released,) = [item for item in polled if item["id"] == held["id"]]  # once
    assert released["created_at"] >= since
    while cursor is not None:
        subjects, cursor = await cursor_page(cursor)
        cursor_seen += subjects
    while token is not None:
        subjects, token = await token_page(token)
        token_seen += subjects
    assert cursor_seen == token_seen == ["First", "Second", "Third", "Held"]
    unread = await owner.http.get(api_messages)
    assert [item["subject"] for item in unread.json()["messages"]] == [
        "First",
        "Second",
        "Third",
        "Held",
    ]
    full = (await owner.http.get(f"{api_messages}/{held['id']}")).json()
    assert full["received_at"] == arrived  # when it arrived; created_at: when it was let in
    assert full["created_at"] >= since
    lifecycle = await owner.http.get(v1_agent(BOT, f"/messages/{held['id']}/lifecycle"))
    accepted = lifecycle.json()["items"][0]
    assert (accepted["stage"], accepted["occurred_at"]) == ("accepted", arrived)


async def test_a_flagging_gate_delivers_with_the_reason(
    running: RunningGateway, owner: Account
) -> None:
    inbound = {"policy": "allowlist", "allowlist": ["friend@example.org"], "action": "flag"}
    await protect(owner, BOT, protection(inbound=inbound))
    await send(running, "alice@example.org", letter("alice@example.org", "Flagged"))
    assert await inbox_subjects(owner, BOT) == ["Flagged"]
    assert await queue(owner) == []
    (reason,) = query(running.gateway.settings.database.url, "SELECT flag_reason FROM messages")
    assert reason == ("alice@example.org is not on the agent's allowlist",)
    logged = (await owner.http.get("/v1/events")).json()["items"]
    by_type = {event["type"]: event for event in logged}
    assert set(by_type) == {"email.received", "email.flagged"}
    flagged = by_type["email.flagged"]["data"]
    assert flagged["message_id"] == by_type["email.received"]["data"]["message_id"]
    assert (flagged["policy"], flagged["reason"]) == ("allowlist", reason[0])
    assert flagged["header_from"] == "alice@example.org" and flagged["delivered_to"] == BOT
    message = await owner.http.get(v1_agent(BOT, f"/messages/{flagged['message_id']}"))
    assert message.json()["flagged"] is True and message.json()["flag_reason"] == reason[0]


async def test_magic_links_answer_under_v1(
    owner: Account, running: RunningGateway, anonymous: httpx.AsyncClient
) -> None:
    await protect(owner, BOT, protection(outbound_action="review"))
    held = await draft(owner, BOT, "Via link")
    token = issue_token(
        link_key(running.gateway.server_key), held, "approve", int(time.time()) + 600
    )
    shown = await anonymous.get("/v1/approve", params={"t": token})
    assert shown.status_code == 200 and "Approve this message?" in shown.text
    assert [item["id"] for item in await queue(owner)] == [held]  # a GET never acts
    acted = await anonymous.post("/v1/approve", params={"t": token})
    assert acted.status_code == 200 and "Approved" in acted.text
    assert (await anonymous.post("/v1/approve", params={"t": token})).status_code == 409
    wrong = await anonymous.post("/v1/reject", params={"t": token})
    assert wrong.status_code == 400  # an approve token does not reject
    assert await queue(owner) == []


def ws_url(running: RunningGateway, agent: str) -> str:
    return running.addresses.http_url.replace("http://", "ws://") + v1_agent(agent, "/ws")


def bearer(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"Authorization", f"Bearer {key}".encode())]


async def test_the_websocket_refuses_before_the_upgrade(
    running: RunningGateway, owner: Account, make_account: Any
) -> None:
    mallory: Account = await make_account("mallory@example.com")
    other_agent = await create_agent(owner, "other")
    bound = await agent_key(owner, other_agent)
    for key, status, code in [
        (None, 401, "unauthorized"),
        ("e2a_" + "0" * 64, 401, "unauthorized"),
        (mallory.key, 404, "not_found"),
        (bound, 403, "forbidden"),
    ]:
        headers = bearer(key) if key else []
        with trio.fail_after(WAIT), pytest.raises(ConnectionRejected) as refused:
            async with open_websocket_url(ws_url(running, BOT), extra_headers=headers):
                pass
        assert refused.value.status_code == status
        error = json.loads(refused.value.body or b"")["error"]
        assert error["code"] == code and error["request_id"]
    plain = await owner.http.get(v1_agent(BOT, "/ws"))  # the same checks, then: upgrade
    assert plain.status_code == 426 and plain.json()["error"]["request_id"]
    # e2a's `query_token_rejected`: the key in ?token= is not read here (`/api/v1`'s is)
    query = await owner.http.get(
        v1_agent(BOT, "/ws"), params={"token": owner.key}, headers={"Authorization": ""}
    )
    assert query.status_code == 401 and query.json()["error"]["code"] == "unauthorized"


async def test_one_websocket_per_agent_pushes_event_envelopes_and_the_newer_replaces(
    running: RunningGateway, owner: Account
) -> None:
    url = ws_url(running, BOT)
    async with open_websocket_url(url, extra_headers=bearer(owner.key)) as first:
        await trio.sleep(0.2)  # connected, nothing unread yet
        await send(running, "alice@example.org", letter("alice@example.org", "Live one"))
        with trio.fail_after(WAIT):
            event = json.loads(await first.get_message())
        assert set(event) == {"type", "id", "schema_version", "created_at", "data"}
        assert event["type"] == "email.received" and event["id"].startswith("evt_")
        data = event["data"]
        assert data["subject"] == "Live one" and data["agent_email"] == BOT
        assert data["header_from"] == "alice@example.org"
        assert data["verified_domain"] == "example.org"
        assert data["authentication"]["dmarc"]["status"] == "pass"

        async with open_websocket_url(url, extra_headers=bearer(owner.key)) as second:
            with trio.fail_after(WAIT):  # the newer connection drains what is still unread
                drained = json.loads(await second.get_message())
            assert drained["id"] == event["id"]
            with trio.fail_after(WAIT), pytest.raises(ConnectionClosed) as closed:
                await first.get_message()
            assert closed.value.reason is not None
            assert (closed.value.reason.code, closed.value.reason.reason) == (4000, "replaced")
            await send(running, "alice@example.org", letter("alice@example.org", "Second"))
            with trio.fail_after(WAIT):
                live = json.loads(await second.get_message())
            assert live["data"]["subject"] == "Second"


async def test_retention_never_deletes_mail_still_waiting_for_review(
    running: RunningGateway, owner: Account
) -> None:
    inbound = {"policy": "allowlist", "allowlist": [], "action": "review"}
    await protect(owner, BOT, protection(inbound=inbound))
    await send(running, "alice@example.org", letter("alice@example.org", "Keep me"))
    await send(running, "alice@example.org", letter("alice@example.org", "Rejected"))
    held = {item["subject"]: item["id"] for item in await queue(owner)}
    await owner.http.post(f"/v1/reviews/{held['Rejected']}/reject", json={})
    storage = running.gateway.storage
    assert await storage.delete_messages_before("9999-01-01T00:00:00Z", 100) == 1
    assert [item["id"] for item in await queue(owner)] == [held["Keep me"]]


TERMS = {"filename": "terms.txt", "content_type": "text/plain", "data": "VGVybXMu"}


@pytest.mark.parametrize(
    ("edit", "code"),
    [
        ({"to": []}, "invalid_request"),
        # recipients, a body and attachments are held to what sendMessage takes, refused alike
        ({"to": ["not an address"]}, "invalid_recipient"),
        ({"cc": ["a@b\r\nBcc: x"]}, "invalid_recipient"),
        ({"text": ""}, "invalid_request"),  # the edit would leave the draft without a body
        ({"text": "", "html": ""}, "invalid_request"),
        ({"attachments": [TERMS] * 11}, "invalid_request"),  # a message carries at most 10
    ],
)
async def test_an_approval_edit_the_gateway_cannot_take_is_refused_and_the_draft_waits(
    owner: Account, edit: dict[str, Any], code: str
) -> None:
    await protect(owner, BOT, protection(outbound_action="review"))
    held = await draft(owner, BOT, "Careful edits")
    response = await owner.http.post(f"/v1/reviews/{held}/approve", json=edit)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == code
    assert [item["id"] for item in await queue(owner)] == [held]


async def test_approval_edits_name_recipients_as_a_send_does(
    running: RunningGateway, owner: Account
) -> None:
    """A recipient with a display name, as sendMessage takes it: the mail goes to its address."""
    await protect(owner, BOT, protection(outbound_action="review"))
    held = await draft(owner, BOT, "Named")
    edit = {"to": ["Dave <Dave@Example.net>"], "cc": ['"Erin, E." <erin@example.net>']}
    approved = await owner.http.post(f"/v1/reviews/{held}/approve", json=edit)
    assert approved.status_code == 202, approved.text
    ((to_json, cc_json),) = query(
        running.gateway.settings.database.url,
        "SELECT to_json, cc_json FROM messages WHERE id = ?",
        (held,),
    )
    assert (json.loads(to_json), json.loads(cc_json)) == (
        ["dave@example.net"],
        ["erin@example.net"],
    )


async def test_an_inbound_hold_approved_and_rejected_at_once_is_resolved_once(
    running: RunningGateway, owner: Account
) -> None:
    inbound = {"policy": "allowlist", "allowlist": [], "action": "review"}
    await protect(owner, BOT, protection(inbound=inbound))
    delivered = 0
    for round_ in range(4):
        await send(running, "alice@example.org", letter("alice@example.org", f"Race {round_}"))
        [hold] = await queue(owner)
        answers = await approve_and_reject(owner, hold["id"])
        codes = sorted(answer.status_code for answer in answers.values())
        assert codes == [200, 409], {k: v.text for k, v in answers.items()}
        loser = next(answer for answer in answers.values() if answer.status_code == 409)
        assert loser.json()["error"]["code"] == "message_not_pending"
        delivered += answers["approve"].status_code == 200
        subjects = await inbox_subjects(owner, BOT)
        assert len(subjects) == delivered and len(set(subjects)) == delivered
        assert await queue(owner) == []


async def approve_and_reject(owner: Account, hold_id: str) -> dict[str, httpx.Response]:
    """Approve and reject `hold_id` at the same moment; the answer to each."""
    answers: dict[str, httpx.Response] = {}

    async def review(verdict: str) -> None:
        answers[verdict] = await owner.http.post(f"/v1/reviews/{hold_id}/{verdict}", json={})

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(review, "approve")
            nursery.start_soon(review, "reject")
    return answers
