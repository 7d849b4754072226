"""Pure translation: requests to google-genai shapes, responses and errors to Atelier's."""

from __future__ import annotations

import io
from types import SimpleNamespace as NS
from typing import Any

import pytest
from PIL import Image

from atelier_core import (
    AuthenticationError,
    ImageRequest,
    InputImage,
    Operation,
    QuotaExceededError,
    RateLimitedError,
    SafetyRefusalError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from atelier_core.testing import make_image, make_mask
from atelier_gemini import translate
from atelier_gemini.models import MODELS

SPECS = {spec.id: spec for spec in MODELS}
PRO = SPECS["gemini-3-pro-image"]
FLASH = SPECS["gemini-2.5-flash-image"]


def _request(**kw: Any) -> ImageRequest:
    values: dict[str, Any] = {"operation": Operation.GENERATE, "model": "gemini-3-pro-image", "prompt": "a fox"}
    values.update(kw)
    return ImageRequest(**values)


def _image(fmt: str = "png") -> InputImage:
    return InputImage(data=make_image(8, 8, fmt), format=fmt, width=8, height=8, has_alpha=False)


# -- Gemini requests ------------------------------------------------------------------


def test_contents_prompt_then_images_in_order() -> None:
    images = (_image(), _image("jpeg"))
    contents = translate.gemini_contents(_request(operation=Operation.EDIT, images=images))
    assert contents == [
        {
            "role": "user",
            "parts": [
                {"text": "a fox"},
                {"inline_data": {"data": images[0].data, "mime_type": "image/png"}},
                {"inline_data": {"data": images[1].data, "mime_type": "image/jpeg"}},
            ],
        }
    ]


def test_config_minimal() -> None:
    assert translate.gemini_config(_request(), PRO, vertex=False) == {"response_modalities": ["TEXT", "IMAGE"]}


def test_config_everything_developer_api() -> None:
    request = _request(
        aspect_ratio="21:9", resolution="4K", seed=-3, options={"include_text": False, "temperature": 1.5}
    )
    assert translate.gemini_config(request, PRO, vertex=False) == {
        "response_modalities": ["IMAGE"],
        "image_config": {"aspect_ratio": "21:9", "image_size": "4K"},
        "seed": -3,
        "temperature": 1.5,
    }


def test_config_no_tier_for_single_tier_model() -> None:
    config = translate.gemini_config(_request(model=FLASH.id, resolution="1K", aspect_ratio="3:4"), FLASH, vertex=False)
    assert config["image_config"] == {"aspect_ratio": "3:4"}


def test_config_vertex_only_fields_only_in_vertex_mode() -> None:
    request = _request(
        output_format="jpeg",
        output_compression=25,
        options={"person_generation": "ALLOW_NONE", "prominent_people": "ALLOW_PROMINENT_PEOPLE"},
    )
    assert "image_config" not in translate.gemini_config(request, PRO, vertex=False)
    assert translate.gemini_config(request, PRO, vertex=True)["image_config"] == {
        "person_generation": "ALLOW_NONE",
        "prominent_people": "ALLOW_PROMINENT_PEOPLE",
        "output_mime_type": "image/jpeg",
        "output_compression_quality": 25,
    }


def test_vertex_only_parameters_listed() -> None:
    request = _request(output_format="jpeg", output_compression=1, options={"person_generation": "ALLOW_ALL"})
    assert [p for p, _ in translate.vertex_only_parameters(request)] == [
        "options.person_generation",
        "output_format",
        "output_compression",
    ]
    assert translate.vertex_only_parameters(_request(output_format="png")) == []


# -- Gemini responses ----------------------------------------------------------------


def _part(**kw: Any) -> NS:
    return NS(**{"text": None, "inline_data": None, "thought": None, **kw})


def _blob(data: bytes = b"\x89PNG", mime: str = "image/png") -> NS:
    return NS(data=data, mime_type=mime)


def _response(parts: list[NS] | None = None, finish: str | None = "STOP", **kw: Any) -> NS:
    candidates = (
        None if parts is None else [NS(content=NS(parts=parts), finish_reason=NS(value=finish), finish_message=None)]
    )
    values = {"candidates": candidates, "prompt_feedback": None, "usage_metadata": None, "response_id": "r1"}
    values.update(kw)
    return NS(**values)


def test_parse_images_and_texts() -> None:
    response = _response([_part(text=" hello "), _part(inline_data=_blob()), _part(text="bye")])
    result = translate.parse_gemini(response, _request(), model="m")
    assert [i.data for i in result.images] == [b"\x89PNG"] and result.texts == ["hello", "bye"]
    assert result.request_id == "r1"


def test_parse_skips_thoughts_and_non_images() -> None:
    response = _response(
        [
            _part(inline_data=_blob(b"thought"), thought=True),
            _part(inline_data=_blob(b"%PDF", "application/pdf")),
            _part(inline_data=_blob(b"final")),
        ]
    )
    result = translate.parse_gemini(response, _request(), model="m")
    assert [i.data for i in result.images] == [b"final"]


def test_parse_keeps_at_most_n_images() -> None:
    response = _response([_part(inline_data=_blob(b"a")), _part(inline_data=_blob(b"b"))])
    assert len(translate.parse_gemini(response, _request(n=1), model="m").images) == 1


def test_prompt_block_quotes_reason_and_message() -> None:
    response = _response(
        None, prompt_feedback=NS(block_reason=NS(value="PROHIBITED_CONTENT"), block_reason_message="not allowed here")
    )
    with pytest.raises(SafetyRefusalError) as caught:
        translate.parse_gemini(response, _request(), model="gemini/x")
    assert "PROHIBITED_CONTENT" in str(caught.value) and "not allowed here" in str(caught.value)
    assert caught.value.request_id == "r1" and caught.value.provider == "gemini"


@pytest.mark.parametrize("reason", sorted(translate.IMAGE_BLOCK_REASONS))
def test_blocking_finish_reasons_without_image_refuse(reason: str) -> None:
    with pytest.raises(SafetyRefusalError, match=reason):
        translate.parse_gemini(_response([_part(text="no")], finish=reason), _request(), model="m")


def test_blocking_finish_reason_with_an_image_is_a_success() -> None:
    response = _response([_part(inline_data=_blob())], finish="IMAGE_OTHER")
    assert len(translate.parse_gemini(response, _request(), model="m").images) == 1


@pytest.mark.parametrize("finish", ["STOP", "MAX_TOKENS", None])
def test_text_only_is_no_image_returned_with_excerpt(finish: str | None) -> None:
    response = _response([_part(text="I would rather describe it: " + "x" * 500)], finish=finish)
    with pytest.raises(UpstreamProtocolError) as caught:
        translate.parse_gemini(response, _request(), model="m")
    assert caught.value.code == "no_image_returned"
    assert "I would rather describe it" in str(caught.value) and "…" in str(caught.value)


def test_no_candidates_is_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError):
        translate.parse_gemini(_response(None), _request(), model="m")


