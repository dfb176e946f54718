"""Mail of as many parts as e2a reads is read in proportion to its size, and never on the gateway's
one event loop: while an agent downloads one of its attachments (which parses the whole
message again), the gateway goes on serving every other connection."""

from __future__ import annotations

import base64
import gc
import time
from typing import Any

import trio

from e2a_gateway import kept_bodies
from e2a_gateway.app import RunningGateway
from e2a_gateway.mime_bounds import MAX_PARTS
from tests.conftest import Account
from tests.delivery_support import create_agent, smtp_send

PARTS = MAX_PARTS - 1
"""Named attachments beside the text: as many parts as e2a reads (`MAX_PARTS`)."""
LINES = 2000
"""Lines of each attachment: the stdlib's parser reads them one by one, so that parsing the
message takes about a second."""
LAST = b"file %d\r\n" % (PARTS - 1) + b"x\r\n" * (LINES - 1) + b"x"
"""The bytes of the last attachment."""
BLOCKED_SHARE = 1 / 3
"""Of the time a request takes, the most the event loop may run nothing else: parsing in a
worker thread shares the GIL (and the garbage collector's pauses) with it, so some, but a
request parsing on the event loop holds it for all of its time."""


def many_parts() -> bytes:
    """A message of a text body and PARTS named attachments of LINES lines (about 6 MB)."""
    data = (
        b"From: Dani <dani@example.org>\r\nTo: bot@agents.test\r\nSubject: parts\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n'
        b"--XX\r\nContent-Type: text/plain\r\n\r\nMany files.\r\n"
    )
    lines = b"x\r\n" * LINES
    parts = (
        b"--XX\r\nContent-Type: application/octet-stream; name=p%d.bin\r\n\r\nfile %d\r\n%s"
        % (number, number, lines)
        for number in range(PARTS)
    )
    return data + b"".join(parts) + b"--XX--\r\n"


async def longest_stall(request: Any) -> tuple[float, float]:
    """How long awaiting `request()` took, and the longest the event loop ran nothing else
    meanwhile. The client shares the gateway's event loop here: that is the longest wait
    between the ticks of a task asking to run every 20 ms."""
    took: list[float] = []

    async def timed() -> None:
        started = time.monotonic()
        await request()
        took.append(time.monotonic() - started)

    gaps: list[float] = []
    # What earlier tests left on the heap is frozen, as `e2a serve` freezes what start-up
    # loaded (`settle_heap`): else a full collection, set off by the parse's allocations,
    # walks all of it (0.4 s once a few million objects are live) with every thread stopped.
    gc.collect()
    gc.freeze()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(timed)
            while not took:
                started = time.monotonic()
                await trio.sleep(0.02)
                gaps.append(time.monotonic() - started)
    finally:
        gc.unfreeze()
    # Parsing the message takes about a second here: long enough to tell a third of it
    # from all of it, against ticks 20 ms apart.
    assert took[0] > 0.4, "the request was too quick to show anything"
    return took[0], max(gaps)


async def received_many_parts(running: RunningGateway, account: Account) -> str:
    """The id of `many_parts()`, sent over SMTP to a new agent bot@agents.test of `account`."""
    await create_agent(account, "bot")
    await smtp_send(running.addresses.smtp_port, ["bot@agents.test"], many_parts())
    listing = await account.http.get("/api/v1/agents/bot@agents.test/messages")
    (summary,) = listing.json()["messages"]
    return str(summary["message_id"])


async def test_downloading_an_attachment_of_a_thousand_holds_up_no_other_request(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    message_id = await received_many_parts(running, alice)
    path = f"/v1/agents/bot%40agents.test/messages/{message_id}/attachments/{PARTS - 1}"

    async def download() -> None:
        response = await alice.http.get(path, params={"inline": "true"})
        assert response.status_code == 200, response.text
        assert response.json()["filename"] == f"p{PARTS - 1}.bin"
        assert base64.b64decode(response.json()["data"]) == LAST

    took, stall = await longest_stall(download)
    assert stall < took * BLOCKED_SHARE, (took, stall)


async def test_reading_mail_of_a_thousand_parts_not_read_lately_holds_up_nothing(
    running: RunningGateway, make_account: Any
) -> None:
    # Parsed bodies are kept for a while (`parse_body`); mail read after a restart, or after
    # much other mail, is parsed again.
    alice: Account = await make_account("alice@example.com")
    message_id = await received_many_parts(running, alice)
    for path, listed in (
        (f"/v1/agents/bot%40agents.test/messages/{message_id}", "size_bytes"),
        (f"/api/v1/agents/bot@agents.test/messages/{message_id}", "size"),
    ):

        async def read(path: str = path, listed: str = listed) -> None:
            response = await alice.http.get(path)
            assert response.status_code == 200, response.text
            attachments = response.json()["attachments"]
            assert (len(attachments), attachments[-1][listed]) == (PARTS, len(LAST))

        kept_bodies.BODIES.clear()
        took, stall = await longest_stall(read)
        assert stall < took * BLOCKED_SHARE, (path, took, stall)


async def test_reviewing_held_mail_of_a_thousand_parts_not_read_lately_holds_up_nothing(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    await create_agent(alice, "bot")
    gate = {"policy": "allowlist", "allowlist": ["friend@example.org"], "action": "review"}
    protection = {
        "inbound": {"gate": gate, "scan": {"sensitivity": "off"}},
        "outbound": {"gate": {"policy": "open", "action": "flag"}, "scan": {}},
        "holds": {},
    }
    answer = await alice.http.put("/v1/agents/bot%40agents.test/protection", json=protection)
    assert answer.status_code == 200, answer.text
    await smtp_send(running.addresses.smtp_port, ["bot@agents.test"], many_parts())
    (held,) = (await alice.http.get("/v1/reviews")).json()["items"]

    async def review() -> None:
        response = await alice.http.get(f"/v1/reviews/{held['id']}")
        assert response.status_code == 200, response.text
        attachments = response.json()["attachments"]
        assert (len(attachments), attachments[-1]["size_bytes"]) == (PARTS, len(LAST))

    kept_bodies.BODIES.clear()
    took, stall = await longest_stall(review)
    assert stall < took * BLOCKED_SHARE, (took, stall)
