"""The dashboard in headless Chromium against a live gateway: sign in, create an agent, watch
mail arrive over real SMTP without reloading, approve (edited) and reject held mail that the
gateway relays to an SMTP sink on 127.0.0.1, work at phone width, sign out.

The browser is Debian's `chromium` driven by Playwright (no downloaded browser); the test
skips, saying why, when either is missing. It saves screenshots of the main pages in the
test's temporary folder, or in the folder `E2A_SCREENSHOTS_DIR` names:
`E2A_SCREENSHOTS_DIR=docs/screenshots` refreshes the ones the README shows."""

from __future__ import annotations

import os
import shutil
import smtplib
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from aiosmtpd.controller import Controller

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from tests.conftest import Account, make_settings
from tests.relay_support import Sink, free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS_VAR = "E2A_SCREENSHOTS_DIR"
REMOTE = "someone@example.net"
WAIT_MS = 10_000

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright for Python is not installed (pip install '.[dev]')"
)
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(
        "Chromium not found: install Debian's chromium (apt-get install chromium)",
        allow_module_level=True,
    )

pytestmark = pytest.mark.slow


@pytest.fixture
def sink() -> Iterator[tuple[Sink, int]]:
    """An SMTP sink on 127.0.0.1 standing in for the outbound relay."""
    received = Sink()
    port = free_port()
    controller = Controller(received, hostname="127.0.0.1", port=port)
    controller.start()
    yield received, port
    controller.stop()


@pytest.fixture
def settings(tmp_path: Path, sink: tuple[Sink, int]) -> Settings:
    """Test settings whose outbound relay is the sink."""
    relay = {"host": "127.0.0.1", "port": sink[1], "tls": "none", "timeout_seconds": 10}
    return make_settings(tmp_path, outbound_smtp=relay)


def send_mail(running: RunningGateway, to: str, subject: str) -> None:
    """Deliver a message to the gateway's SMTP listener with smtplib."""
    data = (
        f"From: Carol <carol@example.org>\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n"
        "Could you send me the opening hours?\r\n"
    ).encode()
    with smtplib.SMTP(running.addresses.smtp_host, running.addresses.smtp_port) as smtp:
        smtp.sendmail("carol@example.org", [to], data)


