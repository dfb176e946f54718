"""The REST read benchmark's peer: a bare Quart-Trio app serving fixed JSON from memory.

Run as a process: `python bench/_bare_quart.py PORT INBOX.json MESSAGE.json`. It answers
`GET /api/v1/agents/<email>/messages` with the inbox page and
`GET /api/v1/agents/<email>/messages/<id>` with the message, the bodies e2a served for the same
requests, on e2a's own HTTP server (`e2a_gateway.http_server.serve_asgi`: hypercorn's protocol code,
the same connection handling and keep-alive as `e2a serve`). No authentication, no storage:
what is left is the framework's ceiling.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
from pathlib import Path

import trio
from hypercorn.config import Config
from quart import Response
from quart_trio import QuartTrio

from e2a_gateway.config import HttpSettings
from e2a_gateway.http_server import ConnectionLimits, serve_asgi


def make_app(inbox: bytes, message: bytes) -> QuartTrio:
    """The two routes, each returning its fixed JSON body."""
    app = QuartTrio("bare")

    @app.get("/api/v1/agents/<email>/messages")
    async def inbox_page(email: str) -> Response:
        return Response(inbox, content_type="application/json")

    @app.get("/api/v1/agents/<email>/messages/<message_id>")
    async def one_message(email: str, message_id: str) -> Response:
        return Response(message, content_type="application/json")

    return app


async def serve(port: int, inbox: bytes, message: bytes) -> None:
    listening = socket.socket()
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listening.bind(("127.0.0.1", port))
    listening.listen(1024)
    listening.setblocking(False)
    config = Config()
    config.accesslog = None
    config.errorlog = logging.getLogger("bare.http")
    config.keep_alive_timeout = 15.0
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            http = HttpSettings()  # the gateway's default connection limits, as it serves
            limits = ConnectionLimits(
                max_connections=http.max_connections,
                max_connections_per_ip=http.max_connections_per_ip,
                ipv6_network_prefix=http.ipv6_network_prefix,
            )
            await nursery.start(serve_asgi, make_app(inbox, message), config, listening, limits)
            print("ready", flush=True)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(
        serve, int(sys.argv[1]), Path(sys.argv[2]).read_bytes(), Path(sys.argv[3]).read_bytes()
    )
