"""Text measured and cut in UTF-8 bytes, the unit bounds on what goes out are set in: never
in the middle of a character."""

from __future__ import annotations


def utf8_size(text: str | None) -> int:
    """How many bytes `text` takes in UTF-8."""
    return len(text.encode("utf-8", "surrogatepass")) if text else 0


def utf8_prefix(text: str, size: int) -> str:
    """The longest start of `text` that takes at most `size` bytes in UTF-8."""
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) <= size:
        return text
    return encoded[:size].decode("utf-8", "ignore")
