"""One decode per returned image: the router verifies and previews from the same decode,
and the MCP result uses that preview instead of reading the file back (bench/ measures it)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest
from mcp_types import ImageContent
from PIL import Image

import atelier_placeholder
from atelier_core.media import images
from atelier_core.testing import build_test_atelier, connect


def _counting(monkeypatch: pytest.MonkeyPatch, name: str) -> list[str]:
    """Patch ``images.<name>`` to record the type of its first argument per call."""
    calls: list[str] = []
    real = getattr(images, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(type(args[0]).__name__)
        return real(*args, **kwargs)

    monkeypatch.setattr(images, name, wrapper)
    return calls


async def test_each_returned_image_is_decoded_once_and_previewed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    atelier = build_test_atelier(tmp_path, [("placeholder", atelier_placeholder)])
    decodes = _counting(monkeypatch, "decode_image")
    previews = _counting(monkeypatch, "make_preview")
    async with connect(atelier) as client:
        result = await client.call_tool("generate_image", {"prompt": "a lighthouse", "model": "placeholder", "n": 2})
    assert not result.is_error
    inline = [block for block in result.content if isinstance(block, ImageContent)]
    assert len(inline) == 2
    assert decodes == ["bytes", "bytes"]  # the verification decode, once per image
    assert previews == ["DecodedImage", "DecodedImage"]  # made from that decode, not the file
    for block in inline:
        assert block.mime_type == "image/webp"  # the placeholder has transparency: auto keeps WebP
        with Image.open(io.BytesIO(base64.b64decode(block.data))) as preview:
            assert max(preview.size) <= atelier.settings.preview.max_edge
    assert not atelier.previews._items  # taken once: nothing is held after the answer


async def test_full_mode_still_reads_the_file(tmp_path: Path) -> None:
    atelier = build_test_atelier(tmp_path, [("placeholder", atelier_placeholder)])
    async with connect(atelier) as client:
        result = await client.call_tool(
            "generate_image", {"prompt": "a lighthouse", "model": "placeholder", "return_image": "full"}
        )
    (inline,) = [block for block in result.content if isinstance(block, ImageContent)]
    assert inline.mime_type == "image/png"  # the original file, not the cached WebP preview
    assert not atelier.previews._items
