"""The whole server on PostgreSQL state (``state.url``), through MCP: two servers on one
database share the ledger (a daily limit counts the other's spend), idempotency keys and
jobs (a job submitted on one is read on the other)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from atelier_core.testing.fakes import FakeProvider
from atelier_core.testing.harness import build_test_atelier, connect

MODEL = "fake/fake-image"


def _text(result: Any) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


async def test_two_servers_on_one_postgres_share_ledger_limits_keys_and_jobs(postgres: Any, tmp_path: Path) -> None:
    url = postgres.create_database()
    first_fake, second_fake = FakeProvider(), FakeProvider()
    limits = {"max_per_day_usd": 0.05}
    first = build_test_atelier(tmp_path / "a", [first_fake], state={"url": url}, cost=limits)
    second = build_test_atelier(tmp_path / "b", [second_fake], state={"url": url}, cost=limits)
    call = {"prompt": "a fox", "model": MODEL, "n": 2, "quality": "medium"}  # $0.02 a call
    async with connect(first) as one, connect(second) as two:
        assert not (await one.call_tool("generate_image", call)).is_error
        assert not (await two.call_tool("generate_image", call)).is_error
        refused = await one.call_tool("generate_image", call)  # 0.04 spent across both + 0.02 > 0.05
        assert refused.is_error and "daily spend limit" in _text(refused)
        usage = (await two.call_tool("get_usage", {"days": 1})).structured_content
        assert usage["calls"] == 2 and usage["images"] == 4

        keyed = {"prompt": "an owl", "model": MODEL, "n": 1, "quality": "low", "idempotency_key": "owl-1"}
        original = await one.call_tool("generate_image", keyed)
        repeat = await two.call_tool("generate_image", keyed)
        assert not original.is_error and not repeat.is_error
        assert "nothing was sent again" in _text(repeat)
        assert len(second_fake.calls) == 1  # the repeat on the other server sent nothing

        job = (
            await one.call_tool(
                "generate_image", {"prompt": "a cat", "model": MODEL, "n": 1, "quality": "low", "as_job": True}
            )
        ).structured_content
        job_id = job["job"]["job_id"]
        seen = await two.call_tool("get_jobs", {"job_ids": [job_id], "wait_s": 10})
        assert not seen.is_error and job_id in _text(seen)
    assert len(first_fake.calls) == 3