def _usage() -> NS:
    return NS(
        prompt_token_count=300,
        candidates_token_count=1130,
        total_token_count=1530,
        thoughts_token_count=100,
        prompt_tokens_details=[
            NS(modality=NS(value="TEXT"), token_count=40),
            NS(modality=NS(value="IMAGE"), token_count=260),
        ],
        candidates_tokens_details=[
            NS(modality=NS(value="IMAGE"), token_count=1120),
            NS(modality=NS(value="TEXT"), token_count=10),
        ],
    )


def test_usage_by_modality() -> None:
    usage = translate.usage_from_gemini(_usage(), 1)
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (300, 1230, 1530)
    assert (usage.input_text_tokens, usage.input_image_tokens, usage.images) == (40, 260, 1)
    assert translate.usage_from_gemini(None, 1) is None


def test_cost_prices_each_modality() -> None:
    cost = translate.gemini_cost(_usage(), PRO.pricing, 12.0)
    expected = (1120 * 120 + (10 + 100) * 12 + 40 * 2 + 260 * 2) / 1e6
    assert cost == pytest.approx(expected)
    assert translate.gemini_cost(None, PRO.pricing, 12.0) is None
    assert translate.gemini_cost(_usage(), None, 12.0) is None


# -- Imagen ---------------------------------------------------------------------------


