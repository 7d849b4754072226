"""Guarantees 5 and 6 across providers: every upstream fault, in each vendor's real
shape, through the real SDK and the core's one retry layer.

For each provider (OpenAI, Gemini, MiniMax) and each fault, the test checks the error
kind, the exact number of requests that reached the fake (retries bounded, one retry
layer, timeouts and refusals never re-sent), and that nothing invalid was saved: after
any fault the output root holds no file and no temp leftover.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import reliability_kit
from reliability_kit import CANARY, PROVIDERS, build_stack, image_files, temp_leftovers, verify_image_file

from atelier_core import (
    AuthenticationError,
    Operation,
    RateLimitedError,
    SafetyRefusalError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from atelier_core.engine.pipeline import Pipeline
from atelier_core.plugin.types import ImageCall
from atelier_core.testing import FakeUpstream, Reply

pytestmark = pytest.mark.anyio

NAMES = sorted(PROVIDERS)
MAX_RETRIES = 2  # reliability_kit.provider_settings


async def generate(atelier: Pipeline, model: str, **extra: object):  # type: ignore[no-untyped-def]
    return await atelier.execute(
        ImageCall(model=model, prompt="a lighthouse at dusk", **extra),  # type: ignore[arg-type]
        Operation.GENERATE,
    )


def assert_clean(tmp_path: Path) -> None:
    """No image and no temp file: nothing was saved as if it were good."""
    root = tmp_path / "images"
    assert image_files(root) == []
    assert temp_leftovers(root) == []


def queue(upstream: FakeUpstream, provider: str, *replies: Reply) -> None:
    reliability_kit.queue(upstream, PROVIDERS[provider].route, *replies)


@pytest.mark.parametrize("provider", NAMES)
async def test_a_good_answer_is_saved_complete(
    provider: str, stack: Pipeline, upstream: FakeUpstream, tmp_path: Path
) -> None:
    shape = PROVIDERS[provider]
    queue(upstream, provider, shape.ok())
    outcome = await generate(stack, shape.model)
    assert len(outcome.images) == 1 and not outcome.failures
    assert len(upstream.requests) == 1
    saved = Path(outcome.images[0].path)
    assert saved.is_relative_to(tmp_path / "images")
    verify_image_file(saved)
    assert temp_leftovers(tmp_path / "images") == []


@pytest.mark.parametrize("provider", NAMES)
async def test_rate_limit_then_success_is_retried_once(provider: str, stack: Pipeline, upstream: FakeUpstream) -> None:
    shape = PROVIDERS[provider]
    queue(upstream, provider, shape.rate_limited(), shape.ok())
    outcome = await generate(stack, shape.model)
    assert len(outcome.images) == 1
    assert len(upstream.requests) == 2  # one retry, by one layer (SDK retries are off)


@pytest.mark.parametrize("provider", ["openai", "gemini"])
async def test_retry_after_is_honoured(provider: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    shape = PROVIDERS[provider]
    wait = Reply(status=429, headers={"retry-after": "0.4"}, json={"error": {"code": 429, "message": "slow down"}})
    queue(upstream, provider, wait, shape.ok())
    atelier = build_stack(tmp_path, upstream)
    try:
        await generate(atelier, shape.model)
    finally:
        await atelier.aclose()
    first, second = upstream.requests
    assert second.at - first.at >= 0.35  # waited for Retry-After, not the 10 ms backoff


@pytest.mark.parametrize("provider", ["openai", "gemini"])
async def test_retry_after_over_the_cap_is_returned_not_waited(
    provider: str, tmp_path: Path, upstream: FakeUpstream
) -> None:
    shape = PROVIDERS[provider]
    queue(
        upstream,
        provider,
        Reply(status=429, headers={"retry-after": "121"}, json={"error": {"code": 429, "message": "slow down"}}),
    )
    atelier = build_stack(tmp_path, upstream)
    started = time.monotonic()
    try:
        with pytest.raises(RateLimitedError) as caught:
            await generate(atelier, shape.model)
    finally:
        await atelier.aclose()
    assert time.monotonic() - started < 3
    assert caught.value.retry_after_s == 121 and caught.value.retryable
    assert len(upstream.requests) == 1
    assert_clean(tmp_path)


@pytest.mark.parametrize("status", [500, 503])
@pytest.mark.parametrize("provider", NAMES)
async def test_persistent_5xx_uses_exactly_the_retry_budget(
    provider: str, status: int, stack: Pipeline, upstream: FakeUpstream, tmp_path: Path
) -> None:
    shape = PROVIDERS[provider]
    body = {"error": {"code": status, "message": "backend unavailable", "status": "UNAVAILABLE"}}
    queue(upstream, provider, *[Reply(status=status, json=body) for _ in range(5)])
    with pytest.raises(UpstreamUnavailableError):
        await generate(stack, shape.model)
    assert len(upstream.requests) == 1 + MAX_RETRIES  # F4/F9: one layer, the configured budget
    assert_clean(tmp_path)


@pytest.mark.parametrize("provider", NAMES)
async def test_connection_reset_is_retried_within_the_budget(
    provider: str, stack: Pipeline, upstream: FakeUpstream, tmp_path: Path
) -> None:
    shape = PROVIDERS[provider]
    queue(upstream, provider, Reply(reset=True), shape.ok())
    outcome = await generate(stack, shape.model)
    assert len(outcome.images) == 1
    assert len(upstream.requests) == 2


@pytest.mark.parametrize("provider", NAMES)
async def test_a_hang_ends_at_our_timeout_and_is_never_resent(
    provider: str, tmp_path: Path, upstream: FakeUpstream
) -> None:
    shape = PROVIDERS[provider]
    queue(upstream, provider, Reply(hang=True), shape.ok())
    atelier = build_stack(tmp_path, upstream, per_provider={provider: {"timeout_s": 0.5}})
    started = time.monotonic()
    try:
        with pytest.raises(UpstreamTimeoutError) as caught:
            await generate(atelier, shape.model)
    finally:
        await atelier.aclose()
    assert time.monotonic() - started < 4  # our deadline, not the SDK's 600 s or "none"
    assert not caught.value.retryable and "billed" in str(caught.value)
    assert len(upstream.requests) == 1  # F8: may have been billed, so never re-sent
    assert_clean(tmp_path)


MALFORMED: dict[str, Callable[[], Reply]] = {
    "json": lambda: Reply(body=b'{"data": [{"b64_json": "iVBOR', content_type="application/json"),
    "html": lambda: Reply(body=b"<html><body>502 Bad Gateway</body></html>", content_type="text/html"),
    "short-body": lambda: Reply(json={"data": [], "candidates": []}, truncate_to=10),
}


@pytest.mark.parametrize("fault", sorted(MALFORMED))
@pytest.mark.parametrize("provider", NAMES)
async def test_malformed_answers_are_errors_and_save_nothing(
    provider: str, fault: str, stack: Pipeline, upstream: FakeUpstream, tmp_path: Path
) -> None:
    shape = PROVIDERS[provider]
    queue(upstream, provider, *[MALFORMED[fault]() for _ in range(3)])
    with pytest.raises(UpstreamError) as caught:
        await generate(stack, shape.model)
    error = caught.value
    # A short body may be a dropped connection (retryable, bounded); anything else is the
    # provider's answer at fault and is never retried.
    assert len(upstream.requests) <= 1 + MAX_RETRIES
    if fault != "short-body":
        assert isinstance(error, UpstreamProtocolError), repr(error)
        assert len(upstream.requests) == 1
    assert_clean(tmp_path)


@pytest.mark.parametrize("provider", NAMES)
async def test_truncated_base64_image_is_never_saved(
    provider: str, stack: Pipeline, upstream: FakeUpstream, tmp_path: Path
) -> None:
    shape = PROVIDERS[provider]
    queue(upstream, provider, shape.truncated())
    with pytest.raises(UpstreamProtocolError):
        await generate(stack, shape.model)
    assert len(upstream.requests) == 1
    assert_clean(tmp_path)


@pytest.mark.parametrize("provider", ["openai", "minimax"])
async def test_one_truncated_image_of_several_is_reported_and_the_rest_saved(
    provider: str, stack: Pipeline, upstream: FakeUpstream, tmp_path: Path
) -> None:
    from reliability_kit import minimax_ok, openai_ok

    body = openai_ok(3, truncate=1) if provider == "openai" else minimax_ok(3, truncate=1)
    queue(upstream, provider, Reply(json=body))
    outcome = await generate(stack, PROVIDERS[provider].model, n=3)
    assert [f.index for f in outcome.failures] == [1]  # PF1: reported with a reason
    assert len(outcome.images) == 2
    assert any("of 3" in note for note in outcome.notes)
    for record in outcome.images:
        verify_image_file(Path(record.path))
    assert len(image_files(tmp_path / "images")) == 2


REFUSALS = [(name, label) for name in NAMES for label, _ in PROVIDERS[name].refusals]


@pytest.mark.parametrize(("provider", "label"), REFUSALS)
async def test_safety_refusals_are_reported_as_such_and_never_retried(
    provider: str, label: str, stack: Pipeline, upstream: FakeUpstream, tmp_path: Path
) -> None:
    make = dict(PROVIDERS[provider].refusals)[label]
    queue(upstream, provider, make(), make(), make())
    with pytest.raises(SafetyRefusalError) as caught:
        await generate(stack, PROVIDERS[provider].model)
    assert not caught.value.retryable
    assert caught.value.provider == provider
    assert len(upstream.requests) == 1  # S1–S3: never retried
    assert_clean(tmp_path)


@pytest.mark.parametrize("provider", NAMES)
async def test_key_errors_are_not_retried_and_never_echo_the_key(
    provider: str, stack: Pipeline, upstream: FakeUpstream, tmp_path: Path
) -> None:
    shape = PROVIDERS[provider]
    queue(upstream, provider, shape.auth_echo(), shape.auth_echo(), shape.auth_echo())
    with pytest.raises(AuthenticationError) as caught:
        await generate(stack, shape.model)
    assert len(upstream.requests) == 1
    text = str(caught.value) + repr(caught.value.to_dict())
    assert CANARY not in text
    assert_clean(tmp_path)