def relayed(sink: Sink, timeout: float) -> list[bytes]:
    """Messages the gateway relayed to REMOTE, waiting up to `timeout` for the first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [raw for _, recipients, raw in sink.received if REMOTE in recipients]
        if found:
            return found
        time.sleep(0.1)
    return []


def hold_two_messages(running: RunningGateway, key: str) -> list[str]:
    """Two sends by the HITL agent over REST; both wait for approval."""
    ids = []
    with httpx.Client(
        base_url=running.addresses.http_url, headers={"Authorization": f"Bearer {key}"}
    ) as api:
        for subject in ("Opening hours", "Special offer!!!"):
            response = api.post(
                "/api/v1/send", json={"to": [REMOTE], "subject": subject, "body": "Dear Carol"}
            )
            assert response.status_code == 202, response.text
            ids.append(response.json()["message_id"])
    return ids


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where the screenshots go: `E2A_SCREENSHOTS_DIR`, else the test's temporary folder."""
    folder = Path(os.environ.get(SCREENSHOTS_VAR) or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def scenario(
    running: RunningGateway, account: Account, sink: Sink, screenshots: Path
) -> dict[str, Any]:
    """Drive the dashboard as a reviewer would; returns what the REST checks need."""
    base = running.addresses.http_url
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 860})
            problems: list[str] = []  # script errors and Content-Security-Policy violations
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on(
                "console",
                lambda message: problems.append(message.text) if message.type == "error" else None,
            )
            page.set_default_timeout(WAIT_MS)
            expect = sync_api.expect
            menu = page.get_by_role("navigation", name="Main")

            # Sign in from the keyboard alone: the labelled key field has the focus.
            page.goto(f"{base}/")
            assert page.url.startswith(f"{base}/signin")
            assert page.evaluate("document.activeElement.id") == "api_key"
            page.keyboard.type(account.key)
            page.keyboard.press("Enter")
            expect(page.get_by_role("heading", name="Agents", exact=True)).to_be_visible()

            # Create a local agent by slug, then turn on human approval.
            page.get_by_label("Slug or address").fill("helpdesk")
            page.get_by_label("Name").fill("Help desk")
            page.get_by_role("button", name="Create agent").click()
            expect(page.get_by_role("status")).to_have_text("Agent created.")
            page.get_by_label("Hold every message until someone approves it").check()
            page.get_by_role("button", name="Save settings").click()
            expect(page.get_by_role("status")).to_have_text("Settings saved.")
            menu.get_by_role("link", name="Agents").click()
            page.screenshot(path=str(screenshots / "agents.png"), full_page=True)

            # The open inbox shows new mail without a reload.
            page.get_by_role("link", name="helpdesk@agents.test").click()
            expect(page.get_by_role("heading", name="Inbox")).to_be_visible()
            page.wait_for_selector("#inbox[data-live=connected]")
            page.evaluate("window.notReloaded = true")
            send_mail(running, "helpdesk@agents.test", "Opening hours?")
            send_mail(running, "helpdesk@agents.test", "Invoice 2041")
            expect(page.get_by_role("link", name="Opening hours?")).to_be_visible()
            expect(page.get_by_role("link", name="Invoice 2041")).to_be_visible()
            expect(page.locator("#live-state")).to_contain_text("Invoice 2041")
            assert page.evaluate("window.notReloaded") is True
            page.screenshot(path=str(screenshots / "inbox.png"), full_page=True)

            # Reading a message shows the sender checks and offers the raw source.
            page.get_by_role("link", name="Opening hours?").click()
            expect(page.get_by_text("not verified")).to_be_visible()
            expect(page.get_by_text("SPF: none")).to_be_visible()
            with page.expect_download() as download:
                page.get_by_role("link", name="Download raw source (.eml)").click()
            raw = Path(download.value.path()).read_bytes()
            assert b"Subject: Opening hours?" in raw
            page.screenshot(path=str(screenshots / "message.png"), full_page=True)

            # Two held messages: edit then approve one, reject the other with a reason.
            held = hold_two_messages(running, account.key)
            menu.get_by_role("link", name="Approvals").click()
            expect(page.get_by_role("heading", name="Special offer!!!")).to_be_visible()
            page.screenshot(path=str(screenshots / "approvals.png"), full_page=True)
            first = page.locator("article", has=page.get_by_role("heading", name="Opening hours"))
            first.get_by_role("link", name="Edit, then approve").click()
            page.get_by_label("Subject").fill("Our opening hours")
            page.get_by_label("Text").fill("Dear Carol,\nwe open at nine.")
            page.screenshot(path=str(screenshots / "review.png"), full_page=True)
            page.get_by_role("button", name="Approve and send").click()
            expect(page.get_by_role("status")).to_have_text(
                "Approved: the message is queued for sending."
            )
            second = page.locator("article", has=page.get_by_role("heading", name="Special offer"))
            second.get_by_label("Reason for rejecting").fill("Too pushy")
            second.get_by_role("button", name="Reject").click()
            expect(page.get_by_role("status")).to_have_text(
                "Rejected: the message will not be sent."
            )
            expect(page.get_by_text("Nothing is waiting for approval.")).to_be_visible()

            # The outbound history shows both outcomes.
            menu.get_by_role("link", name="Outbound").click()
            expect(page.get_by_text("Reason: Too pushy")).to_be_visible()
            page.screenshot(path=str(screenshots / "outbound.png"), full_page=True)

            # At phone width nothing scrolls sideways and the menu still works.
            page.set_viewport_size({"width": 375, "height": 812})
            menu.get_by_role("link", name="Agents").click()
            page.get_by_role("link", name="helpdesk@agents.test").click()
            # the inbox shown and styled: the heading is visible before the stylesheet has
            # arrived, and the bare table is wider than a phone
            expect(page.get_by_role("heading", name="Inbox")).to_be_visible()
            page.wait_for_load_state("load")
            expect(page.locator("#inbox thead")).to_have_css("position", "absolute")
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 375, f"the inbox is {width}px wide at a 375px viewport"
            page.screenshot(path=str(screenshots / "phone-inbox.png"), full_page=True)

            # Sign out: the pages are closed again.
            page.get_by_role("button", name="Sign out").click()
            expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
            page.goto(f"{base}/approvals")
            assert page.url.startswith(f"{base}/signin")
            assert problems == []
        finally:
            browser.close()
    return {"held": held, "relayed": relayed(sink, 15)}