def test_imagen_generate_config_full() -> None:
    spec = SPECS["imagen-4.0-generate-001"]
    request = _request(
        model=spec.id,
        n=4,
        aspect_ratio="4:3",
        resolution="2K",
        output_format="png",
        options={"person_generation": "ALLOW_ALL", "add_watermark": True},
    )
    config, applied = translate.imagen_generate_config(request, spec)
    assert config == {
        "number_of_images": 4,
        "include_rai_reason": True,
        "aspect_ratio": "4:3",
        "output_mime_type": "image/png",
        "person_generation": "ALLOW_ALL",
        "add_watermark": True,
        "image_size": "2K",
    }
    assert applied == {}


def test_imagen_seed_turns_watermark_off_and_says_so() -> None:
    spec = SPECS["imagen-4.0-fast-generate-001"]
    config, applied = translate.imagen_generate_config(_request(model=spec.id, seed=9), spec)
    assert config["seed"] == 9 and config["add_watermark"] is False
    assert applied == {"options.add_watermark": False}


def test_imagen_edit_modes() -> None:
    mask = InputImage(data=make_mask(8, 8), format="png", width=8, height=8, has_alpha=True)
    base = {"model": "imagen-3.0-capability-001", "operation": Operation.EDIT, "images": (_image(),)}
    config, mask_cfg, _ = translate.imagen_edit_config(_request(**base, mask=mask))
    assert config["edit_mode"] == "EDIT_MODE_INPAINT_INSERTION" and mask_cfg == {"mask_mode": "MASK_MODE_USER_PROVIDED"}
    config, mask_cfg, _ = translate.imagen_edit_config(
        _request(**base, options={"mask_mode": "background", "edit_mode": "bgswap", "mask_dilation": 0.1})
    )
    assert config["edit_mode"] == "EDIT_MODE_BGSWAP"
    assert mask_cfg == {"mask_mode": "MASK_MODE_BACKGROUND", "mask_dilation": 0.1}
    config, mask_cfg, _ = translate.imagen_edit_config(_request(**base, negative_prompt="fog"))
    assert config["edit_mode"] == "EDIT_MODE_DEFAULT" and mask_cfg == {"mask_mode": None}
    assert config["negative_prompt"] == "fog"


def test_imagen_mask_inverts_alpha_to_white_edit_area() -> None:
    converted = Image.open(io.BytesIO(translate.imagen_mask(make_mask(16, 16))))
    source = Image.open(io.BytesIO(make_mask(16, 16))).convert("RGBA")
    assert converted.mode == "L" and converted.size == (16, 16)
    for xy in [(0, 0), (8, 8), (15, 15)]:
        assert converted.getpixel(xy) == (255 if source.getpixel(xy)[3] == 0 else 0)


def _generated(data: bytes | None = None, reason: str | None = None) -> NS:
    return NS(
        image=NS(image_bytes=data, mime_type="image/png" if data else None),
        rai_filtered_reason=reason,
        enhanced_prompt="better" if data else None,
    )


def test_parse_imagen_partial() -> None:
    response = NS(generated_images=[_generated(b"a"), _generated(reason="violence"), _generated(None)])
    result = translate.parse_imagen(response, _request(n=4), model="m")
    assert [i.data for i in result.images] == [b"a"] and result.images[0].revised_prompt == "better"
    assert [(f.index, f.code) for f in result.failures] == [
        (1, "safety_refusal"),
        (2, "no_image_returned"),
        (3, "no_image_returned"),
    ]


