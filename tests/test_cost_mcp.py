"""Cost through MCP: quotes in results, dry runs, limits, elicitation, the usage tool and CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp_types import ElicitResult

from atelier_core.testing.fakes import FakeProvider
from atelier_core.testing.harness import build_test_atelier, connect

MODEL = "fake/fake-image"  # priced 0.01 per image, medium 0.01, high 0.04 (fake_spec)


def _text(result: Any) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


@pytest.mark.parametrize("era", ["auto", "legacy"])
async def test_results_report_usage_and_cost_and_dry_run_quotes(tmp_path: Path, era: str) -> None:
    fake = FakeProvider()
    atelier = build_test_atelier(tmp_path, [fake])
    async with connect(atelier, mode=era) as client:
        quote = await client.call_tool(
            "generate_image", {"prompt": "p", "model": MODEL, "n": 3, "quality": "high", "dry_run": True}
        )
        assert not quote.is_error
        assert quote.structured_content["cost"]["estimate_usd"] == pytest.approx(0.12)
        assert quote.structured_content["dry_run"] is True
        assert "Estimated cost: $0.1200" in _text(quote)
        assert fake.calls == []
        real = await client.call_tool("generate_image", {"prompt": "p", "model": MODEL, "n": 2})
        cost = real.structured_content["cost"]
        assert cost["estimate_usd"] == pytest.approx(0.02) and cost["cost_usd"] == pytest.approx(0.02)
        usage = await client.call_tool("get_usage", {"days": 1})
        assert usage.structured_content["total_usd"] == pytest.approx(0.02)
        assert usage.structured_content["by_model"][MODEL]["images"] == 2
        assert usage.structured_content["spent_this_run_usd"] == pytest.approx(0.02)


async def test_day_limit_refuses_with_figures_through_mcp(tmp_path: Path) -> None:
    fake = FakeProvider()
    atelier = build_test_atelier(tmp_path, [fake], cost={"max_per_day_usd": 0.03})
    async with connect(atelier) as client:
        ok = await client.call_tool("generate_image", {"prompt": "p", "model": MODEL, "n": 2})
        assert not ok.is_error
        refused = await client.call_tool("generate_image", {"prompt": "p", "model": MODEL, "n": 2})
        assert refused.is_error
        text = _text(refused)
        assert "daily spend limit of $0.03" in text and "already spent $0.0200" in text
        assert "ATELIER_COST__MAX_PER_DAY_USD" in text
        smaller = await client.call_tool("generate_image", {"prompt": "p", "model": MODEL, "n": 1})
        assert not smaller.is_error
    assert len(fake.calls) == 2


@pytest.mark.parametrize(("action", "allowed"), [("accept", True), ("decline", False)])
async def test_elicitation_asks_before_calls_above_the_threshold(tmp_path: Path, action: str, allowed: bool) -> None:
    fake = FakeProvider()
    atelier = build_test_atelier(tmp_path, [fake], cost={"ask_above_usd": 0.015})
    asked: list[str] = []

    async def answer(context: Any, params: Any) -> ElicitResult:
        asked.append(params.message)
        return ElicitResult(action=action, content={"confirm": True} if action == "accept" else None)

    async with connect(atelier, mode="legacy", elicitation_callback=answer) as client:
        cheap = await client.call_tool("generate_image", {"prompt": "p", "model": MODEL, "n": 1})
        assert not cheap.is_error and asked == []
        costly = await client.call_tool("generate_image", {"prompt": "p", "model": MODEL, "n": 2})
        assert asked and "$0.0200" in asked[0]
        assert costly.is_error is (not allowed)
        if not allowed:
            assert "did not confirm" in _text(costly)
    assert len(fake.calls) == (2 if allowed else 1)


async def test_clients_without_elicitation_are_refused_above_the_threshold(tmp_path: Path) -> None:
    fake = FakeProvider()
    atelier = build_test_atelier(tmp_path, [fake], cost={"ask_above_usd": 0.015})
    async with connect(atelier, mode="legacy") as client:
        result = await client.call_tool("generate_image", {"prompt": "p", "model": MODEL, "n": 2})
    assert result.is_error and "cannot ask the user" in _text(result)
    assert fake.calls == []


def test_usage_command_reports_the_ledger(tmp_path: Path) -> None:
    import asyncio

    from atelier_core.plugin.spec import Operation
    from atelier_core.plugin.types import ImageCall

    data_dir = tmp_path / "data"
    atelier = build_test_atelier(tmp_path, [FakeProvider()])

    async def spend() -> None:
        try:
            await atelier.execute(ImageCall(model=MODEL, prompt="p", n=3), Operation.GENERATE)
        finally:
            await atelier.aclose()

    asyncio.run(spend())
    env = {
        "ATELIER_DATA_DIR": str(data_dir),
        "ATELIER_CONFIG": str(tmp_path / "none.toml"),
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
    }
    out = subprocess.run(
        [sys.executable, "-m", "atelier_core", "usage", "--json", "--days", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    report = json.loads(out.stdout)
    assert report["total_usd"] == pytest.approx(0.03) and report["images"] == 3
    table = subprocess.run(
        [sys.executable, "-m", "atelier_core", "usage"], capture_output=True, text=True, env=env, timeout=60, check=True
    )
    assert "fake/fake-image" in table.stdout and "$0.0300" in table.stdout