async def test_reviewer_flow_in_chromium(
    running: RunningGateway, make_account: Any, sink: tuple[Sink, int], screenshots: Path
) -> None:
    account: Account = await make_account("owner@example.com")
    with trio.fail_after(90):
        outcome = await trio.to_thread.run_sync(scenario, running, account, sink[0], screenshots)
    approved, rejected = outcome["held"]
    (raw,) = outcome["relayed"]
    assert b"Subject: Our opening hours" in raw
    assert b"we open at nine." in raw
    first = (await account.http.get(f"/api/v1/messages/{approved}")).json()
    assert first["status"] == "sent" and first["edited"] is True
    second = (await account.http.get(f"/api/v1/messages/{rejected}")).json()
    assert second["status"] == "rejected"
    assert second["rejection_reason"] == "Too pushy"
    for name in ("agents", "inbox", "message", "approvals"):
        assert (screenshots / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def follow_a_link_from_elsewhere(base: str, key: str) -> dict[str, Any]:
    """Sign in, then open the dashboard from a link on another site (a chat, a webmail), where
    the browser does not send the SameSite=Strict session cookie; then open it directly."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.set_default_timeout(WAIT_MS)
            page.goto(f"{base}/signin")
            page.get_by_label("API key").fill(key)
            page.get_by_role("button", name="Sign in").click()
            sync_api.expect(page.get_by_role("heading", name="Agents", exact=True)).to_be_visible()
            page.route(
                "http://chat.example/**",
                lambda route: route.fulfill(
                    content_type="text/html", body=f'<a href="{base}/approvals">held mail</a>'
                ),
            )
            page.goto("http://chat.example/")
            page.get_by_role("link", name="held mail").click()
            page.wait_for_load_state()
            landed = page.url
            page.goto(f"{base}/approvals")
            return {"landed": landed, "then": page.url}
        finally:
            browser.close()


async def test_a_link_from_another_site_keeps_the_session(
    running: RunningGateway, make_account: Any
) -> None:
    account: Account = await make_account("owner@example.com")
    base = running.addresses.http_url
    with trio.fail_after(60):
        seen = await trio.to_thread.run_sync(follow_a_link_from_elsewhere, base, account.key)
    assert seen["then"] == f"{base}/approvals", seen


def watch_across_reconnects(
    running: RunningGateway, key: str, address: str, flood: Callable[[], None]
) -> dict[str, Any]:
    """Open the agent's inbox, let mail arrive live, then more mail while the stream is down
    between two connections; what the page shows then, and the Last-Event-ID each connection
    of the stream sent. Then `flood()` lowers what a catch-up sends, and more arrives than
    that while the stream is down: the page reloads, showing it."""
    base = running.addresses.http_url
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.set_default_timeout(WAIT_MS)
            resumed_after: list[str | None] = []
            page.on(
                "request",
                lambda request: (
                    resumed_after.append(request.all_headers().get("last-event-id"))
                    if "/events" in request.url
                    else None
                ),
            )
            page.goto(f"{base}/signin")
            page.get_by_label("API key").fill(key)
            page.get_by_role("button", name="Sign in").click()
            sync_api.expect(page.get_by_role("heading", name="Agents", exact=True)).to_be_visible()
            page.goto(f"{base}/agents/{address}/inbox")
            page.wait_for_selector("#inbox[data-live=connected]")
            page.evaluate("window.notReloaded = true")
            send_mail(running, address, "Live one")
            sync_api.expect(page.get_by_role("link", name="Live one")).to_be_visible()
            page.wait_for_selector("#inbox[data-live=reconnecting]")
            for n in range(3):
                send_mail(running, address, f"In the gap {n}")
            sync_api.expect(page.get_by_role("link", name="In the gap 2")).to_be_visible()
            page.wait_for_selector("#inbox[data-live=reconnecting]")  # once more, mail shown
            page.wait_for_selector("#inbox[data-live=connected]")
            seen = {
                "rows": page.locator("#inbox tbody tr").all_inner_texts(),
                "reloaded": page.evaluate("window.notReloaded") is not True,
                "resumed_after": list(resumed_after),
            }
            # More mail waits after a reconnection than a stream sends: the page reloads.
            flood()
            page.wait_for_selector("#inbox[data-live=reconnecting]")
            for n in range(3):
                send_mail(running, address, f"Flood {n}")
            sync_api.expect(page.get_by_role("link", name="Flood 2")).to_be_visible()
            seen["reloaded_on_flood"] = page.evaluate("window.notReloaded") is not True
            return seen
        finally:
            browser.close()


async def test_the_live_inbox_misses_nothing_across_reconnects(
    running: RunningGateway, make_account: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Streams last a second and reconnect after 1.5 s; a catch-up reads two messages at a
    # time. Mail sent while the stream is down all appears, each message once, and each
    # reconnection resumes after the last position the page was given. Too much waiting mail
    # reloads the page.
    monkeypatch.setattr("e2a_gateway.dashboard.live.STREAM_SECONDS", 1.0)
    monkeypatch.setattr("e2a_gateway.dashboard.live.KEEPALIVE_SECONDS", 0.2)
    monkeypatch.setattr("e2a_gateway.dashboard.live.RECONNECT_MILLISECONDS", 1500)
    monkeypatch.setattr("e2a_gateway.dashboard.live.CATCH_UP_PAGE_SIZE", 2)
    account: Account = await make_account("owner@example.com")
    created = await account.http.post(
        "/api/v1/agents", json={"slug": "desk", "agent_mode": "local"}
    )
    assert created.status_code == 201, created.text
    address = created.json()["email"]
    with trio.fail_after(60):
        seen = await trio.to_thread.run_sync(
            watch_across_reconnects,
            running,
            account.key,
            address,
            partial(monkeypatch.setattr, "e2a_gateway.dashboard.live.MAX_CATCH_UP", 2),
        )
    subjects = [row.split("\t")[1] for row in seen["rows"]]
    assert subjects == ["Live one", "In the gap 0", "In the gap 1", "In the gap 2"]
    assert not seen["reloaded"]
    assert seen["reloaded_on_flood"]
    first, *reconnections = seen["resumed_after"]
    assert first is None and len(reconnections) >= 2 and all(reconnections), seen
