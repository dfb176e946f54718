"""The `e2a` command line."""
