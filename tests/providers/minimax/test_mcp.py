"""MiniMax through MCP: the generate_image tool, an in-memory MCP client, a fake MiniMax."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import atelier_minimax
from atelier_core.testing import FakeUpstream, read_image
from atelier_core.testing.harness import build_test_atelier, connect

from ._support import KEY, PATH, b64, draw, jpeg


def _atelier(tmp_path: Path, upstream: FakeUpstream) -> Any:
    return build_test_atelier(
        tmp_path,
        [atelier_minimax],
        providers={"minimax": {"api_key": KEY, "base_url": upstream.url, "timeout_s": 10}},
        storage={"output_dir": tmp_path / "images", "input_dirs": [tmp_path / "inputs"]},
    )


async def test_generate_image_01_with_a_subject_reference(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.handle("POST", PATH, draw)
    (tmp_path / "inputs").mkdir()
    face = tmp_path / "inputs" / "face.png"
    from atelier_core.testing import make_image

    face.write_bytes(make_image(96, 128, "png"))
    async with connect(_atelier(tmp_path, upstream)) as client:
        result = await client.call_tool(
            "generate_image",
            {
                "model": "minimax/image-01",
                "prompt": "the same person on the moon",
                "size": "1024x768",
                "images": [str(face)],
                "seed": 9,
                "options": {"aigc_watermark": True},
                "return_image": "none",
            },
        )
    assert not result.is_error, result.content
    body = upstream.requests[0].json()
    assert body["subject_reference"] == [
        {"type": "character", "image_file": "data:image/png;base64," + b64(face.read_bytes())}
    ]
    assert (body["width"], body["height"], body["seed"], body["aigc_watermark"]) == (1024, 768, 9, True)
    outcome = result.structured_content
    assert outcome is not None
    (record,) = outcome["images"]
    info = read_image(Path(record["path"]).read_bytes())
    assert (info.format, info.size) == ("jpeg", "1024x768")
    assert outcome["applied"]["subject_reference"] == "character"


async def test_generate_image_01_live_with_a_style(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.handle("POST", PATH, draw)
    async with connect(_atelier(tmp_path, upstream)) as client:
        result = await client.call_tool(
            "generate_image",
            {
                "model": "image-01-live",
                "prompt": "a harbour at dawn",
                "style": "watercolor",
                "aspect_ratio": "4:3",
                "n": 2,
                "options": {"style_weight": 0.6},
            },
        )
    assert not result.is_error, result.content
    assert upstream.requests[0].json()["style"] == {"style_type": "水彩", "style_weight": 0.6}
    outcome = result.structured_content
    assert outcome is not None and len(outcome["images"]) == 2
    assert {(i["width"], i["height"]) for i in outcome["images"]} == {(1152, 864)}


async def test_live_refuses_a_subject_reference_before_any_call(tmp_path: Path, upstream: FakeUpstream) -> None:
    (tmp_path / "inputs").mkdir()
    face = tmp_path / "inputs" / "face.jpg"
    face.write_bytes(jpeg())
    async with connect(_atelier(tmp_path, upstream)) as client:
        result = await client.call_tool(
            "generate_image",
            {
                "model": "minimax/image-01-live",
                "prompt": "x",
                "images": [str(face)],
            },
        )
    assert result.is_error
    text = " ".join(getattr(c, "text", "") for c in result.content)
    assert "images" in text and "minimax/image-01-live" in text
    assert upstream.requests == []  # nothing spent


async def test_a_refusal_reaches_the_client_as_a_tool_error(tmp_path: Path, upstream: FakeUpstream) -> None:
    from ._support import failure

    upstream.reply("POST", PATH, json=failure(1027, "output new_sensitive"))
    async with connect(_atelier(tmp_path, upstream)) as client:
        result = await client.call_tool("generate_image", {"model": "minimax/image-01", "prompt": "x"})
    assert result.is_error
    text = " ".join(getattr(c, "text", "") for c in result.content)
    assert "generated image" in text and "1027" in text
    assert KEY not in text
