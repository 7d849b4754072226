"""The provider helpers every HTTP provider shares: status → error, redaction, base64."""

from __future__ import annotations

import base64

import pytest

from atelier_core import (
    AuthenticationError,
    QuotaExceededError,
    RateLimitedError,
    SafetyRefusalError,
    UpstreamError,
    UpstreamUnavailableError,
    decode_base64,
    error_from_status,
    redact,
)
from atelier_core.testing import make_image

KEY = "sk-live-0123456789abcdef"


def test_decode_base64_is_strict() -> None:
    data = make_image(8, 8)
    text = base64.b64encode(data).decode()
    assert decode_base64(text) == data
    assert decode_base64(f"data:image/png;base64,{text[:20]}\n{text[20:]}") == data
    assert decode_base64(base64.urlsafe_b64encode(data).decode()) == data
    for bad in (text[:-3], text[:10] + "*" + text[11:], "é" + text, "", text + "====", "data:image/png,xx"):
        with pytest.raises(ValueError, match="the image"):
            decode_base64(bad)
    # a lenient decoder would drop the junk silently; this one refuses
    assert base64.b64decode(text[:10] + "!" + text[10:] + "=", validate=False)


def test_redact_removes_configured_and_key_shaped_secrets() -> None:
    text = redact(
        f"Incorrect API key provided: {KEY}; try https://bob:hunter2@api.x/v1 with Bearer abc.def.ghi", ["hunter2"]
    )
    assert KEY not in text and "hunter2" not in text and "abc.def.ghi" not in text
    assert text.lower().count("[redacted]") >= 3
    assert redact("AIzaSyA-0123456789abcdefghijklmnop").lower() == "[redacted]"
    assert redact("nothing secret here") == "nothing secret here"


@pytest.mark.parametrize(
    ("status", "message", "kind", "code"),
    [
        (400, "Your request was rejected by our safety system", SafetyRefusalError, "safety_refusal"),
        (429, "slow down", RateLimitedError, "rate_limited"),
        (429, "You exceeded your current quota", QuotaExceededError, "quota_exceeded"),
        (402, "", QuotaExceededError, "quota_exceeded"),
        (401, f"Incorrect API key provided: {KEY}", AuthenticationError, "authentication_failed"),
        (404, "The model `x` does not exist", UpstreamError, "model_not_found"),
        (404, "Not Found", UpstreamError, "endpoint_not_found"),
        (503, "overloaded", UpstreamUnavailableError, "upstream_unavailable"),
        (409, "conflict", UpstreamUnavailableError, "upstream_unavailable"),
        (413, "too big", UpstreamError, "request_too_large"),
        (400, "size must be one of 1024x1024", UpstreamError, "upstream_rejected"),
        (422, "invalid prompt", UpstreamError, "upstream_rejected"),
    ],
)
def test_error_from_status_ladder(status: int, message: str, kind: type, code: str) -> None:
    error = error_from_status(
        status,
        message,
        provider="pixel",
        model="p1",
        headers={"retry-after": "7"},
        request_id="req-1",
        key_variables=["PIXEL_API_KEY"],
    )
    assert type(error) is kind and error.code == code
    assert KEY not in str(error) and error.provider == "pixel" and error.request_id == "req-1"
    assert "pixel/p1" in str(error) and f"HTTP {status}" in str(error)
    if kind is RateLimitedError:
        assert error.retry_after_s == 7 and error.retryable
    if kind is AuthenticationError:
        assert "PIXEL_API_KEY" in str(error)
    if kind is UpstreamUnavailableError:
        assert error.retryable


def test_error_from_status_trusts_the_providers_safety_flag() -> None:
    assert type(error_from_status(400, "moderation_blocked", provider="p", safety=False)) is UpstreamError
    assert type(error_from_status(422, "nope", provider="p", safety=True)) is SafetyRefusalError
