"""e2a Python SDK, API v1: clients for the gateway's REST API and verified webhook parsing.

Importable without the server: this package uses only the standard library, httpx and
pydantic, and never imports another `e2a.*` module.
"""

from e2a.v1.async_client import AsyncE2AClient
from e2a.v1.async_client import fetch_info as fetch_info_async
from e2a.v1.client import E2AClient, fetch_info
from e2a.v1.errors import E2AApiError, InvalidSignatureError, UnverifiedEmailError
from e2a.v1.inbound import (
    AsyncInboundEmail,
    Attachment,
    InboundEmail,
    MessageList,
    MessageSummary,
    SendResult,
)
from e2a.v1.models import (
    Agent,
    DeploymentInfo,
    Domain,
    ListAgentsResponse,
    ListDomainsResponse,
    ListPendingMessagesResponse,
    PendingMessageDetail,
)
from e2a.v1.notifications import WSNotification
from e2a.v1.signature import AuthHeaders, verify_auth_headers

__all__ = [
    "Agent",
    "AsyncE2AClient",
    "AsyncInboundEmail",
    "Attachment",
    "AuthHeaders",
    "DeploymentInfo",
    "Domain",
    "E2AApiError",
    "E2AClient",
    "InboundEmail",
    "InvalidSignatureError",
    "ListAgentsResponse",
    "ListDomainsResponse",
    "ListPendingMessagesResponse",
    "MessageList",
    "MessageSummary",
    "PendingMessageDetail",
    "SendResult",
    "UnverifiedEmailError",
    "WSNotification",
    "fetch_info",
    "fetch_info_async",
    "verify_auth_headers",
]
