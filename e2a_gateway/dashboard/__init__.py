"""The dashboard: a small web UI at `/` for operators and reviewers, served by the gateway's
own HTTP app. Server-rendered pages over the same actions as the REST API; no build step."""

from e2a_gateway.dashboard import account, agents, dead_letters, operators, review  # noqa: F401  (they add their pages)
from e2a_gateway.dashboard.site import blueprint

__all__ = ["blueprint"]
