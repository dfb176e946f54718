"""Routes whose URL builders are compiled on first use.

werkzeug compiles two URL builders (Python code, through `ast` and `compile`) for every route
as it is added: about 40 ms of the gateway's start for its ~140 routes, paid again by every
gateway a test or a replica starts. Only the dashboard builds URLs (`url_for`), from a handful
of its routes, so each builder is compiled the first time a URL is built from its route.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from quart.routing import QuartRule


class DeferredBuildRule(QuartRule):
    """A Quart route that compiles its URL builders when a URL is first built from it."""

    def _compile_builder(self, append_unknown: bool = True) -> Callable[..., tuple[str, str]]:
        """A stand-in for the builder (bound to the rule as werkzeug binds the real one) that
        compiles the real one, puts it in its own place and builds the URL with it."""
        attribute = "_build_unknown" if append_unknown else "_build"

        def build_first_url(rule: DeferredBuildRule, **values: Any) -> tuple[str, str]:
            builder: Callable[..., tuple[str, str]] = QuartRule._compile_builder(
                rule, append_unknown
            ).__get__(rule, None)
            setattr(rule, attribute, builder)
            return builder(**values)

        return build_first_url
