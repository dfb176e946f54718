"""Mail in over real SMTP (smtplib), out over real HTTP: the gateway's spine end to end."""

from __future__ import annotations

import base64
import hashlib
import smtplib
import time
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio

from e2a_gateway.app import RunningGateway
from e2a_gateway.clock import parse_timestamp
from e2a_gateway.mailauth.resolver import FixtureResolver
from tests.conftest import SHARED_DOMAIN, Account, agent_path
from tests.databases import query
from tests.test_storage import raw_table, run_sql

MESSAGE = (
    b"From: Alice Example <Alice@Example.org>\r\n"
    b"To: bot@agents.test, Other <other@elsewhere.example>\r\n"
    b"Cc: carol@example.net\r\n"
    b"Reply-To: replies@example.org\r\n"
    b"Subject: =?utf-8?q?Caf=C3=A9_order?=\r\n"
    b"Message-ID: <order-1@example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="b1"\r\n'
    b"\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Two coffees, please.\r\n"
    b".leading dot survives dot-stuffing\r\n"
    b"--b1\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<p>Two coffees, please.</p>\r\n"
    b"--b1--\r\n"
)


def send_mail(port: int, sender: str, recipients: list[str], data: bytes) -> dict[str, Any]:
    """Send with smtplib; returns the refused-recipient dict (raises on total refusal)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.example.org")
        return dict(client.sendmail(sender, recipients, data))


async def smtp_send(
    running: RunningGateway, recipients: list[str], data: bytes = MESSAGE
) -> dict[str, Any]:
    port = running.addresses.smtp_port
    return await trio.to_thread.run_sync(send_mail, port, "alice@example.org", recipients, data)


async def new_agent(account: Account, slug: str) -> str:
    response = await account.http.post("/api/v1/agents", json={"slug": slug, "agent_mode": "local"})
    assert response.status_code == 201, response.text
    return str(response.json()["email"])


async def test_message_is_stored_byte_exact_and_readable(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await new_agent(alice, "bot")
    assert await smtp_send(running, ["BOT@Agents.Test"]) == {}

    listing = (await alice.http.get(agent_path(bot, "/messages"))).json()
    (summary,) = listing["messages"]
    assert listing["next_token"] is None
    assert summary["from"] == "alice@example.org"
    assert summary["to"] == ["bot@agents.test", "other@elsewhere.example"]
    assert summary["cc"] == ["carol@example.net"]
    assert summary["recipient"] == bot
    assert summary["subject"] == "Café order"
    assert summary["status"] == "unread"
    assert summary["conversation_id"] is None
    assert summary["message_id"].startswith("msg_")

    full = (await alice.http.get(agent_path(bot, f"/messages/{summary['message_id']}"))).json()
    raw = base64.b64decode(full["raw_message"], validate=True)
    assert raw.endswith(MESSAGE)
    added = raw[: -len(MESSAGE)]
    assert added.startswith(
        b"Return-Path: <alice@example.org>\r\nReceived: from client.example.org"
    )
    assert b"\r\nAuthentication-Results: mx.agents.test;" in added
    assert added.endswith(b"\r\n") and b"\r\n\r\n" not in added
    assert full["text_body"] == "Two coffees, please.\n.leading dot survives dot-stuffing"
    assert full["html_body"].strip() == "<p>Two coffees, please.</p>"
    assert full["attachments"] == []
    assert full["status"] == "read"
    assert full["received_at"].endswith("Z")
    assert "delivery_status" not in full

    assert (await alice.http.get(agent_path(bot, "/messages"))).json()["messages"] == []
    (read,) = (await alice.http.get(agent_path(bot, "/messages?status=read"))).json()["messages"]
    assert read["status"] == "read"


async def test_mark_read_false_reads_a_message_in_full_and_leaves_it_unread(
    running: RunningGateway, make_account: Any
) -> None:
    """`e2a listen --forward` reads a message this way, and marks it read (a plain GET) only
    once its handler has taken it; any other value than true or false is refused."""
    alice: Account = await make_account("alice@example.com")
    bot = await new_agent(alice, "bot")
    assert await smtp_send(running, [bot]) == {}
    (summary,) = (await alice.http.get(agent_path(bot, "/messages"))).json()["messages"]
    path = agent_path(bot, f"/messages/{summary['message_id']}")

    peeked = (await alice.http.get(f"{path}?mark_read=false")).json()
    assert peeked["status"] == "unread" and peeked["raw_message"]
    assert (await alice.http.get(agent_path(bot, "/messages"))).json()["messages"] != []
    refused = await alice.http.get(f"{path}?mark_read=no")
    assert refused.status_code == 400 and "mark_read" in refused.json()["error"]["message"]
    assert (await alice.http.get(f"{path}?mark_read=true")).json()["status"] == "read"
    assert (await alice.http.get(agent_path(bot, "/messages"))).json()["messages"] == []


async def test_unknown_agent_and_foreign_domain_are_refused(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await new_agent(alice, "bot")
    refused = await smtp_send(running, [bot, f"nobody@{SHARED_DOMAIN}", "victim@gmail.example"])
    assert refused[f"nobody@{SHARED_DOMAIN}"][0] == 550
    assert b"5.1.1" in refused[f"nobody@{SHARED_DOMAIN}"][1]
    assert refused["victim@gmail.example"][0] == 550
    assert b"5.7.1" in refused["victim@gmail.example"][1]
    assert len((await alice.http.get(agent_path(bot, "/messages"))).json()["messages"]) == 1

    with pytest.raises(smtplib.SMTPRecipientsRefused) as caught:
        await smtp_send(running, ["victim@gmail.example"])
    assert caught.value.recipients["victim@gmail.example"][0] == 550


async def test_other_addresses_at_the_smtp_host_name_are_unknown_not_relayed(
    running: RunningGateway, make_account: Any
) -> None:
    """The host name is the gateway's own (postmaster and approval replies live there): any
    other address at it, such as the approval notices' sender, has no agent (5.1.1); the host
    is not a domain mail is relayed to (5.7.1)."""
    alice: Account = await make_account("alice@example.com")
    bot = await new_agent(alice, "bot")
    own = ["e2a@mx.agents.test", "Bot@MX.Agents.Test.", "bounces+x@mx.agents.test"]
    refused = await smtp_send(running, [bot, *own, "bot@sub.mx.agents.test"])
    for address in own:
        code, text = refused[address]
        assert (code, text.split()[0]) == (550, b"5.1.1"), (address, text)
        assert b"no such agent here" in text
    assert refused["bot@sub.mx.agents.test"][0] == 550
    assert b"5.7.1" in refused["bot@sub.mx.agents.test"][1]


def send_utf8(port: int, sender: str, recipients: list[str], data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.example.org")
        client.sendmail(sender, recipients, data, mail_options=["SMTPUTF8"])


async def test_an_internationalised_from_that_passed_dmarc_meets_the_gate_as_authenticated(
    running: RunningGateway, make_account: Any, resolver: FixtureResolver
) -> None:
    """DMARC judges the From's domain as A-labels; the From itself may give it as U-labels
    (RFC 6532). Either way it is the sender DMARC authenticated, and the gate lets it pass."""
    alice: Account = await make_account("alice@example.com")
    bot = await new_agent(alice, "bot")
    resolver.set_txt("xn--bcher-kva.example", ["v=spf1 ip4:127.0.0.1 -all"])
    resolver.set_txt("_dmarc.xn--bcher-kva.example", ["v=DMARC1; p=reject"])
    gate = {"policy": "allowlist", "allowlist": ["shop@bücher.example"], "action": "block"}
    answer = await alice.http.put(
        f"/v1/agents/{quote(bot, safe='')}/protection",
        json={
            "inbound": {"gate": gate, "scan": {}},
            "outbound": {"gate": {}, "scan": {}},
            "holds": {},
        },
    )
    assert answer.status_code == 200, answer.text
    data = (
        "From: Shop <shop@Bücher.example>\r\nTo: bot@agents.test\r\nSubject: Order\r\n"
        "Message-ID: <order@xn--bcher-kva.example>\r\n\r\nYour books shipped.\r\n"
    ).encode()
    port = running.addresses.smtp_port
    await trio.to_thread.run_sync(send_utf8, port, "shop@bücher.example", [bot], data)

    # delivered, not blocked
    (summary,) = (await alice.http.get(agent_path(bot, "/messages"))).json()["messages"]
    assert summary["subject"] == "Order"
    full = (await alice.http.get(agent_path(bot, f"/messages/{summary['message_id']}"))).json()
    assert full["authentication_results"]["dmarc"] == "pass"


async def test_one_message_per_recipient_agent(running: RunningGateway, make_account: Any) -> None:
    alice: Account = await make_account("alice@example.com")
    bob: Account = await make_account("bob@example.com")
    first = await new_agent(alice, "first")
    second = await new_agent(bob, "second")
    assert await smtp_send(running, [first, second, first.upper()]) == {}
    (for_alice,) = (await alice.http.get(agent_path(first, "/messages"))).json()["messages"]
    (for_bob,) = (await bob.http.get(agent_path(second, "/messages"))).json()["messages"]
    assert for_alice["message_id"] != for_bob["message_id"]
    assert for_alice["recipient"] == first and for_bob["recipient"] == second


async def test_pagination_walks_every_message_once(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await new_agent(alice, "pager")
    for index in range(5):
        await smtp_send(running, [bot], MESSAGE.replace(b"Two coffees", f"Order {index}".encode()))
    seen: list[str] = []
    token = None
    for _ in range(10):
        query = "/messages?status=all&page_size=2" + (f"&token={token}" if token else "")
        page = (await alice.http.get(agent_path(bot, query))).json()
        seen.extend(message["message_id"] for message in page["messages"])
        if len(seen) == 2:
            await smtp_send(running, [bot])
        token = page["next_token"]
        if token is None:
            break
    assert len(seen) == 6 and len(set(seen)) == 6


async def test_a_page_token_continues_only_the_listing_that_made_it(
    running: RunningGateway, make_account: Any
) -> None:
    """A token is a position in one listing: used on another agent's inbox, with another
    status or on the dead letters, it is refused (400 `invalid_token`) rather than read as a
    position there, which would silently skip that listing's mail. Tokens made before
    listings were named in them still continue."""
    alice: Account = await make_account("alice@example.com")
    first, second = await new_agent(alice, "first"), await new_agent(alice, "second")
    for _ in range(3):
        assert await smtp_send(running, [first, second]) == {}

    async def page(agent: str, query: str) -> httpx.Response:
        return await alice.http.get(agent_path(agent, query))

    token = (await page(first, "/messages?status=all&page_size=1")).json()["next_token"]
    for agent, path in (
        (second, f"/messages?status=all&page_size=1&token={token}"),
        (first, f"/messages?page_size=1&token={token}"),  # status=unread
        (first, f"/dead-letters?token={token}"),
    ):
        refused = await page(agent, path)
        assert refused.status_code == 400, (path, refused.text)
        error = refused.json()["error"]
        assert error["code"] == "invalid_token" and "another listing" in error["message"]
    upper = first.upper()  # the same agent, however its address is cased
    same = await page(upper, f"/messages?status=all&page_size=1&token={token}")
    assert same.status_code == 200 and len(same.json()["messages"]) == 1
    older = base64.urlsafe_b64encode(b"v1:0").decode().rstrip("=")
    everything = await page(second, f"/messages?status=all&token={older}")
    assert len(everything.json()["messages"]) == 3


async def test_another_user_sees_nothing_of_the_first(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    mallory: Account = await make_account("mallory@example.com")
    bot = await new_agent(alice, "private")
    await alice.http.post("/api/v1/domains", json={"domain": "alice.example"})
    await smtp_send(running, [bot])
    (message,) = (await alice.http.get(agent_path(bot, "/messages"))).json()["messages"]
    message_id = message["message_id"]
    (secret,) = (await alice.http.get("/api/v1/users/me/signing-secrets")).json()["secrets"]
    (key,) = (await alice.http.get("/api/v1/users/me/api-keys")).json()["api_keys"]

    assert (await mallory.http.get("/api/v1/agents")).json() == {"agents": []}
    assert (await mallory.http.get("/api/v1/domains")).json() == {"domains": []}
    walks = [
        ("GET", agent_path(bot), None),
        ("PUT", agent_path(bot), {"name": "stolen"}),
        ("DELETE", agent_path(bot), None),
        ("GET", agent_path(bot, "/messages"), None),
        ("GET", agent_path(bot, "/messages?status=all"), None),
        ("GET", agent_path(bot, f"/messages/{message_id}"), None),
        ("POST", "/api/v1/domains/alice.example/verify", None),
        ("DELETE", "/api/v1/domains/alice.example", None),
        ("DELETE", f"/api/v1/users/me/signing-secrets/{secret['id']}", None),
        ("DELETE", f"/api/v1/users/me/api-keys/{key['id']}", None),
    ]
    for method, path, body in walks:
        response = await mallory.http.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "not_found"

    # Mallory's own message id guesses through her own agent do not reach Alice's message.
    own = await new_agent(mallory, "mallory-bot")
    response = await mallory.http.get(agent_path(own, f"/messages/{message_id}"))
    assert response.status_code == 404

    still = (await alice.http.get(agent_path(bot))).json()
    assert still["name"] == "private"
    (unread,) = (await alice.http.get(agent_path(bot, "/messages"))).json()["messages"]
    assert unread["status"] == "unread"
    assert (await alice.http.get("/api/v1/domains")).json()["domains"][0]["verified"] is False


async def test_message_without_from_header_uses_envelope_sender(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await new_agent(alice, "bare")
    await smtp_send(running, [bot], b"Subject: no from\r\n\r\nbody\r\n")
    (summary,) = (await alice.http.get(agent_path(bot, "/messages"))).json()["messages"]
    assert summary["from"] == "alice@example.org"
    assert summary["to"] == [] and summary["cc"] == []


async def test_one_data_to_many_agents_is_stored_once(
    running: RunningGateway, make_account: Any
) -> None:
    """A 1 MiB message to 20 agents of two users: one copy on disk, identical bytes for each."""
    alice: Account = await make_account("alice@example.com")
    bob: Account = await make_account("bob@example.com")
    agents = {await new_agent(alice, f"many-{n}"): alice for n in range(15)}
    agents |= {await new_agent(bob, f"bobs-{n}"): bob for n in range(5)}
    body = b"".join(b"line %06d of a long report\r\n" % n for n in range(36_000))
    data = MESSAGE.replace(b"Two coffees, please.\r\n", body, 1)
    assert len(data) > 1_000_000
    assert await smtp_send(running, list(agents), data) == {}

    raws = set()
    for address, account in agents.items():
        (listed,) = (await account.http.get(agent_path(address, "/messages"))).json()["messages"]
        got = await account.http.get(agent_path(address, f"/messages/{listed['message_id']}"))
        raws.add(base64.b64decode(got.json()["raw_message"]))
    (raw,) = raws
    assert body in raw
    url = running.gateway.settings.database.url
    assert raw_table(url) == (1, len(raw))
    # keyed by the digest the copies were signed with (worked out once), which is the bytes'
    assert run_sql(url, "SELECT digest FROM raw_messages") == [(hashlib.sha256(raw).hexdigest(),)]


async def test_mail_for_an_owner_without_a_signing_secret_is_deferred_not_stored_unsigned(
    running: RunningGateway, make_account: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The API never lets an account's last signing secret go; should its rows still vanish
    beneath the gateway, mail for its agents is refused with 451 (the sender retries), never
    stored unsigned, and the log says why."""
    alice: Account = await make_account("alice@example.com")
    bot = await new_agent(alice, "bot")
    query(
        running.gateway.settings.database.url,
        "DELETE FROM signing_secrets WHERE user_id = (SELECT user_id FROM agents WHERE email = ?)",
        (bot,),
    )
    with caplog.at_level("WARNING"), pytest.raises(smtplib.SMTPDataError) as refused:
        await smtp_send(running, [bot])
    assert refused.value.smtp_code == 451
    assert f"owner of {bot} has no signing secret" in caplog.text
    listed = await alice.http.get(agent_path(bot, "/messages"))
    assert listed.status_code == 200 and listed.json()["messages"] == []


