"""Idempotency keys: a repeated call with the same key never reaches the provider twice."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from atelier_core.testing.fakes import FakeProvider
from atelier_core.testing.harness import build_test_atelier, connect

MODEL = "fake/fake-image"


def _text(result: Any) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


async def test_same_key_same_request_returns_the_earlier_result(tmp_path: Path) -> None:
    fake = FakeProvider()
    atelier = build_test_atelier(tmp_path, [fake])
    args = {"prompt": "a fox", "model": MODEL, "idempotency_key": "fox-1"}
    async with connect(atelier) as client:
        first = await client.call_tool("generate_image", args)
        again = await client.call_tool("generate_image", {**args, "return_image": "none"})
    assert not first.is_error and not again.is_error
    assert len(fake.calls) == 1
    paths = [i["path"] for i in first.structured_content["images"]]
    assert [i["path"] for i in again.structured_content["images"]] == paths
    assert "nothing was sent again" in _text(again)


async def test_same_key_different_request_is_refused_before_any_call(tmp_path: Path) -> None:
    fake = FakeProvider()
    atelier = build_test_atelier(tmp_path, [fake])
    async with connect(atelier) as client:
        await client.call_tool("generate_image", {"prompt": "a fox", "model": MODEL, "idempotency_key": "k"})
        other = await client.call_tool("generate_image", {"prompt": "a cat", "model": MODEL, "idempotency_key": "k"})
    assert other.is_error and "idempotency_key" in _text(other) and "different request" in _text(other)
    assert len(fake.calls) == 1


async def test_concurrent_repeats_share_one_upstream_call(tmp_path: Path) -> None:
    fake = FakeProvider(latency_s=0.3)
    atelier = build_test_atelier(tmp_path, [fake])
    args = {"prompt": "a fox", "model": MODEL, "idempotency_key": "race"}
    async with connect(atelier) as client:
        results = await asyncio.gather(*(client.call_tool("generate_image", args) for _ in range(3)))
    assert all(not r.is_error for r in results)
    assert len(fake.calls) == 1
    assert len({r.structured_content["images"][0]["path"] for r in results}) == 1


async def test_background_job_repeat_returns_the_same_job(tmp_path: Path) -> None:
    fake = FakeProvider(latency_s=0.2)
    atelier = build_test_atelier(tmp_path, [fake])
    args = {"prompt": "a fox", "model": MODEL, "as_job": True, "idempotency_key": "job-k"}
    async with connect(atelier) as client:
        first = await client.call_tool("generate_image", args)
        again = await client.call_tool("generate_image", args)
        job_id = first.structured_content["job"]["job_id"]
        assert again.structured_content["job"]["job_id"] == job_id
        done = await client.call_tool("get_jobs", {"job_ids": [job_id], "wait_s": 10})
    assert done.structured_content["all_finished"] is True
    assert len(fake.calls) == 1
