"""Mail of thousands of parts is read in proportion to its size, and never on the gateway's
one event loop: while an agent downloads one of its attachments (which parses the whole
message again), the gateway goes on serving every other connection."""

from __future__ import annotations

import base64
import time
from typing import Any

import trio

from e2a_gateway.app import RunningGateway
from tests.conftest import Account
from tests.delivery_support import create_agent, smtp_send

PARTS = 3000
LOOP_LIMIT_SECONDS = 0.5
"""Far below what parsing the message takes (about a second and a half on this machine)."""


def many_parts() -> bytes:
    """A message of a text body and PARTS small named attachments (about 200 KB)."""
    data = (
        b"From: Dani <dani@example.org>\r\nTo: bot@agents.test\r\nSubject: parts\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n'
        b"--XX\r\nContent-Type: text/plain\r\n\r\nMany files.\r\n"
    )
    for number in range(PARTS):
        data += b"--XX\r\nContent-Type: application/octet-stream; name=p%d.bin\r\n" % number
        data += b"\r\nfile %d\r\n" % number
    return data + b"--XX--\r\n"


async def test_downloading_an_attachment_of_thousands_holds_up_no_other_request(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    await create_agent(alice, "bot")
    await smtp_send(running.addresses.smtp_port, ["bot@agents.test"], many_parts())
    (summary,) = (await alice.http.get("/api/v1/agents/bot@agents.test/messages")).json()[
        "messages"
    ]
    path = f"/v1/agents/bot%40agents.test/messages/{summary['message_id']}/attachments/2999"
    took: list[float] = []

    async def download() -> None:
        started = time.monotonic()
        response = await alice.http.get(path, params={"inline": "true"})
        took.append(time.monotonic() - started)
        assert response.status_code == 200, response.text
        assert response.json()["filename"] == "p2999.bin"
        assert base64.b64decode(response.json()["data"]) == b"file 2999"

    # The client shares the gateway's event loop here: how long it went without running
    # anything else is the longest wait between the ticks of a task asking to run every 20 ms.
    gaps: list[float] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(download)
        while not took:
            started = time.monotonic()
            await trio.sleep(0.02)
            gaps.append(time.monotonic() - started)
    assert took[0] > 2 * LOOP_LIMIT_SECONDS, "the download was too quick to show anything"
    assert max(gaps) < LOOP_LIMIT_SECONDS, (took, sorted(gaps)[-3:])