async def test_address_fields_with_deeply_nested_comments_are_read(
    running: RunningGateway, make_account: Any
) -> None:
    """The stdlib reads a comment in a comment by recursion: an 8 KB From or To of nested
    comments, within every limit, raised RecursionError and the mail was answered 451 for
    ever. Such fields are read without their comments."""
    alice: Account = await make_account("alice@example.com")
    bot = await new_agent(alice, "bot")
    nested = b"\r\n ".join([b"(" * 800] * 5 + [b")" * 800] * 5)
    data = (
        b"From: "
        + nested
        + b" <alice@example.org>\r\nTo: "
        + nested
        + b' "A (not a comment" <bot@agents.test>\r\nSubject: nested\r\n\r\nhello\r\n'
    )
    assert await smtp_send(running, [bot], data) == {}
    (summary,) = (await alice.http.get(agent_path(bot, "/messages"))).json()["messages"]
    assert (summary["from"], summary["to"], summary["subject"]) == (
        "alice@example.org",
        ["bot@agents.test"],
        "nested",
    )


async def test_mime_fields_with_deeply_nested_comments_are_accepted_and_read(
    running: RunningGateway, make_account: Any
) -> None:
    """The stdlib's MIME field parser recurses into nested comments too: a Content-Disposition
    of a few thousand made accepting the mail fail (451 for ever), and a Content-Type reading
    it. Such a message is taken, with no readable body."""
    alice: Account = await make_account("alice@example.com")
    bot = await new_agent(alice, "bot")
    nested = b"\r\n ".join([b"(" * 800] * 5 + [b")" * 800] * 5)
    for field in (b"Content-Disposition: inline ", b"Content-Type: text/plain "):
        data = (
            b"From: alice@example.org\r\nTo: bot@agents.test\r\nSubject: nested\r\n"
            b"MIME-Version: 1.0\r\n" + field + nested + b"\r\n\r\nhello\r\n"
        )
        assert await smtp_send(running, [bot], data) == {}
        (summary,) = (await alice.http.get(agent_path(bot, "/messages"))).json()["messages"]
        response = await alice.http.get(agent_path(bot, f"/messages/{summary['message_id']}"))
        assert response.status_code == 200, response.text
        full = response.json()
        assert (full["text_body"], full["html_body"], full["attachments"]) == (None, None, [])


