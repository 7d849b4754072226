"""Pure translation: requests → SDK kwargs, answers → results, for every model."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from openai_support import KEY, b64, input_image, png_bytes, validated

import atelier_openai
from atelier_core import ImageRequest, Operation, UpstreamProtocolError
from atelier_core.engine.registry import ModelEntry, build_registry
from atelier_core.settings import Settings
from atelier_openai import translate
from atelier_openai.models import CATALOGUE
from atelier_openai.settings import OpenAISettings

IDS = [spec.id for spec in CATALOGUE]


def _entry(model_id: str, **settings: Any) -> ModelEntry:
    registry = build_registry(
        Settings(providers={"openai": {"api_key": KEY, **settings}}),
        plugins=[("openai", atelier_openai)],
        entry_points=False,
    )
    return registry.resolve(f"openai/{model_id}")


def _conf(**values: Any) -> OpenAISettings:
    return OpenAISettings(_env_prefix="ATELIER_PROVIDERS__OPENAI__", api_key=KEY, **values)


def _richest_generate(model_id: str) -> dict[str, Any]:
    spec = _entry(model_id).spec
    call: dict[str, Any] = {
        "n": 3,
        "quality": spec.qualities[-2],  # the best named tier (before "auto")
        "output_format": "webp",
        "output_compression": 40,
        "background": "transparent" if "transparent" in spec.backgrounds else "opaque",
        "size": "2048x1152" if spec.sizes.custom else "1536x1024",
        "options": {"moderation": "low", "safety_identifier": "user-hash"},
    }
    assert spec.options is not None
    if "complexity" in spec.options.model_fields:
        call["options"]["complexity"] = "medium"
    return call


@pytest.mark.parametrize("model_id", IDS)
def test_generate_kwargs_map_every_parameter(model_id: str) -> None:
    call = _richest_generate(model_id)
    request = validated(_entry(model_id), **call).request
    kwargs = translate.generate_kwargs(request, _conf())
    expected = {
        "model": model_id,
        "prompt": "a lighthouse at dusk",
        "n": 3,
        "size": call["size"],
        "quality": call["quality"],
        "output_format": "webp",
        "output_compression": 40,
        "background": call["background"],
        "moderation": "low",
        "safety_identifier": "user-hash",
    }
    if "complexity" in call["options"]:
        expected["complexity"] = "medium"
    assert kwargs == expected


@pytest.mark.parametrize("model_id", IDS)
def test_generate_defaults_are_explicit_auto_and_png(model_id: str) -> None:
    request = validated(_entry(model_id)).request
    assert translate.generate_kwargs(request, _conf()) == {
        "model": model_id,
        "prompt": "a lighthouse at dusk",
        "n": 1,
        "size": "auto",
        "output_format": "png",
    }


@pytest.mark.parametrize("model_id", IDS)
def test_streaming_kwargs(model_id: str) -> None:
    request = validated(_entry(model_id), options={"partial_images": 2}).request
    partials = translate.partials_for(request, _conf())
    kwargs = translate.generate_kwargs(request, _conf(), partials)
    assert kwargs["stream"] is True and kwargs["partial_images"] == 2
    # the settings default applies when the call does not say
    plain = validated(_entry(model_id)).request
    assert translate.partials_for(plain, _conf(partial_images=1)) == 1
    assert translate.partials_for(plain, _conf()) == 0


@pytest.mark.parametrize("model_id", IDS)
def test_edit_kwargs_multipart_files(model_id: str) -> None:
    images = (input_image(source="/in/cat.png"), input_image(source="/in/hat.png"))
    mask = input_image(alpha=True, source="/in/m.png")
    request = validated(_entry(model_id), Operation.EDIT, images, mask, n=2, quality="low").request
    kwargs = translate.edit_kwargs(request, _conf())
    assert kwargs["image"] == [("0-cat.png", images[0].data, "image/png"), ("1-hat.png", images[1].data, "image/png")]
    assert kwargs["mask"] == ("mask.png", mask.data, "image/png")
    assert "moderation" not in kwargs  # the edits endpoint has no moderation parameter
    assert kwargs["n"] == 2 and kwargs["quality"] == "low" and kwargs["model"] == model_id


def test_edit_single_image_is_a_plain_file() -> None:
    image = input_image(source="photo.png")
    request = validated(_entry("gpt-image-2"), Operation.EDIT, (image,)).request
    assert translate.edit_kwargs(request, _conf())["image"] == ("0-photo.png", image.data, "image/png")


@pytest.mark.parametrize("model_id", ["gpt-image-1.5", "gpt-image-1-mini"])
def test_input_fidelity_goes_to_edits(model_id: str) -> None:
    request = validated(_entry(model_id), Operation.EDIT, (input_image(),), options={"input_fidelity": "low"}).request
    assert translate.edit_kwargs(request, _conf())["input_fidelity"] == "low"


@pytest.mark.parametrize("model_id", [m for m in IDS if m.startswith(("gpt-image-2.5", "gpt-image-2.6"))])
def test_markup_sends_the_last_image_as_overlay(model_id: str) -> None:
    base, overlay = input_image(16, 16), input_image(16, 16, alpha=True, source="marks.png")
    request = validated(_entry(model_id), Operation.EDIT, (base, overlay), options={"markup": True}).request
    kwargs = translate.edit_kwargs(request, _conf())
    assert kwargs["image"] == ("0-a.png", base.data, "image/png")
    assert kwargs["markup"] == ("markup.png", overlay.data, "image/png")
    assert "mask" not in kwargs


@pytest.mark.parametrize("model_id", ["gpt-image-2.6-flare", "gpt-image-2.6-sunburst"])
def test_gif_and_svg_parameters(model_id: str) -> None:
    gif = validated(_entry(model_id), output_format="gif", options={"frame_count": 4, "frame_duration_ms": 120}).request
    kwargs = translate.generate_kwargs(
        gif, _conf(partial_images=2), translate.partials_for(gif, _conf(partial_images=2))
    )
    assert kwargs["output_format"] == "gif" and kwargs["frame_count"] == 4 and kwargs["frame_duration_ms"] == 120
    assert "stream" not in kwargs  # the streaming default never applies to GIF
    svg = validated(
        _entry(model_id, svg_output=True),
        output_format="svg",
        options={"svg_model": "gpt-5", "svg_reasoning_effort": "low"},
    ).request
    kwargs = translate.generate_kwargs(svg, _conf())
    assert kwargs["svg"] == {"model": "gpt-5", "reasoning": {"effort": "low"}}


def test_model_names_map_to_deployments_or_gateway_names() -> None:
    request = validated(_entry("gpt-image-2")).request
    conf = _conf(model_names={"gpt-image-2": "img-prod"})
    assert translate.generate_kwargs(request, conf)["model"] == "img-prod"


# -- base64 and results ---------------------------------------------------------------


def _item(data: bytes | None = None, raw: str | None = None, **extra: Any) -> SimpleNamespace:
    return SimpleNamespace(b64_json=raw if raw is not None else (b64(data) if data else None), **extra)


def _request(n: int = 1, fmt: str = "png") -> ImageRequest:
    return ImageRequest(operation=Operation.GENERATE, model="gpt-image-2", prompt="p", n=n, output_format=fmt)


def test_partial_success_keeps_good_images_and_lists_failures() -> None:
    good = png_bytes()
    not_an_image = b64(b"GIF? no: plain text")
    items = [_item(good), _item(raw=not_an_image), _item(raw=b64(good)[:-2]), _item(url="https://x/y.png"), _item(good)]
    usage = SimpleNamespace(
        input_tokens=1,
        output_tokens=2,
        total_tokens=3,
        input_tokens_details=SimpleNamespace(text_tokens=1, image_tokens=0),
    )
    result = translate.result_from_items(items, _request(n=5), usage=usage, request_id="req_9")
    assert len(result.images) == 2 and all(i.data == good for i in result.images)
    assert [f.index for f in result.failures] == [1, 2, 3]
    assert [f.code for f in result.failures] == ["upstream_protocol_error"] * 3
    assert "not a PNG" in result.failures[0].message and "base64" in result.failures[1].message
    assert "URL" in result.failures[2].message
    assert result.usage is not None and result.usage.images == 2 and result.usage.output_tokens == 2
    assert result.request_id == "req_9"


def test_fewer_images_than_asked_are_listed() -> None:
    result = translate.result_from_items([_item(png_bytes())], _request(n=3))
    assert [(f.index, f.code) for f in result.failures] == [(1, "no_image_returned"), (2, "no_image_returned")]


def test_all_items_broken_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError, match="2 of 2"):
        translate.result_from_items([_item(raw="@@@@"), _item(raw="")], _request(n=2), request_id="req_x")
    with pytest.raises(UpstreamProtocolError, match="without any image"):
        translate.result_from_items([], _request())


def test_not_an_image_is_refused() -> None:
    with pytest.raises(UpstreamProtocolError):
        translate.image_from_b64(b64(b"hello world, not a png"), expected_format="png")


def test_svg_output_is_checked_as_svg() -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1"></svg>'
    image = translate.image_from_b64(b64(svg), expected_format="svg")
    assert image.mime_type == "image/svg+xml" and image.data == svg
    with pytest.raises(UpstreamProtocolError):
        translate.image_from_b64(b64(svg[:30]), expected_format="svg")


def test_usage_mapping_handles_missing_details() -> None:
    assert translate.usage_from(None) is None
    usage = translate.usage_from(
        SimpleNamespace(input_tokens=3, output_tokens=4, total_tokens=7, input_tokens_details=None), images=1
    )
    assert usage is not None and usage.input_text_tokens is None and usage.total_tokens == 7


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "200"}, 0.2),
        ({"retry-after-ms": "200", "retry-after": "9"}, 0.2),
        ({"Retry-After": "1.5"}, 1.5),
        ({"retry-after": "121"}, 121.0),
        ({"retry-after": "Sat, 21 Nov 2026 10:00:30 GMT"}, 30.0),
        ({"retry-after": "Sat, 21 Nov 2026 09:59:00 GMT"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-4"}, None),
        ({"retry-after-ms": "nan"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    from email.utils import parsedate_to_datetime

    now = parsedate_to_datetime("Sat, 21 Nov 2026 10:00:00 GMT").timestamp()
    assert translate.parse_retry_after(headers, now=now) == expected


def test_redact_removes_keys() -> None:
    text = translate.redact(f"Incorrect API key provided: {KEY}. Also sk-proj-abcd1234****wxyz.", KEY)
    assert KEY not in text and "sk-proj" not in text and "[redacted]" in text
    assert len(translate.redact("x" * 5000 + " y")) <= 400


def test_cost_from_usage_and_estimates() -> None:
    entry = _entry("gpt-image-2")
    request = validated(entry, quality="high", size="1024x1024", n=2).request
    assert entry.provider.estimate_cost(request, entry.spec) == pytest.approx(2 * 0.211)
    usage = translate.usage_from(
        SimpleNamespace(
            input_tokens=100,
            output_tokens=1000,
            total_tokens=1100,
            input_tokens_details=SimpleNamespace(text_tokens=60, image_tokens=40),
        ),
        images=1,
    )
    assert usage is not None
    cost = entry.provider.cost_from_usage(usage, request, entry.spec, 1)
    assert cost == pytest.approx((1000 * 30 + 60 * 5 + 40 * 8) / 1_000_000)


@pytest.mark.parametrize(
    ("body", "refused"),
    [
        ({"code": "moderation_blocked", "type": "invalid_request_error", "message": "blocked"}, True),
        ({"code": None, "type": "image_generation_user_error", "message": "Rejected by the safety system"}, True),
        ({"code": None, "type": "image_generation_user_error", "message": "prompt too long"}, False),
        ({"code": None, "type": "server_error", "message": "safety system unavailable"}, False),
    ],
)
def test_a_streamed_error_is_a_safety_refusal_only_for_a_safety_code_or_a_user_error_about_safety(
    body: dict[str, Any], refused: bool
) -> None:
    import httpx2
    import openai

    from atelier_core import SafetyRefusalError

    exc = openai.APIError(body["message"], httpx2.Request("POST", "http://127.0.0.1/v1/images"), body=body)
    exc.code, exc.type = body["code"], body["type"]
    error = translate.map_error(exc, model="gpt-image-1", settings=OpenAISettings(api_key=KEY))
    assert isinstance(error, SafetyRefusalError) is refused, error
