"""The use cases every face shares (REST, dashboard, MCP): plain async functions that take the
gateway and the caller explicitly and raise typed errors. Nothing here knows HTTP, Quart or a
tool protocol; the faces translate requests into calls and errors into answers.
"""
