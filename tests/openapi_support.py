"""What the schemathesis runs against `/api/v1` and `/v1` share: a gateway seeded with one
account, one local agent and a multipart message, serving on loopback in a thread of its own
so the synchronous fuzzer can call it."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from functools import partial

import trio

from e2a_gateway.app import RunningGateway, run_gateway
from e2a_gateway.config import Settings
from e2a_gateway.mailauth.resolver import FixtureResolver
from tests.conftest import SHARED_DOMAIN
from tests.delivery_support import accept, open_account

Ready = queue.Queue[tuple["LiveGateway", trio.lowlevel.TrioToken, trio.CancelScope]]


@dataclass(frozen=True)
class LiveGateway:
    """A gateway serving on loopback in a thread of its own, with one account and agent."""

    url: str
    key: str
    agent: str


def multipart_mail(to: str) -> bytes:
    """A message from alice@example.org with a text part, an HTML part and an attachment."""
    message = EmailMessage()
    message["From"] = "Alice <alice@example.org>"
    message["To"] = to
    message["Cc"] = "carol@example.org"
    message["Subject"] = "Report"
    message.set_content("Plain text.")
    message.add_alternative("<p>HTML.</p>", subtype="html")
    message.add_attachment(b"a,b\n1,2\n", maintype="text", subtype="csv", filename="r.csv")
    return message.as_bytes()


async def _serve_seeded(settings: Settings, domain: str | None, ready: Ready) -> None:
    """Run the gateway, seed it (registering and verifying `domain` when given) and hand the
    live gateway, the trio token and the scope that stops it to `ready`."""
    async with trio.open_nursery() as nursery:
        running: RunningGateway = await nursery.start(
            partial(run_gateway, settings, resolver=FixtureResolver())
        )
        account = await open_account(
            running.gateway, running.addresses.http_url, "fuzz@example.com"
        )
        async with account.http:
            created = await account.http.post(
                "/api/v1/agents", json={"slug": "fuzz", "agent_mode": "local"}
            )
            assert created.status_code == 201, created.text
            if domain is not None:
                registered = await account.http.post("/v1/domains", json={"domain": domain})
                assert registered.status_code == 201, registered.text
                verified = await account.http.post(f"/v1/domains/{domain}/verify")
                assert verified.json()["verified"] is True, verified.text  # development: waived
        agent = f"fuzz@{SHARED_DOMAIN}"
        await accept(running.gateway, [agent], multipart_mail(agent))
        live = LiveGateway(running.addresses.http_url, account.key, agent)
        ready.put((live, trio.lowlevel.current_trio_token(), nursery.cancel_scope))


def serve_in_thread(
    settings: Settings, thread_name: str, domain: str | None = None
) -> Iterator[LiveGateway]:
    """Run a seeded gateway in a background thread (see `_serve_seeded`) for a synchronous
    schemathesis run; yield it, then stop it and report what failed in the thread."""
    ready: Ready = queue.Queue()
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            trio.run(_serve_seeded, settings, domain, ready)
        except BaseException as exc:  # reported to the test below, not lost in the thread
            failure.append(exc)

    thread = threading.Thread(target=serve, name=thread_name, daemon=True)
    thread.start()
    try:
        live, token, scope = ready.get(timeout=30)
    except queue.Empty:
        raise AssertionError(f"gateway did not start: {failure}") from None
    yield live
    trio.from_thread.run_sync(scope.cancel, trio_token=token)
    thread.join(timeout=15)
    assert not thread.is_alive() and not failure, failure
