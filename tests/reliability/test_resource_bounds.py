"""Guarantee 11: resource bounds, measured where they matter — at the fake upstream.

- the per-provider concurrency cap is never exceeded (high-water mark of requests in
  flight at the fake), and one hanging provider does not slow another (RC1, RC5);
- the requests-per-minute limiter spaces request starts (RC2, scaled clock);
- a 429's Retry-After pauses the whole provider: queued calls wait too (RC3);
- input byte and pixel caps refuse before anything is sent; a decompression bomb is
  refused from its header (C1, I5);
- the inline part of a result stays within the preview budget for n=4 large images,
  and ``return_image=full`` stays within its own cap (Z1, Z2).
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
from pathlib import Path

import anyio
import pytest
from reliability_kit import GEMINI_ROUTE, OPENAI_ROUTE, build_stack, gemini_ok, openai_ok

from atelier_core import Operation, UpstreamTimeoutError
from atelier_core.engine.throttle import LimiterPool
from atelier_core.plugin.types import ImageCall
from atelier_core.testing import FakeUpstream, Reply, connect

pytestmark = pytest.mark.anyio

MODEL = "openai/gpt-image-1-mini"


def _call(prompt: str = "a fox", **extra: object) -> ImageCall:
    return ImageCall(model=MODEL, prompt=prompt, **extra)  # type: ignore[arg-type]


async def test_concurrency_cap_is_never_exceeded_at_the_upstream(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.handle("POST", OPENAI_ROUTE, lambda _: Reply(json=openai_ok(), delay=0.15))
    atelier = build_stack(tmp_path, upstream, per_provider={"openai": {"max_concurrency": 2}})
    try:
        outcomes = await asyncio.gather(*[atelier.execute(_call(f"fox {i}"), Operation.GENERATE) for i in range(8)])
    finally:
        await atelier.aclose()
    assert all(len(o.images) == 1 for o in outcomes)
    assert len(upstream.requests) == 8
    assert upstream.max_in_flight == 2  # reached, never exceeded


async def test_a_hanging_provider_does_not_hold_up_another(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.handle("POST", OPENAI_ROUTE, lambda _: Reply(hang=True))
    upstream.handle("POST", GEMINI_ROUTE, lambda _: Reply(json=gemini_ok()))
    atelier = build_stack(tmp_path, upstream, per_provider={"openai": {"timeout_s": 2, "max_concurrency": 2}})
    gemini_done: list[float] = []
    started = time.monotonic()

    async def gemini(i: int) -> None:
        outcome = await atelier.execute(
            ImageCall(model="gemini/gemini-2.5-flash-image", prompt=f"g{i}"), Operation.GENERATE
        )
        assert outcome.images
        gemini_done.append(time.monotonic() - started)

    openai_failed: list[float] = []

    async def openai() -> None:
        with pytest.raises(UpstreamTimeoutError):
            await atelier.execute(_call(), Operation.GENERATE)
        openai_failed.append(time.monotonic() - started)

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(openai)
            group.start_soon(openai)
            for i in range(4):
                group.start_soon(gemini, i)
    finally:
        await atelier.aclose()
    assert len(gemini_done) == 4 and len(openai_failed) == 2
    assert max(gemini_done) < min(openai_failed)  # every Gemini call finished while OpenAI hung


async def test_requests_per_minute_spaces_request_starts(tmp_path: Path, upstream: FakeUpstream) -> None:
    scale = 100.0  # one real second is 100 s on the limiter's clock: the 60 s window is 0.6 s
    upstream.handle("POST", OPENAI_ROUTE, lambda _: Reply(json=openai_ok()))
    atelier = build_stack(tmp_path, upstream, per_provider={"openai": {"requests_per_minute": 2, "max_concurrency": 8}})

    async def fast_sleep(seconds: float) -> None:
        await asyncio.sleep(seconds / scale)

    try:
        # Warm up first (builds the SDK client) so arrival times at the fake track
        # admissions; then a fresh limiter on a fast clock.
        await atelier.execute(_call("warm-up"), Operation.GENERATE)
        upstream.requests.clear()
        atelier.limits = LimiterPool(clock=lambda: time.monotonic() * scale, sleep=fast_sleep)
        await asyncio.gather(*[atelier.execute(_call(f"fox {i}"), Operation.GENERATE) for i in range(6)])
    finally:
        await atelier.aclose()
    starts = sorted(r.at for r in upstream.requests)
    window = 60.0 / scale
    jitter = 0.15  # admission to arrival at the fake, on a busy 2-core machine
    for i in range(2, len(starts)):  # never more than 2 starts in any window
        assert starts[i] - starts[i - 2] >= window - jitter, [round(s - starts[0], 3) for s in starts]
    assert starts[-1] - starts[0] >= 2 * window - jitter  # 6 calls at 2 per window: 3 windows


async def test_retry_after_pauses_the_whole_provider(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.reply(
        "POST",
        OPENAI_ROUTE,
        status=429,
        headers={"retry-after": "0.5"},
        json={"error": {"code": "rate_limit_exceeded", "message": "slow down"}},
    )
    upstream.handle("POST", OPENAI_ROUTE, lambda _: Reply(json=openai_ok()))
    atelier = build_stack(tmp_path, upstream, per_provider={"openai": {"max_concurrency": 1}})
    try:
        await asyncio.gather(*[atelier.execute(_call(f"fox {i}"), Operation.GENERATE) for i in range(4)])
    finally:
        await atelier.aclose()
    first = upstream.requests[0].at
    later = [r.at - first for r in upstream.requests[1:]]
    assert len(later) == 4 and min(later) >= 0.45  # nobody stampeded through the pause


def _noise_png(width: int, height: int) -> bytes:
    """Incompressible pixels: a large PNG, as a real photo-like result would be."""
    import os

    from PIL import Image

    out = io.BytesIO()
    Image.frombytes("RGB", (width, height), os.urandom(width * height * 3)).save(out, "PNG", compress_level=1)
    return out.getvalue()


async def test_inline_results_stay_within_budget_for_large_images(tmp_path: Path, upstream: FakeUpstream) -> None:
    big = base64.b64encode(_noise_png(1024, 1024)).decode()
    body = {"created": 1, "data": [{"b64_json": big} for _ in range(4)]}
    upstream.handle("POST", OPENAI_ROUTE, lambda _: Reply(json=body))
    atelier = build_stack(tmp_path, upstream)
    preview = atelier.settings.preview
    async with connect(atelier) as client:
        result = await client.call_tool("generate_image", {"prompt": "x", "model": MODEL, "n": 4, "size": "1024x1024"})
        full = await client.call_tool(
            "generate_image", {"prompt": "x", "model": MODEL, "n": 4, "size": "1024x1024", "return_image": "full"}
        )
    for outcome in (result, full):
        assert not outcome.is_error, outcome.content
        assert len((outcome.structured_content or {})["images"]) == 4
    inline = [block.data for block in result.content if block.type == "image"]
    assert len(inline) == 4
    assert all(len(base64.b64decode(data)) <= preview.max_bytes for data in inline)
    assert len(result.model_dump_json()) < 4 * preview.max_bytes * 4 // 3 + 64_000  # whole result bounded
    full_inline = [block.data for block in full.content if block.type == "image"]
    assert all(len(base64.b64decode(data)) <= preview.max_full_inline_bytes for data in full_inline)
    assert "over the inline limit" in full.content[0].text  # and the caller is told why


@pytest.mark.parametrize(
    ("storage", "word"), [({"max_input_bytes": 2_000}, "bytes"), ({"max_input_pixels": 1_000}, "pixel")]
)
async def test_input_caps_refuse_before_anything_is_sent(
    tmp_path: Path, upstream: FakeUpstream, storage: dict[str, int], word: str
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    photo = inputs / "photo.png"
    photo.write_bytes(_noise_png(64, 64))  # ~12 KB, 4096 pixels
    atelier = build_stack(
        tmp_path, upstream, storage={"output_dir": tmp_path / "images", "input_dirs": [inputs], **storage}
    )
    async with connect(atelier) as client:
        result = await client.call_tool("edit_image", {"prompt": "x", "model": MODEL, "images": [str(photo)]})
    assert result.is_error and word in result.content[0].text.lower(), result.content[0].text
    assert upstream.requests == []


async def test_a_decompression_bomb_is_refused_from_its_header(tmp_path: Path, upstream: FakeUpstream) -> None:
    import struct
    import tracemalloc
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 50_000, 50_000, 8, 6, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
        + chunk(b"IEND", b"")
    )
    atelier = build_stack(tmp_path, upstream)
    reference = "data:image/png;base64," + base64.b64encode(bomb).decode()
    tracemalloc.start()
    try:
        async with connect(atelier) as client:
            result = await client.call_tool("edit_image", {"prompt": "x", "model": MODEL, "images": [reference]})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    text = result.content[0].text
    assert result.is_error and "too many pixels" in text and "40,000,000" in text, text
    assert peak < 64 * 1024 * 1024  # 10 Gpx of RGBA would be 10 GB: never decoded
    assert upstream.requests == []
