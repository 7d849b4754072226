"""MCP clients of our own server: the in-memory client of the test kit and the CLI's demo.

They live in the MCP wing because it is the only code that imports the MCP SDK.
"""

from __future__ import annotations

import base64
import io
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcp import Client, StdioServerParameters

from atelier_core.mcp.app import build_server

if TYPE_CHECKING:
    from atelier_core.engine.pipeline import Pipeline

__all__ = ["Client", "connect", "run_demo"]


@asynccontextmanager
async def connect(pipeline: Pipeline, **client_options: Any) -> AsyncIterator[Client]:
    """An in-memory MCP client connected to ``build_server(pipeline)``.

    ``client_options`` go to :class:`mcp.Client` (``mode="legacy"``,
    ``logging_callback=...``, ``elicitation_callback=...``). The server's lifespan closes
    ``pipeline`` when the block ends.
    """
    server = build_server(pipeline, configure_logs=False)
    async with Client(server, **client_options) as client:
        yield client


def _mask_data_url(width: int, height: int) -> str:
    """A PNG mask of the image's size with a transparent rectangle (the area to repaint)."""
    from PIL import Image, ImageDraw

    mask = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    ImageDraw.Draw(mask).rectangle([width // 3, height // 3, 2 * width // 3, 2 * height // 3], fill=(0, 0, 0, 0))
    out = io.BytesIO()
    mask.save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def _preview_line(result: Any) -> str:
    for block in result.content:
        if getattr(block, "type", None) == "image":
            from PIL import Image

            data = base64.b64decode(block.data)
            with Image.open(io.BytesIO(data)) as shown:
                return f"inline preview {shown.width}x{shown.height} {block.mime_type}, {len(data):,} bytes"
    return "no inline preview"


async def run_demo(notice: str) -> int:
    """``atelier-mcp demo``: start ``atelier-mcp`` over stdio and drive it with the MCP client,
    offline (the placeholder model)."""

    # The child gets only what we pass (plus HOME/PATH/...): forward Atelier's own settings.
    env = {k: v for k, v in os.environ.items() if k.startswith("ATELIER_")}
    env.setdefault("ATELIER_LOGGING__LEVEL", "WARNING")
    params = StdioServerParameters(command=sys.executable, args=["-m", "atelier_core"], env=env)
    print("Atelier demo: starting `atelier-mcp` over stdio and driving it with the MCP client.")
    print(f"NOTE: {notice}\n")
    async with Client(params) as client:
        tools = (await client.list_tools()).tools
        print(f"1. tools: {', '.join(t.name for t in tools)}")
        listed = await client.call_tool("list_available_models", {})
        models = (listed.structured_content or {}).get("models", [])
        ready = [m["id"] for m in models if m["available"]]
        print(f"2. models: {len(models)} known, available now: {', '.join(ready) or 'none'}")
        reasons: dict[str, list[str]] = {}
        for model in models:
            if not model["available"]:
                reasons.setdefault(model["reason"], []).append(model["id"])
        for reason, ids in reasons.items():
            print(f"   - {len(ids)} unavailable ({', '.join(ids[:2])}{', …' if len(ids) > 2 else ''}): {reason}")

        generated = await client.call_tool(
            "generate_image",
            {
                "prompt": "a lighthouse on a cliff at dawn",
                "model": "placeholder",
                "size": "768x512",
            },
        )
        if generated.is_error:
            print(f"generate failed: {generated.content[0].text}", file=sys.stderr)  # type: ignore[union-attr]
            return 1
        first = (generated.structured_content or {})["images"][0]
        print(f"3. generated {first['width']}x{first['height']} {first['format']}: {first['path']}")
        print(f"   resource: {first['resource_uri']}; {_preview_line(generated)}")

        edited = await client.call_tool(
            "edit_image",
            {
                "prompt": "add a red door",
                "model": "placeholder",
                "images": [first["resource_uri"]],
                "mask": _mask_data_url(first["width"], first["height"]),
            },
        )
        if edited.is_error:
            print(f"edit failed: {edited.content[0].text}", file=sys.stderr)  # type: ignore[union-attr]
            return 1
        second = (edited.structured_content or {})["images"][0]
        print(f"4. edited the centre (mask with a transparent rectangle): {second['path']}")
        print(f"   resource: {second['resource_uri']}; {_preview_line(edited)}")
    print(f"\nFiles are in {Path(first['path']).parent} (a .json sidecar beside each image).")
    print("Reminder: these are placeholder drawings, not AI images.")
    return 0
