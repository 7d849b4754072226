"""Through the core: the router (fan-out, saving, requested vs applied, texts, cost) and
the MCP tools, with the real google-genai SDK against the fake Gemini API."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from gemini_fake import GEMINI_PATH, KEY, PREDICT_PATH

import atelier_gemini
from atelier_core import Operation, UpstreamUnavailableError
from atelier_core.engine.pipeline import Pipeline
from atelier_core.plugin.types import ImageCall
from atelier_core.testing import FakeUpstream, Reply, build_test_atelier, connect, make_image, read_image

pytestmark = pytest.mark.anyio


def _atelier(tmp_path: Path, up: FakeUpstream, **gemini: Any) -> Pipeline:
    inputs = tmp_path / "in"
    inputs.mkdir(exist_ok=True)
    settings = {"api_key": KEY, "base_url": up.url, "timeout_s": 10, **gemini}
    return build_test_atelier(
        tmp_path, [atelier_gemini], providers={"gemini": settings}, storage={"input_dirs": [inputs]}
    )


async def test_pixel_size_mapped_fanned_out_saved_and_reported(tmp_path: Path, serving: FakeUpstream) -> None:
    atelier = _atelier(tmp_path, serving)
    try:
        outcome = await atelier.execute(
            ImageCall(model="nano-banana-pro", prompt="a fox", size="1920x1080", n=2), Operation.GENERATE
        )
    finally:
        await atelier.aclose()
    bodies = [r.json() for r in serving.requests]
    assert len(bodies) == 2  # one image per call: the core fans out and reports one result
    assert all(b["generationConfig"]["imageConfig"] == {"aspectRatio": "16:9", "imageSize": "2K"} for b in bodies)
    assert outcome.model == "gemini/gemini-3-pro-image"
    assert outcome.requested["size"] == "1920x1080"
    assert outcome.applied["aspect_ratio"] == "16:9" and outcome.applied["resolution"] == "2K"
    assert len(outcome.images) == 2 and not outcome.failures
    for record in outcome.images:
        assert read_image(Path(record.path).read_bytes()).size == "2752x1536"
    assert "Here is your picture." in outcome.texts
    assert outcome.cost.estimate_usd == pytest.approx(0.268)


async def test_multi_image_composition_through_mcp(tmp_path: Path, serving: FakeUpstream) -> None:
    paths = []
    for i, color in enumerate([(200, 0, 0), (0, 200, 0), (0, 0, 200)]):
        path = tmp_path / "in" / f"part{i}.png"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(make_image(64, 64, "png", color=color))
        paths.append(str(path))
    atelier = _atelier(tmp_path, serving)
    async with connect(atelier) as client:
        result = await client.call_tool(
            "edit_image",
            {
                "images": paths,
                "prompt": "put all three on one shelf",
                "model": "nano-banana-2",
                "aspect_ratio": "3:2",
            },
        )
    assert not result.is_error, result
    (sent,) = serving.requests_to(GEMINI_PATH)
    assert sent.path == "/v1/models/gemini-3.1-flash-image:generateContent"
    parts = sent.json()["contents"][0]["parts"]
    assert parts[0] == {"text": "put all three on one shelf"}
    assert [base64.urlsafe_b64decode(p["inlineData"]["data"]) for p in parts[1:]] == [
        Path(p).read_bytes() for p in paths
    ]
    assert sent.headers["x-goog-api-key"] == KEY and not sent.query


async def test_refusal_through_mcp_is_a_tool_error(tmp_path: Path, serving: FakeUpstream) -> None:
    serving.reply(
        "POST", GEMINI_PATH, json={"candidates": [{"content": {"parts": []}, "finishReason": "IMAGE_SAFETY"}]}
    )
    atelier = _atelier(tmp_path, serving)
    async with connect(atelier) as client:
        result = await client.call_tool("generate_image", {"prompt": "x", "model": "nano-banana"})
    assert result.is_error
    text = " ".join(getattr(c, "text", "") for c in result.content)
    assert "IMAGE_SAFETY" in text and KEY not in text
    assert len(serving.requests) == 1  # refusals are never retried


async def test_one_retry_layer_429_then_success(tmp_path: Path, serving: FakeUpstream) -> None:
    serving.reply(
        "POST",
        GEMINI_PATH,
        status=429,
        headers={"retry-after": "0"},
        json={"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}},
    )
    atelier = _atelier(tmp_path, serving, max_retries=2, backoff_base_s=0.01)
    try:
        outcome = await atelier.execute(ImageCall(model="nano-banana", prompt="a fox"), Operation.GENERATE)
    finally:
        await atelier.aclose()
    assert len(outcome.images) == 1
    assert len(serving.requests) == 2  # the core retried once; google-genai added nothing


async def test_persistent_503_attempts_equal_the_budget(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.handle("POST", GEMINI_PATH, lambda _r: Reply(status=503, json={"error": {"code": 503, "message": "busy"}}))
    atelier = _atelier(tmp_path, upstream, max_retries=2, backoff_base_s=0.01)
    try:
        with pytest.raises(UpstreamUnavailableError):
            await atelier.execute(ImageCall(model="nano-banana", prompt="a fox"), Operation.GENERATE)
    finally:
        await atelier.aclose()
    assert len(upstream.requests) == 3


async def test_imagen_on_vertex_partial_success_is_saved_and_reported(tmp_path: Path, upstream: FakeUpstream) -> None:
    png = base64.b64encode(make_image(64, 64)).decode()
    upstream.reply(
        "POST",
        PREDICT_PATH,
        json={"predictions": [{"bytesBase64Encoded": png, "mimeType": "image/png"}, {"raiFilteredReason": "violence"}]},
    )
    atelier = _atelier(tmp_path, upstream, vertexai=True)
    try:
        outcome = await atelier.execute(ImageCall(model="imagen-4", prompt="a fox", n=2), Operation.GENERATE)
    finally:
        await atelier.aclose()
    (sent,) = upstream.requests
    assert sent.path == "/v1beta1/publishers/google/models/imagen-4.0-generate-001:predict"
    assert len(outcome.images) == 1 and Path(outcome.images[0].path).is_file()
    assert [(f.index, f.code) for f in outcome.failures] == [(1, "safety_refusal")]


async def test_output_compression_has_openais_meaning_through_mcp(tmp_path: Path, serving: FakeUpstream) -> None:
    # 80 means "little compression, high quality" everywhere: Imagen gets quality 80 (it got 20).
    atelier = _atelier(tmp_path, serving, vertexai=True)
    async with connect(atelier) as client:
        result = await client.call_tool(
            "generate_image",
            {"prompt": "a fox", "model": "imagen-4.0-generate-001", "output_format": "jpeg", "output_compression": 80},
        )
    assert not result.is_error, result.content
    (sent,) = serving.requests
    assert sent.json()["parameters"]["outputOptions"] == {"mimeType": "image/jpeg", "compressionQuality": 80}
    assert (result.structured_content or {})["applied"]["output_compression"] == 80
