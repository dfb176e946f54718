"""Email templates on `/v1` over real HTTP (and real SMTP-free local delivery): the account's
templates created, listed, changed and deleted; source checked by a dry run; the starter
catalog; a send naming a template, rendered before it is stored. Answers are checked against
e2a's schemas (its api/openapi.yaml at 220fe0a7)."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio

from e2a_gateway.app import RunningGateway
from tests.conftest import Account
from tests.delivery_support import create_agent, wait_until
from tests.sdk_v1 import run_sdk, sdk5_python, value
from tests.test_v1_reviews import conforms

__all__ = ["sdk5_python"]  # a fixture

SOURCE = {
    "name": "Order shipped",
    "alias": "shipped",
    "subject": "Order {{order.id}} shipped",
    "text": "Hi {{name}}, {{order.id}} is on its way ({{count}} items).",
    "html": "<p>Hi {{name}}</p>{{{footer_html}}}",
}


def messages_path(agent: str) -> str:
    return f"/v1/agents/{quote(agent, safe='')}/messages"


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


async def only_message(account: Account, reader: str) -> dict[str, Any]:
    """The one message `reader` has, once it is delivered (MessageView)."""
    path = messages_path(reader)

    async def delivered() -> bool:
        listed = await account.http.get(path, params={"read_status": "all"})
        return bool(listed.json()["items"])

    await wait_until(delivered)
    listed = await account.http.get(path, params={"read_status": "all"})
    (item,) = listed.json()["items"]
    found: dict[str, Any] = (await account.http.get(f"{path}/{item['id']}")).json()
    return found


@pytest.fixture
async def owner(make_account: Any) -> Account:
    account: Account = await make_account("templates@example.com")
    return account


async def test_templates_are_created_listed_changed_and_deleted(owner: Account) -> None:
    http = owner.http
    created = await http.post("/v1/templates", json=SOURCE)
    assert created.status_code == 201, created.text
    template = created.json()
    conforms(template, "TemplateView")
    assert template["id"].startswith("tmpl_") and template["alias"] == "shipped"
    assert {name: template[name] for name in SOURCE} == SOURCE
    assert "from_starter_alias" not in template

    taken = await http.post("/v1/templates", json=SOURCE | {"name": "Again"})
    assert error_of(taken, 409)["code"] == "alias_taken"
    broken = await http.post("/v1/templates", json=SOURCE | {"alias": "b", "text": "{{#each}}"})
    error = error_of(broken, 400)
    assert error["code"] == "invalid_template"
    assert error["details"] == {
        "part": "text",
        "message": 'template parse error at byte 0: reserved syntax "{{#…}}": '
        "sections/partials/comments are not supported yet",
    }
    for refused, words in (
        ({"subject": "s", "text": "t"}, "name is required"),
        ({"name": "n", "alias": "9lives", "subject": "s", "text": "t"}, "alias must match"),
        ({"name": "n", "subject": "s"}, "subject and text are required"),
    ):
        error = error_of(await http.post("/v1/templates", json=refused), 400)
        assert error["code"] == "invalid_request" and words in error["message"], error

    second = await http.post("/v1/templates", json={"name": "B", "subject": "s", "text": "t"})
    assert second.status_code == 201, second.text
    first_page = (await http.get("/v1/templates", params={"limit": 1})).json()
    conforms(first_page, "PageTemplateSummaryView")
    assert [item["id"] for item in first_page["items"]] == [second.json()["id"]]  # newest first
    assert "text" not in first_page["items"][0]
    rest = await http.get("/v1/templates", params={"limit": 1, "cursor": first_page["next_cursor"]})
    assert [item["id"] for item in rest.json()["items"]] == [template["id"]]
    assert rest.json()["next_cursor"] is None

    path = f"/v1/templates/{template['id']}"
    assert (await http.get(path)).json() == template
    changed = await http.patch(path, json={"alias": "", "html": "", "name": "Shipped"})
    assert changed.status_code == 200, changed.text
    view = changed.json()
    assert "alias" not in view and "html" not in view and view["name"] == "Shipped"
    assert view["subject"] == SOURCE["subject"] and view["updated_at"] >= template["updated_at"]
    bad = await http.patch(path, json={"subject": "{{ }}"})
    assert error_of(bad, 400)["code"] == "invalid_template"
    assert (await http.get(path)).json()["subject"] == SOURCE["subject"]  # nothing changed
    clash = await http.patch(f"/v1/templates/{second.json()['id']}", json={"alias": "x"})
    assert clash.status_code == 200
    assert error_of(await http.patch(path, json={"alias": "x"}), 409)["code"] == "alias_taken"

    unconfirmed = await http.delete(path)
    assert error_of(unconfirmed, 422)["code"] == "invalid_request"
    deleted = await http.delete(path, params={"confirm": "DELETE"})
    assert deleted.status_code == 200 and deleted.json() == {"deleted": True, "id": template["id"]}
    conforms(deleted.json(), "DeleteTemplateResult")
    assert error_of(await http.get(path), 404)["code"] == "not_found"
    assert error_of(await http.delete(path, params={"confirm": "DELETE"}), 404)


async def test_templates_are_the_accounts_own_and_capped(
    running: RunningGateway, owner: Account, make_account: Any
) -> None:
    made = await owner.http.post("/v1/templates", json=SOURCE)
    path = f"/v1/templates/{made.json()['id']}"
    stranger: Account = await make_account("stranger@example.com")
    assert error_of(await stranger.http.get(path), 404)["code"] == "not_found"
    assert error_of(await stranger.http.patch(path, json={"name": "Mine"}), 404)
    gone = await stranger.http.delete(path, params={"confirm": "DELETE"})
    assert error_of(gone, 404)["code"] == "not_found"
    assert (await stranger.http.get("/v1/templates")).json()["items"] == []
    # the same alias in another account is no conflict
    assert (await stranger.http.post("/v1/templates", json=SOURCE)).status_code == 201

    bot = await create_agent(owner, "tmpl-bot")
    key = await owner.http.post(
        "/v1/account/api-keys", json={"name": "bot", "scope": "agent", "agent_email": bot}
    )
    async with httpx.AsyncClient(
        base_url=running.addresses.http_url,
        headers={"Authorization": f"Bearer {key.json()['key']}"},
        timeout=10,
    ) as agent_http:
        assert error_of(await agent_http.get("/v1/templates"), 403)["code"] == "forbidden"
        assert error_of(await agent_http.get("/v1/starter-templates"), 403)
        created = await agent_http.post("/v1/templates", json=SOURCE | {"alias": "z"})
        assert error_of(created, 403)["code"] == "forbidden"
        # an agent key may send with its account's templates, as e2a lets it
        data = {"name": "Al", "order": {"id": "C-3"}, "count": 1}
        sent = await agent_http.post(
            messages_path(bot),
            json={"to": [bot], "template_alias": "shipped", "template_data": data},
        )
        assert sent.status_code == 202, sent.text

    for number in range(9):
        plain = {"name": f"T{number}", "subject": "s", "text": "t"}
        assert (await owner.http.post("/v1/templates", json=plain)).status_code == 201
    over = await owner.http.post("/v1/templates", json={"name": "T", "subject": "s", "text": "t"})
    assert error_of(over, 400)["code"] == "template_limit_reached"


async def test_validate_previews_and_suggests_without_storing(owner: Account) -> None:
    checked = await owner.http.post(
        "/v1/templates/validate",
        json={
            "subject": SOURCE["subject"],
            "text": SOURCE["text"],
            "html": SOURCE["html"],
            "test_data": {"name": "<Ann>", "order": {"id": 7}, "count": 2.0, "footer_html": "<i>"},
        },
    )
    assert checked.status_code == 200, checked.text
    answer = checked.json()
    conforms(answer, "ValidateTemplateResponse")
    assert answer["valid"] is True and answer["errors"] == []
    assert answer["rendered"] == {
        "subject": "Order 7 shipped",
        "text": "Hi <Ann>, 7 is on its way (2.0 items).",  # as written
        "html": "<p>Hi &lt;Ann&gt;</p><i>",
    }
    assert answer["suggested_data"] == {
        "order": {"id": "order.id_value"},
        "name": "name_value",
        "count": "count_value",
        "footer_html": "footer_html_value",
    }
    broken = await owner.http.post(
        "/v1/templates/validate", json={"subject": "{{a", "text": "{{ok}}", "html": "{{!x}}"}
    )
    answer = broken.json()
    assert answer["valid"] is False and "rendered" not in answer
    assert [error["part"] for error in answer["errors"]] == ["subject", "html"]
    assert answer["errors"][0]["message"] == 'template parse error at byte 0: unclosed "{{" tag'
    assert answer["suggested_data"] == {"ok": "ok_value"}
    deep: dict[str, Any] = {"leaf": 1}
    for _ in range(8):
        deep = {"d": deep}
    too_deep = await owner.http.post(
        "/v1/templates/validate", json={"text": "x", "test_data": deep}
    )
    messages = {error["message"] for error in too_deep.json()["errors"]}
    assert messages == {"template_data nests deeper than 8 levels"}
    assert (await owner.http.get("/v1/templates")).json()["items"] == []  # nothing stored


async def test_starters_are_listed_read_and_copied(owner: Account) -> None:
    listed = (await owner.http.get("/v1/starter-templates")).json()
    conforms(listed, "PageStarterTemplateView")
    aliases = [item["alias"] for item in listed["items"]]
    assert aliases == sorted(aliases) and "welcome" in aliases and listed["next_cursor"] is None
    assert all("text" not in item for item in listed["items"])
    page = (await owner.http.get("/v1/starter-templates", params={"limit": 1})).json()
    following = await owner.http.get(
        "/v1/starter-templates", params={"limit": 100, "cursor": page["next_cursor"]}
    )
    assert [item["alias"] for item in page["items"] + following.json()["items"]] == aliases

    welcome = (await owner.http.get("/v1/starter-templates/welcome")).json()
    conforms(welcome, "StarterTemplateDetailView")
    assert "{{" in welcome["text"] and welcome["variables"]
    missing = await owner.http.get("/v1/starter-templates/nothing")
    assert error_of(missing, 404)["code"] == "starter_template_not_found"

    copied = await owner.http.post("/v1/templates", json={"from_starter": "welcome"})
    assert copied.status_code == 201, copied.text
    copy = copied.json()
    assert (copy["name"], copy["alias"]) == (welcome["name"], "welcome")
    assert (copy["subject"], copy["text"], copy["html"]) == (
        welcome["subject"],
        welcome["text"],
        welcome["html"],
    )
    assert (copy["from_starter_alias"], copy["from_starter_version"]) == ("welcome", "1.0.0")
    renamed = await owner.http.post(
        "/v1/templates", json={"from_starter": "welcome", "alias": "hello", "name": "Hello"}
    )
    assert (renamed.json()["alias"], renamed.json()["name"]) == ("hello", "Hello")
    mixed = await owner.http.post("/v1/templates", json={"from_starter": "welcome", "text": "t"})
    assert error_of(mixed, 400)["code"] == "invalid_request"
    unknown = await owner.http.post("/v1/templates", json={"from_starter": "nothing"})
    assert error_of(unknown, 404)["code"] == "starter_template_not_found"


# e2a's starter catalog at 220fe0a7 (internal/startertemplates/masters/*/meta.json): each
# alias with its name, the variables it declares in order, and those its subject uses. All
# are version 1.0.0; every variable is required but `preheader`; the `*_html` ones are raw
# slots. The text part uses every variable but `preheader` and the raw ones, the HTML part
# every variable but the `*_text` ones.
E2A_STARTERS: dict[str, tuple[str, tuple[str, ...], set[str]]] = {
    "agent-status": (
        "Agent status",
        ("agent_name", "run_summary", "sections_html", "sections_text", "dashboard_url"),
        {"agent_name", "run_summary"},
    ),
    "approval-request": (
        "Approval request",
        (
            "agent_name",
            "action_summary",
            "details_html",
            "details_text",
            "approve_url",
            "reject_url",
            "expires_at",
        ),
        {"action_summary"},
    ),
    "daily-digest": (
        "Daily digest",
        (
            "agent_name",
            "date",
            "headline",
            "sections_html",
            "sections_text",
            "dashboard_url",
            "unsubscribe_html",
        ),
        {"agent_name", "date"},
    ),
    "password-reset": (
        "Password reset",
        ("action_url", "expires_minutes"),
        {"company_name"},
    ),
    "receipt": (
        "Receipt",
        ("order_id", "order_date", "items_html", "items_text", "total", "receipt_url"),
        {"company_name", "order_id"},
    ),
    "verify-code": ("Verification code", ("code", "expires_minutes"), {"code", "company_name"}),
    "welcome": ("Welcome", ("recipient_name", "cta_url", "cta_label"), {"company_name"}),
}
E2A_SHARED = ("company_name", "support_email", "company_address", "preheader")
E2A_OPTIONAL = {"preheader"}
# Values for every variable e2a's starters declare, as a client of e2a would send them in
# `template_data`: the plain ones with characters the HTML part must escape, the raw ones
# the fragments e2a documents (rows for a table, blocks, one link).
E2A_VALUES = {
    "company_name": "Birch & Co <Labs>",
    "support_email": "help@birch.example",
    "company_address": "4 Elm Row, Springfield",
    "preheader": "Preview line for the inbox",
    "agent_name": "books-bot",
    "run_summary": "Run done: 40 synced, 0 failed",
    "sections_html": '<p style="margin:0;"><strong>Synced</strong>: 40</p>',
    "sections_text": "Synced: 40\nFailed: 0",
    "dashboard_url": 'https://app.birch.example/bots?id=7&view="run"',
    "action_summary": "Refund 3 orders > $100",
    "details_html": '<tr><td style="padding:4px 0;">Amount</td>'
    '<td style="padding:4px 0;text-align:right;">$420.00</td></tr>',
    "details_text": "Amount: $420.00\nOrders: 3",
    "approve_url": "https://app.birch.example/approvals/a1/approve",
    "reject_url": "https://app.birch.example/approvals/a1/reject",
    "expires_at": "June 1, 2026 09:00 UTC",
    "date": "May 31, 2026",
    "headline": "12 tickets closed, 1 waiting",
    "unsubscribe_html": '<a href="https://app.birch.example/unsub?u=9" style="color:#666;">'
    "Unsubscribe</a>",
    "action_url": "https://app.birch.example/reset?token=t0k",
    "expires_minutes": "45",
    "order_id": "ORD-77",
    "order_date": "May 30, 2026",
    "items_html": '<tr><td style="padding:4px 0;">1x Plan</td>'
    '<td style="padding:4px 0;text-align:right;">$30.00</td></tr>',
    "items_text": "1x Plan: $30.00",
    "total": "USD 30.00",
    "receipt_url": "https://app.birch.example/receipts/ORD-77",
    "code": "551203",
    "recipient_name": "Robin",
    "cta_url": "https://app.birch.example/start",
    "cta_label": "Open your workspace",
}
VOID_ELEMENTS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "wbr"}
PARENTS = {"tr": {"table", "tbody", "thead", "tfoot"}, "td": {"tr"}, "th": {"tr"}, "li": {"ul"}}


def html_escaped(value: str) -> str:
    """`value` as the engine escapes a `{{x}}` in an HTML part."""
    for char, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&#34;")):
        value = value.replace(char, entity)
    return value


class HtmlStructure(HTMLParser):
    """Records what is wrong with a document's element structure: an end tag that closes
    another element than the open one, a table part outside its parent, elements left open."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.problems: list[str] = []
        self.doctype = False

    def handle_decl(self, decl: str) -> None:
        self.doctype = self.doctype or decl.lower() == "doctype html"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        parent = self.open[-1] if self.open else None
        if tag in PARENTS and parent not in PARENTS[tag]:
            self.problems.append(f"<{tag}> inside <{parent}>")
        if tag not in VOID_ELEMENTS:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.open[-1:] or 'nothing'}")
        else:
            self.open.pop()


