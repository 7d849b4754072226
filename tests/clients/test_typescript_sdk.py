"""The official TypeScript MCP SDK as the client, at an old 1.x (1.10.2, protocol
2025-03-26) and at the current release, over stdio and streamable HTTP: every step of a
normal session parses, images arrive, resource URIs can be read and edited."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from client_kit import OLD_TS_SDK, TS_SDK_VERSIONS, http_server, run_ts_client

pytestmark = [pytest.mark.slow]


def _check(report: dict[str, Any], version: str) -> None:
    assert report["sdk"] == version
    steps = report["steps"]
    failed = {name: step["error"] for name, step in steps.items() if not step["ok"]}
    assert not failed, failed
    assert {"generate_image", "edit_image", "list_available_models", "edit_session"} <= set(steps["tools"]["names"])
    generate = steps["generate"]
    assert not generate["isError"] and "image" in generate["types"]
    assert generate["uri"].startswith("atelier://images/")
    if version == OLD_TS_SDK:  # negotiates 2025-03-26: no resource_link blocks, a text line instead
        assert "resource_link" not in generate["types"]
        assert f"Resource: {generate['uri']}" in generate["text"]
    else:
        assert "resource_link" in generate["types"]
    progress = generate["progress"]
    assert progress and progress == sorted(progress) and all(round(p, 3) == p for p in progress), progress
    assert steps["tools"]["bytes"] <= 10 * 1024
    assert steps["read"]["mimeType"] == "image/png" and steps["read"]["blobChars"] > 100
    assert not steps["edit"]["isError"] and not steps["session"]["isError"]
    assert not steps["models"]["isError"] and steps["models"]["bytes"] <= 16 * 1024
    assert steps["refused"]["isError"] and "unknown model" in steps["refused"]["text"]
    assert steps["refused"]["code"] == "unknown_model"
    assert {"logo", "product_shot", "icon_set", "illustration_style", "photo_retouch"} <= set(steps["prompts"]["names"])
    assert steps["health"]["status"] == "ok" and not steps["health"]["isError"]


@pytest.mark.parametrize("version", TS_SDK_VERSIONS)
def test_typescript_sdk_over_stdio(version: str) -> None:
    _check(run_ts_client(version, "stdio", sys.executable, "-m", "atelier_core"), version)


@pytest.mark.parametrize("version", TS_SDK_VERSIONS)
def test_typescript_sdk_over_http(version: str, tmp_path: Path) -> None:
    with http_server(tmp_path) as url:
        _check(run_ts_client(version, "http", url), version)
