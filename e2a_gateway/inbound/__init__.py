"""The path from accepted DATA to stored message: parse, route, thread, store."""
