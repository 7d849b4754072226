"""``atelier://images/<path>``: every saved image as an MCP resource."""

from __future__ import annotations

from collections.abc import Callable

from mcp.server.mcpserver import MCPServer

from atelier_core.plugin.errors import AtelierError
from atelier_core.engine.pipeline import Pipeline
from atelier_core.media.storage import RESOURCE_PREFIX

_MIME_BY_EXT = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg",
                "webp": "image/webp", "gif": "image/gif"}

def add_image_resources(server: MCPServer[Pipeline], atelier: Pipeline) -> None:
    """``atelier://images/<relative path>``: every saved image, confined to the output root.

    One template per extension because a template's MIME type is fixed.
    """
    from mcp.server.mcpserver.exceptions import ResourceError

    def reader(ext: str) -> Callable[[str], bytes]:
        def read(path: str) -> bytes:
            try:
                file = atelier.store.resolve_resource(f"{RESOURCE_PREFIX}{path}.{ext}")
            except AtelierError as exc:
                raise ResourceError(str(exc)) from None
            return file.read_bytes()

        return read

    for ext, mime in _MIME_BY_EXT.items():
        server.resource(
            f"{RESOURCE_PREFIX}{{+path}}.{ext}", name=f"image-{ext}", mime_type=mime,
            description=f"A saved {ext} image",
        )(reader(ext))
