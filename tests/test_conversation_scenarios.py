"""Conversations that stay one conversation on each side, end to end over real HTTP (and
SMTP between two gateways): agents of three owners answering each other through `/v1` and
`/api/v1`, a third agent copied midway, a reply held for review and approved with edits, a
forward into a new thread and an answer to an older message of the thread (delivery.md,
Threading). Each side must see one conversation, its id stable, every message threaded by
In-Reply-To and References onto the one it answers, and `/v1`'s conversation views must
list them oldest first with the right counts."""

from __future__ import annotations

import base64
import email
import email.policy
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import trio

from e2a_gateway.accounts import bootstrap_user
from e2a_gateway.app import RunningGateway, run_gateway
from e2a_gateway.config import Settings
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.signing.identity import body_hash, claim_from_headers
from tests.conftest import Account, agent_path, make_settings
from tests.delivery_support import create_agent, new_signing_secret, smtp_send, wait_until
from tests.relay_support import free_port
from tests.test_dkim_signing import write_rsa_key


def v1(agent: str, suffix: str = "") -> str:
    """`/v1/agents/<agent><suffix>`."""
    return f"/v1/agents/{quote(agent, safe='')}{suffix}"


@dataclass
class Side:
    """An agent and its owner's account."""

    account: Account
    agent: str


async def inbox(side: Side) -> list[dict[str, Any]]:
    """The agent's mail, both directions, oldest first (`/v1` lists newest first)."""
    listing = await side.account.http.get(
        v1(side.agent, "/messages"), params={"limit": 100, "direction": "all"}
    )
    assert listing.status_code == 200, listing.text
    return list(reversed(listing.json()["items"]))


async def arrived(side: Side, subject: str) -> dict[str, Any]:
    """The newest inbound message of the agent with `subject`, read whole (`raw_message`)."""
    found: list[dict[str, Any]] = []

    async def there() -> bool:
        found[:] = [
            m for m in await inbox(side) if m["direction"] == "inbound" and m["subject"] == subject
        ]
        return bool(found)

    await wait_until(there)
    detail = await side.account.http.get(v1(side.agent, f"/messages/{found[-1]['id']}"))
    assert detail.status_code == 200, detail.text
    full: dict[str, Any] = detail.json()
    return full


def threading_of(message: dict[str, Any]) -> tuple[str, str | None, list[str]]:
    """(Message-ID, In-Reply-To, References) of a received message, as it arrived."""
    raw = base64.b64decode(message["raw_message"])
    parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
    references = (parsed.get("References") or "").split()
    return str(parsed["Message-ID"]), parsed.get("In-Reply-To"), references


async def v1_reply(side: Side, message_id: str, **body: Any) -> dict[str, Any]:
    """replyToMessage, waiting for the hand-off unless the reply is held."""
    answer = await side.account.http.post(
        v1(side.agent, f"/messages/{message_id}/reply"), json=body, params={"wait": "sent"}
    )
    assert answer.status_code in (200, 202), answer.text
    result: dict[str, Any] = answer.json()
    return result


async def legacy_reply(side: Side, message_id: str, **body: Any) -> dict[str, Any]:
    """`/api/v1`'s reply."""
    answer = await side.account.http.post(
        agent_path(side.agent, f"/messages/{message_id}/reply"), json=body
    )
    assert answer.status_code in (200, 202), answer.text
    result: dict[str, Any] = answer.json()
    return result


async def conversations(side: Side) -> dict[str, dict[str, Any]]:
    """listConversations, by id, each with its getConversation."""
    listing = await side.account.http.get(v1(side.agent, "/conversations"))
    assert listing.status_code == 200, listing.text
    found = {}
    for summary in listing.json()["items"]:
        detail = await side.account.http.get(
            v1(side.agent, f"/conversations/{quote(summary['id'], safe='')}")
        )
        assert detail.status_code == 200, detail.text
        found[summary["id"]] = {**summary, "detail": detail.json()}
    return found


