"""The floor: the least an MCP image server can do, written with the same mcp SDK.

One tool, ``generate_image(prompt, size)``: fetch one image from the (fake) OpenAI API
through the official ``openai`` SDK, save it, return its path. No validation, no
preview, no sidecar, no jobs, no plugins. The SDK is imported on the first call (as a
minimal server would), so its cold start is the SDK's own. Configured by
``OPENAI_BASE_URL``, ``OPENAI_API_KEY`` and ``FLOOR_OUTPUT_DIR``.
"""

from __future__ import annotations

import base64
import os
import uuid
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer

server = MCPServer("floor")
_client: Any = None


@server.tool()
async def generate_image(prompt: str, size: str = "1024x1024", model: str = "gpt-image-2") -> str:
    """Generate one image and return the path of the saved PNG."""
    global _client
    if _client is None:
        from openai import AsyncOpenAI

        _client = AsyncOpenAI(max_retries=0)
    response = await _client.images.generate(model=model, prompt=prompt, size=size)
    data = base64.b64decode(response.data[0].b64_json)
    path = Path(os.environ.get("FLOOR_OUTPUT_DIR", ".")) / f"{uuid.uuid4().hex}.png"
    path.write_bytes(data)
    return str(path)


if __name__ == "__main__":
    server.run("stdio")