def html_problems(document: str) -> list[str]:
    checker = HtmlStructure()
    checker.feed(document)
    checker.close()
    problems = checker.problems + [f"<{tag}> left open" for tag in checker.open]
    if not checker.doctype:
        problems.append("no <!DOCTYPE html>")
    return problems


async def test_the_starter_catalog_offers_each_of_e2as_starters(owner: Account) -> None:
    listed = await owner.http.get("/v1/starter-templates", params={"limit": 100})
    by_alias = {item["alias"]: item for item in listed.json()["items"]}
    assert set(E2A_STARTERS) <= set(by_alias)  # extra starters of ours are allowed
    for alias, (name, own, _) in E2A_STARTERS.items():
        item = by_alias[alias]
        assert (item["name"], item["version"]) == (name, "1.0.0"), alias
        declared = [
            (variable["name"], variable["required"], variable["raw"])
            for variable in item["variables"]
        ]
        expected = [
            (variable, variable not in E2A_OPTIONAL, variable.endswith("_html"))
            for variable in E2A_SHARED + own
        ]
        assert declared == expected, alias
        assert all(
            variable["description"] and variable["example"] for variable in item["variables"]
        )
    for item in by_alias.values():
        assert item["version"] == "1.0.0", item["alias"]


async def test_e2as_template_data_renders_every_part_of_our_starters(owner: Account) -> None:
    for alias, (_, own, subject_variables) in E2A_STARTERS.items():
        variables = E2A_SHARED + own
        data = {variable: E2A_VALUES[variable] for variable in variables}
        copied = await owner.http.post("/v1/templates", json={"from_starter": alias})
        assert copied.status_code == 201, copied.text
        copy = copied.json()
        assert (copy["from_starter_alias"], copy["from_starter_version"]) == (alias, "1.0.0")
        checked = await owner.http.post(
            "/v1/templates/validate",
            json={
                "subject": copy["subject"],
                "text": copy["text"],
                "html": copy["html"],
                "test_data": data,
            },
        )
        answer = checked.json()
        assert answer["valid"] is True, (alias, answer)
        rendered = answer["rendered"]
        assert set(rendered) == {"subject", "text", "html"}, alias
        for part, output in rendered.items():
            assert output.strip(), (alias, part)
            assert "{{" not in output and "}}" not in output, (alias, part)
        # each variable shows where e2a's starter shows it, escaped in the HTML part
        in_text = {v for v in variables if v != "preheader" and not v.endswith("_html")}
        in_html = {v for v in variables if not v.endswith("_text")}
        for variable in variables:
            value = data[variable]
            assert (value in rendered["subject"]) == (variable in subject_variables), variable
            assert (value in rendered["text"]) == (variable in in_text), (alias, variable)
            shown = value if variable.endswith("_html") else html_escaped(value)
            assert (shown in rendered["html"]) == (variable in in_html), (alias, variable)
        html = rendered["html"]
        assert "Birch & Co <Labs>" not in html and "<script" not in html and "<style" not in html
        assert html_problems(html) == [], alias
        without_preheader = {k: v for k, v in data.items() if k != "preheader"}
        again = await owner.http.post(
            "/v1/templates/validate",
            json={"html": copy["html"], "text": copy["text"], "test_data": without_preheader},
        )
        assert html_problems(again.json()["rendered"]["html"]) == [], alias


