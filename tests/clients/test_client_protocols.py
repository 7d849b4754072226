"""Raw JSON-RPC at every protocol revision the SDK accepts: each tool result carries
only content blocks that revision defines (no ``resource_link`` before 2025-06-18, a
text line with the same URI instead), and newer clients keep their resource links."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from client_kit import RawStdio
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    PROTOCOL_VERSION_META_KEY,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

pytestmark = [pytest.mark.slow]

# The content block types each revision's schema defines for tool results.
_BASE = {"text", "image", "resource"}
CONTENT_TYPES = {
    "2024-11-05": _BASE,
    "2025-03-26": _BASE | {"audio"},
    "2025-06-18": _BASE | {"audio", "resource_link"},
    "2025-11-25": _BASE | {"audio", "resource_link"},
    "2026-07-28": _BASE | {"audio", "resource_link"},
}


def test_every_revision_is_covered() -> None:
    assert set(CONTENT_TYPES) == {*HANDSHAKE_PROTOCOL_VERSIONS, *MODERN_PROTOCOL_VERSIONS}


class Session:
    """One client on one revision: the handshake, or the 2026 per-request envelope."""

    def __init__(self, raw: RawStdio, version: str) -> None:
        self.raw, self.version = raw, version
        self.modern = version in MODERN_PROTOCOL_VERSIONS
        if not self.modern:
            answer = raw.request(
                "initialize",
                {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
            )
            assert answer["result"]["protocolVersion"] == version
            raw.notify("notifications/initialized")

    def call(self, name: str, arguments: dict[str, Any], token: str | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"progressToken": token} if token else {}
        if self.modern:
            meta |= {
                PROTOCOL_VERSION_META_KEY: self.version,
                CLIENT_CAPABILITIES_META_KEY: {},
                CLIENT_INFO_META_KEY: {"name": "raw", "version": "0"},
            }
        answer = self.raw.request("tools/call", {"name": name, "arguments": arguments, "_meta": meta})
        assert "result" in answer, answer
        result: dict[str, Any] = answer["result"]
        return result


@pytest.mark.parametrize("version", sorted(CONTENT_TYPES))
def test_tool_results_fit_the_negotiated_revision(version: str, tmp_path: Path) -> None:
    raw = RawStdio(tmp_path)
    try:
        client = Session(raw, version)
        allowed = CONTENT_TYPES[version]
        results: dict[str, dict[str, Any]] = {}
        results["generate"] = client.call(
            "generate_image", {"prompt": "a harbour", "model": "placeholder", "size": "256x256"}, token="g"
        )
        before_result = len(raw.notifications)
        uri = results["generate"]["structuredContent"]["images"][0]["resource_uri"]
        results["edit"] = client.call("edit_image", {"prompt": "add a boat", "model": "placeholder", "images": [uri]})
        results["session"] = client.call("edit_session", {"action": "start", "image": uri})
        session_id = results["session"]["structuredContent"]["session"]["session_id"]
        results["history"] = client.call("edit_session", {"action": "history", "session_id": session_id})
        for name, result in results.items():
            assert not result.get("isError"), (name, result["content"][0])
            kinds = [block["type"] for block in result["content"]]
            assert set(kinds) <= allowed, (name, version, kinds)
            texts = "\n".join(block["text"] for block in result["content"] if block["type"] == "text")
            if "resource_link" in allowed:
                assert "resource_link" in kinds, (name, kinds)
            else:
                # The link's facts survive as a text line a model (or a person) can act on.
                assert "Resource: atelier://images/" in texts, (name, texts)
        assert any(b["type"] == "image" for b in results["generate"]["content"])
        # Errors carry their code; where structuredContent does not exist yet, in the text too.
        refused = client.call("generate_image", {"prompt": "x", "model": "nope"})
        assert refused["isError"] and refused["structuredContent"]["error"]["code"] == "unknown_model"
        tagged = "[code: unknown_model]" in refused["content"][0]["text"]
        assert tagged == ("resource_link" not in allowed), refused["content"][0]["text"]
        # Progress: rounded, never going back, and all of it before the result.
        progress = [
            n["params"]
            for n in raw.notifications
            if n.get("method") == "notifications/progress" and n["params"].get("progressToken") == "g"
        ]
        values = [p["progress"] for p in progress]
        assert values and values == sorted(values) and all(round(v, 3) == v for v in values), values
        assert len(progress) == len(
            [n for n in raw.notifications[:before_result] if n.get("params", {}).get("progressToken") == "g"]
        )
    finally:
        raw.close()
