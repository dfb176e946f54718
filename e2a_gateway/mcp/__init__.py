"""The e2a MCP server: mail tools for agents in MCP clients (Claude, Cursor, …).

`tools` defines the tools over a `port` (what they ask of a gateway); `server` serves them,
over stdio for `e2a mcp` with `remote.SdkPort` (the SDK against a remote gateway); `http`
mounts them at `/mcp` on the gateway with `in_process.OperationsPort` (the gateway's own
operations). Only `http` and `in_process` import server modules.
"""
