"""e2a: a self-hosted email gateway for AI agents."""

__version__ = "0.1.0"
