"""MountedApp: which app gets which request, and what the mounted app is told."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, cast

import pytest

from e2a_gateway.asgi_mount import MountedApp

pytestmark = pytest.mark.backend_independent


class Recorder:
    """An ASGI app that remembers the scopes it was called with."""

    def __init__(self) -> None:
        self.scopes: list[MutableMapping[str, Any]] = []

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        self.scopes.append(scope)


async def _nothing() -> MutableMapping[str, Any]:
    return {}


async def _ignore(message: MutableMapping[str, Any]) -> None:
    return None


async def _route(kind: str, path: str) -> tuple[Recorder, Recorder]:
    main, mounted = Recorder(), Recorder()
    app: Any = MountedApp(cast(Any, main), "/mcp", mounted)
    scope: dict[str, Any] = {"type": kind, "path": path, "root_path": ""}
    if kind == "lifespan":
        del scope["path"]
    await app(scope, _nothing, _ignore)
    return main, mounted


@pytest.mark.parametrize(
    ("kind", "path"),
    [("http", "/mcp"), ("http", "/mcp/"), ("http", "/mcp/x"), ("websocket", "/mcp")],
)
async def test_the_mount_point_and_below_go_to_the_mounted_app(kind: str, path: str) -> None:
    main, mounted = await _route(kind, path)
    assert main.scopes == []
    assert [(s["path"], s["root_path"]) for s in mounted.scopes] == [(path, "/mcp")]


@pytest.mark.parametrize("path", ["/", "/mcpx", "/api/v1/mcp", "/MCP", "/mc"])
async def test_other_paths_go_to_the_main_app_untouched(path: str) -> None:
    main, mounted = await _route("http", path)
    assert mounted.scopes == []
    assert [(s["path"], s["root_path"]) for s in main.scopes] == [(path, "")]


async def test_lifespan_goes_to_the_main_app_only() -> None:
    main, mounted = await _route("lifespan", "")
    assert [s["type"] for s in main.scopes] == ["lifespan"]
    assert mounted.scopes == []


@pytest.mark.parametrize("path", ["mcp", "/mcp/", ""])
def test_a_mount_path_must_be_absolute_without_trailing_slash(path: str) -> None:
    with pytest.raises(ValueError, match="mount path"):
        MountedApp(cast(Any, Recorder()), path, Recorder())
