"""Background work of the gateway, each task run under a supervisor that restarts it."""
