"""e2a Python SDK, API v1: clients for the gateway's REST API and verified webhook parsing.

Importable without the server: this package uses only the standard library, httpx, wsproto,
anyio and pydantic, and never imports another `e2a.*` module. The names are those of the
published e2a 2.x SDK, so its users switch by changing the base URL.
"""

from e2a.v1.api import AsyncE2AApi, E2AApi
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
    ApprovePendingMessageRequest,
    ApprovePendingMessageResponse,
    CreateSigningSecretResponse,
    DeploymentInfo,
    DNSRecord,
    DNSRecords,
    Domain,
    ListAgentsResponse,
    ListDomainsResponse,
    ListMessagesResponse,
    ListPendingMessagesResponse,
    ListSigningSecretsResponse,
    MessageDetail,
    PendingMessageDetail,
    PendingMessageSummary,
    RegisterAgentRequest,
    RegisterAgentResponse,
    RegisterDomainRequest,
    RejectPendingMessageRequest,
    RejectPendingMessageResponse,
    ReplyToMessageRequest,
    SendEmailRequest,
    SendEmailResponse,
    SigningSecretSummary,
    UpdateAgentRequest,
    VerifyDomainResponse,
    WireAttachment,
)
from e2a.v1.notifications import WSNotification
from e2a.v1.signature import AuthHeaders, verify_auth_headers

__all__ = [
    "Agent",
    "ApprovePendingMessageRequest",
    "ApprovePendingMessageResponse",
    "AsyncE2AApi",
    "AsyncE2AClient",
    "AsyncInboundEmail",
    "Attachment",
    "AuthHeaders",
    "CreateSigningSecretResponse",
    "DNSRecord",
    "DNSRecords",
    "DeploymentInfo",
    "Domain",
    "E2AApi",
    "E2AApiError",
    "E2AClient",
    "InboundEmail",
    "InvalidSignatureError",
    "ListAgentsResponse",
    "ListDomainsResponse",
    "ListMessagesResponse",
    "ListPendingMessagesResponse",
    "ListSigningSecretsResponse",
    "MessageDetail",
    "MessageList",
    "MessageSummary",
    "PendingMessageDetail",
    "PendingMessageSummary",
    "RegisterAgentRequest",
    "RegisterAgentResponse",
    "RegisterDomainRequest",
    "RejectPendingMessageRequest",
    "RejectPendingMessageResponse",
    "ReplyToMessageRequest",
    "SendEmailRequest",
    "SendEmailResponse",
    "SendResult",
    "SigningSecretSummary",
    "UnverifiedEmailError",
    "UpdateAgentRequest",
    "VerifyDomainResponse",
    "WSNotification",
    "WireAttachment",
    "fetch_info",
    "fetch_info_async",
    "verify_auth_headers",
]
