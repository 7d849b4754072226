"""Guarantee 8: a distinctive fake key, set for every provider, never appears in a tool
result, an error, a log line on stderr, an MCP log or progress notification, the state
database, a sidecar or any other file — even when every upstream echoes it back (OpenAI's
401 "Incorrect API key provided: sk-…", Google's error with ``?key=`` in a URL, MiniMax's
status message), and even when the model passes the key as a tool argument.

``tests/test_secrets.py`` covers the OpenAI-compatible providers, the CLI and doctor;
this adds Gemini and MiniMax echoes, notifications, jobs and the database.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import stdio_client
from reliability_kit import (
    CANARY,
    GEMINI_ROUTE,
    MINIMAX_ROUTE,
    OPENAI_ROUTE,
    PROVIDERS,
    assert_no_canary,
    database_bytes,
    files_under,
    queue,
)
from stdio_kit import child_env, server_params

from atelier_core.testing import FakeUpstream

pytestmark = pytest.mark.slow


def _vendor_env(url: str) -> dict[str, str]:
    env = {name: CANARY for name in ("OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "MINIMAX_API_KEY")}
    for provider in ("openai", "gemini", "minimax", "dalle"):
        env[f"ATELIER_PROVIDERS__{provider.upper()}__API_KEY"] = CANARY
        env[f"ATELIER_PROVIDERS__{provider.upper()}__MAX_RETRIES"] = "0"
    env["ATELIER_PROVIDERS__OPENAI__BASE_URL"] = url + "/v1"
    env["ATELIER_PROVIDERS__DALLE__BASE_URL"] = url + "/v1"
    env["ATELIER_PROVIDERS__GEMINI__BASE_URL"] = url
    env["ATELIER_PROVIDERS__MINIMAX__BASE_URL"] = url
    env["ATELIER_LOGGING__LEVEL"] = "DEBUG"
    env["ATELIER_HTTP__AUTH_TOKEN"] = CANARY
    return env


async def test_the_canary_never_leaves_the_configuration(isolated_env: Path, tmp_path: Path) -> None:
    notifications: list[str] = []

    async def on_log(params: Any) -> None:
        notifications.append(json.dumps(params.model_dump(mode="json")))

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        notifications.append(f"{progress} {message}")

    results: list[tuple[str, str]] = []
    with FakeUpstream() as upstream:
        # Each provider: its key echo first, then (for the second call) a good answer.
        for name, route in (("openai", OPENAI_ROUTE), ("gemini", GEMINI_ROUTE), ("minimax", MINIMAX_ROUTE)):
            shape = PROVIDERS[name]
            queue(upstream, route, shape.auth_echo(), shape.ok())
        upstream.reply(
            "POST",
            OPENAI_ROUTE,
            status=500,
            json={"error": {"message": f"upstream exploded; key={CANARY}", "type": "server_error"}},
        )
        upstream.reply("POST", OPENAI_ROUTE, status=401, json=PROVIDERS["openai"].auth_echo().json)
        env = child_env(_vendor_env(upstream.url))
        errlog = tmp_path / "stderr.log"
        with errlog.open("w") as errors, anyio.fail_after(90):
            async with Client(stdio_client(server_params(env), errlog=errors), logging_callback=on_log) as client:
                calls: list[tuple[str, dict[str, Any]]] = []
                for name in ("openai", "gemini", "minimax"):
                    model = PROVIDERS[name].model
                    calls += [
                        ("generate_image", {"prompt": "a fox", "model": model}),  # key echoed
                        ("generate_image", {"prompt": "a fox", "model": model}),
                    ]  # saved + sidecar
                calls += [
                    ("generate_image", {"prompt": "a fox", "model": "openai/gpt-image-1-mini"}),  # 500 echo
                    ("generate_image", {"prompt": "a fox", "model": "openai/gpt-image-1-mini", "as_job": True}),
                    ("generate_image", {"prompt": "a fox", "model": "placeholder", "api_key": CANARY}),
                    ("generate_image", {"prompt": CANARY[:6], "model": "placeholder", "options": {"key": CANARY}}),
                    ("list_available_models", {}),
                    ("get_usage", {}),
                ]
                for tool, args in calls:
                    result = await client.call_tool(tool, args, progress_callback=on_progress)
                    results.append((tool, result.model_dump_json()))
                job = json.loads(results[7][1])["structured_content"]["job"]["job_id"]
                waited = await client.call_tool("get_jobs", {"job_ids": [job], "wait_s": 15})
                results.append(("get_jobs", waited.model_dump_json()))
                listed = await client.call_tool("get_jobs", {})
                results.append(("get_jobs", listed.model_dump_json()))

        # The echoes really happened: each provider was reached and refused the key.
        assert json.loads(results[0][1])["is_error"] and json.loads(results[2][1])["is_error"]
        assert json.loads(results[4][1])["is_error"]
        for index in (1, 3, 5):
            assert not json.loads(results[index][1])["is_error"], results[index]
        assert json.loads(results[8][1])["is_error"]  # a key passed as an argument is refused
        assert "failed" in results[-2][1]  # the job failed on the echoing 401
        gemini = upstream.requests_to(r":generateContent$")
        assert gemini and all("key" not in r.query for r in gemini)  # K2: header, never the URL
        assert all(r.headers.get("x-goog-api-key") == CANARY for r in gemini)

    for index, (tool, text) in enumerate(results):
        assert_no_canary(text, f"result {index} ({tool})")
    for index, text in enumerate(notifications):
        assert_no_canary(text, f"notification {index}")
    assert_no_canary(errlog.read_bytes(), "server stderr")
    assert "key=" in errlog.read_text() or "API key" in errlog.read_text()  # the errors were logged...
    data_dir = isolated_env / "data"
    assert_no_canary(database_bytes(data_dir), "the state database")
    sidecars = [p for p in files_under(data_dir) if p.name.endswith(".json")]
    assert len(sidecars) >= 3
    for path in files_under(isolated_env):
        assert_no_canary(path.read_bytes(), str(path))
