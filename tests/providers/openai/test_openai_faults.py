"""Every upstream fault, through the real SDK, mapped to the core's error kinds — and,
where retries matter, through the core's single retry layer (``call_with_retries``)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from openai_support import GEN, KEY, Recorder, RegistryFactory, b64, images_json, png_bytes, validated

from atelier_core import (
    AuthenticationError,
    Operation,
    ProviderResult,
    QuotaExceededError,
    RateLimitedError,
    RetiredModelError,
    SafetyRefusalError,
    UnknownModelError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from atelier_core.engine.registry import ModelEntry
from atelier_core.engine.throttle import ProviderLimiter, RetryPolicy, call_with_retries
from atelier_core.testing import FakeUpstream

pytestmark = pytest.mark.usefixtures("anyio_backend")

# The body OpenAI sends for a GPT Image moderation block (shape as reported in the wild).
MODERATION = {
    "error": {
        "code": "moderation_blocked",
        "message": "Your request was rejected by the safety system. If you believe this is an error, contact us. "
        "safety_violations=[sexual].",
        "param": None,
        "type": "image_generation_user_error",
    }
}


async def call(entry: ModelEntry, **kwargs: Any) -> ProviderResult:
    request = validated(entry, **kwargs).request
    try:
        return await entry.provider.run(request, Recorder().ctx)
    finally:
        await entry.provider.aclose()


async def with_retries(entry: ModelEntry, *, max_retries: int = 2, **kwargs: Any) -> ProviderResult:
    """The provider call wrapped in the core's one retry layer, with tiny backoffs."""
    request = validated(entry, **kwargs).request
    settings = entry.provider.settings
    policy = RetryPolicy(
        max_retries=max_retries,
        retry_after_cap_s=settings.retry_after_cap_s,
        backoff_base_s=0.01,
        timeout_s=settings.timeout_s,
    )
    limiter = ProviderLimiter(max_concurrency=2, requests_per_minute=None)
    try:
        return await call_with_retries(
            lambda: entry.provider.run(request, Recorder().ctx), policy=policy, limiter=limiter, provider="openai"
        )
    finally:
        await entry.provider.aclose()


# -- 429 ------------------------------------------------------------------------------


async def test_429_with_retry_after_is_rate_limited(upstream: FakeUpstream, make_registry: RegistryFactory) -> None:
    upstream.reply(
        "POST",
        GEN,
        status=429,
        headers={"retry-after": "7", "x-request-id": "req_429"},
        json={
            "error": {
                "code": "rate_limit_exceeded",
                "message": "Rate limit reached for images per min",
                "type": "requests",
            }
        },
    )
    with pytest.raises(RateLimitedError) as caught:
        await call(make_registry().resolve("gpt-image-2"))
    error = caught.value
    assert error.retryable and error.retry_after_s == 7.0 and error.request_id == "req_429"
    assert "Retry after 7 s" in str(error)
    assert len(upstream.requests) == 1  # the SDK itself never retries (max_retries=0)


async def test_429_then_success_through_the_core_retry_layer(
    upstream: FakeUpstream, make_registry: RegistryFactory
) -> None:
    upstream.reply(
        "POST",
        GEN,
        status=429,
        headers={"retry-after-ms": "150"},
        json={"error": {"code": "rate_limit_exceeded", "message": "slow down"}},
    )
    upstream.reply("POST", GEN, json=images_json(1))
    result = await with_retries(make_registry(retry_after_cap_s=5).resolve("gpt-image-2"))
    assert len(result.images) == 1
    first, second = upstream.requests
    assert second.at - first.at >= 0.14  # waited as asked, once
    # each attempt is a fresh SDK attempt: the SDK's own retry counter stays at 0
    assert first.headers["x-stainless-retry-count"] == second.headers["x-stainless-retry-count"] == "0"


