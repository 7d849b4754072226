"""MiniMax through the core's router: rate limiting under a burst, retries, verified saves.

These run the real path (`Pipeline.execute`: validation, limiter, the one retry layer,
verification, storage) with the plugin loaded as the registry loads it, against a fake
MiniMax on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

import atelier_minimax
from atelier_core import (
    Operation,
    RateLimitedError,
    SafetyRefusalError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
)
from atelier_core.engine.pipeline import Pipeline
from atelier_core.engine.throttle import LimiterPool
from atelier_core.plugin.types import ImageCall
from atelier_core.testing import FakeUpstream, read_image
from atelier_core.testing.harness import build_test_atelier

from ._support import KEY, PATH, answer, b64, draw, failure, jpeg

# One real second is SCALE seconds on the limiter's clock: a 60 s rate window takes 0.2 s.
SCALE = 300.0
JITTER_S = 0.05  # request build + loopback delivery, on a shared 2-core machine


def _atelier(tmp_path: Path, upstream: FakeUpstream, **minimax: Any) -> Pipeline:
    settings: dict[str, Any] = {
        "api_key": KEY,
        "base_url": upstream.url,
        "timeout_s": 5.0,
        "backoff_base_s": 0.01,
        **minimax,
    }
    return build_test_atelier(
        tmp_path,
        [atelier_minimax],
        providers={"minimax": settings},
        storage={"output_dir": tmp_path / "images", "input_dirs": [tmp_path / "inputs"]},
    )


async def test_a_burst_is_queued_under_the_rpm_limit(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.handle("POST", PATH, draw)
    atelier = _atelier(tmp_path, upstream, requests_per_minute=2, max_concurrency=8)

    async def fast_sleep(seconds: float) -> None:
        await asyncio.sleep(seconds / SCALE)

    atelier.limits = LimiterPool(clock=lambda: time.monotonic() * SCALE, sleep=fast_sleep)
    window = 60.0 / SCALE
    provider = atelier.registry.providers["minimax"]
    assert isinstance(provider, atelier_minimax.MiniMaxProvider)
    provider._http()._client()  # build the HTTP client up front (no I/O) so timings are fair
    try:
        calls = [
            atelier.execute(ImageCall(model="minimax/image-01", prompt=f"burst {i}"), Operation.GENERATE)
            for i in range(6)
        ]
        outcomes = await asyncio.wait_for(asyncio.gather(*calls), timeout=10)
    finally:
        await atelier.aclose()

    # Nothing was rejected: every call of the burst produced its image.
    assert all(len(o.images) == 1 and not o.failures for o in outcomes)
    starts = sorted(r.at for r in upstream.requests_to(PATH))
    assert len(starts) == 6
    # At most 2 requests in any 60 s window (scaled), so request i+2 waits for request i.
    gaps = [later - earlier for earlier, later in zip(starts, starts[2:], strict=False)]
    assert min(gaps) >= window - JITTER_S, (gaps, window)
    assert starts[-1] - starts[0] >= 2 * window - JITTER_S


async def test_default_rpm_is_applied_by_the_router(tmp_path: Path, upstream: FakeUpstream) -> None:
    atelier = _atelier(tmp_path, upstream)
    try:
        entry = atelier.registry.resolve("minimax/image-01")
        limiter = atelier.limits.get("minimax", entry.provider.settings)
        assert entry.provider.settings.requests_per_minute == 10
        assert limiter._capacity == 10
    finally:
        await atelier.aclose()


async def test_image_01_with_a_subject_reference_is_saved(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.handle("POST", PATH, draw)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    face = jpeg(128, 160)
    (inputs / "face.jpg").write_bytes(face)
    atelier = _atelier(tmp_path, upstream)
    try:
        outcome = await atelier.execute(
            ImageCall(
                model="minimax/image-01",
                prompt="the same person as an astronaut",
                n=2,
                aspect_ratio="16:9",
                images=[str(inputs / "face.jpg")],
                seed=3,
            ),
            Operation.GENERATE,
        )
    finally:
        await atelier.aclose()
    body = upstream.requests[0].json()
    assert body["subject_reference"] == [{"type": "character", "image_file": f"data:image/jpeg;base64,{b64(face)}"}]
    assert len(outcome.images) == 2 and not outcome.failures
    for record in outcome.images:
        saved = Path(record.path)
        assert saved.is_file() and saved.is_relative_to(tmp_path / "images")
        info = read_image(saved.read_bytes())
        assert (info.format, info.size) == ("jpeg", "1280x720")
    assert outcome.applied["size"] == "1280x720"
    assert outcome.applied["subject_reference"] == "character"
    assert outcome.request_id == "hdr-trace-1"
    assert outcome.model == "minimax/image-01" and outcome.provider == "minimax"
    assert outcome.cost.estimate_usd == pytest.approx(0.007)


async def test_image_01_live_with_a_style_is_saved(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.handle("POST", PATH, draw)
    atelier = _atelier(tmp_path, upstream)
    try:
        outcome = await atelier.execute(
            ImageCall(
                model="image-01-live",
                prompt="a castle",
                style="medieval",
                aspect_ratio="3:4",
                options={"style_weight": 0.9},
            ),
            Operation.GENERATE,
        )
    finally:
        await atelier.aclose()
    assert upstream.requests[0].json()["style"] == {"style_type": "中世纪", "style_weight": 0.9}
    (record,) = outcome.images
    assert (record.format, record.width, record.height) == ("jpeg", 864, 1152)
    assert outcome.applied["style"] == "中世纪"


async def test_partial_success_saves_what_came_back(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.reply("POST", PATH, json=answer([jpeg(1024, 1024, 1), jpeg(1024, 1024, 2)], success=2, failed=2))
    atelier = _atelier(tmp_path, upstream)
    try:
        outcome = await atelier.execute(ImageCall(model="minimax/image-01", prompt="four", n=4), Operation.GENERATE)
    finally:
        await atelier.aclose()
    assert len(outcome.images) == 2 and all(Path(r.path).is_file() for r in outcome.images)
    assert sorted(f.index for f in outcome.failures) == [2, 3]
    assert len(upstream.requests) == 1


async def test_rate_limit_status_is_retried_by_the_core_once(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.reply("POST", PATH, json=failure(1002, "rate limit exceeded(RPM)"))
    upstream.handle("POST", PATH, draw)
    atelier = _atelier(tmp_path, upstream, requests_per_minute=None)
    try:
        outcome = await atelier.execute(ImageCall(model="minimax/image-01", prompt="again"), Operation.GENERATE)
    finally:
        await atelier.aclose()
    assert len(outcome.images) == 1
    assert len(upstream.requests) == 2  # the core's retry, not the provider's


async def test_transient_status_is_retried_until_the_limit(tmp_path: Path, upstream: FakeUpstream) -> None:
    for _ in range(3):
        upstream.reply("POST", PATH, json=failure(1002, "rate limit"))
    atelier = _atelier(tmp_path, upstream, requests_per_minute=None, max_retries=2)
    try:
        with pytest.raises(RateLimitedError):
            await atelier.execute(ImageCall(model="minimax/image-01", prompt="x"), Operation.GENERATE)
    finally:
        await atelier.aclose()
    assert len(upstream.requests) == 3


async def test_safety_refusal_is_never_retried(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.reply("POST", PATH, json=failure(1026, "input new_sensitive"))
    upstream.handle("POST", PATH, draw)
    atelier = _atelier(tmp_path, upstream)
    try:
        with pytest.raises(SafetyRefusalError) as caught:
            await atelier.execute(ImageCall(model="minimax/image-01", prompt="x"), Operation.GENERATE)
    finally:
        await atelier.aclose()
    assert len(upstream.requests) == 1
    assert "input new_sensitive" in str(caught.value)


async def test_5xx_is_retried_then_succeeds(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.reply("POST", PATH, status=502, body="bad gateway")
    upstream.handle("POST", PATH, draw)
    atelier = _atelier(tmp_path, upstream)
    try:
        outcome = await atelier.execute(ImageCall(model="minimax/image-01", prompt="x"), Operation.GENERATE)
    finally:
        await atelier.aclose()
    assert len(outcome.images) == 1 and len(upstream.requests) == 2


async def test_a_hang_times_out_once(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.reply("POST", PATH, hang=True)
    atelier = _atelier(tmp_path, upstream, timeout_s=0.3)
    try:
        with pytest.raises(UpstreamTimeoutError):
            await asyncio.wait_for(
                atelier.execute(ImageCall(model="minimax/image-01", prompt="x"), Operation.GENERATE), 5
            )
    finally:
        await atelier.aclose()
    assert len(upstream.requests) == 1


async def test_truncated_jpeg_is_never_saved(tmp_path: Path, upstream: FakeUpstream) -> None:
    payload = answer()
    payload["data"]["image_base64"] = [b64(jpeg(1024, 1024)[:400])]  # valid base64, cut image
    upstream.reply("POST", PATH, json=payload)
    atelier = _atelier(tmp_path, upstream)
    try:
        with pytest.raises(UpstreamProtocolError):
            await atelier.execute(ImageCall(model="minimax/image-01", prompt="x"), Operation.GENERATE)
    finally:
        await atelier.aclose()
    saved = list((tmp_path / "images").rglob("*.jp*g")) if (tmp_path / "images").exists() else []
    assert saved == []