async def test_a_starter_copy_sends_with_e2as_documented_data(
    running: RunningGateway, owner: Account
) -> None:
    """e2a's docs/templates.md sends `receipt` with this data (no preheader)."""
    sender = await create_agent(owner, "starter-sender")
    reader = await create_agent(owner, "starter-reader")
    assert (await owner.http.post("/v1/templates", json={"from_starter": "receipt"})).is_success
    data = {
        variable: E2A_VALUES[variable]
        for variable in E2A_SHARED + E2A_STARTERS["receipt"][1]
        if variable != "preheader"
    }
    sent = await owner.http.post(
        messages_path(sender),
        json={"to": [reader], "template_alias": "receipt", "template_data": data},
    )
    assert sent.status_code == 202, sent.text
    message = await only_message(owner, reader)
    assert "ORD-77" in message["subject"] and "Birch & Co <Labs>" in message["subject"]
    assert "1x Plan: $30.00" in message["parsed"]["text"]
    html = message["parsed"]["html"]
    assert data["items_html"] in html and "USD 30.00" in html and "{{" not in html
    assert "Birch &amp; Co &lt;Labs&gt;" in html


async def test_a_send_naming_a_template_delivers_it_rendered(
    running: RunningGateway, owner: Account
) -> None:
    sender = await create_agent(owner, "tmpl-sender")
    reader = await create_agent(owner, "tmpl-reader")
    made = (await owner.http.post("/v1/templates", json=SOURCE)).json()
    data = {"name": "Ann & Bo", "order": {"id": "A-7"}, "count": 3, "footer_html": "<hr>"}
    sent = await owner.http.post(
        messages_path(sender),
        json={"to": [reader], "template_alias": "shipped", "template_data": data},
    )
    assert sent.status_code == 202, sent.text
    assert sent.json()["status"] == "accepted"
    message = await only_message(owner, reader)
    assert message["subject"] == "Order A-7 shipped"
    assert message["parsed"]["text"].rstrip() == "Hi Ann & Bo, A-7 is on its way (3 items)."
    assert message["parsed"]["html"].rstrip() == "<p>Hi Ann &amp; Bo</p><hr>"

    # numbers render as they were written, as e2a's server renders them
    written = (
        f'{{"to": ["{reader}"], "template_id": "{made["id"]}", '
        '"template_data": {"name": "Cy", "order": {"id": 1.50}, "count": 2.0}}'
    )
    by_id = await owner.http.post(
        messages_path(sender),
        content=written.encode(),
        headers={"Content-Type": "application/json"},
    )
    assert by_id.status_code == 202, by_id.text

    async def numbers_delivered() -> bool:
        listed = await owner.http.get(messages_path(reader), params={"read_status": "all"})
        return "Order 1.50 shipped" in [item["subject"] for item in listed.json()["items"]]

    await wait_until(numbers_delivered)
    listed = await owner.http.get(messages_path(reader), params={"read_status": "all"})
    (copy,) = [item for item in listed.json()["items"] if item["subject"] == "Order 1.50 shipped"]
    text = (await owner.http.get(f"{messages_path(reader)}/{copy['id']}")).json()["parsed"]["text"]
    assert text.rstrip() == "Hi Cy, 1.50 is on its way (2.0 items)."
    path = messages_path(sender)
    for body, status, code in (
        ({"template_data": {"a": 1}, "subject": "s", "text": "t"}, 400, "invalid_request"),
        ({"template_id": made["id"], "template_alias": "shipped"}, 400, "invalid_request"),
        ({"template_alias": "shipped", "subject": "Literal"}, 400, "invalid_request"),
        ({"template_alias": "nothing"}, 404, "template_not_found"),
    ):
        error = error_of(await owner.http.post(path, json={"to": [reader]} | body), status)
        assert error["code"] == code, (body, error)
    bare = {"name": "Bare", "alias": "bare", "subject": "{{topic}}", "text": "{{body.text}}"}
    assert (await owner.http.post("/v1/templates", json=bare)).status_code == 201
    empty = await owner.http.post(path, json={"to": [reader], "template_alias": "bare"})
    error = error_of(empty, 400)
    assert error["code"] == "template_rendered_empty"
    assert error["details"] == {"part": "subject", "variables": ["topic"]}
    half = {"to": [reader], "template_alias": "bare", "template_data": {"topic": "Hi"}}
    error = error_of(await owner.http.post(path, json=half), 400)
    assert error["details"] == {"part": "text", "variables": ["body.text"]}
    # mutual exclusions are refused before the template is looked up
    assert (
        "template_data requires"
        in error_of(
            await owner.http.post(
                path, json={"to": [reader], "text": "t", "template_data": {"a": 1}}
            ),
            400,
        )["message"]
    )


