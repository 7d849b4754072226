"""End to end over streamable HTTP: the real server in a subprocess on 127.0.0.1, with
Host/Origin validation, bearer-token auth, the body size limit and the bind guard."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TOKEN = "test-token-3b1f9c"
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
}
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[int]:
    port = free_port()
    log = (tmp_path / f"server-{port}.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "atelier_core", "serve", "--http", "--port", str(port), *args],
        env={**os.environ, **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise AssertionError((tmp_path / f"server-{port}.log").read_text())
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("server did not start") from None
                time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


async def test_generate_over_http_and_host_origin_checks(tmp_path: Path) -> None:
    with running(tmp_path) as port:
        url = f"http://127.0.0.1:{port}/mcp"
        async with Client(url) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"generate_image", "edit_image", "list_available_models"} <= names
            result = await client.call_tool(
                "generate_image", {"prompt": "x", "model": "placeholder", "size": "256x256"}
            )
            assert not result.is_error, result.content
            assert Path((result.structured_content or {})["images"][0]["path"]).is_file()
        async with Client(url, mode="legacy") as client:
            listed = await client.call_tool("list_available_models", {"provider": "placeholder"})
            assert not listed.is_error

        async with httpx2.AsyncClient(timeout=10) as http:
            bad_host = await http.post(url, json=INIT, headers={**MCP_HEADERS, "host": "evil.example"})
            assert bad_host.status_code == 421
            bad_origin = await http.post(url, json=INIT, headers={**MCP_HEADERS, "origin": "http://evil.example"})
            assert bad_origin.status_code == 403
            good_origin = await http.post(url, json=INIT, headers={**MCP_HEADERS, "origin": f"http://localhost:{port}"})
            assert good_origin.status_code == 200


async def test_token_auth_and_body_limit(tmp_path: Path) -> None:
    env = {"ATELIER_HTTP__AUTH_TOKEN": TOKEN, "ATELIER_HTTP__MAX_BODY_BYTES": "20000"}
    with running(tmp_path, env=env) as port:
        url = f"http://127.0.0.1:{port}/mcp"
        async with httpx2.AsyncClient(timeout=10) as http:
            assert (await http.post(url, json=INIT, headers=MCP_HEADERS)).status_code == 401
            wrong = {**MCP_HEADERS, "authorization": "Bearer nope"}
            assert (await http.post(url, json=INIT, headers=wrong)).status_code == 401
            right = {**MCP_HEADERS, "authorization": f"Bearer {TOKEN}"}
            assert (await http.post(url, json=INIT, headers=right)).status_code == 200
            big = {**INIT, "params": {**INIT["params"], "padding": "x" * 30_000}}  # type: ignore[dict-item]
            assert (await http.post(url, json=big, headers=right)).status_code == 413

        authed = httpx2.AsyncClient(headers={"authorization": f"Bearer {TOKEN}"}, timeout=30)
        async with authed, Client(streamable_http_client(url, http_client=authed)) as client:
            result = await client.call_tool("list_available_models", {})
            assert not result.is_error


def test_non_loopback_bind_without_a_token_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "atelier_core", "serve", "--http", "--host", "0.0.0.0", "--port", str(free_port())],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "auth token" in done.stderr and "ATELIER_HTTP__AUTH_TOKEN" in done.stderr


async def test_non_loopback_bind_keeps_host_validation(tmp_path: Path) -> None:
    env = {"ATELIER_HTTP__AUTH_TOKEN": TOKEN, "ATELIER_HTTP__ALLOWED_HOSTS": '["atelier.example:*"]'}
    with running(tmp_path, "--host", "0.0.0.0", env=env) as port:
        url = f"http://127.0.0.1:{port}/mcp"
        headers = {**MCP_HEADERS, "authorization": f"Bearer {TOKEN}"}
        async with httpx2.AsyncClient(timeout=10) as http:
            evil = await http.post(url, json=INIT, headers={**headers, "host": f"evil.example:{port}"})
            assert evil.status_code == 421
            allowed = await http.post(url, json=INIT, headers={**headers, "host": f"atelier.example:{port}"})
            assert allowed.status_code == 200
            assert (await http.post(url, json=INIT, headers=MCP_HEADERS)).status_code == 401
