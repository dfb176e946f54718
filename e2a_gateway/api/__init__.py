"""The HTTP side of the gateway: a Quart-Trio app serving REST under /api/v1."""
