"""What the gateway's HTTP faces (REST `/api/v1`, the dashboard, MCP at `/mcp`) share without
importing each other: the gateway a Quart app serves, the API key a request presents, the HTTP
status of each refusal, and how stored rows look in e2a's 2.x contract.
"""
