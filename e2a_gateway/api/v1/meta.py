"""`GET /v1/info`: public deployment discovery, no key needed."""

from __future__ import annotations

from typing import Any

from quart import Blueprint

from e2a_gateway import __version__
from e2a_gateway.api.v1.views import info_view
from e2a_gateway.web.context import current_gateway

blueprint = Blueprint("v1_meta", __name__)


@blueprint.get("/info")
async def info() -> dict[str, Any]:
    """getInfo: the shared domain, whether agents may be registered on it, the public URL and
    the `/v1` contract's version."""
    return info_view(current_gateway().settings, __version__)