async def test_mime_parameters_the_stdlib_cannot_read_are_accepted_and_read(
    running: RunningGateway, make_account: Any
) -> None:
    """A MIME parameter ending in `*` with no value (`charset*`) makes the stdlib's parser
    raise IndexError: a single-part message was taken but answered 500 on every read (and its
    webhook never delivered), a multipart one refused (451 for ever). Both are taken and read,
    with no readable body."""
    alice: Account = await make_account("alice@example.com")
    bot = await new_agent(alice, "bot")
    single = b"Content-Type: text/plain; charset*\r\n\r\nhello\r\n"
    multipart = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: application/pdf; name*\r\n\r\nx\r\n--b--\r\n"
    )
    for tail in (single, multipart):
        data = b"From: alice@example.org\r\nTo: bot@agents.test\r\nSubject: odd\r\n" + tail
        assert await smtp_send(running, [bot], data) == {}
        page = (await alice.http.get(agent_path(bot, "/messages"))).json()["messages"]
        response = await alice.http.get(agent_path(bot, f"/messages/{page[0]['message_id']}"))
        assert response.status_code == 200, response.text
        full = response.json()
        assert (full["text_body"], full["html_body"], full["attachments"]) == (None, None, [])


async def test_an_internationalised_author_domain_is_shown_as_a_labels(
    running: RunningGateway, make_account: Any, resolver: FixtureResolver
) -> None:
    """DMARC authenticates the From's domain as A-labels, and the Authentication-Results field
    names it so: `verified_domain` and `authentication.dmarc.domain` of the `email.received`
    event, of `/v1`'s message and of its listing name it as A-labels too, whatever case and
    script the From wrote it in."""
    alice: Account = await make_account("alice@example.com")
    bot = await new_agent(alice, "bot")
    resolver.set_txt("xn--bcher-kva.example", ["v=spf1 ip4:127.0.0.1 -all"])
    resolver.set_txt("_dmarc.xn--bcher-kva.example", ["v=DMARC1; p=reject"])
    data = (
        "From: Shop <someone@Bücher.Example>\r\nTo: bot@agents.test\r\nSubject: Order\r\n"
        "Message-ID: <order@xn--bcher-kva.example>\r\n\r\nYour books shipped.\r\n"
    ).encode()
    port = running.addresses.smtp_port
    await trio.to_thread.run_sync(send_utf8, port, "shop@bücher.example", [bot], data)

    domain = "xn--bcher-kva.example"
    events = await alice.http.get("/v1/events", params={"type": "email.received"})
    (event,) = events.json()["items"]
    assert event["data"]["verified_domain"] == domain, event
    assert event["data"]["authentication"]["dmarc"]["domain"] == domain, event
    path = f"/v1/agents/{quote(bot, safe='')}/messages"
    (listed,) = (await alice.http.get(path)).json()["items"]
    assert listed["verified_domain"] == domain, listed
    viewed = (await alice.http.get(f"{path}/{listed['id']}")).json()
    assert viewed["verified_domain"] == domain, viewed
    assert viewed["authentication"]["dmarc"] == {
        "status": "pass",
        "domain": domain,
        "policy": "reject",
        "aligned_by": ["spf"],
    }


