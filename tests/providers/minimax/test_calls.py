"""Real calls through the provider's httpx2 client to a fake MiniMax on 127.0.0.1.

What reached the "vendor" is read back from the fake's request log: every parameter on
the wire, the auth header, the host; then each failure MiniMax (or the network) can
produce, and what the caller gets for it.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

import pytest

from atelier_core import (
    AuthenticationError,
    MissingCredentialsError,
    QuotaExceededError,
    RateLimitedError,
    SafetyRefusalError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from atelier_core.testing import FakeUpstream, configured, read_image
from atelier_minimax import MiniMaxProvider

from ._support import KEY, PATH, answer, b64, context, draw, failure, jpeg, portrait, validated

Make = Callable[..., MiniMaxProvider]


async def test_generate_sends_every_image_01_parameter(upstream: FakeUpstream, provider: MiniMaxProvider) -> None:
    upstream.handle("POST", PATH, draw)
    face = portrait("png")
    request = validated(
        provider,
        n=3,
        seed=77,
        size="768x512",
        images=[face],
        prompt="the same woman as a 1920s aviator",
        options={"prompt_optimizer": False, "aigc_watermark": True},
    )
    result = await provider.run(request, context())

    (sent,) = upstream.requests
    assert sent.method == "POST" and sent.path == "/v1/image_generation"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["content-type"] == "application/json"
    body = sent.json()
    assert body == {
        "model": "image-01",
        "prompt": "the same woman as a 1920s aviator",
        "response_format": "base64",
        "n": 3,
        "width": 768,
        "height": 512,
        "seed": 77,
        "prompt_optimizer": False,
        "aigc_watermark": True,
        "subject_reference": [{"type": "character", "image_file": "data:image/png;base64," + b64(face.data)}],
    }
    assert len(result.images) == 3 and result.failures == []
    for image in result.images:
        info = read_image(image.data)
        assert (info.format, info.size) == ("jpeg", "768x512")
        assert image.mime_type == "image/jpeg"
    assert result.request_id == "hdr-trace-1"
    assert result.applied == {"size": "768x512", "subject_reference": "character"}
    assert result.usage is not None and result.usage.images == 3


async def test_generate_sends_every_image_01_live_parameter(upstream: FakeUpstream, provider: MiniMaxProvider) -> None:
    upstream.handle("POST", PATH, draw)
    request = validated(
        provider,
        "image-01-live",
        aspect_ratio="9:16",
        style="watercolor",
        seed=5,
        n=2,
        options={"style_weight": 0.4, "prompt_optimizer": True},
    )
    result = await provider.run(request, context())
    body = upstream.requests[0].json()
    assert body == {
        "model": "image-01-live",
        "prompt": "a lighthouse at dusk",
        "response_format": "base64",
        "n": 2,
        "aspect_ratio": "9:16",
        "seed": 5,
        "prompt_optimizer": True,
        "style": {"style_type": "水彩", "style_weight": 0.4},
    }
    assert [read_image(i.data).size for i in result.images] == ["720x1280", "720x1280"]
    assert result.applied == {"size": "720x1280", "style": "水彩", "style_weight": 0.4}


async def test_progress_is_reported(upstream: FakeUpstream, provider: MiniMaxProvider) -> None:
    from atelier_core import CallContext

    upstream.handle("POST", PATH, draw)
    seen: list[tuple[float, str]] = []

    async def progress(fraction: float, message: str) -> None:
        seen.append((fraction, message))

    await provider.run(validated(provider), CallContext(timeout_s=5, progress=progress))
    assert [f for f, _ in seen] == [0.0, 1.0]
    assert "MiniMax" in seen[0][1]


async def test_client_is_created_lazily_reused_and_closed(upstream: FakeUpstream, make_provider: Make) -> None:
    upstream.handle("POST", PATH, draw)
    provider = make_provider()
    assert provider._client is None  # configuring builds nothing
    await provider.run(validated(provider), context())
    client = provider._client
    assert client is not None and client._http is not None
    await provider.run(validated(provider), context())
    assert provider._client is client  # one client, reused
    http = client._http
    await provider.aclose()
    assert provider._client is None and http.is_closed
    await provider.aclose()  # twice is fine
    await provider.run(validated(provider), context())  # and a new one after closing
    assert len(upstream.requests) == 3


async def test_missing_key_at_call_time_is_a_clear_error(make_provider: Make) -> None:
    provider = make_provider(api_key=None)
    with pytest.raises(MissingCredentialsError, match="MINIMAX_API_KEY"):
        await provider.run(validated(provider), context())


# -- hosts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chosen", "host"),
    [
        ({}, "https://api.minimax.io"),
        ({"region": "global"}, "https://api.minimax.io"),
        ({"region": "cn"}, "https://api.minimaxi.com"),
        ({"api_host": "https://api.minimaxi.com"}, "https://api.minimaxi.com"),
        ({"region": "cn", "api_host": "api.minimax.io"}, "https://api.minimax.io"),
    ],
)
async def test_the_client_targets_the_chosen_host(chosen: dict[str, str], host: str) -> None:
    provider = configured(MiniMaxProvider(), api_key=KEY, **chosen)
    assert isinstance(provider, MiniMaxProvider)
    client = provider._http()  # builds the client object only: no connection is made
    assert client.url == f"{host}/v1/image_generation"
    assert str(client._client().base_url).rstrip("/") == host
    await provider.aclose()


async def test_env_host_reaches_the_fake(upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    # MINIMAX_API_HOST drives the real client end to end (the fake stands in for the host).
    import atelier_minimax
    from atelier_core.engine.registry import build_registry
    from atelier_core.settings import Settings

    monkeypatch.setenv("MINIMAX_API_KEY", KEY)
    monkeypatch.setenv("MINIMAX_API_HOST", upstream.url)
    upstream.handle("POST", PATH, draw)
    registry = build_registry(Settings(), plugins=[("minimax", atelier_minimax)], entry_points=False)
    provider = registry.providers["minimax"]
    assert isinstance(provider, MiniMaxProvider)
    try:
        result = await provider.run(validated(provider), context())
    finally:
        await registry.aclose()
    assert len(result.images) == 1 and len(upstream.requests) == 1


async def test_base_url_with_a_path_prefix(upstream: FakeUpstream, make_provider: Make) -> None:
    upstream.handle("POST", "/gateway/minimax/v1/image_generation", draw)
    provider = make_provider(base_url=upstream.url + "/gateway/minimax/v1")
    await provider.run(validated(provider), context())
    assert upstream.requests[0].path == "/gateway/minimax/v1/image_generation"


# -- base_resp errors over the wire ------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (1000, UpstreamUnavailableError),
        (1001, UpstreamUnavailableError),
        (1002, RateLimitedError),
        (1004, AuthenticationError),
        (1008, QuotaExceededError),
        (1024, UpstreamUnavailableError),
        (1026, SafetyRefusalError),
        (1027, SafetyRefusalError),
        (2013, UpstreamError),
        (2049, AuthenticationError),
        (2061, UpstreamError),
        (9999, UpstreamError),
    ],
)
async def test_http_200_with_an_error_status_is_not_success(
    upstream: FakeUpstream, provider: MiniMaxProvider, code: int, kind: type[UpstreamError]
) -> None:
    upstream.reply("POST", PATH, json=failure(code, f"status {code} text"), headers={"Trace-Id": "tr-42"})
    with pytest.raises(UpstreamError) as caught:
        await provider.run(validated(provider), context())
    assert type(caught.value) is kind
    assert caught.value.request_id == "tr-42"
    assert f"status {code} text" in str(caught.value)
    assert KEY not in json.dumps(caught.value.to_dict())
    assert len(upstream.requests) == 1  # the provider itself never retries


async def test_rate_limit_suggests_one_request_slot(upstream: FakeUpstream, make_provider: Make) -> None:
    upstream.reply("POST", PATH, json=failure(1002, "rate limit exceeded(RPM)"))
    provider = make_provider(requests_per_minute=12)
    with pytest.raises(RateLimitedError) as caught:
        await provider.run(validated(provider), context())
    assert caught.value.retryable and caught.value.retry_after_s == 5.0


async def test_partial_success_over_the_wire(upstream: FakeUpstream, provider: MiniMaxProvider) -> None:
    upstream.reply("POST", PATH, json=answer([jpeg(), jpeg(64, 64, 1)], success=2, failed=1))
    result = await provider.run(validated(provider, n=3), context())
    assert len(result.images) == 2
    assert [(f.index, f.code) for f in result.failures] == [(2, "not_generated")]


async def test_success_count_zero_over_the_wire(upstream: FakeUpstream, provider: MiniMaxProvider) -> None:
    upstream.reply(
        "POST",
        PATH,
        json={
            "id": "z",
            "data": {"image_base64": []},
            "metadata": {"success_count": "0", "failed_count": "2"},
            "base_resp": {"status_code": 0, "status_msg": "success"},
        },
    )
    with pytest.raises(UpstreamError) as caught:
        await provider.run(validated(provider, n=2), context())
    assert caught.value.code == "no_image_returned" and caught.value.request_id == "z"


# -- faults -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_http_5xx_is_unavailable_and_retryable(
    upstream: FakeUpstream, provider: MiniMaxProvider, status: int
) -> None:
    upstream.reply("POST", PATH, status=status, body="<html>bad gateway</html>", content_type="text/html")
    with pytest.raises(UpstreamUnavailableError) as caught:
        await provider.run(validated(provider), context())
    assert caught.value.retryable and f"HTTP {status}" in str(caught.value)


async def test_http_429_with_retry_after(upstream: FakeUpstream, provider: MiniMaxProvider) -> None:
    upstream.reply("POST", PATH, status=429, json={"error": "slow down"}, headers={"Retry-After": "2"})
    with pytest.raises(RateLimitedError) as caught:
        await provider.run(validated(provider), context())
    assert caught.value.retry_after_s == 2.0


async def test_hang_is_a_timeout_and_not_retryable(upstream: FakeUpstream, make_provider: Make) -> None:
    upstream.reply("POST", PATH, hang=True)
    provider = make_provider(timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeoutError) as caught:
        await provider.run(validated(provider), context(timeout_s=5))
    assert time.monotonic() - started < 3
    assert not caught.value.retryable
    assert "billed" in str(caught.value)


async def test_the_call_context_timeout_is_honoured(upstream: FakeUpstream, make_provider: Make) -> None:
    upstream.reply("POST", PATH, hang=True)
    provider = make_provider(timeout_s=30)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeoutError):
        await provider.run(validated(provider), context(timeout_s=0.3))
    assert time.monotonic() - started < 3


async def test_stall_mid_body_is_a_timeout(make_provider: Make) -> None:
    # Headers and a first byte arrive, then nothing: a raw socket server holds the body.
    import asyncio

    release = asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5000\r\nTrace-Id: tr-stall\r\n\r\n{"
        )
        await writer.drain()
        await release.wait()
        writer.close()

    server = await asyncio.start_server(stall, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    provider = make_provider(base_url=f"http://127.0.0.1:{port}", timeout_s=0.3)
    try:
        with pytest.raises(UpstreamTimeoutError) as caught:
            await provider.run(validated(provider), context())
    finally:
        release.set()
        await provider.aclose()
        server.close()
        await server.wait_closed()
    assert not caught.value.retryable
    assert "mid-transfer" in str(caught.value) and caught.value.request_id == "tr-stall"


async def test_connection_reset_before_any_answer_is_unavailable(
    upstream: FakeUpstream, provider: MiniMaxProvider
) -> None:
    upstream.reply("POST", PATH, reset=True)
    with pytest.raises(UpstreamUnavailableError) as caught:
        await provider.run(validated(provider), context())
    assert caught.value.retryable and "before any answer" in str(caught.value)


async def test_nothing_listening_is_unavailable(make_provider: Make) -> None:
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = make_provider(base_url=f"http://127.0.0.1:{port}")
    with pytest.raises(UpstreamUnavailableError) as caught:
        await provider.run(validated(provider), context())
    assert caught.value.retryable


async def test_body_cut_short_is_a_protocol_error(upstream: FakeUpstream, provider: MiniMaxProvider) -> None:
    payload = json.dumps(answer()).encode()
    upstream.reply("POST", PATH, body=payload, content_type="application/json", truncate_to=len(payload) // 2)
    with pytest.raises(UpstreamProtocolError) as caught:
        await provider.run(validated(provider), context())
    assert not caught.value.retryable and "cut off" in str(caught.value)


@pytest.mark.parametrize(
    "body",
    [
        "<html><title>Gateway</title></html>",
        '{"base_resp": {"status_code": 0}, "data": {"image_base64": ["/9j/',
        "",
    ],
)
async def test_malformed_json_is_a_protocol_error(upstream: FakeUpstream, provider: MiniMaxProvider, body: str) -> None:
    upstream.reply("POST", PATH, body=body, content_type="application/json", headers={"Trace-Id": "tr-m"})
    with pytest.raises(UpstreamProtocolError) as caught:
        await provider.run(validated(provider), context())
    assert caught.value.request_id == "tr-m" and not caught.value.retryable


async def test_truncated_base64_is_a_protocol_error(upstream: FakeUpstream, provider: MiniMaxProvider) -> None:
    good = b64(jpeg())
    payload = answer()
    payload["data"]["image_base64"] = [good[: len(good) // 2 + 1]]  # cut inside a quantum
    upstream.reply("POST", PATH, json=payload)
    with pytest.raises(UpstreamProtocolError, match="base64"):
        await provider.run(validated(provider), context())


async def test_truncated_base64_of_one_image_keeps_the_others(
    upstream: FakeUpstream, provider: MiniMaxProvider
) -> None:
    payload = answer([jpeg(), jpeg(64, 64, 1)])
    payload["data"]["image_base64"][1] = payload["data"]["image_base64"][1][:-2]
    upstream.reply("POST", PATH, json=payload)
    result = await provider.run(validated(provider, n=2), context())
    assert len(result.images) == 1
    assert [(f.index, f.code) for f in result.failures] == [(1, "upstream_protocol_error")]


async def test_well_padded_but_truncated_jpeg_is_left_to_core_verification(
    upstream: FakeUpstream, provider: MiniMaxProvider
) -> None:
    # Base64 of a cut JPEG is valid base64: the provider passes the bytes on and the core's
    # verify_output (which decodes every image before saving) rejects them.
    from atelier_core.media.images import verify_output

    cut = jpeg()[:300]
    payload = answer()
    payload["data"]["image_base64"] = [base64.b64encode(cut).decode()]
    upstream.reply("POST", PATH, json=payload)
    result = await provider.run(validated(provider), context())
    with pytest.raises(UpstreamProtocolError):
        verify_output(result.images[0].data, max_pixels=10_000_000)


async def test_redirects_are_not_followed(upstream: FakeUpstream, provider: MiniMaxProvider) -> None:
    # Following a redirect could carry the Authorization header to another host.
    upstream.reply("POST", PATH, status=307, headers={"Location": "http://127.0.0.1:9/steal"})
    with pytest.raises(UpstreamError) as caught:
        await provider.run(validated(provider), context())
    assert "HTTP 307" in str(caught.value)
    assert len(upstream.requests) == 1


async def test_key_is_not_logged(
    upstream: FakeUpstream, provider: MiniMaxProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    import structlog

    upstream.handle("POST", PATH, draw)
    upstream.reply("POST", PATH, json=failure(1004, "invalid key"))
    with structlog.testing.capture_logs() as logs:
        with pytest.raises(AuthenticationError):
            await provider.run(validated(provider), context())
        await provider.run(validated(provider), context())
    assert logs, "the provider logs its calls"
    assert KEY not in repr(logs)
    captured = capsys.readouterr()
    assert KEY not in captured.out + captured.err


async def test_an_oversized_answer_is_refused(
    upstream: FakeUpstream, provider: MiniMaxProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    import atelier_minimax.client

    monkeypatch.setattr(atelier_minimax.client, "MAX_ANSWER_BYTES", 1024)
    upstream.reply("POST", PATH, json=answer([jpeg(64, 64, i) for i in range(3)]), headers={"Trace-Id": "big"})
    with pytest.raises(UpstreamProtocolError) as caught:
        await provider.run(validated(provider, n=3), context())
    assert "exceeds" in str(caught.value) and caught.value.request_id == "big"
