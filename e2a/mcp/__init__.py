"""The e2a MCP server: mail tools for agents in MCP clients (Claude, Cursor, …).

`tools` defines the tools, `server` serves them (stdio for `e2a mcp`), `http` mounts them at
`/mcp` on the gateway. Every tool calls the gateway's REST API through the SDK (`e2a.v1`)
with the caller's API key, so the REST routes stay the one place that checks ownership.
Only `http` imports server modules.
"""
