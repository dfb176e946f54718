"""URLs built from routes whose builders are compiled on first use (`e2a_gateway.web.routing`)."""

from __future__ import annotations

import pytest
from quart import url_for
from quart_trio import QuartTrio

from e2a_gateway.web.routing import DeferredBuildRule

pytestmark = pytest.mark.backend_independent


def _app(deferred: bool) -> QuartTrio:
    app = QuartTrio("routing-test")
    if deferred:
        app.url_rule_class = DeferredBuildRule

    async def view() -> str:
        return ""

    app.add_url_rule("/agents/<email>/inbox", "inbox", view)
    app.add_url_rule("/pages/<int:number>", "page", view, defaults={"number": 1})
    app.add_url_rule("/pages/<int:number>", "page", view)
    return app


async def _urls(app: QuartTrio) -> list[str]:
    async with app.test_request_context("/"):
        return [
            url_for("inbox", email="bot@agents.test", status="unread"),  # unknown: query
            url_for("inbox", email="a b/c"),
            url_for("page"),
            url_for("page", number=7),
            url_for("page", number=7),  # the second URL from the now compiled builder
        ]


async def test_deferred_builders_build_the_urls_werkzeug_builds() -> None:
    deferred = await _urls(_app(deferred=True))
    assert deferred == await _urls(_app(deferred=False))
    assert deferred[0] == "/agents/bot@agents.test/inbox?status=unread"
    assert deferred[3] == deferred[4] == "/pages/7"


async def test_a_route_compiles_no_builder_until_a_url_is_built_from_it() -> None:
    app = _app(deferred=True)
    rule = next(rule for rule in app.url_map.iter_rules() if rule.endpoint == "inbox")
    assert rule._build_unknown.__name__ == "build_first_url"
    async with app.test_request_context("/"):
        url_for("inbox", email="bot@agents.test", status="unread")
    assert rule._build_unknown.__name__ != "build_first_url"