def assert_answers(reply: dict[str, Any], answered: dict[str, Any]) -> None:
    """`reply` (received) is threaded onto `answered` (received by the other side)."""
    answered_id, _, answered_refs = threading_of(answered)
    _, in_reply_to, references = threading_of(reply)
    assert in_reply_to == answered_id
    assert references[-1] == answered_id
    assert references[:-1] == answered_refs


async def test_three_agents_of_three_owners_keep_one_conversation_each(
    running: RunningGateway, make_account: Any
) -> None:
    ann = Side(await make_account("ann@example.com"), "")
    ben = Side(await make_account("ben@example.net"), "")
    cy = Side(await make_account("cy@example.org"), "")
    ann.agent = await create_agent(ann.account, "ann")
    ben.agent = await create_agent(ben.account, "ben")
    cy.agent = await create_agent(cy.account, "cy")

    first = await ann.account.http.post(
        v1(ann.agent, "/messages"),
        json={"to": [ben.agent], "subject": "Plan", "text": "Round 1"},
        params={"wait": "sent"},
    )
    assert first.status_code == 200, first.text
    m1 = await arrived(ben, "Plan")
    conversation = m1["conversation_id"]
    assert conversation.startswith("conv_")

    await v1_reply(ben, m1["id"], text="Round 2")
    m2 = await arrived(ann, "Re: Plan")
    assert_answers(m2, m1)
    await legacy_reply(ann, m2["id"], body="Round 3")
    m3 = await wait_for_text(ben, "Round 3")
    assert_answers(m3, m2)
    await legacy_reply(ben, m3["id"], body="Round 4")
    m4 = await wait_for_text(ann, "Round 4")
    assert_answers(m4, m3)
    await v1_reply(ann, m4["id"], text="Round 5, with Cy", cc=[cy.agent])
    m5 = await wait_for_text(ben, "Round 5, with Cy")
    c5 = await wait_for_text(cy, "Round 5, with Cy")
    assert_answers(m5, m4)

    protect = await ben.account.http.put(
        v1(ben.agent, "/protection"),
        json={
            "inbound": {"gate": {}, "scan": {"sensitivity": "off"}},
            "outbound": {
                "gate": {"policy": "allowlist", "allowlist": [], "action": "review"},
                "scan": {},
            },
            "holds": {},
        },
    )
    assert protect.status_code == 200, protect.text
    held = await v1_reply(ben, m5["id"], text="Round 6 draft", reply_all=True)
    assert held["status"] == "pending_review"
    approved = await ben.account.http.post(
        f"/v1/reviews/{held['message_id']}/approve",
        json={"subject": "Re: Plan (edited)", "text": "Round 6, edited"},
    )
    assert approved.status_code == 202, approved.text
    m6 = await wait_for_text(ann, "Round 6, edited")
    c6 = await wait_for_text(cy, "Round 6, edited")
    assert_answers(m6, m5)
    assert_answers(c6, c5)

    # Ann answers Round 2 again, not the newest message
    await v1_reply(ann, m2["id"], text="Round 7, on round 2")
    m7 = await wait_for_text(ben, "Round 7, on round 2")
    assert_answers(m7, m2)
    await legacy_reply(cy, c6["id"], body="Round 8 from Cy", reply_all=True)
    m8 = await wait_for_text(ben, "Round 8 from Cy")
    a8 = await wait_for_text(ann, "Round 8 from Cy")

    forwarded = await ben.account.http.post(
        v1(ben.agent, f"/messages/{m3['id']}/forward"),
        json={"to": [cy.agent], "text": "FYI"},
        params={"wait": "sent"},
    )
    assert forwarded.status_code == 202, forwarded.text  # Ben's mail is still reviewed
    held_forward = forwarded.json()["message_id"]
    approved = await ben.account.http.post(f"/v1/reviews/{held_forward}/approve", json={})
    assert approved.status_code == 202, approved.text
    f1 = await wait_for_text(cy, "FYI")
    assert f1["conversation_id"] not in (None, conversation)
    assert threading_of(f1)[1] is None

    for message in (m1, m2, m3, m4, m5, c5, m6, c6, m7, m8, a8):
        assert message["conversation_id"] == conversation, message["subject"]

    ann_threads = await conversations(ann)
    assert list(ann_threads) == [conversation]
    ben_threads = await conversations(ben)
    assert len(ben_threads) == 2 and conversation in ben_threads
    cy_threads = await conversations(cy)
    assert set(cy_threads) == {conversation, f1["conversation_id"]}
    expected_counts = {
        "ann": (ann_threads[conversation], 4, 4),  # in: 2, 4, 6, 8; out: 1, 3, 5, 7
        "ben": (ben_threads[conversation], 5, 3),
        "cy": (cy_threads[conversation], 2, 1),
    }
    for name, (thread, inbound, outbound) in expected_counts.items():
        detail = thread["detail"]
        assert (thread["inbound_count"], thread["outbound_count"]) == (inbound, outbound), name
        assert thread["message_count"] == inbound + outbound == detail["message_count"], name
        listed = [m["created_at"] for m in detail["messages"]]
        assert listed == sorted(listed), name
        assert len(detail["messages"]) == inbound + outbound, name


