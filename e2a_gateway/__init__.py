"""e2a: a self-hosted email gateway for AI agents.

`from e2a import E2AClient` (and the other names of the published 2.x SDK's top level) works
as a shortcut for `e2a_gateway.v1`; the SDK is loaded on first use of such a name, so importing the
gateway's modules does not load it, and importing the SDK never loads the gateway.
"""

from typing import Any

__version__ = "0.1.0"

__all__ = [
    "AsyncE2AApi",
    "AsyncE2AClient",
    "AsyncInboundEmail",
    "Attachment",
    "AuthHeaders",
    "E2AApi",
    "E2AApiError",
    "E2AClient",
    "InboundEmail",
    "MessageList",
    "MessageSummary",
    "SendResult",
    "UnverifiedEmailError",
    "WSNotification",
    "fetch_info",
    "fetch_info_async",
]


def __getattr__(name: str) -> Any:
    """The SDK's top-level names, from `e2a_gateway.v1` (PEP 562)."""
    if name in __all__:
        import e2a_gateway.v1

        return getattr(e2a_gateway.v1, name)
    raise AttributeError(f"module 'e2a' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
