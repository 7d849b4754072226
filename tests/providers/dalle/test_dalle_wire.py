"""The real openai SDK against a fake DALL·E-style server on 127.0.0.1 (through base_url).

Assertions are on what reached the "vendor" (the fake's request log) and on what the
provider made of its answer.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable
from typing import Any

import pytest
from dalle_support import ImagesServer, fetching_context, fields
from PIL import Image

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
from atelier_core.engine.registry import ModelEntry
from atelier_core.engine.validation import validate_call
from atelier_core.plugin.types import ImageCall
from atelier_core.testing import FakeUpstream, make_image, make_mask, read_image
from atelier_dalle import DalleProvider

GEN = "/v1/images/generations"
Factory = Callable[..., DalleProvider]


def _request(
    provider: DalleProvider,
    model: str,
    operation: Operation = Operation.GENERATE,
    images: list[InputImage] | None = None,
    mask: InputImage | None = None,
    **call: Any,
) -> ImageRequest:
    spec = next(s for s in provider.catalog() if s.id == model)
    entry = ModelEntry(f"dalle/{model}", spec, provider, "dalle")
    return validate_call(ImageCall(model=model, **call), entry, operation, images or [], mask).request


def _ctx(timeout_s: float = 5.0) -> CallContext:
    return CallContext(timeout_s=timeout_s)


def _input(size: int = 64, fmt: str = "png", alpha: bool = False) -> InputImage:
    return InputImage(
        data=make_image(size, size, fmt, alpha=alpha),
        format=fmt,
        width=size,
        height=size,
        has_alpha=alpha,
        source=f"photo.{fmt}",
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- parameter mappings on the wire ---------------------------------------------------


async def test_dall_e_3_generate_on_the_wire(server: ImagesServer, provider_for: Factory) -> None:
    server.revised = "A photorealistic red fox in fresh snow"
    provider = provider_for()
    request = _request(provider, "dall-e-3", prompt="a fox", size="1792x1024", quality="hd", style="natural")
    result = await provider.run(request, _ctx())
    (sent,) = server.up.requests
    assert sent.path == GEN
    assert sent.json() == {
        "model": "dall-e-3",
        "prompt": "a fox",
        "n": 1,
        "size": "1792x1024",
        "quality": "hd",
        "style": "natural",
        "response_format": "b64_json",
    }
    assert sent.headers["authorization"] == "Bearer sk-test-dalle"
    assert sent.headers.get("x-stainless-retry-count") == "0"
    (image,) = result.images
    assert read_image(image.data).size == "1792x1024" and image.mime_type == "image/png"
    assert image.revised_prompt == "A photorealistic red fox in fresh snow"
    assert result.request_id == "req_fake" and result.usage is not None and result.usage.images == 1
    await provider.aclose()


async def test_dall_e_2_generate_n_on_the_wire(server: ImagesServer, provider_for: Factory) -> None:
    provider = provider_for()
    result = await provider.run(_request(provider, "dall-e-2", prompt="a fox", size="256x256", n=3), _ctx())
    assert server.up.requests[0].json() == {
        "model": "dall-e-2",
        "prompt": "a fox",
        "n": 3,
        "size": "256x256",
        "response_format": "b64_json",
    }
    assert [read_image(i.data).size for i in result.images] == ["256x256"] * 3 and not result.failures
    await provider.aclose()


async def test_url_answers_are_downloaded_from_the_api_host(server: ImagesServer, provider_for: Factory) -> None:
    provider = provider_for(response_format="url")
    request = _request(provider, "dall-e-2", prompt="a fox", size="512x512", n=2)
    result = await provider.run(request, fetching_context(server.up))
    assert server.up.requests[0].json()["response_format"] == "url"
    assert sorted(r.path for r in server.up.requests_to("^/files/")) == ["/files/0.png", "/files/1.png"]
    assert [read_image(i.data).size for i in result.images] == ["512x512", "512x512"]
    await provider.aclose()


async def test_url_on_a_foreign_host_is_not_downloaded(upstream: FakeUpstream, provider_for: Factory) -> None:
    upstream.reply("POST", GEN, json={"data": [{"url": "http://169.254.169.254/latest/meta-data"}]})
    provider = provider_for()
    with pytest.raises(UpstreamError, match="not allowed") as caught:
        await provider.run(_request(provider, "dall-e-2", prompt="p"), fetching_context(upstream))
    assert caught.value.code == "url_not_allowed" and "download_hosts" in str(caught.value)
    await provider.aclose()


async def test_edit_with_mask_is_multipart_with_rgba_png(server: ImagesServer, provider_for: Factory) -> None:
    provider = provider_for()
    image = _input(64, "jpeg")
    mask = InputImage(data=make_mask(64, 64), format="png", width=64, height=64, has_alpha=True, source="m.png")
    request = _request(provider, "dall-e-2", Operation.EDIT, [image], mask, prompt="add a hat", n=2, size="256x256")
    result = await provider.run(request, _ctx())
    (sent,) = server.up.requests
    assert sent.path == "/v1/images/edits" and sent.headers["content-type"].startswith("multipart/form-data")
    form = fields(sent)
    assert {k: form[k] for k in ("model", "prompt", "n", "size", "response_format")} == {
        "model": "dall-e-2",
        "prompt": "add a hat",
        "n": "2",
        "size": "256x256",
        "response_format": "b64_json",
    }
    name, ctype, data = form["image"]
    assert (name, ctype) == ("image.png", "image/png")
    with Image.open(io.BytesIO(data)) as uploaded:
        assert (uploaded.format, uploaded.mode, uploaded.size) == ("PNG", "RGBA", (64, 64))
    assert form["mask"] == ("mask.png", "image/png", mask.data)
    assert len(result.images) == 2
    await provider.aclose()


async def test_variation_is_multipart_without_prompt(server: ImagesServer, provider_for: Factory) -> None:
    provider = provider_for()
    image = _input(64, "png")
    request = _request(provider, "dall-e-2", Operation.VARIATION, [image], None, n=2, size="256x256")
    result = await provider.run(request, _ctx())
    (sent,) = server.up.requests
    assert sent.path == "/v1/images/variations"
    form = fields(sent)
    assert "prompt" not in form and form["n"] == "2" and form["size"] == "256x256"
    assert form["image"] == ("image.png", "image/png", image.data)  # compliant PNG: sent unchanged
    assert len(result.images) == 2
    await provider.aclose()


async def test_configured_extra_model_on_the_wire(server: ImagesServer, provider_for: Factory) -> None:
    provider = provider_for(
        models={
            "sd": {
                "upstream_model": "stablediffusion",
                "sizes": ["512x512"],
                "n_max": 2,
                "response_format": "url",
                "extra_body": {"step": 25},
                "operations": "generate edit",
                "qualities": ["fast", "fine"],
                "default_quality": "fast",
            }
        }
    )
    result = await provider.run(_request(provider, "sd", prompt="a fox", n=2), fetching_context(server.up))
    body = server.up.requests[0].json()
    assert body == {
        "model": "stablediffusion",
        "prompt": "a fox",
        "n": 2,
        "size": "512x512",
        "response_format": "url",
        "quality": "fast",
        "step": 25,
    }
    assert len(result.images) == 2 and result.applied == {"upstream_model": "stablediffusion"}
    edit = _request(provider, "sd", Operation.EDIT, [_input(64)], None, prompt="hat", quality="fine")
    await provider.run(edit, fetching_context(server.up))
    form = fields(server.up.requests_to("/edits$")[0])
    assert (form["model"], form["step"], form["quality"]) == ("stablediffusion", "25", "fine")
    await provider.aclose()


async def test_keyless_server_gets_no_authorization_header(server: ImagesServer, provider_for: Factory) -> None:
    provider = provider_for(api_key=None, needs_key=False)
    assert provider.unavailable_reason(provider.catalog()[0]) is None
    await provider.run(_request(provider, "dall-e-3", prompt="p"), _ctx())
    assert "authorization" not in server.up.requests[0].headers
    await provider.aclose()


async def test_azure_deployment_paths_and_key(server: ImagesServer, provider_for: Factory) -> None:
    provider = provider_for(
        base_url=None,
        api_key=None,
        azure_endpoint=server.up.url,
        azure_api_key="az-secret",
        azure_api_version="2024-02-01",
        deployments={"dall-e-3": "dalle3-prod"},
    )
    result = await provider.run(_request(provider, "dall-e-3", prompt="p"), _ctx())
    (sent,) = server.up.requests
    assert sent.path == "/openai/deployments/dalle3-prod/images/generations"
    assert sent.query == {"api-version": ["2024-02-01"]}
    assert sent.headers["api-key"] == "az-secret" and "authorization" not in sent.headers
    assert sent.json()["model"] == "dalle3-prod" and len(result.images) == 1
    await provider.aclose()


# -- errors --------------------------------------------------------------------------


async def test_model_the_server_does_not_serve(upstream: FakeUpstream, provider_for: Factory) -> None:
    upstream.reply(
        "POST",
        GEN,
        status=404,
        json={
            "error": {
                "code": "model_not_found",
                "message": "The model `dall-e-3` does not exist or you do not have access to it.",
                "type": "invalid_request_error",
            }
        },
    )
    provider = provider_for()
    with pytest.raises(UpstreamError) as caught:
        await provider.run(_request(provider, "dall-e-3", prompt="p"), _ctx())
    assert caught.value.code == "model_not_found" and not caught.value.retryable
    assert f"the server at {upstream.url}/v1 does not serve model 'dall-e-3'" in str(caught.value)
    assert "[providers.dalle.models]" in str(caught.value)
    await provider.aclose()


async def test_rate_limit_with_retry_after_is_retryable(upstream: FakeUpstream, provider_for: Factory) -> None:
    upstream.reply(
        "POST",
        GEN,
        status=429,
        json={"error": {"code": "rate_limit_exceeded", "message": "slow down"}},
        headers={"retry-after": "3"},
    )
    provider = provider_for()
    with pytest.raises(RateLimitedError) as caught:
        await provider.run(_request(provider, "dall-e-2", prompt="p"), _ctx())
    assert caught.value.retryable and caught.value.retry_after_s == 3.0 and "slow down" in str(caught.value)
    assert len(upstream.requests) == 1  # the SDK does not retry: the core owns retries
    await provider.aclose()


async def test_server_error_is_unavailable_and_not_retried_by_the_sdk(
    upstream: FakeUpstream, provider_for: Factory
) -> None:
    upstream.reply("POST", GEN, status=500, json={"error": {"message": "boom"}})
    provider = provider_for()
    with pytest.raises(UpstreamUnavailableError, match="boom") as caught:
        await provider.run(_request(provider, "dall-e-2", prompt="p"), _ctx())
    assert caught.value.retryable and len(upstream.requests) == 1
    await provider.aclose()


async def test_hang_ends_at_our_timeout_and_is_not_retryable(upstream: FakeUpstream, provider_for: Factory) -> None:
    upstream.reply("POST", GEN, hang=True)
    provider = provider_for(timeout_s=0.4)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeoutError, match="may still have been generated and billed") as caught:
        await provider.run(_request(provider, "dall-e-2", prompt="p"), _ctx())
    assert time.monotonic() - started < 3 and not caught.value.retryable
    assert len(upstream.requests) == 1
    await provider.aclose()


async def test_connection_refused_is_unavailable(provider_for: Factory) -> None:
    provider = provider_for(base_url="http://user:url-secret@127.0.0.1:1/v1?token=q-secret")
    with pytest.raises(UpstreamUnavailableError, match=r"could not reach http://127\.0\.0\.1:1/v1 ") as caught:
        await provider.run(_request(provider, "dall-e-2", prompt="p"), _ctx())
    assert caught.value.retryable and "secret" not in str(caught.value.to_dict())
    await provider.aclose()


async def test_bad_key_names_the_variable(upstream: FakeUpstream, provider_for: Factory) -> None:
    upstream.reply("POST", GEN, status=401, json={"error": {"code": "invalid_api_key", "message": "Incorrect API key"}})
    provider = provider_for()
    with pytest.raises(AuthenticationError) as caught:
        await provider.run(_request(provider, "dall-e-2", prompt="p"), _ctx())
    text = str(caught.value)
    assert "ATELIER_PROVIDERS__DALLE__API_KEY" in text and "sk-test-dalle" not in text
    await provider.aclose()


async def test_safety_refusal_quotes_the_reason(upstream: FakeUpstream, provider_for: Factory) -> None:
    upstream.reply(
        "POST",
        GEN,
        status=400,
        json={
            "error": {
                "code": "content_policy_violation",
                "type": "invalid_request_error",
                "message": "Your request was rejected as a result of our safety system.",
            }
        },
    )
    provider = provider_for()
    with pytest.raises(SafetyRefusalError, match="rejected as a result of our safety system") as caught:
        await provider.run(_request(provider, "dall-e-3", prompt="p"), _ctx())
    assert not caught.value.retryable
    await provider.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answer", "match"),
    [
        ({"body": "<html>Bad Gateway</html>", "content_type": "text/html"}, "not JSON"),
        ({"json": {"data": [{"b64_json": _b64(make_image(8, 8))[:-3]}]}}, "bad base64"),
        ({"json": {"data": []}}, "no image"),
        ({"json": {"data": [{"b64_json": "x" * 40}]}, "truncate_to": 20}, "cut off"),
    ],
)
async def test_malformed_answers_are_protocol_errors(
    upstream: FakeUpstream, provider_for: Factory, answer: dict[str, Any], match: str
) -> None:
    upstream.reply("POST", GEN, **answer)
    provider = provider_for()
    with pytest.raises(UpstreamProtocolError, match=match) as caught:
        await provider.run(_request(provider, "dall-e-2", prompt="p"), _ctx())
    assert not caught.value.retryable
    await provider.aclose()


async def test_partial_success_reports_each_missing_image(upstream: FakeUpstream, provider_for: Factory) -> None:
    good = _b64(make_image(256, 256))
    upstream.reply("POST", GEN, json={"data": [{"b64_json": good}, {"b64_json": "!!"}, {"b64_json": good}]})
    provider = provider_for()
    result = await provider.run(_request(provider, "dall-e-2", prompt="p", size="256x256", n=4), _ctx())
    assert len(result.images) == 2
    assert [(f.index, f.code) for f in result.failures] == [(1, "invalid_image_data"), (3, "no_image_returned")]
    await provider.aclose()


async def test_one_client_is_reused_across_calls_and_closed_by_aclose(
    server: ImagesServer, provider_for: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import openai

    made: list[openai.AsyncOpenAI] = []

    class Counting(openai.AsyncOpenAI):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            made.append(self)

    monkeypatch.setattr(openai, "AsyncOpenAI", Counting)
    provider = provider_for()
    for _ in range(3):
        result = await provider.run(_request(provider, "dall-e-2", prompt="a fox", size="256x256"), _ctx())
        assert len(result.images) == 1
    assert len(server.up.requests) == 3 and len(made) == 1
    await provider.aclose()
    assert made[0].is_closed()
    # Reconfigured (a new server): a new client for the new configuration.
    provider.configure(type(provider.settings)(**{**provider.settings.model_dump(), "timeout_s": 7}))
    await provider.run(_request(provider, "dall-e-2", prompt="a fox", size="256x256"), _ctx())
    assert len(made) == 2
    await provider.aclose()
