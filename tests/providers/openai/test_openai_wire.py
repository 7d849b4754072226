"""The real openai SDK against a fake OpenAI Images server on 127.0.0.1.

Every assertion is on what reached the "vendor" (the fake's request log) or on what the
provider made of the vendor's answer.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from openai_support import (
    EDIT,
    GEN,
    KEY,
    Recorder,
    RegistryFactory,
    b64,
    images_json,
    input_image,
    png_bytes,
    validated,
)

from atelier_core import Operation, ProviderResult
from atelier_core.engine.registry import ModelEntry
from atelier_core.testing import FakeUpstream
from atelier_openai.models import CATALOGUE

IDS = [spec.id for spec in CATALOGUE]

# Asking for anyio_backend up front keeps anyio from re-creating (and un-parametrizing)
# the async test items after collection.
pytestmark = pytest.mark.usefixtures("anyio_backend")


async def run(
    entry: ModelEntry,
    operation: Operation = Operation.GENERATE,
    *,
    ctx: Recorder | None = None,
    images: tuple[Any, ...] = (),
    mask: Any = None,
    **call: Any,
) -> ProviderResult:
    request = validated(entry, operation, images, mask, **call).request
    recorder = ctx or Recorder()
    try:
        return await entry.provider.run(request, recorder.ctx)
    finally:
        await entry.provider.aclose()


@pytest.mark.parametrize("model_id", IDS)
async def test_generate_every_parameter_reaches_the_wire(
    model_id: str, upstream: FakeUpstream, make_registry: RegistryFactory
) -> None:
    upstream.reply(
        "POST",
        GEN,
        json=images_json(2, size="1536x1024", quality="high", background="opaque", output_format="jpeg"),
        headers={"x-request-id": "req_gen_1"},
    )
    entry = make_registry(organization="org-1", project="proj-1").resolve(f"openai/{model_id}")
    spec = entry.spec
    options: dict[str, Any] = {"moderation": "low", "safety_identifier": "u-1"}
    if "complexity" in spec.describe_options():
        options["complexity"] = "high"
    size = "1280x720" if spec.sizes.custom else "1536x1024"
    result = await run(
        entry,
        n=2,
        size=size,
        quality="high",
        output_format="jpeg",
        output_compression=55,
        background="opaque",
        options=options,
    )
    [sent] = upstream.requests
    assert sent.path == GEN
    body = sent.json()
    expected = {
        "model": model_id,
        "prompt": "a lighthouse at dusk",
        "n": 2,
        "size": size,
        "quality": "high",
        "output_format": "jpeg",
        "output_compression": 55,
        "background": "opaque",
        **options,
    }
    assert body == expected
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["openai-organization"] == "org-1" and sent.headers["openai-project"] == "proj-1"
    assert sent.headers["x-stainless-retry-count"] == "0"
    assert len(result.images) == 2 and result.images[0].mime_type == "image/png"
    assert result.request_id == "req_gen_1"
    assert result.usage is not None and result.usage.input_text_tokens == 40 and result.usage.images == 2
    assert result.applied == {"size": "1536x1024", "quality": "high", "background": "opaque", "output_format": "jpeg"}


@pytest.mark.parametrize("model_id", IDS)
async def test_multipart_edit_with_several_images_and_a_mask(
    model_id: str, upstream: FakeUpstream, make_registry: RegistryFactory
) -> None:
    upstream.reply("POST", EDIT, json=images_json(1), headers={"x-request-id": "req_edit"})
    entry = make_registry().resolve(f"openai/{model_id}")
    images = tuple(input_image(16, 16, source=f"/in/p{i}.png") for i in range(3))
    mask = input_image(16, 16, alpha=True, source="/in/mask.png")
    options: dict[str, Any] = {}
    if "input_fidelity" in entry.spec.describe_options():
        options["input_fidelity"] = "low"
    result = await run(
        entry, Operation.EDIT, images=images, mask=mask, n=1, quality="medium", background="auto", options=options
    )
    [sent] = upstream.requests
    assert sent.path == EDIT and sent.headers["content-type"].startswith("multipart/form-data")
    form = sent.form()
    assert [part[0] for part in form["image[]"]] == ["0-p0.png", "1-p1.png", "2-p2.png"]
    assert [part[2] for part in form["image[]"]] == [image.data for image in images]
    assert form["mask"] == [("mask.png", "image/png", mask.data)]
    assert form["model"] == [model_id] and form["prompt"] == ["a lighthouse at dusk"]
    assert form["n"] == ["1"] and form["quality"] == ["medium"] and form["background"] == ["auto"]
    assert form["size"] == ["auto"] and form["output_format"] == ["png"]
    assert "moderation" not in form
    if options:
        assert form["input_fidelity"] == ["low"]
    else:
        assert "input_fidelity" not in form
    assert result.request_id == "req_edit" and len(result.images) == 1


async def test_markup_edit_on_the_wire(upstream: FakeUpstream, make_registry: RegistryFactory) -> None:
    upstream.reply("POST", EDIT, json=images_json(1))
    entry = make_registry().resolve("gpt-image-2.5-sunburst")
    base, overlay = input_image(16, 16), input_image(16, 16, alpha=True, source="marks.png")
    await run(entry, Operation.EDIT, images=(base, overlay), options={"markup": True})
    form = upstream.requests[0].form()
    assert form["image"] == [("0-a.png", "image/png", base.data)]
    assert form["markup"] == [("markup.png", "image/png", overlay.data)]
    assert "mask" not in form


async def test_gif_and_svg_reach_the_wire(upstream: FakeUpstream, make_registry: RegistryFactory) -> None:
    import io

    from PIL import Image

    buf = io.BytesIO()
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100)
    upstream.reply("POST", GEN, json={"created": 1, "data": [{"b64_json": b64(buf.getvalue())}]})
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 8 8"><rect width="8" height="8"/></svg>'
    upstream.reply(
        "POST",
        GEN,
        json={
            "created": 1,
            "data": [{"b64_json": b64(svg)}],
            "svg_usage": {
                "input_tokens": 1,
                "model": "gpt-5",
                "output_tokens": 2,
                "reasoning_tokens": 3,
                "total_tokens": 6,
            },
        },
    )
    entry = make_registry(partial_images=2, svg_output=True).resolve("gpt-image-2.6-flare")
    gif = await run(entry, output_format="gif", options={"frame_count": 2, "frame_duration_ms": 100})
    svg_result = await run(entry, output_format="svg", options={"svg_model": "gpt-5"})
    gif_body, svg_body = (r.json() for r in upstream.requests)
    assert gif_body["output_format"] == "gif" and gif_body["frame_count"] == 2 and "stream" not in gif_body
    assert svg_body["svg"] == {"model": "gpt-5"}
    assert gif.images[0].mime_type == "image/gif"
    assert svg_result.images[0].mime_type == "image/svg+xml" and "gpt-5" in svg_result.texts[0]


# -- streaming ----------------------------------------------------------------------


def _partial(index: int, data: bytes, kind: str = "image_generation") -> dict[str, Any]:
    return {
        "type": f"{kind}.partial_image",
        "b64_json": b64(data),
        "partial_image_index": index,
        "background": "opaque",
        "created_at": 1,
        "output_format": "png",
        "quality": "low",
        "size": "1024x1024",
    }


def _completed(data: bytes, kind: str = "image_generation") -> dict[str, Any]:
    return {
        "type": f"{kind}.completed",
        "b64_json": b64(data),
        "background": "opaque",
        "created_at": 1,
        "output_format": "png",
        "quality": "low",
        "size": "1024x1024",
        "usage": {
            "input_tokens": 5,
            "output_tokens": 200,
            "total_tokens": 205,
            "input_tokens_details": {"text_tokens": 5, "image_tokens": 0},
        },
    }


@pytest.mark.parametrize(
    ("operation", "kind", "path"), [(Operation.GENERATE, "image_generation", GEN), (Operation.EDIT, "image_edit", EDIT)]
)
async def test_streaming_partials_become_progress_and_the_final_is_the_full_image(
    operation: Operation, kind: str, path: str, upstream: FakeUpstream, make_registry: RegistryFactory
) -> None:
    first, second, final = png_bytes(colour="blue"), png_bytes(colour="green"), png_bytes(16, 16)
    upstream.reply(
        "POST",
        path,
        sse=[_partial(0, first, kind), _partial(1, second, kind), _completed(final, kind)],
        headers={"x-request-id": "req_stream"},
    )
    entry = make_registry().resolve("gpt-image-2")
    recorder = Recorder()
    images = (input_image(),) if operation is Operation.EDIT else ()
    result = await run(entry, operation, ctx=recorder, images=images, options={"partial_images": 2})
    sent = upstream.requests[0]
    if operation is Operation.EDIT:
        assert sent.form()["stream"] == ["true"] and sent.form()["partial_images"] == ["2"]
    else:
        assert sent.json()["stream"] is True and sent.json()["partial_images"] == 2
    assert recorder.partials == [(0, first), (1, second)]
    assert [round(p[0], 2) for p in recorder.progress] == [0.33, 0.67, 1.0]
    assert [image.data for image in result.images] == [final]  # partials are never finals
    assert result.request_id == "req_stream"
    assert result.usage is not None and result.usage.output_tokens == 200
    assert result.applied["size"] == "1024x1024"


async def test_stream_without_completed_event_is_an_error(
    upstream: FakeUpstream, make_registry: RegistryFactory
) -> None:
    from atelier_core import UpstreamProtocolError

    upstream.reply("POST", GEN, sse=[_partial(0, png_bytes())])
    recorder = Recorder()
    with pytest.raises(UpstreamProtocolError, match="without the final image"):
        await run(make_registry().resolve("gpt-image-2"), ctx=recorder, options={"partial_images": 1})
    assert len(recorder.partials) == 1  # previews were shown, but nothing became a result


async def test_stream_error_event_is_mapped(upstream: FakeUpstream, make_registry: RegistryFactory) -> None:
    from atelier_core import SafetyRefusalError

    upstream.reply(
        "POST",
        GEN,
        sse=[
            {
                "type": "error",
                "error": {
                    "code": "moderation_blocked",
                    "message": "Your request was rejected by the safety system.",
                    "type": "image_generation_user_error",
                },
            }
        ],
        headers={"x-request-id": "req_sse"},
    )
    with pytest.raises(SafetyRefusalError, match="safety system") as caught:
        await run(make_registry().resolve("gpt-image-2"), options={"partial_images": 1})
    assert caught.value.request_id == "req_sse" and not caught.value.retryable


async def test_settings_default_turns_streaming_on(upstream: FakeUpstream, make_registry: RegistryFactory) -> None:
    upstream.reply("POST", GEN, sse=[_completed(png_bytes())])
    result = await run(make_registry(partial_images=1).resolve("gpt-image-1.5"))
    assert upstream.requests[0].json()["partial_images"] == 1 and len(result.images) == 1


# -- configuration: gateways, Azure, env ------------------------------------------------


async def test_gateway_base_url_and_model_names(upstream: FakeUpstream, make_registry: RegistryFactory) -> None:
    upstream.reply("POST", "/litellm/v1/images/generations", json=images_json(1))
    registry = make_registry(base_url=upstream.url + "/litellm/v1", model_names={"gpt-image-2": "openai/gpt-image-2"})
    await run(registry.resolve("gpt-image-2"))
    sent = upstream.requests[0]
    assert sent.path == "/litellm/v1/images/generations" and sent.json()["model"] == "openai/gpt-image-2"


@pytest.mark.parametrize("operation", [Operation.GENERATE, Operation.EDIT])
async def test_azure_mode(operation: Operation, upstream: FakeUpstream, make_registry: RegistryFactory) -> None:
    suffix = "generations" if operation is Operation.GENERATE else "edits"
    upstream.reply("POST", f"/openai/deployments/img-prod/images/{suffix}", json=images_json(1))
    registry = make_registry(
        base_url=None,
        azure=True,
        azure_endpoint=upstream.url,
        azure_api_version="2025-04-01-preview",
        model_names={"gpt-image-1.5": "img-prod"},
    )
    entry = registry.resolve("gpt-image-1.5")
    assert entry.unavailable_reason() is None
    images = (input_image(),) if operation is Operation.EDIT else ()
    await run(entry, operation, images=images)
    sent = upstream.requests[0]
    assert sent.path == f"/openai/deployments/img-prod/images/{suffix}"
    assert sent.query == {"api-version": ["2025-04-01-preview"]}
    assert sent.headers["api-key"] == KEY and "authorization" not in sent.headers


async def test_azure_missing_deployment_names_the_setting(
    upstream: FakeUpstream, make_registry: RegistryFactory
) -> None:
    from atelier_core import ConfigurationError

    upstream.reply(
        "POST",
        "^/openai/deployments/.*",
        status=404,
        json={"error": {"code": "DeploymentNotFound", "message": "The API deployment does not exist."}},
    )
    registry = make_registry(
        base_url=None, azure=True, azure_endpoint=upstream.url, azure_api_version="2025-04-01-preview"
    )
    with pytest.raises(ConfigurationError, match="model_names"):
        await run(registry.resolve("gpt-image-2"))


def test_azure_mode_availability_names_missing_variables(make_registry: RegistryFactory) -> None:
    entry = make_registry(base_url=None, azure=True).resolve("gpt-image-2")
    reason = entry.unavailable_reason()
    assert reason is not None and "AZURE_OPENAI_ENDPOINT" in reason and "OPENAI_API_VERSION" in reason


async def test_vendor_environment_variables_are_honoured(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    import atelier_openai
    from atelier_core.engine.registry import build_registry

    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-123456")
    monkeypatch.setenv("OPENAI_BASE_URL", upstream.url + "/v1")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-env")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-env")
    monkeypatch.setenv("ATELIER_PROVIDERS__OPENAI__TIMEOUT_S", "3")
    monkeypatch.setenv("API_KEY", "generic-not-ours")  # a bare API_KEY must never be taken
    upstream.reply("POST", GEN, json=images_json(1))
    registry = build_registry(plugins=[("openai", atelier_openai)], entry_points=False)
    entry = registry.resolve("gpt-image-2")
    assert entry.unavailable_reason() is None
    assert entry.provider.settings.timeout_s == 3.0
    await run(entry)
    headers = upstream.requests[0].headers
    assert headers["authorization"] == "Bearer sk-from-env-123456"
    assert headers["openai-organization"] == "org-env" and headers["openai-project"] == "proj-env"


async def test_client_is_created_lazily_reused_and_closed(
    upstream: FakeUpstream, make_registry: RegistryFactory
) -> None:
    upstream.handle(
        "POST", GEN, lambda _r: __import__("atelier_core.testing", fromlist=["Reply"]).Reply(json=images_json(1))
    )
    entry = make_registry().resolve("gpt-image-2")
    provider: Any = entry.provider
    assert provider._client is None
    request = validated(entry).request
    await provider.run(request, Recorder().ctx)
    client = provider._client
    await provider.run(request, Recorder().ctx)
    assert provider._client is client and client.max_retries == 0
    await provider.aclose()
    assert provider._client is None and client.is_closed()


async def test_concurrent_calls_share_one_client(upstream: FakeUpstream, make_registry: RegistryFactory) -> None:
    from atelier_core.testing import Reply

    upstream.handle("POST", GEN, lambda _r: Reply(json=images_json(1), delay=0.05))
    entry = make_registry().resolve("gpt-image-2")
    request = validated(entry).request
    results = await asyncio.gather(*(entry.provider.run(request, Recorder().ctx) for _ in range(3)))
    await entry.provider.aclose()
    assert all(len(r.images) == 1 for r in results) and len(upstream.requests) == 3
    assert json.loads(upstream.requests[0].body)["model"] == "gpt-image-2"