async def with_claim(side: Side, message: dict[str, Any]) -> dict[str, Any]:
    """`message` with its `/api/v1` form (`legacy`), which carries the identity claim."""
    detail = await side.account.http.get(agent_path(side.agent, f"/messages/{message['id']}"))
    assert detail.status_code == 200, detail.text
    return {**message, "legacy": detail.json()}


async def wait_for_text(side: Side, text: str) -> dict[str, Any]:
    """The agent's received message whose text starts with `text`, read whole."""
    found: list[dict[str, Any]] = []

    async def there() -> bool:
        for message in await inbox(side):
            if message["direction"] != "inbound":
                continue
            detail = await side.account.http.get(v1(side.agent, f"/messages/{message['id']}"))
            if (detail.json().get("body") or {}).get("text", "").startswith(text):
                found[:] = [detail.json()]
                return True
        return False

    await wait_until(there)
    return found[0]


@dataclass
class Peer:
    """One of two gateways mailing each other: its running form and an account on it."""

    running: RunningGateway
    side: Side
    secret: str


def peer_settings(tmp_path: Path, domain: str, smtp_port: int, relay_port: int) -> Settings:
    """A gateway for agents at `domain` that sends from it, DKIM-signed, through the other
    gateway's SMTP listener on 127.0.0.1 (its relay)."""
    home = tmp_path / domain
    home.mkdir()
    write_rsa_key(home / "dkim.pem")
    relay = {"host": "127.0.0.1", "port": relay_port, "tls": "none", "timeout_seconds": 10}
    return make_settings(
        home,
        shared_domain=domain,
        smtp={"listen": f"127.0.0.1:{smtp_port}", "hostname": f"mx.{domain}"},
        outbound_smtp={**relay, "from_domain": domain},
        dkim={"selector": "e2a", "private_key_path": str(home / "dkim.pem")},
    )


async def open_peer(
    nursery: trio.Nursery, settings: Settings, resolver: FixtureResolver, owner: str
) -> Peer:
    """Start a gateway, publish its domain's SPF, DKIM and DMARC records, open an account
    with an agent and a signing secret on it."""
    running: RunningGateway = await nursery.start(partial(run_gateway, settings, resolver=resolver))
    domain = settings.shared_domain
    record = running.gateway.dkim_record(domain)
    assert record is not None
    resolver.set_txt(record.name, [record.value])
    resolver.set_txt(domain, ["v=spf1 ip4:127.0.0.1 -all"])
    resolver.set_txt(f"_dmarc.{domain}", ["v=DMARC1; p=reject"])
    _, issued, _ = await bootstrap_user(running.gateway.storage, running.gateway.server_key, owner)
    http = httpx.AsyncClient(
        base_url=running.addresses.http_url,
        headers={"Authorization": f"Bearer {issued.plaintext}"},
        timeout=10,
    )
    account = Account(owner, issued.plaintext, http)
    nursery.start_soon(close_at_cancel, http)
    agent = await create_agent(account, owner.partition("@")[0])
    return Peer(running, Side(account, agent), await new_signing_secret(account))


