"""What `e2a serve` imports before its first answer (docs/architecture.md, "What loads when").

The gateway defers libraries that answering the first request does not need; a stray
module-level import would silently bring them back onto the start-up path. This imports what
`e2a serve` imports before it runs, in a fresh interpreter, and lists what got loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.backend_independent

DEFERRED = (
    "dns",  # dnspython: the mail-authentication libraries load once the listeners are up
    "spf",
    "dkim",
    "httpx",  # with the webhook worker, in a worker thread
    "e2a_gateway.workers.webhooks",
    "e2a_gateway.api.openapi",  # on the first GET /api/v1/openapi.json
    "mcp",  # on the first /mcp request
    "psycopg",  # only for a postgresql:// database URL
    "e2a_gateway.v1",  # the SDK: client commands only
)

PROBE = """
import json, sys
import e2a_gateway.cli.main, e2a_gateway.cli.server_commands, e2a_gateway.app
print(json.dumps(sorted(name for name in sys.modules)))
"""


def test_serve_imports_none_of_the_deferred_libraries() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(json.loads(done.stdout))
    early = sorted(
        name for name in loaded for top in DEFERRED if name == top or name.startswith(top + ".")
    )
    assert early == []
    assert {
        "trio",
        "quart",
        "hypercorn",
        "e2a_gateway.smtp.server",
    } <= loaded  # the probe did import
