"""A forward of HTML mail with inline images (a logo in a signature, a screenshot: parts named
by a Content-ID that the HTML shows with `cid:` URLs), end to end: the mail arrives over SMTP,
the agent forwards it over `/v1` with HTML of its own, and the copy the relay on loopback gets
shows the images where the original did: each carried with its Content-ID, beside the HTML
in a multipart/related part, not as a file the quoted HTML can no longer find."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from tests.conftest import Account, agent_path, make_settings
from tests.delivery_support import create_agent, smtp_send, wait_until
from tests.relay_support import Sink, relay_port, sink

pytestmark = pytest.mark.slow

__all__ = ["relay_port", "sink"]  # fixtures

LOGO = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
REPORT = b"%PDF-1.4 quarterly numbers"


def original() -> bytes:
    """HTML mail as Outlook writes it: text and HTML alternatives, the HTML related to the logo
    it shows by `cid:`, and a PDF attached."""
    message = EmailMessage()
    message["From"] = "Human <human@example.org>"
    message["To"] = "bot@agents.test"
    message["Subject"] = "Numbers"
    message["Message-ID"] = "<numbers@example.org>"
    message.set_content("See the numbers.\n")
    message.add_alternative('<p>See the numbers.</p><img src="cid:image001.png@01DA">', "html")
    message.get_body(("html",)).add_related(
        LOGO, "image", "png", cid="<image001.png@01DA>", filename="image001.png"
    )
    message.add_attachment(REPORT, "application", "pdf", filename="numbers.pdf")
    return message.as_bytes(policy=email.policy.SMTP)


@pytest.fixture
def settings(tmp_path: Path, relay_port: int) -> Settings:
    relay = {"host": "127.0.0.1", "port": relay_port, "tls": "none", "timeout_seconds": 10}
    return make_settings(tmp_path, outbound_smtp=relay)


async def test_a_forward_shows_the_originals_inline_images_where_it_did(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    alice: Account = await make_account("alice@example.com")
    await create_agent(alice, "bot")
    await smtp_send(running.addresses.smtp_port, ["bot@agents.test"], original())
    (summary,) = (await alice.http.get(agent_path("bot@agents.test", "/messages"))).json()[
        "messages"
    ]
    forwarded = await alice.http.post(
        f"/v1/agents/bot%40agents.test/messages/{summary['message_id']}/forward",
        json={"to": ["carol@example.net"], "text": "FYI", "html": "<p>FYI</p>"},
    )
    assert forwarded.status_code == 202, forwarded.text
    await wait_until(lambda: len(sink.received) >= 1)
    (_, _, raw) = sink.received[0]
    copy = email.message_from_bytes(raw, policy=email.policy.default)
    html = copy.get_body(("html",))
    assert html is not None and 'src="cid:image001.png@01DA"' in html.get_content()
    related = [part for part in copy.walk() if part.get_content_type() == "multipart/related"]
    assert len(related) == 1, [part.get_content_type() for part in copy.walk()]
    html_part, logo = related[0].iter_parts()
    assert html_part.get_content_type() == "text/html"
    assert logo["Content-ID"] == "<image001.png@01DA>"
    assert logo.get_content_disposition() == "inline" and logo.get_content() == LOGO
    files = [(part.get_filename(), part.get_content()) for part in copy.iter_attachments()]
    assert files == [("numbers.pdf", REPORT)]
