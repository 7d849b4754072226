"""Principals over streamable HTTP: the real server in a subprocess on 127.0.0.1 with a
principal → token map; each caller is told apart by its token."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from test_e2e_http import INIT, MCP_HEADERS, running

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TOKENS = {"alice": "alice-token-0123456789abcdef", "bob": "bob-token-0123456789abcdef00"}


async def test_each_principal_needs_its_own_token(tmp_path: Path) -> None:
    env = {"ATELIER_HTTP__TOKENS": json.dumps(TOKENS)}
    with running(tmp_path, env=env) as port:
        url = f"http://127.0.0.1:{port}/mcp"
        async with httpx2.AsyncClient(timeout=10) as http:
            assert (await http.post(url, json=INIT, headers=MCP_HEADERS)).status_code == 401
            wrong = {**MCP_HEADERS, "authorization": f"Bearer {TOKENS['alice']}x"}
            refused = await http.post(url, json=INIT, headers=wrong)
            assert refused.status_code == 401
            assert "bearer" in refused.headers.get("www-authenticate", "").lower()
            for token in TOKENS.values():
                ok = await http.post(url, json=INIT, headers={**MCP_HEADERS, "authorization": f"Bearer {token}"})
                assert ok.status_code == 200
        authed = httpx2.AsyncClient(headers={"authorization": f"Bearer {TOKENS['bob']}"}, timeout=30)
        async with authed, Client(streamable_http_client(url, http_client=authed)) as client:
            result = await client.call_tool("list_available_models", {"provider": "placeholder"})
            assert not result.is_error
        log = "".join(p.read_text() for p in tmp_path.glob("server-*.log"))
        assert all(token not in log for token in TOKENS.values())


def test_static_tokens_and_oauth_at_once_are_refused(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from test_e2e_http import free_port

    env = {
        **os.environ,
        "ATELIER_HTTP__TOKENS": json.dumps(TOKENS),
        "ATELIER_HTTP__OAUTH_ISSUER": "https://issuer.test",
        "ATELIER_HTTP__OAUTH_JWKS_URL": "https://issuer.test/jwks",
    }
    done = subprocess.run(
        [sys.executable, "-m", "atelier_core", "serve", "--http", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "choose one way to authenticate" in done.stderr
    assert TOKENS["alice"] not in done.stderr
