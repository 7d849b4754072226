"""The pure translation functions: request body, answer parsing and the error table.

No server here: every branch of :mod:`atelier_minimax.translate` is driven directly.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from atelier_core import (
    AuthenticationError,
    ImageRequest,
    Operation,
    QuotaExceededError,
    RateLimitedError,
    SafetyRefusalError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamUnavailableError,
    retry_after_from_headers,
)
from atelier_core.testing import configured
from atelier_minimax import MiniMaxProvider
from atelier_minimax.models import RATIO_SIZES, STYLE_TYPES
from atelier_minimax.translate import (
    DEFAULT_STYLE_WEIGHT,
    STATUS_KINDS,
    applied_for,
    build_body,
    data_url,
    decode_image,
    error_for_http,
    error_for_status,
    excerpt,
    parse_answer,
    request_id_from,
    style_type,
)

from ._support import KEY, answer, b64, failure, jpeg, portrait, validated

HOST = "https://api.minimax.io"


@pytest.fixture
def offline() -> MiniMaxProvider:
    provider = configured(MiniMaxProvider(), api_key=KEY)
    assert isinstance(provider, MiniMaxProvider)
    return provider


def _parse(
    payload: Any,
    *,
    status: int = 200,
    requested: int = 1,
    headers: dict[str, str] | None = None,
    wait: float | None = None,
) -> Any:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parse_answer(status, headers or {}, body, requested=requested, host=HOST, secret=KEY, rate_limit_wait_s=wait)


# -- request body -------------------------------------------------------------------


def test_body_defaults_ask_for_base64_and_the_default_ratio(offline: MiniMaxProvider) -> None:
    body = build_body(validated(offline, prompt="  a red fox  "))
    assert body == {
        "model": "image-01",
        "prompt": "a red fox",
        "response_format": "base64",
        "n": 1,
        "aspect_ratio": "1:1",
    }


@pytest.mark.parametrize("ratio", list(RATIO_SIZES))
def test_body_carries_each_aspect_ratio(offline: MiniMaxProvider, ratio: str) -> None:
    body = build_body(validated(offline, aspect_ratio=ratio))
    assert body["aspect_ratio"] == ratio
    assert "width" not in body and "height" not in body


def test_body_custom_size_sends_width_height_without_ratio(offline: MiniMaxProvider) -> None:
    # MiniMax lets aspect_ratio win when both are sent, so the ratio must be absent.
    body = build_body(validated(offline, size="1536x640"))
    assert (body["width"], body["height"]) == (1536, 640)
    assert "aspect_ratio" not in body


def test_body_every_image_01_parameter(offline: MiniMaxProvider) -> None:
    face = portrait("png")
    request = validated(
        offline,
        n=9,
        seed=1234,
        size="512x2048",
        images=[face],
        options={"prompt_optimizer": True, "aigc_watermark": False},
    )
    body = build_body(request)
    assert body["n"] == 9 and body["seed"] == 1234
    assert body["prompt_optimizer"] is True and body["aigc_watermark"] is False
    assert body["subject_reference"] == [{"type": "character", "image_file": data_url(face)}]
    assert body["subject_reference"][0]["image_file"].startswith("data:image/png;base64,")
    assert "style" not in body


def test_body_unset_options_are_not_sent(offline: MiniMaxProvider) -> None:
    body = build_body(validated(offline, options={"aigc_watermark": True}))
    assert body["aigc_watermark"] is True
    assert "prompt_optimizer" not in body


@pytest.mark.parametrize(
    ("given", "wire"), [*STYLE_TYPES.items(), *((v, v) for v in STYLE_TYPES.values()), ("Watercolor", "水彩")]
)
def test_body_style_names_map_to_the_wire_value(offline: MiniMaxProvider, given: str, wire: str) -> None:
    body = build_body(validated(offline, "image-01-live", style=given))
    assert body["style"] == {"style_type": wire, "style_weight": DEFAULT_STYLE_WEIGHT}
    assert body["model"] == "image-01-live"


def test_body_style_weight_is_sent(offline: MiniMaxProvider) -> None:
    body = build_body(validated(offline, "image-01-live", style="medieval", options={"style_weight": 0.35}))
    assert body["style"] == {"style_type": "中世纪", "style_weight": 0.35}


def test_style_type_passes_unknown_names_through() -> None:
    assert style_type("COMIC") == "漫画"
    assert style_type("水彩") == "水彩"


def test_data_url_round_trips() -> None:
    face = portrait("jpeg")
    url = data_url(face)
    head, _, payload = url.partition(",")
    assert head == "data:image/jpeg;base64"
    assert base64.b64decode(payload, validate=True) == face.data


def test_applied_reports_the_produced_size(offline: MiniMaxProvider) -> None:
    assert applied_for(validated(offline, aspect_ratio="21:9")) == {"size": "1344x576"}
    assert applied_for(validated(offline, size="1024x768")) == {"size": "1024x768"}
    assert applied_for(validated(offline, images=[portrait()]))["subject_reference"] == "character"
    live = applied_for(validated(offline, "image-01-live", style="comic", aspect_ratio="9:16"))
    assert live == {"size": "720x1280", "style": "漫画", "style_weight": DEFAULT_STYLE_WEIGHT}


def test_applied_for_a_bare_request() -> None:
    request = ImageRequest(operation=Operation.GENERATE, model="image-01", prompt="x")
    assert applied_for(request) == {}
    assert build_body(request) == {"model": "image-01", "prompt": "x", "response_format": "base64", "n": 1}


# -- base_resp status codes -----------------------------------------------------------

_EXPECTED: dict[int, tuple[type[UpstreamError], str, bool]] = {
    1000: (UpstreamUnavailableError, "upstream_unavailable", True),
    1001: (UpstreamUnavailableError, "upstream_unavailable", True),
    1002: (RateLimitedError, "rate_limited", True),
    1004: (AuthenticationError, "authentication_failed", False),
    1008: (QuotaExceededError, "quota_exceeded", False),
    1024: (UpstreamUnavailableError, "upstream_unavailable", True),
    1026: (SafetyRefusalError, "safety_refusal", False),
    1027: (SafetyRefusalError, "safety_refusal", False),
    1039: (UpstreamError, "upstream_rejected", False),
    2013: (UpstreamError, "upstream_rejected", False),
    2038: (AuthenticationError, "authentication_failed", False),
    2049: (AuthenticationError, "authentication_failed", False),
    2061: (UpstreamError, "model_not_in_plan", False),
}


def test_the_status_table_is_fully_covered() -> None:
    assert set(_EXPECTED) == set(STATUS_KINDS)


@pytest.mark.parametrize("code", sorted(_EXPECTED))
def test_each_status_code_maps_to_its_kind(code: int) -> None:
    kind, error_code, retryable = _EXPECTED[code]
    with pytest.raises(UpstreamError) as caught:
        _parse(failure(code, f"msg for {code}"), wait=6.0)
    error = caught.value
    assert type(error) is kind
    assert error.code == error_code
    assert error.retryable is retryable
    assert error.provider == "minimax"
    assert error.request_id == "trace-abc"
    text = str(error)
    assert str(code) in text and f"msg for {code}" in text  # MiniMax's own words are quoted
    assert error.fix
    assert KEY not in text
    assert (error.retry_after_s == 6.0) is (code == 1002)


@pytest.mark.parametrize("code", [1004, 2049])
def test_bad_key_names_the_variable_and_the_host(code: int) -> None:
    error = error_for_status(code, "invalid api key", host="https://api.minimaxi.com")
    assert "MINIMAX_API_KEY" in str(error)
    assert "region" in str(error) and "https://api.minimaxi.com" in str(error)


def test_safety_refusals_say_which_side_was_refused() -> None:
    assert "input" in str(error_for_status(1026, "input new_sensitive"))
    assert "generated image" in str(error_for_status(1027, "output new_sensitive"))


def test_rate_limit_without_a_known_rate_has_no_wait() -> None:
    error = error_for_status(1002, "rate limit")
    assert isinstance(error, RateLimitedError) and error.retry_after_s is None
    assert "requests_per_minute" in str(error)


def test_unknown_status_is_an_upstream_error_with_code_and_message() -> None:
    with pytest.raises(UpstreamError) as caught:
        _parse(failure(1234, "something odd"))
    assert type(caught.value) is UpstreamError
    assert caught.value.code == "upstream_error" and not caught.value.retryable
    assert "1234" in str(caught.value) and "something odd" in str(caught.value)


def test_status_without_message() -> None:
    assert "status 4321." in str(error_for_status(4321, "  "))


def test_status_code_sent_as_a_string_is_read() -> None:
    payload = failure(1026, "input new_sensitive")
    payload["base_resp"]["status_code"] = "1026"
    with pytest.raises(SafetyRefusalError):
        _parse(payload)


def test_status_code_that_is_not_a_number_is_a_protocol_error() -> None:
    payload = failure(1, "x")
    payload["base_resp"]["status_code"] = "oops"
    with pytest.raises(UpstreamProtocolError, match="not a number"):
        _parse(payload)


def test_base_resp_that_is_not_an_object_is_a_protocol_error() -> None:
    payload = answer()
    payload["base_resp"] = ["nope"]
    with pytest.raises(UpstreamProtocolError, match="base_resp"):
        _parse(payload)


def test_missing_base_resp_is_judged_by_the_images() -> None:
    payload = answer()
    del payload["base_resp"]
    assert len(_parse(payload).images) == 1


# -- successful answers ----------------------------------------------------------------


def test_success_decodes_every_image_in_order() -> None:
    images = [jpeg(64, 64, i) for i in range(3)]
    result = _parse(answer(images), requested=3, headers={"trace-id": "hdr-1"})
    assert [i.data for i in result.images] == images
    assert all(i.mime_type == "image/jpeg" for i in result.images)
    assert result.failures == []
    assert result.request_id == "hdr-1"  # the Trace-Id header wins over the body id
    assert result.usage is not None and result.usage.images == 3


def test_request_id_falls_back_to_the_body_id() -> None:
    assert _parse(answer(trace="body-7")).request_id == "body-7"


def test_png_bytes_get_their_own_mime_and_unknown_bytes_none() -> None:
    from atelier_core.testing import make_image

    png = make_image(8, 8, "png")
    payload = answer()
    payload["data"]["image_base64"] = [b64(png), b64(b"not an image")]
    result = _parse(payload, requested=2)
    assert [i.mime_type for i in result.images] == ["image/png", None]


def test_partial_success_returns_what_came_back_and_reports_the_rest() -> None:
    result = _parse(answer([jpeg(), jpeg(64, 64, 1)], success=2, failed=2), requested=4)
    assert len(result.images) == 2
    assert [f.index for f in result.failures] == [2, 3]
    assert all(f.code == "not_generated" for f in result.failures)
    assert "2 of 4" in result.failures[0].message
    assert "failed_count 2" in result.failures[0].message


def test_one_undecodable_item_is_an_item_failure() -> None:
    payload = answer([jpeg(), jpeg(64, 64, 1)])
    payload["data"]["image_base64"][0] = payload["data"]["image_base64"][0][:-3]  # cut short
    result = _parse(payload, requested=2)
    assert [i.data for i in result.images] == [jpeg(64, 64, 1)]
    (item,) = result.failures
    # Failures are numbered after the images that arrived (the core's convention).
    assert item.index == 1 and item.code == "upstream_protocol_error"
    assert "image 1" in item.message and "base64" in item.message


def test_decode_and_missing_failures_are_both_reported() -> None:
    payload = answer([jpeg(), jpeg(64, 64, 1)], success=2, failed=1)
    payload["data"]["image_base64"][0] = "%%%"
    result = _parse(payload, requested=3)
    assert len(result.images) == 1
    assert [(f.index, f.code) for f in result.failures] == [(1, "upstream_protocol_error"), (2, "not_generated")]


def test_extra_images_beyond_n_are_ignored() -> None:
    result = _parse(answer([jpeg(), jpeg(64, 64, 1)]), requested=1)
    assert len(result.images) == 1 and result.failures == []


def test_success_count_zero_is_a_failure() -> None:
    payload = answer([], success=0, failed=1)
    with pytest.raises(UpstreamError) as caught:
        _parse(payload)
    assert caught.value.code == "no_image_returned"
    assert not caught.value.retryable
    assert "success_count 0" in str(caught.value)


def test_no_images_without_counts_is_a_protocol_error() -> None:
    payload = answer()
    payload["data"] = None
    del payload["metadata"]
    with pytest.raises(UpstreamProtocolError, match="no images"):
        _parse(payload)


def test_urls_instead_of_base64_are_refused() -> None:
    payload = answer()
    payload["data"] = {"image_urls": ["https://cdn.example/x.jpg"]}
    with pytest.raises(UpstreamProtocolError, match="URLs"):
        _parse(payload)


def test_image_list_of_wrong_type_is_a_protocol_error() -> None:
    payload = answer()
    payload["data"]["image_base64"] = "abcd"
    with pytest.raises(UpstreamProtocolError, match="not a list"):
        _parse(payload)


def test_all_items_undecodable_is_a_protocol_error() -> None:
    payload = answer()
    payload["data"]["image_base64"] = ["/9j/4AA", None]
    with pytest.raises(UpstreamProtocolError, match="none of MiniMax's 2 image"):
        _parse(payload, requested=2)


@pytest.mark.parametrize(
    ("body", "what"),
    [
        (b"<html><body>502 Bad Gateway</body></html>", "not JSON"),
        (b'{"data": {"image_base64": ["/9j/', "not JSON"),
        (b"", "not JSON"),
        (b"[1, 2]", "not an object"),
        (b"\xff\xfe\x00garbage", "not JSON"),
    ],
)
def test_malformed_json_is_a_protocol_error_with_an_excerpt(body: bytes, what: str) -> None:
    with pytest.raises(UpstreamProtocolError) as caught:
        _parse(body, headers={"content-type": "text/html", "trace-id": "t-9"})
    assert what in str(caught.value)
    assert caught.value.request_id == "t-9"
    assert not caught.value.retryable


# -- strict base64 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "item",
    ["", "   ", None, 42, "/9j/4AA", "/9j/4A==x", "/9j/ 4AAQ", "@@@@", "===="],
)
def test_decode_image_is_strict(item: Any) -> None:
    with pytest.raises(ValueError):
        decode_image(item)


def test_decode_image_accepts_padding_whitespace_around_and_data_urls() -> None:
    data = jpeg()
    assert decode_image(f"  {b64(data)}\n") == data
    assert decode_image(f"data:image/jpeg;base64,{b64(data)}") == data


# -- HTTP status -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (500, UpstreamUnavailableError, True),
        (502, UpstreamUnavailableError, True),
        (503, UpstreamUnavailableError, True),
        (408, UpstreamUnavailableError, True),
        (401, AuthenticationError, False),
        (403, AuthenticationError, False),
        (429, RateLimitedError, True),
        (404, UpstreamError, False),
        (400, UpstreamError, False),
        (422, UpstreamError, False),
    ],
)
def test_http_status_maps(status: int, kind: type[UpstreamError], retryable: bool) -> None:
    with pytest.raises(UpstreamError) as caught:
        _parse(b"upstream says no", status=status, headers={"trace-id": "t-1"})
    assert type(caught.value) is kind
    assert caught.value.retryable is retryable
    assert f"HTTP {status}" in str(caught.value)
    assert "upstream says no" in str(caught.value)
    assert caught.value.request_id == "t-1"


def test_http_404_points_at_the_host_setting() -> None:
    error = error_for_http(404, {}, b"")
    assert "MINIMAX_API_HOST" in str(error) and error.code == "endpoint_not_found"


def test_http_429_honours_retry_after_else_the_rate_hint() -> None:
    assert error_for_http(429, {"retry-after": "7"}, b"").retry_after_s == 7.0
    assert error_for_http(429, {}, b"", rate_limit_wait_s=6.0).retry_after_s == 6.0


def test_http_4xx_with_a_base_resp_uses_the_status_table() -> None:
    body = json.dumps(failure(1008, "insufficient balance")).encode()
    assert isinstance(error_for_http(400, {}, body), QuotaExceededError)
    body_ok = json.dumps({"base_resp": {"status_code": 0}}).encode()
    assert type(error_for_http(400, {}, body_ok)) is UpstreamError


def test_http_auth_error_names_the_variable_and_host() -> None:
    error = error_for_http(401, {}, b"", host="https://api.minimax.io")
    assert "MINIMAX_API_KEY" in str(error) and "https://api.minimax.io" in str(error)


def test_error_bodies_are_redacted_and_bounded() -> None:
    body = (f"echo Authorization: Bearer {KEY} " + "x" * 5000).encode()
    with pytest.raises(UpstreamError) as caught:
        _parse(body, status=500)
    text = str(caught.value)
    assert KEY not in text and "[redacted]" in text
    assert len(text) < 600


def test_excerpt_is_one_line() -> None:
    assert excerpt(b"a\n\n  b\tc") == "a b c"
    assert excerpt(b"") == ""
    assert excerpt(b"x" * 1000).endswith("…")


# -- small helpers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after": "-2"}, None),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "inf"}, None),
        ({}, None),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # a date in the past
    ],
)
def test_retry_after_is_the_cores(headers: dict[str, str], expected: float | None) -> None:
    # MiniMax's Retry-After goes through the core's parser (no private copy).
    assert retry_after_from_headers(headers) == expected


def test_request_id_sources() -> None:
    assert request_id_from({"trace-id": " abc "}) == "abc"
    assert request_id_from({}, {"id": "body"}) == "body"
    assert request_id_from({}, {"id": 17}) == "17"
    assert request_id_from({}, {"id": ""}) is None
    assert request_id_from({}, None) is None
    assert request_id_from({"trace-id": "x" * 500}) == "x" * 128
