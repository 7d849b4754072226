"""End to end over stdio: the real `atelier-mcp` process, driven by the MCP client."""

from __future__ import annotations

import base64
import hashlib
import os
import sys
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from atelier_core.testing import make_mask

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def server_params(extra: dict[str, str] | None = None) -> StdioServerParameters:
    # The child sees only HOME/PATH/... plus env: pass the isolated Atelier settings.
    env = {k: v for k, v in os.environ.items() if k.startswith(("ATELIER_", "XDG_"))}
    env.update(extra or {})
    return StdioServerParameters(command=sys.executable, args=["-m", "atelier_core"], env=env)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_generate_read_and_edit_over_stdio(mode: str, isolated_env: Path, tmp_path: Path) -> None:
    errors = (tmp_path / "stderr.log").open("w")
    try:
        async with Client(stdio_client(server_params(), errlog=errors), mode=mode) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"generate_image", "edit_image", "list_available_models"} <= names
            result = await client.call_tool(
                "generate_image", {"prompt": "a harbour", "model": "placeholder", "size": "256x256"}
            )
            assert not result.is_error, result.content
            assert [block.type for block in result.content] == ["text", "image", "resource_link"]
            record = (result.structured_content or {})["images"][0]
            path = Path(record["path"])
            assert path.is_file() and path.is_relative_to(isolated_env / "data" / "images")
            read = await client.read_resource(record["resource_uri"])
            blob = base64.b64decode(read.contents[0].blob)  # type: ignore[union-attr]
            assert hashlib.sha256(blob).hexdigest() == record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()

            mask = "data:image/png;base64," + base64.b64encode(make_mask(256, 256)).decode()
            edited = await client.call_tool(
                "edit_image",
                {
                    "prompt": "add a boat",
                    "model": "placeholder",
                    "images": [record["resource_uri"]],
                    "mask": mask,
                },
            )
            assert not edited.is_error, edited.content
            assert (edited.structured_content or {})["applied"]["mask"] is True

            refused = await client.call_tool("generate_image", {"prompt": "x", "model": "nope"})
            assert refused.is_error and "unknown model" in refused.content[0].text  # type: ignore[union-attr]
    finally:
        errors.close()
    log = (tmp_path / "stderr.log").read_text()
    assert "Traceback" not in log
