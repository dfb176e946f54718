"""A TCP route to a loopback server that a test can cut without a word, as a network partition
or a database host that dies does: packets are dropped, nothing answers, no reset comes.

Loopback cannot do this (the kernel answers for both ends), so the route crosses a veth pair
into a network namespace of its own: the client connects to the namespace's address, a relay
there passes the bytes to a relay beside the server, and `sever()` takes the namespace's end of
the pair down until `mend()`: the client's end stays up, with its route, and drops every packet
it is given. Needs root and iproute2 (`ip`); `severable_route` skips the test otherwise. Only
the pair and the namespace made here are touched.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import pytest

RELAY = """
import socket, sys, threading

def pipe(source, sink):
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    for end in (source, sink):
        try:
            end.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

listen_host, listen_port, target_host, target_port = sys.argv[1:5]
server = socket.create_server((listen_host, int(listen_port)))
print("ready", flush=True)
while True:
    client, _ = server.accept()
    upstream = socket.create_connection((target_host, int(target_port)))
    for a, b in ((client, upstream), (upstream, client)):
        threading.Thread(target=pipe, args=(a, b), daemon=True).start()
"""


@dataclass(frozen=True)
class Route:
    """Where a client connects (`host`, `port`) to reach the server through the pair."""

    host: str
    port: int
    namespace: str
    device: str
    """The pair's end in the namespace."""

    def sever(self) -> None:
        """Drop every packet towards the namespace from now on: nothing gets through, and
        nothing says so."""
        self._set("down")

    def mend(self) -> None:
        """Let packets through again."""
        self._set("up")

    def _set(self, state: str) -> None:
        _run("ip", "netns", "exec", self.namespace, "ip", "link", "set", self.device, state)


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=10)


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _relay(
    stack: ExitStack, prefix: list[str], listen: tuple[str, int], to: tuple[str, int]
) -> None:
    """Start a relay from `listen` to `to` (run through `prefix`, e.g. `ip netns exec …`),
    stopped when `stack` closes."""
    process = subprocess.Popen(
        [*prefix, sys.executable, "-c", RELAY, listen[0], str(listen[1]), to[0], str(to[1])],
        stdout=subprocess.PIPE,
        text=True,
    )
    stack.callback(lambda: (process.kill(), process.wait(timeout=10)))
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"


@contextmanager
def severable_route(server_port: int) -> Iterator[Route]:
    """A route to 127.0.0.1:`server_port` that `Route.sever()` can cut (skips the test when
    this machine cannot make one: root and iproute2 are needed)."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("a severable route needs root and iproute2 (ip)")
    tag = f"{os.getpid() % 100000}"
    namespace, outside, inside = f"e2a-cut-{tag}", f"e2acA{tag}", f"e2acB{tag}"
    net = f"10.{213 + os.getpid() % 40}.{os.getpid() % 250}"
    near, far = f"{net}.1", f"{net}.2"
    with ExitStack() as stack:
        try:
            _run("ip", "netns", "add", namespace)
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"cannot make a network namespace: {exc.stderr.decode().strip()}")
        stack.callback(_run, "ip", "netns", "del", namespace)
        _run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        stack.callback(lambda: subprocess.run(["ip", "link", "del", outside], check=False))
        _run("ip", "link", "set", inside, "netns", namespace)
        _run("ip", "addr", "add", f"{near}/30", "dev", outside)
        _run("ip", "link", "set", outside, "up")
        in_namespace = ["ip", "netns", "exec", namespace]
        _run(*in_namespace, "ip", "addr", "add", f"{far}/30", "dev", inside)
        _run(*in_namespace, "ip", "link", "set", inside, "up")
        _run(*in_namespace, "ip", "link", "set", "lo", "up")
        beside_server = _free_port(near)
        _relay(stack, [], (near, beside_server), ("127.0.0.1", server_port))
        entry = _free_port("127.0.0.1")  # any free number: the namespace's ports are its own
        _relay(stack, in_namespace, (far, entry), (near, beside_server))
        yield Route(far, entry, namespace, inside)
