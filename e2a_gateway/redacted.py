"""Settings as people may see them (the terminal, the log, an error message): with no secret
in them."""

from __future__ import annotations

from urllib.parse import urlsplit


def redacted_url(url: str) -> str:
    """`url` without its password (and without query parameters that could carry one); a URL
    with no host part keeps its form (`sqlite:///./e2a.db`, not `sqlite:/./e2a.db`)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return url.split("://")[0] + "://…"
    if "@" not in parts.netloc and "@" in url.partition("://")[2]:
        # A `/`, `?` or `#` typed into the password ended the host part before its `@`: the
        # password's head reads as `user:port`, its tail as the path, query or fragment.
        return f"{parts.scheme}://…"
    user = f"{parts.username}@" if parts.username else ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"
