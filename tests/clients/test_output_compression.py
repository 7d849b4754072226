"""``output_compression`` has one meaning everywhere, OpenAI's: 0-100, 100 = least
compression (the best quality, the largest file). Checked end to end through an MCP
client on the placeholder (which encodes the file itself) and on each provider's wire."""

from __future__ import annotations

from pathlib import Path

import atelier_placeholder
from atelier_core.testing import build_test_atelier, connect


async def test_higher_output_compression_keeps_more_quality(tmp_path: Path) -> None:
    sizes: dict[int, int] = {}
    async with connect(build_test_atelier(tmp_path, [atelier_placeholder])) as client:
        for value in (10, 95):
            result = await client.call_tool(
                "generate_image",
                {
                    "prompt": "a detailed harbour at dusk",
                    "model": "placeholder",
                    "size": "512x512",
                    "output_format": "jpeg",
                    "output_compression": value,
                    "seed": 7,
                    "return_image": "none",
                },
            )
            assert not result.is_error, result.content
            outcome = result.structured_content or {}
            assert outcome["applied"]["output_compression"] == value
            sizes[value] = outcome["images"][0]["bytes"]
    assert sizes[95] > 1.5 * sizes[10], sizes