async def test_e2a_sdk_manages_templates_and_sends_with_one(
    running: RunningGateway, owner: Account, sdk5_python: Path
) -> None:
    """The official 5.8.1 SDK, unchanged: its `templates` resource and a templated send."""
    sender = await create_agent(owner, "sdk-tmpl-sender")
    reader = await create_agent(owner, "sdk-tmpl-reader")
    data = {"name": "Ann", "order": {"id": "B-2"}, "count": 1, "footer_html": ""}
    results = await run_sdk(
        sdk5_python,
        running.addresses.http_url,
        {"default": owner.key},
        [
            {"do": "templates.create", "args": [SOURCE], "as": "made"},
            {"do": "templates.list"},
            {"do": "templates.get", "args": ["${made.id}"]},
            {"do": "templates.update", "args": ["${made.id}", {"name": "Renamed"}]},
            {"do": "templates.validate", "args": [{"subject": "{{a}}", "text": "{{#b}}"}]},
            {"do": "templates.list_starters"},
            {"do": "templates.get_starter", "args": ["welcome"]},
            {
                "do": "messages.send",
                "args": [
                    sender,
                    {"to": [reader], "template_alias": "shipped", "template_data": data},
                ],
            },
            {"do": "templates.create", "args": [SOURCE]},
            {"do": "templates.delete", "args": ["${made.id}"]},
            {"do": "templates.get", "args": ["${made.id}"]},
        ],
    )
    made = value(results[0], "TemplateView")
    assert made["alias"] == "shipped" and made["subject"] == SOURCE["subject"]
    assert [item["id"] for item in value(results[1])] == [made["id"]]
    assert value(results[2], "TemplateView")["text"] == SOURCE["text"]
    assert value(results[3], "TemplateView")["name"] == "Renamed"
    checked = value(results[4], "ValidateTemplateResponse")
    assert [error["part"] for error in checked["errors"]] == ["text"]
    assert "welcome" in [item["alias"] for item in value(results[5])]
    assert value(results[6], "StarterTemplateDetailView")["alias"] == "welcome"
    assert value(results[7])["status"] == "accepted"
    assert results[8]["error"]["code"] == "alias_taken" and results[8]["error"]["status"] == 409
    assert value(results[9])["deleted"] is True
    assert results[10]["error"]["status"] == 404

    async def delivered() -> bool:
        listed = await owner.http.get(messages_path(reader), params={"read_status": "all"})
        return [item["subject"] for item in listed.json()["items"]] == ["Order B-2 shipped"]

    await wait_until(delivered)


