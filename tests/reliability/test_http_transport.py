"""Guarantee 9, the rows ``tests/test_e2e_http.py`` does not already cover, against the
shipped server (``atelier-mcp serve --http``): a CORS preflight from an unknown origin
gets no allow-origin (T4), a non-JSON POST is refused (T7), and the bearer token is never
written to the server's log (T6). Host/Origin (T2, T3), the body limit (T5), token auth
(T6) and the non-loopback bind guard (T1) are in ``tests/test_e2e_http.py``."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest

from test_e2e_http import INIT, MCP_HEADERS, running

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TOKEN = "tok-reliability-8Hq2ZwX5"


async def test_preflight_non_json_and_token_never_logged(tmp_path: Path) -> None:
    env = {"ATELIER_HTTP__AUTH_TOKEN": TOKEN, "ATELIER_LOGGING__LEVEL": "DEBUG"}
    with running(tmp_path, env=env) as port:
        url = f"http://127.0.0.1:{port}/mcp"
        auth = {"authorization": f"Bearer {TOKEN}"}
        async with httpx2.AsyncClient(timeout=10) as http:
            preflight = await http.request(
                "OPTIONS",
                url,
                headers={**auth, "origin": "http://evil.example", "access-control-request-method": "POST"},
            )
            assert "access-control-allow-origin" not in {k.lower() for k in preflight.headers}
            assert preflight.headers.get("access-control-allow-origin") != "*"
            text = await http.post(
                url,
                content=b"hello",
                headers={**auth, "accept": "application/json, text/event-stream", "content-type": "text/plain"},
            )
            assert text.status_code in (400, 415), text.status_code
            wrong = await http.post(url, json=INIT, headers={**MCP_HEADERS, "authorization": "Bearer " + TOKEN[:-1]})
            assert wrong.status_code == 401 and TOKEN not in wrong.text
            ok = await http.post(url, json=INIT, headers={**MCP_HEADERS, **auth})
            assert ok.status_code == 200
    logs = "".join(p.read_text() for p in tmp_path.glob("server-*.log"))
    assert logs, "no server log captured"
    assert TOKEN not in logs and TOKEN[:-1] not in logs