async def close_at_cancel(http: httpx.AsyncClient) -> None:
    """Close `http` when the test's nursery is cancelled."""
    try:
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            await http.aclose()


def assert_signed_for(peer: Peer, message: dict[str, Any], sender: str) -> None:
    """The message's identity claim is `peer`'s, verifies with its owner's secret, and says
    the other gateway's agent `sender` is verified by DMARC (a person to this gateway)."""
    detail = message["legacy"]
    claim = claim_from_headers(detail["auth_headers"])
    assert claim.signed_headers(peer.secret) == detail["auth_headers"]
    assert claim.body_hash == body_hash(base64.b64decode(message["raw_message"]))
    assert (claim.verified, claim.sender, claim.entity_type) == (True, sender, "human")
    assert "dmarc=pass" in claim.domain_check


async def two_peers(tmp_path: Path, nursery: trio.Nursery) -> tuple[Peer, Peer]:
    """Gateways for a.test and b.test, each relaying to the other, on one DNS."""
    resolver = FixtureResolver()
    resolver.set_txt("example.org", ["v=spf1 ip4:127.0.0.1 -all"])
    port_a, port_b = free_port(), free_port()
    a = await open_peer(
        nursery, peer_settings(tmp_path, "a.test", port_a, port_b), resolver, "ann@example.com"
    )
    b = await open_peer(
        nursery, peer_settings(tmp_path, "b.test", port_b, port_a), resolver, "ben@example.net"
    )
    return a, b