async def test_an_agent_on_an_idn_domain_and_its_correspondents_read_in_one_form(
    running: RunningGateway, make_account: Any
) -> None:
    """An agent registered as `Bot@Bücher.example` is `bot@xn--bcher-kva.example`; mail sent
    with SMTPUTF8 to it in U-labels reaches it, and every address the message names reads with
    its domain as A-labels, as the agent's own address, `envelope_from` and `verified_domain`
    do: `to` holds the agent's address, and a From written `JOSÉ@Exämple.org` is the
    `josé@xn--exmple-cua.org` a reply goes to, on `/api/v1`, `/v1`, events and the signed
    sender alike."""
    alice: Account = await make_account("alice@example.com")
    assert (await alice.http.post("/v1/domains", json={"domain": "Bücher.example"})).is_success
    verified = await alice.http.post(f"/api/v1/domains/{quote('bücher.example')}/verify")
    assert verified.status_code == 200, verified.text
    registered = await alice.http.post(
        "/api/v1/agents", json={"email": "Bot@Bücher.example", "agent_mode": "local"}
    )
    assert registered.status_code == 201, registered.text
    bot = registered.json()["email"]
    assert bot == "bot@xn--bcher-kva.example"
    sender = "josé@xn--exmple-cua.org"
    data = (
        'From: "José" <JOSÉ@Exämple.org>\r\nTo: Bot <bot@Bücher.example>\r\n'
        "Cc: Ann <ann@EXÄMPLE.org>, bob@xn--exmple-cua.org\r\nReply-To: <josé@exämple.org>\r\n"
        "Subject: Grüße\r\nMessage-ID: <grüße@exämple.org>\r\n\r\nViele Grüße.\r\n"
    ).encode()
    port = running.addresses.smtp_port
    await trio.to_thread.run_sync(send_utf8, port, "josé@exämple.org", ["bot@Bücher.example"], data)

    cc = ["ann@xn--exmple-cua.org", "bob@xn--exmple-cua.org"]
    (summary,) = (await alice.http.get(agent_path("bot@bücher.example", "/messages"))).json()[
        "messages"
    ]
    assert (summary["recipient"], summary["to"]) == (bot, [bot])
    assert (summary["from"], summary["cc"]) == (sender, cc)
    message_id = summary["message_id"]
    full = (await alice.http.get(agent_path(bot, f"/messages/{message_id}"))).json()
    assert full["auth_headers"]["X-E2A-Auth-Sender"] == sender
    viewed = (await alice.http.get(f"/v1/agents/{quote(bot)}/messages/{message_id}")).json()
    assert viewed["header_from"] == viewed["envelope_from"] == sender, viewed
    assert (viewed["to"], viewed["cc"], viewed["reply_to"]) == ([bot], cc, [sender])
    (event,) = (await alice.http.get("/v1/events", params={"type": "email.received"})).json()[
        "items"
    ]
    assert (event["data"]["header_from"], event["data"]["to"]) == (sender, [bot]), event
    for spelling in ("JOSÉ@Exämple.org", "josé@xn--exmple-cua", "@exämple"):
        found = await alice.http.get(
            f"/v1/agents/{quote(bot)}/messages", params={"from": spelling, "read_status": "all"}
        )
        assert [item["id"] for item in found.json()["items"]] == [message_id], spelling


