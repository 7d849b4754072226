"""Real MCP clients for the client-compatibility tests: the official TypeScript SDK
(installed with npm into a cached folder under the temp directory), a raw JSON-RPC
stdio driver, and the Atelier server over stdio or streamable HTTP on 127.0.0.1."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["OLD_TS_SDK", "TS_CLIENT", "TS_SDK_VERSIONS", "RawStdio", "http_server", "run_ts_client", "ts_sdk"]

#: The first 1.x release with streamable HTTP (it negotiates 2025-03-26) and the release
#: that was current when these tests were written (it negotiates 2025-11-25).
OLD_TS_SDK = "1.10.2"
TS_SDK_VERSIONS = (OLD_TS_SDK, "1.32.2")
TS_CLIENT = Path(__file__).with_name("ts_client.mjs")
_CACHE = Path(tempfile.gettempdir()) / "atelier-test-node"


def ts_sdk(version: str) -> Path:
    """A folder with ``@modelcontextprotocol/sdk@version`` installed (npm; cached, locked)."""
    folder = _CACHE / f"mcp-sdk-{version}"
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "node_modules" / "@modelcontextprotocol" / "sdk" / "package.json"
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel workers install once
        if not marker.is_file() or json.loads(marker.read_text())["version"] != version:
            npm = shutil.which("npm")
            assert npm, "npm is needed for the TypeScript SDK tests (Node 20 + npm)"
            (folder / "package.json").write_text(
                json.dumps({"name": "atelier-ts-test", "private": True, "type": "module"})
            )
            done = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", f"@modelcontextprotocol/sdk@{version}"],
                cwd=folder,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            assert done.returncode == 0, done.stderr[-2000:]
    shutil.copy(TS_CLIENT, folder / TS_CLIENT.name)  # ESM resolves packages next to the script
    return folder


def run_ts_client(version: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run the TypeScript client script with SDK ``version``; its JSON report."""
    node = shutil.which("node")
    assert node, "node is needed for the TypeScript SDK tests"
    folder = ts_sdk(version)
    done = subprocess.run(
        [node, str(folder / TS_CLIENT.name), *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert done.returncode == 0, f"client failed ({done.returncode}):\n{done.stderr[-4000:]}"
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def http_server(log_dir: Path, *args: str) -> Iterator[str]:
    """``atelier-mcp serve --http`` in a subprocess on 127.0.0.1; yields the MCP URL."""
    port = _free_port()
    log_path = log_dir / f"server-{port}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "atelier_core", "serve", "--http", "--port", str(port), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    raise AssertionError(log_path.read_text())
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "server did not start"
                    time.sleep(0.1)
            yield f"http://127.0.0.1:{port}/mcp"
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


class RawStdio:
    """Line-delimited JSON-RPC to ``python -m atelier_core`` (no SDK in between)."""

    def __init__(self, log_dir: Path) -> None:
        self._errors = (log_dir / "raw-stderr.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "atelier_core"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._errors,
            text=True,
        )
        self._next_id = 0
        self.notifications: list[dict[str, Any]] = []

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self._write(message)

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send a request; the answer (notifications before it are kept in order)."""
        self._next_id += 1
        self._write({"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params or {}})
        assert self.process.stdout is not None
        while True:
            line = self.process.stdout.readline()
            assert line, "server closed stdout"
            message: dict[str, Any] = json.loads(line)
            if message.get("id") == self._next_id and "method" not in message:
                return message
            self.notifications.append(message)

    def _write(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        assert self.process.stdout is not None
        self.process.stdout.close()
        self._errors.close()