async def test_429_over_the_cap_is_not_retried(upstream: FakeUpstream, make_registry: RegistryFactory) -> None:
    upstream.reply("POST", GEN, status=429, headers={"retry-after": "121"}, json={"error": {"message": "later"}})
    with pytest.raises(RateLimitedError) as caught:
        await with_retries(make_registry(retry_after_cap_s=2).resolve("gpt-image-2"))
    assert caught.value.retry_after_s == 121.0 and len(upstream.requests) == 1


async def test_429_http_date_and_garbage_retry_after(upstream: FakeUpstream, make_registry: RegistryFactory) -> None:
    from email.utils import formatdate

    upstream.reply(
        "POST",
        GEN,
        status=429,
        headers={"retry-after": formatdate(time.time() + 30, usegmt=True)},
        json={"error": {"message": "later"}},
    )
    upstream.reply("POST", GEN, status=429, headers={"retry-after": "whenever"}, json={"error": {"message": "later"}})
    entry = make_registry().resolve("gpt-image-2")
    with pytest.raises(RateLimitedError) as dated:
        await call(entry)
    assert dated.value.retry_after_s is not None and 25 <= dated.value.retry_after_s <= 31
    with pytest.raises(RateLimitedError) as garbage:
        await call(entry)
    assert garbage.value.retry_after_s is None  # the core falls back to its backoff


async def test_insufficient_quota_is_not_a_rate_limit(upstream: FakeUpstream, make_registry: RegistryFactory) -> None:
    upstream.reply(
        "POST",
        GEN,
        status=429,
        headers={"retry-after": "1"},
        json={
            "error": {
                "code": "insufficient_quota",
                "type": "insufficient_quota",
                "message": "You exceeded your current quota, please check your plan and billing details.",
            }
        },
    )
    with pytest.raises(QuotaExceededError) as caught:
        await with_retries(make_registry().resolve("gpt-image-2"))
    assert not caught.value.retryable and len(upstream.requests) == 1
    assert "waiting will not help" in str(caught.value)


# -- 5xx, connection, timeouts -----------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_is_unavailable_and_retryable(
    status: int, upstream: FakeUpstream, make_registry: RegistryFactory
) -> None:
    upstream.reply(
        "POST",
        GEN,
        status=status,
        headers={"x-request-id": f"req_{status}"},
        json={"error": {"message": "The server had an error", "type": "server_error"}},
    )
    with pytest.raises(UpstreamUnavailableError) as caught:
        await call(make_registry().resolve("gpt-image-2"))
    assert caught.value.retryable and caught.value.request_id == f"req_{status}"
    assert len(upstream.requests) == 1


async def test_5xx_then_success_and_persistent_503_use_exactly_the_budget(
    upstream: FakeUpstream, make_registry: RegistryFactory
) -> None:
    upstream.reply("POST", GEN, status=500, json={"error": {"message": "boom"}})
    upstream.reply("POST", GEN, json=images_json(1))
    assert len((await with_retries(make_registry().resolve("gpt-image-2"))).images) == 1
    assert len(upstream.requests) == 2
    for _ in range(5):
        upstream.reply("POST", GEN, status=503, json={"error": {"message": "overloaded"}})
    with pytest.raises(UpstreamUnavailableError):
        await with_retries(make_registry().resolve("gpt-image-2"), max_retries=2)
    assert len(upstream.requests) == 2 + 3  # one retry layer: 1 try + 2 retries, no SDK retries


async def test_x_should_retry_false_is_honoured(upstream: FakeUpstream, make_registry: RegistryFactory) -> None:
    upstream.reply("POST", GEN, status=503, headers={"x-should-retry": "false"}, json={"error": {"message": "no"}})
    with pytest.raises(UpstreamUnavailableError) as caught:
        await with_retries(make_registry().resolve("gpt-image-2"))
    assert not caught.value.retryable and len(upstream.requests) == 1


async def test_hang_past_the_timeout_may_have_been_billed(
    upstream: FakeUpstream, make_registry: RegistryFactory
) -> None:
    upstream.reply("POST", GEN, hang=True)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeoutError) as caught:
        await with_retries(make_registry(timeout_s=0.4).resolve("gpt-image-2"))
    assert time.monotonic() - started < 3
    assert "billed" in str(caught.value) and not caught.value.retryable
    assert len(upstream.requests) == 1  # never resubmitted


