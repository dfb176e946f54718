"""One ASGI app in front of two: requests under a path go to the app mounted there, everything
else — the lifespan protocol included — to the main app.

`e2a serve` mounts the MCP endpoint at `/mcp` in front of the Quart app this way. The mounted
app sees the full path, with the mount point added to `root_path` as ASGI asks; it never gets
lifespan events, so it must not need them (the MCP endpoint runs in `McpEndpoint.running()`).
"""

from __future__ import annotations

from typing import Any

from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope


class MountedApp:
    """Route `path` and everything below it (`path/…`, not `pathX`) to `mounted`, the rest to
    `main`. `mounted` is any ASGI callable; it is typed loosely because apps built on Starlette
    (the MCP endpoint) declare Starlette's ASGI types rather than hypercorn's."""

    def __init__(self, main: ASGIFramework, path: str, mounted: Any) -> None:
        if not path.startswith("/") or path.endswith("/"):
            raise ValueError(f"mount path must start with '/' and not end with it: {path!r}")
        self._main = main
        self._path = path
        self._mounted = mounted

    def routes_to_mounted(self, path: str) -> bool:
        """Whether a request for `path` goes to the mounted app."""
        return path == self._path or path.startswith(self._path + "/")

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] in ("http", "websocket") and self.routes_to_mounted(scope["path"]):
            inner = {**scope, "root_path": scope.get("root_path", "") + self._path}
            await self._mounted(inner, receive, send)
        else:
            await self._main(scope, receive, send)
