"""The async call against the fake Pixel Forge: what goes over the wire, and failures."""

from __future__ import annotations

import atelier_pixelart
import pytest
from atelier_pixelart import PixelArtProvider, PixelArtSettings
from fake_pixelforge import KEY, FakePixelForge

from atelier_core import (
    AuthenticationError,
    CallContext,
    ImageRequest,
    Operation,
    RateLimitedError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from atelier_core.testing import FakeUpstream, build_test_registry, configured, read_image

CTX = CallContext(timeout_s=10)


def _request(**kw: object) -> ImageRequest:
    values: dict[str, object] = dict(
        operation=Operation.GENERATE,
        model="pixel-1",
        prompt="a castle",
        width=32,
        height=32,
        n=2,
        output_format="gif",
    )
    values.update(kw)
    return ImageRequest(**values)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_generate_sends_json_with_bearer_key(pixelart: PixelArtProvider, upstream: FakeUpstream) -> None:
    result = await pixelart.generate(_request(options={"palette": "nes"}), CTX)
    assert [read_image(i.data).size for i in result.images] == ["32x32", "32x32"]
    assert read_image(result.images[0].data).format == "gif"
    (sent,) = upstream.requests
    assert sent.path == "/v1/images"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.json()["palette"] == "nes" and sent.json()["count"] == 2
    await pixelart.aclose()


@pytest.mark.anyio
async def test_errors_map_to_atelier_errors(pixelart: PixelArtProvider, upstream: FakeUpstream) -> None:
    upstream.reply("POST", "/v1/images", status=429, headers={"retry-after": "1"}, json={"error": {}})
    with pytest.raises(RateLimitedError) as caught:
        await pixelart.generate(_request(), CTX)
    assert caught.value.retry_after_s == 1
    upstream.reply("POST", "/v1/images", status=200, body=b"<html>oops</html>")
    with pytest.raises(UpstreamProtocolError):
        await pixelart.generate(_request(), CTX)
    upstream.reply("POST", "/v1/images", reset=True)
    with pytest.raises(UpstreamUnavailableError):
        await pixelart.generate(_request(), CTX)
    await pixelart.aclose()


@pytest.mark.anyio
async def test_timeout_is_not_retryable(forge: FakePixelForge, upstream: FakeUpstream) -> None:
    provider = configured(PixelArtProvider(), api_key=KEY, base_url=forge.url, timeout_s=0.2)
    upstream.reply("POST", "/v1/images", hang=True)
    with pytest.raises(UpstreamTimeoutError) as caught:
        await provider.generate(_request(), CTX)
    assert not caught.value.retryable
    await provider.aclose()


@pytest.mark.anyio
async def test_wrong_key_is_an_authentication_error(forge: FakePixelForge) -> None:
    provider = configured(PixelArtProvider(), api_key="wrong", base_url=forge.url)
    with pytest.raises(AuthenticationError, match="PIXELART_API_KEY"):
        await provider.generate(_request(), CTX)
    await provider.aclose()


def test_settings_read_the_vendor_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIXELART_API_KEY", "from-env")
    monkeypatch.setenv("PIXELART_BASE_URL", "http://127.0.0.1:9/v1")
    settings = PixelArtSettings()
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "from-env"
    assert settings.base_url == "http://127.0.0.1:9/v1"
    assert "from-env" not in repr(settings)


def test_registers_through_the_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIXELART_API_KEY", raising=False)
    registry = build_test_registry([atelier_pixelart])
    assert set(registry.models) == {"pixelart/pixel-1", "pixelart/pixel-1-mini"}
    assert registry.resolve("pixel-art").canonical_id == "pixelart/pixel-1"
    reason = registry.models["pixelart/pixel-1"].unavailable_reason()
    assert reason is not None and "PIXELART_API_KEY" in reason
