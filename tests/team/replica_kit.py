"""Replicas of the team server for the tests: `atelier-mcp serve --http` processes on
127.0.0.1, started with exactly the environment docs/deploying.md shows, and a plain
JSON-RPC client that sends each request on its own (no MCP session: the way a load
balancer spreads a stateless client's requests)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

PROTOCOL = "2025-11-25"
_ids = itertools.count(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Replica:
    """One running server process."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(repr=False)
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to end its jobs."""
        with suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_replica(name: str, folder: Path, env: Mapping[str, str], *, host: str = "127.0.0.1") -> Replica:
    """``atelier-mcp serve --http --host H --port N`` (the installed command, as in
    docs/deploying.md) with ``env`` on top of the test's environment."""
    port = free_port()
    command = Path(sys.executable).with_name("atelier-mcp")
    log = folder / f"{name}.log"
    full = {**os.environ, **env}
    with log.open("wb") as out:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [str(command), "serve", "--http", "--host", host, "--port", str(port)],
            env=full,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    replica = Replica(name, port, process, log, dict(env), host)
    deadline = time.monotonic() + 90
    while True:
        if process.poll() is not None:
            raise AssertionError(f"replica {name} exited:\n{replica.log_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return replica
        except OSError:
            if time.monotonic() > deadline:
                replica.stop()
                raise AssertionError(f"replica {name} did not start:\n{replica.log_text()}") from None
            time.sleep(0.1)


@contextmanager
def replicas(
    folder: Path, envs: Mapping[str, Mapping[str, str]], *, host: str = "127.0.0.1"
) -> Iterator[dict[str, Replica]]:
    started: dict[str, Replica] = {}
    try:
        for name, env in envs.items():
            started[name] = start_replica(name, folder, env, host=host)
        yield started
    finally:
        for replica in started.values():
            replica.stop()


class RpcError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message"))
        self.error = error


def _answer(response: httpx2.Response) -> dict[str, Any]:
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in response.text.splitlines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if "id" in message and ("result" in message or "error" in message):
                    return message
        raise AssertionError(f"no answer in the event stream: {response.text[:500]}")
    return response.json()


async def rpc(
    http: httpx2.AsyncClient, url: str, method: str, params: dict[str, Any], *, token: str | None = None
) -> Any:
    """One JSON-RPC request on its own POST (no session id); the result or RpcError."""
    headers = {
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "mcp-protocol-version": PROTOCOL,
    }
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    body = {"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": params}
    response = await http.post(url, json=body, headers=headers)
    if response.status_code != 200:
        raise AssertionError(f"{method}: HTTP {response.status_code}: {response.text[:500]}")
    message = _answer(response)
    if "error" in message:
        raise RpcError(message["error"])
    return message["result"]


async def call_tool(
    http: httpx2.AsyncClient, url: str, name: str, arguments: dict[str, Any], *, token: str | None = None
) -> dict[str, Any]:
    """A tools/call on its own request; the result (``isError`` set on a tool error)."""
    result: dict[str, Any] = await rpc(http, url, "tools/call", {"name": name, "arguments": arguments}, token=token)
    return result
