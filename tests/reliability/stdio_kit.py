"""Driving a real ``atelier-mcp`` stdio process from the reliability tests.

Two ways: :class:`RawStdio` speaks JSON-RPC line by line over pipes and keeps every byte
the server wrote to stdout (for the purity check); :func:`server_params` builds the
parameters for the MCP SDK client. Both put ``child_hooks`` (the test-only
``sitecustomize``) on the child's ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from mcp import StdioServerParameters

HOOKS = Path(__file__).resolve().parent / "child_hooks"


def atelier_command() -> list[str]:
    """The installed ``atelier-mcp`` command (what MCP clients start), else ``-m``."""
    found = Path(sys.executable).with_name("atelier-mcp")
    if found.exists():
        return [str(found)]
    which = shutil.which("atelier-mcp")
    return [which] if which else [sys.executable, "-m", "atelier_core"]


def child_env(extra: dict[str, str] | None = None, *, pythonpath: list[Path] = ()) -> dict[str, str]:  # type: ignore[assignment]
    """The isolated test environment (ATELIER_*/XDG_* from the autouse fixture), plus
    the hooks folder on PYTHONPATH and ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.startswith(("ATELIER_", "XDG_")) or k in ("PATH", "HOME", "LANG", "TMPDIR")
    }
    paths = [str(HOOKS), *(str(p) for p in pythonpath)]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def server_params(env: dict[str, str]) -> StdioServerParameters:
    command = atelier_command()
    return StdioServerParameters(command=command[0], args=command[1:], env=env)


class RawStdio:
    """A server process spoken to in raw JSON-RPC; ``stdout_lines`` keeps everything."""

    def __init__(self, env: dict[str, str], stderr_path: Path) -> None:
        self._stderr = stderr_path.open("wb")
        self.process = subprocess.Popen(
            atelier_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env
        )
        self.stdout_lines: list[bytes] = []
        self._queue: queue.Queue[bytes | None] = queue.Queue()
        self._next_id = 0
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.stdout_lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        self.process.stdin.flush()

    def request(self, method: str, params: dict[str, Any] | None = None, timeout_s: float = 60) -> dict[str, Any]:
        self._next_id += 1
        ident = self._next_id
        self.send({"jsonrpc": "2.0", "id": ident, "method": method, "params": params or {}})
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no answer to {method} within {timeout_s}s")
            line = self._queue.get(timeout=remaining)
            if line is None:
                raise AssertionError(f"server closed stdout before answering {method}")
            try:
                message = json.loads(line)
            except ValueError:
                continue  # judged later, from stdout_lines
            if isinstance(message, dict) and message.get("id") == ident and "method" not in message:
                return message

    def initialize(self) -> dict[str, Any]:
        answer = self.request(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "reliability", "version": "0"},
            },
        )
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return answer

    def close(self, timeout_s: float = 20) -> int:
        """Close stdin (the client goes away) and wait for a clean exit."""
        try:
            assert self.process.stdin is not None
            self.process.stdin.close()
            return self.process.wait(timeout_s)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(10)
            self._pump_thread.join(10)
            if self.process.stdout is not None:
                self.process.stdout.close()
            self._stderr.close()
