"""The floor: the least an MCP image server can do, written with the same mcp SDK.

One tool, ``generate_image(prompt, size)``: ask the (fake) OpenAI Images API for one
image over plain HTTP with ``httpx2`` (the HTTP client the mcp SDK already brings — no
vendor SDK), decode the base64, write the file, return its path. No validation, no
verification, no preview, no sidecar, no jobs, no plugins. One HTTP client, made on the
first call. Configured by ``OPENAI_BASE_URL``, ``OPENAI_API_KEY`` and ``FLOOR_OUTPUT_DIR``.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path

import httpx2
from mcp.server.mcpserver import MCPServer

server = MCPServer("floor")
_client: httpx2.AsyncClient | None = None


@server.tool()
async def generate_image(prompt: str, size: str = "1024x1024", model: str = "gpt-image-2") -> str:
    """Generate one image and return the path of the saved PNG."""
    global _client
    if _client is None:
        _client = httpx2.AsyncClient(
            base_url=os.environ["OPENAI_BASE_URL"].rstrip("/") + "/",
            headers={"Authorization": f"Bearer {os.environ.get('OPENAI_API_KEY', '')}"},
            timeout=600,
        )
    response = await _client.post("images/generations", json={"model": model, "prompt": prompt, "size": size})
    response.raise_for_status()
    data = base64.b64decode(json.loads(response.content)["data"][0]["b64_json"])
    path = Path(os.environ.get("FLOOR_OUTPUT_DIR", ".")) / f"{uuid.uuid4().hex}.png"
    path.write_bytes(data)
    return str(path)


if __name__ == "__main__":
    server.run("stdio")