@pytest.mark.parametrize(
    "date",
    [
        None,  # no Date field
        b"yesterday, around noon",
        b"Mon, 32 Jan 2026 25:61:00 +0000",  # no such day nor time
        b"Fri, 31 Dec 9999 23:59:59 +0000",  # far in the future
        b"1 Jan 99999999999 00:00 +0000",  # past any year a date can hold
    ],
)
async def test_mail_whatever_its_date_field_is_taken_and_dated_by_its_arrival(
    running: RunningGateway, make_account: Any, date: bytes | None
) -> None:
    """A message's Date field is the sender's claim: missing, unreadable or far from now
    (in the message, or in a message it attaches), the mail is taken and read, and every
    listing dates it by when it arrived; the field stays as written in the raw message."""
    alice: Account = await make_account("alice@example.com")
    bot = await new_agent(alice, "bot")
    dated = b"" if date is None else b"Date: " + date + b"\r\n"
    data = (
        b"From: alice@example.org\r\nTo: bot@agents.test\r\nSubject: when?\r\n" + dated
        + b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b"--b\r\nContent-Type: message/rfc822\r\n\r\n"
        b"From: bob@example.org\r\nSubject: earlier\r\n" + dated + b"\r\nfirst\r\n--b--\r\n"
    )  # fmt: skip
    before = time.time()
    assert await smtp_send(running, [bot], data) == {}
    (summary,) = (await alice.http.get(agent_path(bot, "/messages"))).json()["messages"]
    response = await alice.http.get(agent_path(bot, f"/messages/{summary['message_id']}"))
    assert response.status_code == 200, response.text
    full = response.json()
    assert full["text_body"] == "see attached"
    assert base64.b64decode(full["raw_message"]).endswith(data)
    for when in (summary["created_at"], full["received_at"]):
        assert before - 1 <= parse_timestamp(when).timestamp() <= time.time() + 1, when
    v1 = await alice.http.get(f"/v1/agents/{quote(bot)}/messages/{summary['message_id']}")
    assert v1.status_code == 200, v1.text
    assert v1.json()["created_at"] == summary["created_at"]
    events = await alice.http.get("/v1/events", params={"message_id": summary["message_id"]})
    assert [event["created_at"] for event in events.json()["items"]] == [full["received_at"]]