def test_parse_imagen_nothing() -> None:
    with pytest.raises(SafetyRefusalError, match="violence"):
        translate.parse_imagen(NS(generated_images=[_generated(reason="violence")]), _request(), model="m")
    with pytest.raises(UpstreamProtocolError):
        translate.parse_imagen(NS(generated_images=None), _request(), model="m")


# -- errors ---------------------------------------------------------------------------


class APIError(Exception):
    def __init__(
        self,
        code: int,
        message: str = "msg",
        status: str = "S",
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status
        self.details = details or {"error": {"code": code, "message": message}}
        self.response = NS(headers=headers or {})


def _map(exc: BaseException, **kw: Any) -> Any:
    return translate.map_error(exc, model="gemini/m", key_vars=("GOOGLE_API_KEY", "GEMINI_API_KEY"), **kw)


def _details(*items: dict[str, Any]) -> dict[str, Any]:
    return {"error": {"code": 429, "details": list(items)}}


@pytest.mark.parametrize(
    ("exc", "kind", "retry_after"),
    [
        (APIError(429, headers={"retry-after": "4"}), RateLimitedError, 4.0),
        # An HTTP date is honoured (the core's shared parser); one in the past means "now".
        (APIError(429, headers={"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"}), RateLimitedError, 0.0),
        (
            APIError(
                429, details=_details({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12.5s"})
            ),
            RateLimitedError,
            12.5,
        ),
        (
            APIError(
                429,
                details=_details(
                    {
                        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                        "violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel"}],
                    }
                ),
            ),
            QuotaExceededError,
            None,
        ),
    ],
)
def test_429(exc: APIError, kind: type, retry_after: float | None) -> None:
    mapped = _map(exc)
    assert type(mapped) is kind and mapped.retry_after_s == retry_after
    assert mapped.retryable is (kind is RateLimitedError)


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (500, UpstreamUnavailableError),
        (503, UpstreamUnavailableError),
        (504, UpstreamUnavailableError),
        (408, UpstreamUnavailableError),
        (401, AuthenticationError),
        (403, AuthenticationError),
    ],
)
def test_status_kinds(code: int, kind: type) -> None:
    assert type(_map(APIError(code))) is kind


def test_404_and_400() -> None:
    assert _map(APIError(404)).code == "model_not_found"
    assert "gemini-3.1-flash-image" in str(_map(APIError(404), imagen=True))
    bad = _map(APIError(400, "aspect ratio 5:1 is not supported", "INVALID_ARGUMENT"))
    assert type(bad) is UpstreamError and bad.code == "upstream_rejected"
    assert "aspect ratio 5:1" in str(bad) and not bad.retryable


def test_secrets_are_scrubbed() -> None:
    mapped = _map(APIError(400, "bad key sk-SECRET"), secrets=["sk-SECRET"])
    assert "sk-SECRET" not in str(mapped) and "[redacted]" in str(mapped)


def test_transport_errors_by_class_name() -> None:
    ReadTimeout = type("ReadTimeout", (Exception,), {})
    ConnectError = type("ConnectError", (Exception,), {})
    RemoteProtocolError = type("RemoteProtocolError", (Exception,), {})
    JSONDecodeError = type("JSONDecodeError", (ValueError,), {})
    assert type(_map(ReadTimeout())) is UpstreamTimeoutError
    assert not _map(ReadTimeout()).retryable
    assert type(_map(ConnectError())) is UpstreamUnavailableError
    assert type(_map(RemoteProtocolError())) is UpstreamUnavailableError
    assert type(_map(JSONDecodeError("x"))) is UpstreamProtocolError
    assert type(_map(RuntimeError("boom"))) is UpstreamError


def test_retry_after_seconds() -> None:
    assert translate.retry_after_seconds({"retry-after": "0"}, None) == 0.0
    assert translate.retry_after_seconds({"retry-after": "-5"}, None) is None
    assert (
        translate.retry_after_seconds(
            None, {"error": {"details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "bogus"}]}}
        )
        is None
    )