async def test_connection_refused_is_unavailable(make_registry: RegistryFactory) -> None:
    import socket

    with socket.socket() as probe:  # a port with no listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    entry = make_registry(base_url=f"http://127.0.0.1:{port}/v1").resolve("gpt-image-2")
    with pytest.raises(UpstreamUnavailableError) as caught:
        await call(entry)
    assert caught.value.retryable


async def test_reset_before_headers_is_unavailable(upstream: FakeUpstream, make_registry: RegistryFactory) -> None:
    upstream.reply("POST", GEN, reset=True)
    with pytest.raises(UpstreamUnavailableError):
        await call(make_registry().resolve("gpt-image-2"))


async def test_body_shorter_than_content_length_is_not_blindly_retried(
    upstream: FakeUpstream, make_registry: RegistryFactory
) -> None:
    body = json.dumps(images_json(1)).encode()
    upstream.reply("POST", GEN, body=body, content_type="application/json", truncate_to=len(body) // 2)
    with pytest.raises(UpstreamError) as caught:
        await with_retries(make_registry().resolve("gpt-image-2"))
    assert not caught.value.retryable and len(upstream.requests) == 1
    assert caught.value.code == "upstream_incomplete_answer" and "billed" in str(caught.value)


# -- malformed answers -----------------------------------------------------------------


async def test_malformed_json_is_a_protocol_error(upstream: FakeUpstream, make_registry: RegistryFactory) -> None:
    upstream.reply(
        "POST",
        GEN,
        body='{"created": 1, "data": [',
        content_type="application/json",
        headers={"x-request-id": "req_bad"},
    )
    with pytest.raises(UpstreamProtocolError) as caught:
        await call(make_registry().resolve("gpt-image-2"))
    assert caught.value.request_id == "req_bad" and not caught.value.retryable


async def test_html_instead_of_json(upstream: FakeUpstream, make_registry: RegistryFactory) -> None:
    upstream.reply("POST", GEN, body="<html>502 Bad Gateway</html>", content_type="text/html")
    with pytest.raises(UpstreamProtocolError):
        await call(make_registry().resolve("gpt-image-2"))


@pytest.mark.parametrize("data", [None, [], [{}], [{"b64_json": "not base64!"}]])
async def test_no_usable_image(data: Any, upstream: FakeUpstream, make_registry: RegistryFactory) -> None:
    body: dict[str, Any] = {"created": 1}
    if data is not None:
        body["data"] = data
    upstream.reply("POST", GEN, json=body)
    with pytest.raises(UpstreamProtocolError):
        await call(make_registry().resolve("gpt-image-2"))


async def test_truncated_base64_single_image(upstream: FakeUpstream, make_registry: RegistryFactory) -> None:
    text = b64(png_bytes(32, 32))
    upstream.reply("POST", GEN, json={"created": 1, "data": [{"b64_json": text[: len(text) // 2 - 1]}]})
    with pytest.raises(UpstreamProtocolError, match="base64"):
        await call(make_registry().resolve("gpt-image-2"))


async def test_partial_success_keeps_the_good_images(upstream: FakeUpstream, make_registry: RegistryFactory) -> None:
    good = png_bytes()
    text = b64(good)
    upstream.reply(
        "POST",
        GEN,
        headers={"x-request-id": "req_partial"},
        json={
            "created": 1,
            "data": [{"b64_json": text}, {"b64_json": text[:-5]}, {"b64_json": text}, {"b64_json": None}],
            "usage": {
                "input_tokens": 1,
                "output_tokens": 4,
                "total_tokens": 5,
                "input_tokens_details": {"text_tokens": 1, "image_tokens": 0},
            },
        },
    )
    result = await call(make_registry().resolve("gpt-image-2"), n=4)
    assert [image.data for image in result.images] == [good, good]
    assert [(f.index, f.code) for f in result.failures] == [
        (1, "upstream_protocol_error"),
        (3, "upstream_protocol_error"),
    ]
    assert result.request_id == "req_partial" and result.usage is not None and result.usage.images == 2


# -- refusals and rejections -----------------------------------------------------------


async def test_moderation_block_is_a_safety_refusal(upstream: FakeUpstream, make_registry: RegistryFactory) -> None:
    upstream.reply("POST", GEN, status=400, json=MODERATION, headers={"x-request-id": "req_mod"})
    with pytest.raises(SafetyRefusalError) as caught:
        await with_retries(make_registry().resolve("gpt-image-2"))
    error = caught.value
    assert "safety_violations=[sexual]" in str(error)  # quotes the provider's reason
    assert not error.retryable and error.request_id == "req_mod" and error.provider == "openai"
    assert "rephrase" in str(error)
    assert len(upstream.requests) == 1


async def test_legacy_content_policy_violation(upstream: FakeUpstream, make_registry: RegistryFactory) -> None:
    upstream.reply(
        "POST",
        "/v1/images/edits",
        status=400,
        json={
            "error": {
                "code": "content_policy_violation",
                "message": "Your request was rejected as a result of our safety system.",
            }
        },
    )
    from openai_support import input_image

    entry = make_registry().resolve("gpt-image-1.5")
    request = validated(entry, Operation.EDIT, (input_image(),)).request
    with pytest.raises(SafetyRefusalError):
        await entry.provider.run(request, Recorder().ctx)
    await entry.provider.aclose()


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_errors_name_the_variable_and_never_the_key(
    status: int, upstream: FakeUpstream, make_registry: RegistryFactory
) -> None:
    upstream.reply(
        "POST",
        GEN,
        status=status,
        json={
            "error": {
                "code": "invalid_api_key",
                "message": f"Incorrect API key provided: {KEY}. You can find your key at ...",
            }
        },
    )
    with pytest.raises(AuthenticationError) as caught:
        await with_retries(make_registry().resolve("gpt-image-2"))
    text = str(caught.value) + json.dumps(caught.value.to_dict())
    assert "OPENAI_API_KEY" in text and KEY not in text and "sk-test" not in text
    assert not caught.value.retryable and len(upstream.requests) == 1


async def test_404_model_suggests_models(upstream: FakeUpstream, make_registry: RegistryFactory) -> None:
    upstream.reply(
        "POST",
        GEN,
        status=404,
        json={
            "error": {
                "code": "model_not_found",
                "message": "The model `gpt-image-2.6-flare` does not exist or you do not have access to it.",
            }
        },
    )
    with pytest.raises(UnknownModelError) as caught:
        await call(make_registry().resolve("gpt-image-2.6-flare"))
    error = caught.value
    assert error.suggestions and "gpt-image-2.6-flare" not in error.suggestions
    assert all(name.startswith("gpt-image-") for name in error.suggestions)
    assert "does not serve it" in str(error) and error.provider == "openai"


def test_retired_model_names_the_replacement(make_registry: RegistryFactory) -> None:
    registry = make_registry()
    for name in ("gpt-image-1", "openai/gpt-image-1"):
        with pytest.raises(RetiredModelError) as caught:
            registry.resolve(name)
        assert "2026-10-23" in str(caught.value) and "gpt-image-2.5-sunburst" in str(caught.value)


async def test_other_400_is_a_non_retryable_rejection(upstream: FakeUpstream, make_registry: RegistryFactory) -> None:
    upstream.reply(
        "POST",
        GEN,
        status=400,
        json={
            "error": {
                "code": "invalid_value",
                "param": "size",
                "message": "Invalid size '4096x4096'.",
                "type": "invalid_request_error",
            }
        },
    )
    with pytest.raises(UpstreamError) as caught:
        await with_retries(make_registry().resolve("gpt-image-2"))
    error = caught.value
    assert error.code == "upstream_rejected" and error.parameter == "size" and not error.retryable
    assert "Invalid size" in str(error)
