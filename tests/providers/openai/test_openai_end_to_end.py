"""The OpenAI provider through the core router (retries, verification, storage) and
through MCP (the SDK's in-memory client), against the fake OpenAI Images server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from openai_support import GEN, KEY, b64, images_json, png_bytes

import atelier_openai
from atelier_core import Operation, RateLimitedError, SafetyRefusalError, UpstreamProtocolError
from atelier_core.engine.pipeline import Pipeline
from atelier_core.mcp.app import build_server
from atelier_core.plugin.types import ImageCall
from atelier_core.settings import Settings
from atelier_core.testing import FakeUpstream

pytestmark = pytest.mark.usefixtures("anyio_backend")


def make_atelier(tmp_path: Path, upstream: FakeUpstream | None, **openai: Any) -> Pipeline:
    values: dict[str, Any] = {"backoff_base_s": 0.01, "timeout_s": 5.0}
    if upstream is not None:
        values.update(api_key=KEY, base_url=upstream.url + "/v1")
    values.update(openai)
    # These tests compare saved files with the vendor's bytes, so no provenance is embedded
    # (embedding inserts chunks without re-encoding: tests/core/test_embed.py).
    settings = Settings(
        storage={"output_dir": str(tmp_path / "out")}, providers={"openai": values}, library={"embed_metadata": False}
    )
    return Pipeline.build(settings, plugins=[("openai", atelier_openai)], entry_points=False)


async def test_429_retry_after_through_the_router(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.reply(
        "POST",
        GEN,
        status=429,
        headers={"retry-after": "0.2"},
        json={"error": {"code": "rate_limit_exceeded", "message": "Rate limit reached"}},
    )
    upstream.reply("POST", GEN, json=images_json(1), headers={"x-request-id": "req_ok"})
    atelier = make_atelier(tmp_path, upstream)
    try:
        outcome = await atelier.execute(ImageCall(model="openai/gpt-image-2", prompt="a fox"), Operation.GENERATE)
    finally:
        await atelier.aclose()
    assert len(outcome.images) == 1 and outcome.request_id == "req_ok"
    first, second = upstream.requests
    assert second.at - first.at >= 0.19


async def test_rate_limit_that_persists_reports_when_to_retry(tmp_path: Path, upstream: FakeUpstream) -> None:
    for _ in range(3):
        upstream.reply(
            "POST",
            GEN,
            status=429,
            headers={"retry-after": "0.05"},
            json={"error": {"code": "rate_limit_exceeded", "message": "Rate limit reached"}},
        )
    atelier = make_atelier(tmp_path, upstream, max_retries=2)
    try:
        with pytest.raises(RateLimitedError) as caught:
            await atelier.execute(ImageCall(model="gpt-image-2", prompt="a fox"), Operation.GENERATE)
    finally:
        await atelier.aclose()
    assert caught.value.retry_after_s == 0.05 and len(upstream.requests) == 3


async def test_truncated_image_among_several_is_listed_not_saved(tmp_path: Path, upstream: FakeUpstream) -> None:
    good = png_bytes(16, 16)
    cut = b64(good[: len(good) - 16])  # valid base64 of a PNG that lost its end
    upstream.reply(
        "POST", GEN, json={"created": 1, "data": [{"b64_json": b64(good)}, {"b64_json": cut}, {"b64_json": b64(good)}]}
    )
    atelier = make_atelier(tmp_path, upstream)
    try:
        outcome = await atelier.execute(ImageCall(model="gpt-image-1-mini", prompt="a fox", n=3), Operation.GENERATE)
    finally:
        await atelier.aclose()
    assert len(outcome.images) == 2 and [f.index for f in outcome.failures] == [1]
    saved = sorted((tmp_path / "out").rglob("*.png"))
    assert len(saved) == 2 and all(p.read_bytes() == good for p in saved)


async def test_truncated_single_image_is_an_error_and_nothing_is_saved(tmp_path: Path, upstream: FakeUpstream) -> None:
    good = png_bytes(16, 16)
    upstream.reply("POST", GEN, json={"created": 1, "data": [{"b64_json": b64(good[:-16])}]})
    atelier = make_atelier(tmp_path, upstream)
    try:
        with pytest.raises(UpstreamProtocolError):
            await atelier.execute(ImageCall(model="gpt-image-2", prompt="a fox"), Operation.GENERATE)
    finally:
        await atelier.aclose()
    assert not list((tmp_path / "out").rglob("*.png"))


async def test_streamed_partials_reach_the_caller_and_only_the_final_is_saved(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    partial, final = png_bytes(8, 8, colour="blue"), png_bytes(16, 16)
    common = {"background": "opaque", "created_at": 1, "output_format": "png", "quality": "low", "size": "1024x1024"}
    upstream.reply(
        "POST",
        GEN,
        sse=[
            {"type": "image_generation.partial_image", "b64_json": b64(partial), "partial_image_index": 0, **common},
            {
                "type": "image_generation.completed",
                "b64_json": b64(final),
                **common,
                "usage": {
                    "input_tokens": 1,
                    "output_tokens": 2,
                    "total_tokens": 3,
                    "input_tokens_details": {"text_tokens": 1, "image_tokens": 0},
                },
            },
        ],
    )
    seen: list[tuple[int, bytes]] = []
    progress: list[float] = []

    async def on_partial(data: bytes, index: int) -> None:
        seen.append((index, data))

    async def on_progress(fraction: float, message: str) -> None:
        progress.append(fraction)

    atelier = make_atelier(tmp_path, upstream)
    try:
        outcome = await atelier.execute(
            ImageCall(model="gpt-image-2", prompt="a fox", options={"partial_images": 1}),
            Operation.GENERATE,
            progress=on_progress,
            partial=on_partial,
        )
    finally:
        await atelier.aclose()
    assert seen == [(0, partial)] and progress
    saved = list((tmp_path / "out").rglob("*.png"))
    assert len(outcome.images) == 1 and [p.read_bytes() for p in saved] == [final]


# -- MCP ------------------------------------------------------------------------------


async def test_list_available_models_without_a_key_names_openai_api_key(tmp_path: Path) -> None:
    atelier = make_atelier(tmp_path, None)
    async with Client(build_server(atelier)) as client:
        result = await client.call_tool("list_available_models", {"provider": "openai"})
    assert not result.is_error and result.structured_content is not None
    models = result.structured_content["models"]
    assert {m["id"] for m in models} >= {"openai/gpt-image-2", "openai/gpt-image-1.5", "openai/chatgpt-image-latest"}
    for model in models:
        assert model["available"] is False and "OPENAI_API_KEY" in model["reason"]


async def test_generate_and_edit_through_mcp(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.reply("POST", GEN, json=images_json(1), headers={"x-request-id": "req_mcp"})
    upstream.reply("POST", "/v1/images/edits", json=images_json(1))
    source = "data:image/png;base64," + b64(png_bytes(16, 16))
    atelier = make_atelier(tmp_path, upstream)
    async with Client(build_server(atelier)) as client:
        listed = await client.call_tool("list_available_models", {"provider": "openai"})
        assert all(m["available"] for m in listed.structured_content["models"])  # type: ignore[index]
        generated = await client.call_tool(
            "generate_image", {"prompt": "a fox", "model": "openai/gpt-image-2", "size": "1280x720", "quality": "low"}
        )
        assert not generated.is_error, generated.content
        edited = await client.call_tool(
            "edit_image",
            {
                "prompt": "make it blue",
                "model": "gpt-image-1.5",
                "images": [source],
                "options": {"input_fidelity": "high"},
            },
        )
        assert not edited.is_error, edited.content
    body = upstream.requests[0].json()
    assert body["model"] == "gpt-image-2" and body["size"] == "1280x720" and body["quality"] == "low"
    form = upstream.requests[1].form()
    assert form["input_fidelity"] == ["high"] and form["model"] == ["gpt-image-1.5"]
    assert len(list((tmp_path / "out").rglob("*.png"))) == 2


async def test_moderation_block_through_mcp_is_a_tool_error(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.reply(
        "POST",
        GEN,
        status=400,
        json={
            "error": {
                "code": "moderation_blocked",
                "type": "image_generation_user_error",
                "message": "Your request was rejected by the safety system. safety_violations=[violence].",
            }
        },
    )
    atelier = make_atelier(tmp_path, upstream)
    async with Client(build_server(atelier)) as client:
        result = await client.call_tool("generate_image", {"prompt": "something", "model": "gpt-image-2"})
    assert result.is_error
    text = " ".join(getattr(c, "text", "") for c in result.content)
    assert "safety_violations=[violence]" in text and KEY not in text
    assert len(upstream.requests) == 1
    assert SafetyRefusalError.code in text or "safety" in text


async def test_gateway_url_answers_are_downloaded_from_the_gateway_host_only(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    image = png_bytes(16, 16)
    upstream.reply("GET", "/files/a.png", body=image, content_type="image/png")
    upstream.reply(
        "POST",
        GEN,
        json={
            "created": 1,
            "data": [
                {"url": upstream.url + "/files/a.png"},
                {"url": "http://203.0.113.9/elsewhere.png"},  # another host: never fetched
            ],
        },
    )
    atelier = make_atelier(tmp_path, upstream)
    try:
        outcome = await atelier.execute(ImageCall(model="openai/gpt-image-2", prompt="a fox", n=2), Operation.GENERATE)
    finally:
        await atelier.aclose()
    assert len(outcome.images) == 1 and Path(outcome.images[0].path).read_bytes() == image
    assert [f.index for f in outcome.failures] == [1]
    assert [r.path for r in upstream.requests] == ["/v1/images/generations", "/files/a.png"]