async def test_template_source_is_kept_as_written(owner: Account) -> None:
    spaced = {
        "name": "Spaced",
        "alias": "spaced",
        "subject": " Hi {{name}} ",
        "text": "  Hello {{name}},\n\n",
        "html": "<p>Hello</p>\n",
    }
    created = await owner.http.post("/v1/templates", json=spaced)
    assert created.status_code == 201, created.text
    path = f"/v1/templates/{created.json()['id']}"
    fetched = (await owner.http.get(path)).json()
    assert {name: fetched[name] for name in spaced} == spaced  # whitespace is content
    blank_alias = await owner.http.patch(path, json={"alias": "  "})
    assert error_of(blank_alias, 400)["code"] == "invalid_request"
    await trio.sleep(1.1)  # timestamps are to the second: a change now would show
    unchanged = await owner.http.patch(path, json={})
    assert unchanged.status_code == 200, unchanged.text
    assert unchanged.json()["updated_at"] == fetched["updated_at"]
    wide = {"name": "é" * 101, "subject": "s", "text": "t"}  # 101 characters, 202 bytes
    assert error_of(await owner.http.post("/v1/templates", json=wide), 400)["message"] == (
        "name too long (at most 200 bytes)"
    )
    sender = await create_agent(owner, "spaced-sender")
    padded = {"to": ["someone@example.org"], "template_alias": " spaced "}
    missing = await owner.http.post(messages_path(sender), json=padded)
    assert error_of(missing, 404)["code"] == "template_not_found"  # looked up as written
    upper = {"to": ["someone@example.org"], "template_alias": "SPACED"}
    assert error_of(await owner.http.post(messages_path(sender), json=upper), 404)
    other_case = await owner.http.post("/v1/templates", json=spaced | {"alias": "Spaced"})
    assert other_case.status_code == 201, other_case.text  # aliases are case-sensitive, as in e2a


