"""Whether an API key can travel in an HTTP header, and the line that tells its user when it
cannot: for the client commands and `e2a mcp` alike. Pure, stdlib only."""

from __future__ import annotations


def unsendable_key(key: str, source: str) -> str | None:
    """None when an HTTP header can carry `key` (visible ASCII, as every e2a key is); else
    the one line saying why not, naming `source` (where the key came from, e.g. "in
    E2A_API_KEY"), never quoting the key."""
    if all("!" <= char <= "~" for char in key):
        return None
    return (
        f"the API key {source} has a character no API key has (a space, a line break, a "
        "carriage return as a file with Windows line endings leaves, or a non-ASCII "
        "character): give the key alone"
    )
