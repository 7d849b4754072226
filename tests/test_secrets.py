"""Secret canary: a distinctive fake key set for every provider never appears in a result,
an error, a log line (stderr) or a file written — through the real stdio server and CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from atelier_core.testing import FakeUpstream

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CANARY = "sk-canary-7f3a9Q2xZKw81LmN"
FRAGMENT = "7f3a9Q2xZK"  # also catches partly masked echoes like "sk-cana****Q2xZKw81LmN"
PROVIDERS = ("openai", "dalle", "gemini", "minimax", "placeholder")


def canary_env(upstream: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.startswith(("ATELIER_", "XDG_"))}
    for name in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "MINIMAX_API_KEY"):
        env[name] = CANARY
    for provider in PROVIDERS:
        env[f"ATELIER_PROVIDERS__{provider.upper()}__API_KEY"] = CANARY
    env["ATELIER_HTTP__AUTH_TOKEN"] = CANARY
    env["ATELIER_LOGGING__LEVEL"] = "DEBUG"
    # OpenAI-compatible providers talk to a fake that echoes the key back in its error,
    # as the real API does ("Incorrect API key provided: sk-...").
    env["OPENAI_BASE_URL"] = upstream + "/v1"
    env["ATELIER_PROVIDERS__OPENAI__BASE_URL"] = upstream + "/v1"
    env["ATELIER_PROVIDERS__DALLE__BASE_URL"] = upstream + "/v1"
    env["ATELIER_PROVIDERS__OPENAI__MAX_RETRIES"] = "0"
    env["ATELIER_PROVIDERS__DALLE__MAX_RETRIES"] = "0"
    env["MINIMAX_API_HOST"] = upstream
    env["ATELIER_PROVIDERS__GEMINI__BASE_URL"] = upstream
    return env


def assert_clean(text: str, where: str) -> None:
    assert CANARY not in text and FRAGMENT not in text, f"secret leaked into {where}"


async def test_the_key_never_leaks(isolated_env: Path, tmp_path: Path) -> None:
    echo = {
        "error": {
            "message": f"Incorrect API key provided: {CANARY}",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
            "param": None,
        }
    }
    seen: list[str] = []
    with FakeUpstream() as upstream:
        for path in ("/v1/images/generations", "/v1/images/edits"):
            for _ in range(6):
                upstream.reply("POST", path, status=401, json=echo)
        env = canary_env(upstream.url)
        errors_path = tmp_path / "stderr.log"
        with errors_path.open("w") as errors:
            params = StdioServerParameters(command=sys.executable, args=["-m", "atelier_core"], env=env)
            async with Client(stdio_client(params, errlog=errors)) as client:
                calls = [
                    ("list_available_models", {}),
                    ("generate_image", {"prompt": "x", "model": "placeholder", "size": "256x256"}),
                    ("generate_image", {"prompt": "x", "model": "openai/gpt-image-2"}),
                    ("generate_image", {"prompt": "x", "model": "dalle/dall-e-3"}),
                    ("generate_image", {"prompt": "x", "model": "no-such-model"}),
                    ("edit_image", {"prompt": "x", "images": ["/etc/passwd"], "model": "placeholder"}),
                ]
                for name, args in calls:
                    result = await client.call_tool(name, args)
                    seen.append(result.model_dump_json())
        openai_error = json.loads(seen[2])
        assert openai_error["is_error"] is True, openai_error  # the call really reached the fake and failed
        assert upstream.requests, "the OpenAI-compatible providers never reached the fake upstream"
        for index, text in enumerate(seen):
            assert_clean(text, f"result {index}")
        assert_clean(errors_path.read_text(), "server stderr")

        for command in (["doctor"], ["models", "--json"]):
            done = subprocess.run(
                [sys.executable, "-m", "atelier_core", *command],
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            assert_clean(done.stdout, f"{command} stdout")
            assert_clean(done.stderr, f"{command} stderr")
        doctor = subprocess.run(
            [sys.executable, "-m", "atelier_core", "doctor"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        ).stdout
        assert '"api_key": "set"' in doctor

    for file in isolated_env.rglob("*"):
        if file.is_file():
            assert_clean(file.read_bytes().decode("latin-1"), str(file))
