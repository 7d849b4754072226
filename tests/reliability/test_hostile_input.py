"""Hostile input, round two (issue 18): each test attacks a real ``atelier-mcp`` process
(stdio or HTTP) and shows the bound or the refusal.

- vendor-URL allow-lists match scheme, host and port (an image link on the API host but
  another port is never fetched);
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from atelier_core.testing import FakeUpstream
from mcp import Client
from mcp.client.stdio import stdio_client
from reliability_kit import CANARY, OPENAI_ROUTE, image_files, openai_ok
from stdio_kit import child_env, server_params

pytestmark = pytest.mark.slow

MODEL = "openai/gpt-image-1-mini"


def _openai_env(url: str, **extra: str) -> dict[str, str]:
    """A child environment with the OpenAI provider aimed at ``url`` (no retries)."""
    env = {
        "OPENAI_API_KEY": CANARY,
        "ATELIER_PROVIDERS__OPENAI__BASE_URL": url + "/v1",
        "ATELIER_PROVIDERS__OPENAI__MAX_RETRIES": "0",
        **extra,
    }
    return child_env(env)


@asynccontextmanager
async def _stdio(env: dict[str, str], errlog: Path, *, timeout_s: float = 90) -> AsyncIterator[Client]:
    with errlog.open("w") as errors, anyio.fail_after(timeout_s):
        async with Client(stdio_client(server_params(env), errlog=errors)) as client:
            yield client


def _text(result: Any) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


# -- 5. vendor-URL allow-lists: scheme, host and port ------------------------------------------


async def test_an_image_link_on_the_api_host_but_another_port_is_never_fetched(
    isolated_env: Path, tmp_path: Path,
) -> None:
    png = openai_ok()["data"][0]["b64_json"]
    with FakeUpstream() as api, FakeUpstream() as elsewhere:
        elsewhere.reply("GET", "/img.png", body=base64.b64decode(png), content_type="image/png")
        api.reply("GET", "/files/own.png", body=base64.b64decode(png), content_type="image/png")
        foreign = elsewhere.url + "/img.png"   # 127.0.0.1 as well, another port
        own = api.url + "/files/own.png"       # the API's own origin
        api.reply("POST", OPENAI_ROUTE, json={"created": 1, "data": [{"url": foreign}]})
        api.reply("POST", OPENAI_ROUTE, json={"created": 1, "data": [{"url": own}]})
        async with _stdio(_openai_env(api.url), tmp_path / "stderr.log") as client:
            refused = await client.call_tool("generate_image", {"prompt": "a fox", "model": MODEL})
            fetched = await client.call_tool("generate_image", {"prompt": "a fox", "model": MODEL})
        assert elsewhere.requests == []  # not one connection to the other port
        assert refused.is_error, _text(refused)
        assert not fetched.is_error, _text(fetched)  # the API's own origin still works
        assert [r.path for r in api.requests if r.method == "GET"] == ["/files/own.png"]
    assert len(image_files(isolated_env / "data" / "images")) == 1