async def test_agents_on_two_gateways_keep_one_conversation_each(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Gateway A (a.test) and gateway B (b.test) relay to each other's SMTP listener. The
    conversation id A's mail carries is not B's to trust (another deployment's header), so B
    threads by In-Reply-To and References alone; neither side's thread is split or taken over
    by the other's ids."""
    a, b = await two_peers(tmp_path, nursery)
    ann, ben = a.side, b.side

    sent = await ann.account.http.post(
        v1(ann.agent, "/messages"),
        json={"to": [ben.agent], "subject": "Deal", "text": "Round 1"},
        params={"wait": "sent"},
    )
    assert sent.status_code == 200, sent.text
    ann_conversation = (await inbox(ann))[-1]["conversation_id"]
    assert ann_conversation.startswith("conv_")
    m1 = await with_claim(ben, await wait_for_text(ben, "Round 1"))
    assert_signed_for(b, m1, ann.agent)

    await v1_reply(ben, m1["id"], text="Round 2")
    m2 = await with_claim(ann, await wait_for_text(ann, "Round 2"))
    assert_signed_for(a, m2, ben.agent)
    assert_answers(m2, m1)
    ben_conversation = (await inbox(ben))[-1]["conversation_id"]
    assert ben_conversation.startswith("conv_") and ben_conversation != ann_conversation

    await legacy_reply(ann, m2["id"], body="Round 3")
    m3 = await wait_for_text(ben, "Round 3")
    assert_answers(m3, m2)
    await legacy_reply(ben, m3["id"], body="Round 4")
    m4 = await wait_for_text(ann, "Round 4")
    assert_answers(m4, m3)
    await v1_reply(ann, m4["id"], text="Round 5")
    m5 = await wait_for_text(ben, "Round 5")
    assert_answers(m5, m4)
    await v1_reply(ann, m2["id"], text="Round 6, on round 2")
    m6 = await wait_for_text(ben, "Round 6, on round 2")
    assert_answers(m6, m2)

    # Ann's agent names Ben's conversation in a new message: another deployment's id
    intruding = await ann.account.http.post(
        v1(ann.agent, "/messages"),
        json={
            "to": [ben.agent],
            "subject": "Elsewhere",
            "text": "Round 7",
            "conversation_id": ben_conversation,
        },
        params={"wait": "sent"},
    )
    assert intruding.status_code == 200, intruding.text
    m7 = await wait_for_text(ben, "Round 7")

    for message in (m2, m4):
        assert message["conversation_id"] == ann_conversation
    for message in (m3, m5, m6):
        assert message["conversation_id"] == ben_conversation
    # first contact from another deployment: outside any conversation (its id is not
    # trusted), so are Round 1 and Ann's id naming Ben's conversation
    assert not m1["conversation_id"] and not m7["conversation_id"]
    ann_threads = await conversations(ann)
    assert set(ann_threads) == {ann_conversation, ben_conversation}
    assert (ann_threads[ann_conversation]["message_count"]) == 6  # 1-6
    ben_threads = await conversations(ben)
    assert list(ben_threads) == [ben_conversation]
    thread = ben_threads[ben_conversation]
    assert (thread["inbound_count"], thread["outbound_count"]) == (3, 2)  # 3, 5, 6; 2, 4


async def test_a_persons_replies_from_a_mail_client_stay_in_the_conversation(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Hal answers Ann's agent from a mail client (over SMTP, as his provider would): with the
    subject changed, with References cut to the last id, with no In-Reply-To, and to the
    return path (the bounce-looking address) Ann's mail came from. Every answer joins Ann's
    conversation; `/v1` lists them in it, oldest first."""
    a, b = await two_peers(tmp_path, nursery)
    ann, ben = a.side, b.side
    sent = await ann.account.http.post(
        v1(ann.agent, "/messages"),
        json={"to": [ben.agent], "subject": "Offer", "text": "Round 1"},
        params={"wait": "sent"},
    )
    assert sent.status_code == 200, sent.text
    conversation = (await inbox(ann))[-1]["conversation_id"]
    first = await wait_for_text(ben, "Round 1")
    first_id, _, _ = threading_of(first)
    raw = base64.b64decode(first["raw_message"])
    return_path = email.message_from_bytes(raw)["Return-Path"].strip("<>")
    assert return_path != ann.agent and return_path.endswith("@a.test")
    await v1_reply(ben, first["id"], text="Round 2")
    second_id, _, _ = threading_of(await wait_for_text(ann, "Round 2"))

    port = a.running.addresses.smtp_port
    replies = [
        ("Something else entirely", f"In-Reply-To: {first_id}\r\nReferences: {first_id}\r\n"),
        ("Re: Offer", f"In-Reply-To: {second_id}\r\nReferences: {second_id}\r\n"),
        ("Re: Offer", f"References: <root@elsewhere.example> {second_id}\r\n"),
        ("Re: Offer", f"References: {first_id} <unknown@example.org>\r\n"),
    ]
    for n, (subject, headers) in enumerate(replies):
        data = (
            f"From: Hal <hal@example.org>\r\nTo: {ann.agent}\r\nSubject: {subject}\r\n"
            f"Message-ID: <hal-{n}@example.org>\r\n{headers}\r\nHal {n}\r\n"
        ).encode()
        await smtp_send(port, [ann.agent], data, sender="hal@example.org")
    bounce = (
        f"From: Hal <hal@example.org>\r\nTo: {return_path}\r\nSubject: Re: Offer\r\n"
        "Message-ID: <hal-bounce@example.org>\r\n\r\nHal to the return path\r\n"
    ).encode()
    await smtp_send(port, [return_path], bounce, sender="hal@example.org")

    for n in range(len(replies)):
        assert (await wait_for_text(ann, f"Hal {n}"))["conversation_id"] == conversation, n
    to_return_path = await wait_for_text(ann, "Hal to the return path")
    assert to_return_path["conversation_id"] == conversation
    threads = await conversations(ann)
    assert list(threads) == [conversation]
    thread = threads[conversation]
    assert (thread["inbound_count"], thread["outbound_count"]) == (6, 1)
    subjects = [m["subject"] for m in thread["detail"]["messages"]]
    assert subjects[0] == "Offer" and subjects[-1] == "Re: Offer"
