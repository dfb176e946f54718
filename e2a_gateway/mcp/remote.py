"""The tools' port over HTTP: the SDK client, bound to the caller's API key, against a remote
gateway (`e2a mcp` on stdio). Imports no server module."""

from __future__ import annotations

import anyio

from e2a_gateway.v1 import AsyncE2AClient, DeploymentInfo, ListApiKeysResponse, fetch_info


class SdkPort(AsyncE2AClient):
    """`GatewayPort` as the SDK client, with what the tools ask that it lacks."""

    @property
    def gateway_url(self) -> str:
        """The base URL the client calls."""
        return self.base_url

    async def get_info(self) -> DeploymentInfo:
        """`GET /info`, through the SDK's sync twin in a worker thread: building an HTTP client
        loads the CA bundle, CPU work the event loop should not wait for."""
        return await anyio.to_thread.run_sync(fetch_info, self.base_url)

    async def list_api_keys(self) -> ListApiKeysResponse:
        """`GET /users/me/api-keys`, through the raw API client."""
        return await self.api.list_api_keys()

    async def delete_api_key(self, key_id: str) -> None:
        """`DELETE /users/me/api-keys/{id}`, through the raw API client."""
        await self.api.delete_api_key(key_id)
