"""The dashboard: a small web UI at `/` for operators and reviewers, served by the gateway's
own HTTP app. Server-rendered pages over the same actions as the REST API; no build step."""

from e2a.dashboard.pages import blueprint

__all__ = ["blueprint"]