async def test_a_sent_text_keeps_its_whitespace(running: RunningGateway, owner: Account) -> None:
    sender = await create_agent(owner, "code-sender")
    reader = await create_agent(owner, "code-reader")
    code = "    def answer():\n        return 42\n"
    sent = await owner.http.post(
        messages_path(sender), json={"to": [reader], "subject": " Code ", "text": code}
    )
    assert sent.status_code == 202, sent.text
    message = await only_message(owner, reader)
    assert message["parsed"]["text"].startswith("    def answer():\n        return 42")


async def test_a_subject_renders_no_longer_than_a_send_may_give(
    running: RunningGateway, owner: Account
) -> None:
    """A subject is at most 2000 characters whether given or rendered: a longer one would take
    the outbound worker minutes to fold into a header."""
    sender = await create_agent(owner, "long-sender")
    reader = await create_agent(owner, "long-reader")
    made = {"name": "Topic", "alias": "topic", "subject": "{{topic}}", "text": "{{topic}}"}
    assert (await owner.http.post("/v1/templates", json=made)).status_code == 201
    path = messages_path(sender)
    words = "word " * 100_000
    refused = await owner.http.post(
        path, json={"to": [reader], "template_alias": "topic", "template_data": {"topic": words}}
    )
    error = error_of(refused, 400)
    assert error["code"] == "template_render_failed"
    assert error["details"] == {
        "part": "subject",
        "message": "rendered subject exceeds 2000 characters",
    }
    injected = {"topic": "Hi\r\nBcc: eve@example.org"}
    refused = await owner.http.post(
        path, json={"to": [reader], "template_alias": "topic", "template_data": injected}
    )
    error = error_of(refused, 400)  # no header made of a value
    assert error["code"] == "invalid_request" and "(found U+000D)" in error["message"]
    longest = "x" * 2000
    sent = await owner.http.post(
        path, json={"to": [reader], "template_alias": "topic", "template_data": {"topic": longest}}
    )
    assert sent.status_code == 202, sent.text
    assert (await only_message(owner, reader))["subject"] == longest


