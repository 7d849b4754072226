"""The real google-genai SDK against a fake Gemini API on 127.0.0.1."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from gemini_fake import GEMINI_PATH, KEY, PREDICT_PATH, make_provider

from atelier_core import (
    AuthenticationError,
    CallContext,
    ImageRequest,
    InputImage,
    Operation,
    RateLimitedError,
    SafetyRefusalError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from atelier_core.testing import FakeUpstream, make_image, make_mask, read_image

pytestmark = pytest.mark.anyio

CTX = CallContext(timeout_s=10)


def _image(fmt: str = "png", color: tuple[int, int, int] = (10, 20, 30), source: str = "a.png") -> InputImage:
    return InputImage(
        data=make_image(32, 32, fmt, color=color), format=fmt, width=32, height=32, has_alpha=False, source=source
    )


def _request(model: str = "gemini-3-pro-image", **kw: Any) -> ImageRequest:
    values: dict[str, Any] = {"operation": Operation.GENERATE, "model": model, "prompt": "a red fox", "n": 1}
    values.update(kw)
    return ImageRequest(**values)


def _gemini_json(parts: list[dict[str, Any]], finish: str = "STOP", **extra: Any) -> dict[str, Any]:
    return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish}], **extra}


def _png_part() -> dict[str, Any]:
    return {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(make_image(8, 8)).decode()}}


async def test_generate_developer_api_wire_and_result(developer: Any, serving: FakeUpstream) -> None:
    request = _request(aspect_ratio="16:9", resolution="2K", seed=7, options={"temperature": 0.4})
    result = await developer.run(request, CTX)
    await developer.aclose()
    (sent,) = serving.requests
    assert sent.path == "/v1/models/gemini-3-pro-image:generateContent"
    assert sent.headers["x-goog-api-key"] == KEY
    assert not sent.query, "the key must never travel in the URL"
    assert KEY not in sent.path
    assert int(sent.headers["x-server-timeout"]) == 10  # our timeout, converted from seconds
    body = sent.json()
    assert body["contents"] == [{"role": "user", "parts": [{"text": "a red fox"}]}]
    assert body["generationConfig"] == {
        "responseModalities": ["TEXT", "IMAGE"],
        "imageConfig": {"aspectRatio": "16:9", "imageSize": "2K"},
        "seed": 7,
        "temperature": 0.4,
    }
    assert len(result.images) == 1 and read_image(result.images[0].data).format == "png"
    assert result.texts == ["Here is your picture."]
    assert result.request_id == "resp-1"
    assert result.usage is not None and result.usage.output_tokens == 1290 and result.usage.images == 1
    # 1290 image tokens at $120/M (no modality split reported) + 10 input tokens at $2/M.
    assert result.cost_usd == pytest.approx((1290 * 120 + 10 * 2) / 1e6)


async def test_multi_image_edit_sends_every_image_in_one_call(developer: Any, serving: FakeUpstream) -> None:
    images = (_image(), _image("jpeg", (200, 0, 0), "b.jpg"), _image("webp", (0, 200, 0), "c.webp"))
    request = _request(
        operation=Operation.EDIT, prompt="put the cat on the sofa", images=images, options={"include_text": False}
    )
    result = await developer.run(request, CTX)
    await developer.aclose()
    (sent,) = serving.requests
    parts = sent.json()["contents"][0]["parts"]
    assert parts[0] == {"text": "put the cat on the sofa"}
    sent_images = [(p["inlineData"]["mime_type"], base64.urlsafe_b64decode(p["inlineData"]["data"])) for p in parts[1:]]
    assert sent_images == [(i.mime_type, i.data) for i in images]
    assert sent.json()["generationConfig"]["responseModalities"] == ["IMAGE"]
    assert len(result.images) == 1


async def test_vertex_express_gemini_sends_vertex_only_options(vertex: Any, serving: FakeUpstream) -> None:
    request = _request(
        output_format="jpeg",
        output_compression=30,
        options={"person_generation": "ALLOW_ADULT", "prominent_people": "BLOCK_PROMINENT_PEOPLE"},
    )
    result = await vertex.run(request, CTX)
    await vertex.aclose()
    (sent,) = serving.requests
    assert sent.path == "/v1beta1/publishers/google/models/gemini-3-pro-image:generateContent"
    assert sent.headers["x-goog-api-key"] == KEY and not sent.query
    assert sent.json()["generationConfig"]["imageConfig"] == {
        "personGeneration": "ALLOW_ADULT",
        "prominentPeople": "BLOCK_PROMINENT_PEOPLE",
        "imageOutputOptions": {"mimeType": "image/jpeg", "compressionQuality": 30},
    }
    assert read_image(result.images[0].data).format == "jpeg"


async def test_imagen_generate_in_vertex_express_mode(vertex: Any, serving: FakeUpstream) -> None:
    request = _request(
        model="imagen-4.0-generate-001",
        n=3,
        aspect_ratio="9:16",
        resolution="2K",
        seed=5,
        output_format="jpeg",
        output_compression=10,
        options={
            "person_generation": "DONT_ALLOW",
            "safety_filter_level": "BLOCK_ONLY_HIGH",
            "enhance_prompt": False,
            "guidance_scale": 12.5,
        },
    )
    result = await vertex.run(request, CTX)
    await vertex.aclose()
    (sent,) = serving.requests
    assert sent.path == "/v1beta1/publishers/google/models/imagen-4.0-generate-001:predict"
    assert sent.headers["x-goog-api-key"] == KEY and not sent.query
    assert sent.json() == {
        "instances": [{"prompt": "a red fox"}],
        "parameters": {
            "sampleCount": 3,
            "aspectRatio": "9:16",
            "guidanceScale": 12.5,
            "seed": 5,
            "safetySetting": "BLOCK_ONLY_HIGH",
            "personGeneration": "DONT_ALLOW",
            "includeRaiReason": True,
            "outputOptions": {"mimeType": "image/jpeg", "compressionQuality": 10},
            "addWatermark": False,
            "sampleImageSize": "2K",
            "enhancePrompt": False,
        },
    }
    assert len(result.images) == 3 and not result.failures
    assert result.applied == {"options.add_watermark": False}


async def test_imagen_partial_filtering_is_a_partial_success(vertex: Any, upstream: FakeUpstream) -> None:
    png = base64.b64encode(make_image(16, 16)).decode()
    upstream.reply(
        "POST",
        PREDICT_PATH,
        json={
            "predictions": [
                {"bytesBase64Encoded": png, "mimeType": "image/png"},
                {"raiFilteredReason": "39322892: violence"},
                {"bytesBase64Encoded": png, "mimeType": "image/png"},
            ]
        },
    )
    result = await vertex.run(_request(model="imagen-4.0-fast-generate-001", n=4, negative_prompt=None), CTX)
    await vertex.aclose()
    assert len(result.images) == 2
    assert [(f.index, f.code) for f in result.failures] == [(1, "safety_refusal"), (3, "no_image_returned")]
    assert "violence" in result.failures[0].message


async def test_imagen_all_filtered_is_a_refusal(vertex: Any, upstream: FakeUpstream) -> None:
    upstream.reply("POST", PREDICT_PATH, json={"predictions": [{"raiFilteredReason": "child safety"}]})
    with pytest.raises(SafetyRefusalError, match="child safety"):
        await vertex.run(_request(model="imagen-4.0-generate-001"), CTX)
    await vertex.aclose()


async def test_imagen_edit_with_mask(vertex: Any, serving: FakeUpstream) -> None:
    mask = InputImage(data=make_mask(32, 32), format="png", width=32, height=32, has_alpha=True, source="m.png")
    request = _request(
        model="imagen-3.0-capability-001",
        operation=Operation.EDIT,
        prompt="a hat",
        images=(_image(),),
        mask=mask,
        negative_prompt="blurry",
        n=2,
        options={"mask_dilation": 0.02},
    )
    result = await vertex.run(request, CTX)
    await vertex.aclose()
    (sent,) = serving.requests
    assert sent.path.endswith("/imagen-3.0-capability-001:predict")
    body = sent.json()
    raw, masked = body["instances"][0]["referenceImages"]
    assert raw["referenceType"] == "REFERENCE_TYPE_RAW" and raw["referenceId"] == 1
    assert base64.urlsafe_b64decode(raw["referenceImage"]["bytesBase64Encoded"]) == request.images[0].data
    assert masked["referenceType"] == "REFERENCE_TYPE_MASK"
    assert masked["maskImageConfig"] == {"maskMode": "MASK_MODE_USER_PROVIDED", "dilation": 0.02}
    assert body["parameters"]["editMode"] == "EDIT_MODE_INPAINT_INSERTION"
    assert body["parameters"]["negativePrompt"] == "blurry"
    assert body["parameters"]["sampleCount"] == 2
    assert len(result.images) == 2


async def test_imagen_needs_vertex(developer: Any) -> None:
    spec = next(s for s in developer.catalog() if s.id == "imagen-4.0-generate-001")
    reason = developer.unavailable_reason(spec)
    assert reason and "GOOGLE_GENAI_USE_VERTEXAI" in reason and "Vertex AI" in reason


@pytest.mark.parametrize(
    "reply",
    [
        {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}},
        _gemini_json([], finish="IMAGE_SAFETY"),
        _gemini_json([{"text": "I can't make that."}], finish="IMAGE_PROHIBITED_CONTENT"),
        _gemini_json([], finish="NO_IMAGE"),
        _gemini_json([], finish="IMAGE_RECITATION"),
        _gemini_json([], finish="IMAGE_OTHER"),
        _gemini_json([], finish="SAFETY"),
    ],
    ids=["prompt-block", "image-safety", "prohibited-with-text", "no-image", "recitation", "image-other", "safety"],
)
async def test_safety_outcomes_raise_refusals(developer: Any, upstream: FakeUpstream, reply: dict[str, Any]) -> None:
    upstream.reply("POST", GEMINI_PATH, json=reply)
    with pytest.raises(SafetyRefusalError) as caught:
        await developer.run(_request(), CTX)
    await developer.aclose()
    reason = reply.get("promptFeedback", {}).get("blockReason") or reply["candidates"][0]["finishReason"]
    assert reason in str(caught.value)
    assert not caught.value.retryable


async def test_text_without_image_is_no_image_returned(developer: Any, upstream: FakeUpstream) -> None:
    upstream.reply("POST", GEMINI_PATH, json=_gemini_json([{"text": "Sure! " + "words " * 100}]))
    with pytest.raises(UpstreamProtocolError) as caught:
        await developer.run(_request(), CTX)
    await developer.aclose()
    assert caught.value.code == "no_image_returned"
    assert "Sure!" in str(caught.value) and len(str(caught.value)) < 600


async def test_thought_images_are_not_results(developer: Any, upstream: FakeUpstream) -> None:
    thought = {**_png_part(), "thought": True}
    upstream.reply(
        "POST", GEMINI_PATH, json=_gemini_json([thought, {"text": "thinking", "thought": True}, _png_part()])
    )
    result = await developer.run(_request(), CTX)
    await developer.aclose()
    assert len(result.images) == 1 and result.texts == []


async def test_429_with_retry_after_is_rate_limited_and_not_retried_by_the_sdk(
    developer: Any, upstream: FakeUpstream
) -> None:
    upstream.reply(
        "POST",
        GEMINI_PATH,
        status=429,
        headers={"retry-after": "2"},
        json={"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED"}},
    )
    with pytest.raises(RateLimitedError) as caught:
        await developer.run(_request(), CTX)
    await developer.aclose()
    assert caught.value.retry_after_s == 2.0 and caught.value.retryable
    assert len(upstream.requests) == 1  # one attempt: the core owns retries


async def test_429_retry_info_delay(developer: Any, upstream: FakeUpstream) -> None:
    upstream.reply(
        "POST",
        GEMINI_PATH,
        status=429,
        json={
            "error": {
                "code": 429,
                "message": "quota",
                "status": "RESOURCE_EXHAUSTED",
                "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "31s"}],
            }
        },
    )
    with pytest.raises(RateLimitedError) as caught:
        await developer.run(_request(), CTX)
    await developer.aclose()
    assert caught.value.retry_after_s == 31.0


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_is_unavailable_once(developer: Any, upstream: FakeUpstream, status: int) -> None:
    upstream.reply("POST", GEMINI_PATH, status=status, body="<html>down</html>", content_type="text/html")
    with pytest.raises(UpstreamUnavailableError) as caught:
        await developer.run(_request(), CTX)
    await developer.aclose()
    assert caught.value.retryable and len(upstream.requests) == 1


async def test_hang_ends_at_our_timeout(upstream: FakeUpstream) -> None:
    provider = make_provider(upstream, timeout_s=0.3)
    upstream.reply("POST", GEMINI_PATH, hang=True)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeoutError) as caught:
        await provider.run(_request(), CTX)
    await provider.aclose()
    assert time.monotonic() - started < 3
    assert not caught.value.retryable and len(upstream.requests) == 1


async def test_connection_reset_is_unavailable(developer: Any, upstream: FakeUpstream) -> None:
    upstream.reply("POST", GEMINI_PATH, reset=True)
    with pytest.raises(UpstreamUnavailableError):
        await developer.run(_request(), CTX)
    await developer.aclose()


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"body": "<html>gateway</html>", "content_type": "text/html"}, "upstream_protocol_error"),
        (
            {
                "json": {
                    "candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": "!!"}}]}}]
                }
            },
            "upstream_protocol_error",
        ),
        ({"json": {"candidates": []}}, "no_image_returned"),
        ({"json": {}}, "no_image_returned"),
    ],
    ids=["html", "bad-base64", "empty-candidates", "empty-object"],
)
async def test_malformed_answers(developer: Any, upstream: FakeUpstream, kwargs: dict[str, Any], code: str) -> None:
    upstream.reply("POST", GEMINI_PATH, **kwargs)
    with pytest.raises(UpstreamProtocolError) as caught:
        await developer.run(_request(), CTX)
    await developer.aclose()
    assert caught.value.code == code


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (401, AuthenticationError, "authentication_failed"),
        (403, AuthenticationError, "authentication_failed"),
        (404, UpstreamError, "model_not_found"),
        (400, UpstreamError, "upstream_rejected"),
    ],
)
async def test_client_errors(developer: Any, upstream: FakeUpstream, status: int, kind: type, code: str) -> None:
    upstream.reply(
        "POST", GEMINI_PATH, status=status, json={"error": {"code": status, "message": f"nope {status}", "status": "X"}}
    )
    with pytest.raises(kind) as caught:
        await developer.run(_request(), CTX)
    await developer.aclose()
    assert caught.value.code == code and not caught.value.retryable
    assert f"nope {status}" in str(caught.value)
    if status in (401, 403):
        assert "GOOGLE_API_KEY" in str(caught.value) and KEY not in str(caught.value)


async def test_invalid_key_400_is_authentication(developer: Any, upstream: FakeUpstream) -> None:
    upstream.reply(
        "POST",
        GEMINI_PATH,
        status=400,
        json={
            "error": {
                "code": 400,
                "message": "API key not valid. Please pass a valid API key.",
                "status": "INVALID_ARGUMENT",
                "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
            }
        },
    )
    with pytest.raises(AuthenticationError):
        await developer.run(_request(), CTX)
    await developer.aclose()


async def test_imagen_404_points_to_gemini_models(vertex: Any, upstream: FakeUpstream) -> None:
    upstream.reply(
        "POST",
        PREDICT_PATH,
        status=404,
        json={"error": {"code": 404, "message": "model not found", "status": "NOT_FOUND"}},
    )
    with pytest.raises(UpstreamError) as caught:
        await vertex.run(_request(model="imagen-4.0-ultra-generate-001"), CTX)
    await vertex.aclose()
    assert "gemini/gemini-3.1-flash-image" in str(caught.value)


async def test_connection_refused_is_unavailable(upstream: FakeUpstream) -> None:
    provider = make_provider(upstream, base_url="http://127.0.0.1:1")
    with pytest.raises(UpstreamUnavailableError):
        await provider.run(_request(), CTX)
    await provider.aclose()
