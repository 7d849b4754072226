"""The pure translation functions, exhaustively, with no server at all."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from atelier_pixelart.translate import endpoint, error_from_response, request_body, result_from_response

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
    UpstreamUnavailableError,
)
from atelier_core.testing import make_image


def _request(**kw: Any) -> ImageRequest:
    base: dict[str, Any] = dict(
        operation=Operation.GENERATE,
        model="pixel-1",
        prompt="a knight",
        width=64,
        height=64,
        n=2,
        output_format="png",
    )
    return ImageRequest(**{**base, **kw})


def test_generate_body_renames_every_field() -> None:
    body = request_body(_request(seed=7, options={"palette": "gameboy", "dither": True}))
    assert body == {
        "model": "pixel-1",
        "prompt": "a knight",
        "width": 64,
        "height": 64,
        "count": 2,
        "format": "png",
        "seed": 7,
        "palette": "gameboy",
        "dither": True,
    }
    assert endpoint(_request()) == "/images"


def test_generate_body_omits_unset_seed_and_options() -> None:
    assert set(request_body(_request())) == {"model", "prompt", "width", "height", "count", "format"}


def test_edit_body_carries_the_image() -> None:
    data = make_image(32, 32)
    image = InputImage(data=data, format="png", width=32, height=32, has_alpha=False)
    request = _request(operation=Operation.EDIT, images=(image,))
    body = request_body(request)
    assert base64.b64decode(body["image"]) == data
    assert endpoint(request) == "/images/edits"


def test_result_decodes_images_failures_and_id() -> None:
    png = make_image(8, 8)
    payload = {
        "id": "req_9",
        "images": [{"b64": base64.b64encode(png).decode(), "format": "png", "seed": 3}],
        "failed": [{"index": 1, "reason": "palette overflow"}],
    }
    result = result_from_response(payload, _request())
    assert result.images[0].data == png and result.images[0].seed == 3
    assert result.images[0].mime_type == "image/png"
    assert [(f.index, f.message) for f in result.failures] == [(1, "palette overflow")]
    assert result.request_id == "req_9" and result.usage is not None and result.usage.images == 1


@pytest.mark.parametrize(
    "payload",
    [None, [], {"images": "nope"}, {"images": [{"b64": 5}]}, {"images": [{"b64": "@@not base64@@"}]}],
)
def test_malformed_answers_are_protocol_errors(payload: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        result_from_response(payload, _request())


@pytest.mark.parametrize(
    ("status", "kind", "error", "retryable"),
    [
        (401, "auth", AuthenticationError, False),
        (403, "auth", AuthenticationError, False),
        (402, "billing", QuotaExceededError, False),
        (422, "content_policy", SafetyRefusalError, False),
        (429, "rate", RateLimitedError, True),
        (500, "oops", UpstreamUnavailableError, True),
        (503, "", UpstreamUnavailableError, True),
        (400, "invalid_request", UpstreamError, False),
    ],
)
def test_error_mapping(status: int, kind: str, error: type[Exception], retryable: bool) -> None:
    mapped = error_from_response(status, {"error": {"type": kind, "message": "m"}}, {"x-request-id": "r1"})
    assert type(mapped) is error
    assert mapped.retryable is retryable
    assert mapped.provider == "pixelart" and mapped.request_id == "r1"
    assert "Pixel Forge says: m" in str(mapped)


def test_auth_error_names_the_variable() -> None:
    assert "PIXELART_API_KEY" in str(error_from_response(401, None, {}))


def test_rate_limit_reads_retry_after() -> None:
    assert error_from_response(429, {}, {"retry-after": "2.5"}).retry_after_s == 2.5
    assert error_from_response(429, {}, {"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"}).retry_after_s is None
    assert error_from_response(429, {}, {}).retry_after_s is None