async def test_an_integer_past_64_bits_renders_as_written(
    running: RunningGateway, owner: Account
) -> None:
    """e2a reads `template_data` and `test_data` keeping each number's digits, so a 20-digit
    order number renders exactly; only a number too large for a 64-bit float is refused, as
    e2a's server refuses one."""
    sender = await create_agent(owner, "digits-sender")
    reader = await create_agent(owner, "digits-reader")
    made = {"name": "Order", "alias": "order", "subject": "Order {{n}}", "text": "No. {{n}}"}
    assert (await owner.http.post("/v1/templates", json=made)).status_code == 201
    digits = "18446744073709551616123"  # past 64 bits, and past a float's 17 digits
    checked = await owner.http.post(
        "/v1/templates/validate",
        content=f'{{"subject": "{{{{n}}}}", "text": "x", "test_data": {{"n": -{digits}}}}}',
    )
    assert checked.status_code == 200, checked.text
    assert checked.json()["rendered"]["subject"] == f"-{digits}"
    sent = await owner.http.post(
        messages_path(sender),
        content=(
            f'{{"to": ["{reader}"], "template_alias": "order", "template_data": {{"n": {digits}}}}}'
        ),
    )
    assert sent.status_code == 202, sent.text
    assert (await only_message(owner, reader))["subject"] == f"Order {digits}"
    for written in ("1" * 400, "1e400"):  # a float cannot hold them
        refused = await owner.http.post(
            "/v1/templates/validate", content=f'{{"text": "x", "test_data": {{"n": [{written}]}}}}'
        )
        error = error_of(refused, 400)
        assert error["details"]["fields"] == [
            {
                "location": "body.test_data.n[0]",
                "message": "number out of range: too large for a 64-bit float",
            }
        ]
