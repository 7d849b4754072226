"""Through the core's router: URL answers downloaded by its SafeFetcher and saved, variations
reached by edit without a prompt, dall-e-3 fanned out for n > 1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dalle_support import ImagesServer, fields

import atelier_dalle
from atelier_core import Operation
from atelier_core.engine.pipeline import Pipeline
from atelier_core.plugin.types import ImageCall
from atelier_core.testing import build_test_atelier, make_image, read_image


def _atelier(tmp_path: Path, server: ImagesServer, **dalle: Any) -> Pipeline:
    inputs = tmp_path / "in"
    inputs.mkdir(exist_ok=True)
    settings = {"api_key": "sk-router", "base_url": f"{server.up.url}/v1", "timeout_s": 5, **dalle}
    return build_test_atelier(
        tmp_path, [atelier_dalle], providers={"dalle": settings}, storage={"input_dirs": [inputs]}
    )


async def test_url_answers_are_downloaded_and_saved(tmp_path: Path, server: ImagesServer) -> None:
    atelier = _atelier(tmp_path, server, response_format="url")
    try:
        outcome = await atelier.execute(
            ImageCall(model="dalle/dall-e-2", prompt="a fox", size="256x256", n=2), Operation.GENERATE
        )
    finally:
        await atelier.aclose()
    assert server.up.requests[0].json()["response_format"] == "url"
    assert len(server.up.requests_to("^/files/")) == 2
    assert len(outcome.images) == 2 and not outcome.failures
    for record in outcome.images:
        saved = Path(record.path)
        assert saved.is_file() and saved.is_relative_to(tmp_path / "images")
        assert read_image(saved.read_bytes()).size == "256x256"
        assert not record.path.startswith("http")
    assert outcome.cost.estimate_usd == 0.032


async def test_edit_without_prompt_is_a_variation(tmp_path: Path, server: ImagesServer) -> None:
    (tmp_path / "in" / "cat.png").parent.mkdir(exist_ok=True)
    (tmp_path / "in" / "cat.png").write_bytes(make_image(64, 64, "png"))
    atelier = _atelier(tmp_path, server)
    try:
        outcome = await atelier.execute(
            ImageCall(model="dall-e-2", images=[str(tmp_path / "in" / "cat.png")], size="256x256"),
            Operation.EDIT,
        )
    finally:
        await atelier.aclose()
    assert outcome.operation is Operation.VARIATION
    assert "no prompt: made a variation of the input image" in outcome.notes
    (sent,) = server.up.requests
    assert sent.path == "/v1/images/variations" and "prompt" not in fields(sent)
    assert len(outcome.images) == 1


async def test_dall_e_3_n_above_one_is_fanned_out(tmp_path: Path, server: ImagesServer) -> None:
    server.revised = "a detailed fox"
    atelier = _atelier(tmp_path, server)
    try:
        outcome = await atelier.execute(ImageCall(model="dall-e-3", prompt="fox", n=2), Operation.GENERATE)
    finally:
        await atelier.aclose()
    assert [r.json()["n"] for r in server.up.requests] == [1, 1]
    assert len(outcome.images) == 2
    assert {r.revised_prompt for r in outcome.images} == {"a detailed fox"}
    assert outcome.cost.estimate_usd == 0.08


# -- through MCP ---------------------------------------------------------------------


async def test_generate_edit_and_variation_through_mcp(tmp_path: Path, server: ImagesServer) -> None:
    from atelier_core.engine.pipeline import CallOutcome
    from atelier_core.testing import connect, make_mask

    source = tmp_path / "in" / "room.jpg"
    source.parent.mkdir(exist_ok=True)
    source.write_bytes(make_image(64, 64, "jpeg"))
    mask = tmp_path / "in" / "mask.png"
    mask.write_bytes(make_mask(64, 64))
    atelier = _atelier(tmp_path, server, response_format="url")
    async with connect(atelier) as client:
        generated = await client.call_tool(
            "generate_image", {"prompt": "a lighthouse", "model": "dalle/dall-e-2", "size": "256x256"}
        )
        assert not generated.is_error, generated.content
        edited = await client.call_tool(
            "edit_image",
            {
                "prompt": "add a lamp",
                "images": [str(source)],
                "mask": str(mask),
                "model": "dalle/dall-e-2",
                "size": "256x256",
            },
        )
        assert not edited.is_error, edited.content
        varied = await client.call_tool("edit_image", {"images": [str(source)], "model": "dalle/dall-e-2"})
        assert not varied.is_error, varied.content
        server.refuse_next()
        refused = await client.call_tool("generate_image", {"prompt": "x", "model": "dalle/dall-e-2"})
    operations = [CallOutcome.model_validate(r.structured_content).operation for r in (generated, edited, varied)]
    assert operations == ["generate", "edit", "variation"]
    assert [r.path for r in server.up.requests if r.method == "POST"] == [
        "/v1/images/generations",
        "/v1/images/edits",
        "/v1/images/variations",
        "/v1/images/generations",
    ]
    assert "mask" in fields(server.up.requests_to("/edits$")[0])
    assert refused.is_error and "safety system" in str(refused.content)
