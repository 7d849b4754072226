"""Quotes, spend limits and the ledger (domain level; MCP-level tests live in test_cost_mcp.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from atelier_core.engine.cost import Quote, SpendGuard, apply_price_override, usage_report
from atelier_core.identity import acting_as
from atelier_core.plugin.errors import ConfigurationError, SpendLimitError
from atelier_core.plugin.provider import Provider
from atelier_core.plugin.spec import ModelSpec, Operation, Pricing
from atelier_core.plugin.types import ImageRequest
from atelier_core.settings import CostSettings
from atelier_core.state.store import StateStore


@pytest.fixture
async def state(tmp_path: Path) -> AsyncIterator[StateStore]:
    store = await StateStore.open_url(None, tmp_path)
    try:
        yield store
    finally:
        await store.aclose()


SPEC = ModelSpec(
    id="m",
    pricing=Pricing(
        per_image=0.04,
        per_image_by_quality={"high": 0.17},
        per_image_by_quality_size={"low@1024x1024": 0.011},
        as_of="2026-11-01",
        source="test table",
    ),
    qualities=("low", "high"),
    n_max=10,
)


def _request(**kw: object) -> ImageRequest:
    values: dict[str, object] = {"operation": Operation.GENERATE, "model": "m", "prompt": "p"}
    values.update(kw)
    return ImageRequest(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({}, 0.04),
        ({"n": 3}, 0.12),
        ({"quality": "high", "n": 2}, 0.34),
        ({"quality": "low", "width": 1024, "height": 1024}, 0.011),
    ],
)
def test_quotes_follow_the_price_table(kw: dict[str, object], expected: float) -> None:
    assert Provider().estimate_cost(_request(**kw), SPEC) == pytest.approx(expected)


def test_price_override_from_configuration_replaces_the_table() -> None:
    settings = CostSettings(prices={"p/m": {"per_image": 0.5, "per_image_by_quality": {}}})
    spec = apply_price_override(SPEC, "p/m", settings)
    assert spec.pricing is not None
    assert spec.pricing.as_of == "configured"
    assert Provider().estimate_cost(_request(n=2, quality="high"), spec) == pytest.approx(1.0)


def test_bad_price_override_is_a_configuration_error() -> None:
    settings = CostSettings(prices={"p/m": {"per_image": "lots"}})
    with pytest.raises(ConfigurationError, match=r"cost\.prices"):
        apply_price_override(SPEC, "p/m", settings)


async def test_per_call_limit_refuses_with_figures() -> None:
    guard = SpendGuard(CostSettings(max_per_call_usd=0.10), None, run_id="r")
    assert await guard.check(Quote(estimate_usd=0.08, images=2, basis="table"), "p/m") == "ok"
    with pytest.raises(SpendLimitError) as info:
        await guard.check(Quote(estimate_usd=0.12, images=3, basis="table"), "p/m")
    text = str(info.value)
    assert "$0.1200" in text and "$0.10" in text and "ATELIER_COST__MAX_PER_CALL_USD" in text


async def test_day_limit_stops_the_call_that_would_cross_it_and_lets_smaller_ones_through(
    state: StateStore,
) -> None:
    guard = SpendGuard(CostSettings(max_per_day_usd=1.00), state, run_id="r1")
    q = Quote(estimate_usd=0.40, images=1, basis="table")
    for _ in range(2):
        verdict, hold = await guard.admit(q, "p/m")
        assert verdict == "ok" and hold is not None
        await guard.record(
            provider="p",
            model="p/m",
            operation="generate",
            images=1,
            quote=q,
            cost_usd=0.40,
            status="billed",
            usage=None,
            request_id=None,
            hold=hold,
        )
    assert await state.reservations.held() == 0.0  # recording ended each hold
    with pytest.raises(SpendLimitError, match=r"daily spend limit of \$1\.00 \(already spent \$0\.8000\)"):
        await guard.check(q, "p/m")
    small = Quote(estimate_usd=0.15, images=1, basis="table")
    assert await guard.check(small, "p/m") == "ok"


async def test_run_limit_counts_only_this_run(state: StateStore) -> None:
    q = Quote(estimate_usd=0.5, images=1, basis="table")
    old = SpendGuard(CostSettings(), state, run_id="old")
    await old.record(
        provider="p",
        model="p/m",
        operation="generate",
        images=1,
        quote=q,
        cost_usd=0.5,
        status="billed",
        usage=None,
        request_id=None,
    )
    guard = SpendGuard(CostSettings(max_per_run_usd=0.6), state, run_id="new")
    assert await guard.check(q, "p/m") == "ok"
    await guard.record(
        provider="p",
        model="p/m",
        operation="generate",
        images=1,
        quote=q,
        cost_usd=0.5,
        status="billed",
        usage=None,
        request_id=None,
    )
    with pytest.raises(SpendLimitError, match="per-run"):
        await guard.check(q, "p/m")


async def test_ask_first_threshold() -> None:
    guard = SpendGuard(CostSettings(ask_above_usd=0.05), None, run_id="r")
    assert await guard.check(Quote(estimate_usd=0.04, images=1, basis="t"), "p/m") == "ok"
    assert await guard.check(Quote(estimate_usd=0.06, images=1, basis="t"), "p/m") == "ask"
    assert "did not confirm" in str(guard.ask_refusal(Quote(estimate_usd=0.06, images=1, basis="t")))


async def test_unpriced_models_are_refused_only_when_limits_are_set() -> None:
    unpriced = Quote(estimate_usd=None, images=1, basis="none")
    assert await SpendGuard(CostSettings(), None, "r").check(unpriced, "p/x") == "ok"
    with pytest.raises(SpendLimitError, match="no known price"):
        await SpendGuard(CostSettings(max_per_day_usd=5), None, "r").check(unpriced, "p/x")
    allowed = SpendGuard(CostSettings(max_per_day_usd=5, allow_unpriced=True), None, "r")
    assert await allowed.check(unpriced, "p/x") == "ok"


async def test_usage_report_groups_by_day_provider_and_model(state: StateStore) -> None:
    guard = SpendGuard(CostSettings(), state, run_id="r")
    for provider, model, usd, images in [("a", "a/x", 0.1, 1), ("a", "a/y", 0.2, 2), ("b", "b/z", 0.3, 3)]:
        await guard.record(
            provider=provider,
            model=model,
            operation="generate",
            images=images,
            quote=Quote(estimate_usd=usd, images=images, basis="t"),
            cost_usd=None,
            status="billed",
            usage={"output_tokens": 10},
            request_id="req",
        )
    report = await usage_report(state.ledger, days=7)
    assert report["total_usd"] == pytest.approx(0.6)
    assert report["calls"] == 3 and report["images"] == 6
    assert report["by_provider"] == {"a": pytest.approx(0.3), "b": pytest.approx(0.3)}
    assert report["by_model"]["a/y"] == {"usd": pytest.approx(0.2), "images": 2, "calls": 1}
    assert list(report["by_day"].values()) == [pytest.approx(0.6)]
    with acting_as("alice"):  # usage is per principal
        assert (await usage_report(state.ledger, days=7))["calls"] == 0


# -- through the router ---------------------------------------------------------------

from atelier_core.plugin.errors import SafetyRefusalError, UpstreamTimeoutError, UpstreamUnavailableError  # noqa: E402
from atelier_core.plugin.types import ImageCall  # noqa: E402
from atelier_core.testing.fakes import FakeProvider, Outcome  # noqa: E402
from atelier_core.testing.harness import build_test_atelier  # noqa: E402


async def test_admit_holds_the_quote_until_released(state: StateStore) -> None:
    guard = SpendGuard(CostSettings(max_per_run_usd=1.0), state, run_id="r")
    q = Quote(estimate_usd=0.6, images=1, basis="table")
    verdict, hold = await guard.admit(q, "p/m")
    assert verdict == "ok"
    with pytest.raises(SpendLimitError):
        await guard.admit(q, "p/m")
    await guard.release(hold)
    assert (await guard.admit(q, "p/m"))[0] == "ok"


async def test_without_a_daily_or_run_limit_nothing_is_held(state: StateStore) -> None:
    guard = SpendGuard(CostSettings(max_per_call_usd=1.0, ask_above_usd=0.5), state, run_id="r")
    assert await guard.admit(Quote(estimate_usd=0.6, images=1, basis="t"), "p/m") == ("ask", None)
    assert await state.reservations.held() == 0.0


async def test_ledger_totals_after_successes_refusals_and_failures(tmp_path: Path) -> None:
    fake = FakeProvider(
        script=[
            Outcome(),  # billed: 2 images x 0.01
            Outcome(error=SafetyRefusalError("blocked")),  # refused upstream: not billed
            Outcome(error=UpstreamUnavailableError("503")),  # failed: not billed (retries off)
            Outcome(fail=[1]),  # partial: 1 of 2 billed
            Outcome(error=UpstreamTimeoutError("hung")),  # may have been billed: counted
        ]
    )
    atelier = build_test_atelier(tmp_path, [fake], providers={"fake": {"max_retries": 0}})
    call = ImageCall(model="fake/fake-image", prompt="p", n=2)
    assert len((await atelier.execute(call, Operation.GENERATE)).images) == 2
    for expected in (SafetyRefusalError, UpstreamUnavailableError):
        with pytest.raises(expected):
            await atelier.execute(call, Operation.GENERATE)
    partial = await atelier.execute(call, Operation.GENERATE)
    assert len(partial.images) == 1 and partial.failures
    with pytest.raises(UpstreamTimeoutError):
        await atelier.execute(call, Operation.GENERATE)
    report = await usage_report(atelier.ledger, days=1)
    assert report["calls"] == 3
    assert report["images"] == 3
    assert report["total_usd"] == pytest.approx(0.02 + 0.01 + 0.02)
    statuses = sorted(row["status"] for row in await atelier.ledger.entries(since_day="2000-01-01"))
    assert statuses == ["billed", "maybe_billed", "partial"]
    await atelier.aclose()


async def test_day_limit_through_the_router_refuses_before_the_provider_is_called(tmp_path: Path) -> None:
    fake = FakeProvider()
    atelier = build_test_atelier(tmp_path, [fake], cost={"max_per_day_usd": 0.05})
    call = ImageCall(model="fake/fake-image", prompt="p", n=2, quality="medium")  # 0.02 a call
    for _ in range(2):
        await atelier.execute(call, Operation.GENERATE)
    with pytest.raises(SpendLimitError, match=r"daily spend limit of \$0\.05"):
        await atelier.execute(call, Operation.GENERATE)
    assert len(fake.calls) == 2
    small = ImageCall(model="fake/fake-image", prompt="p", n=1, quality="low")  # 0.005
    await atelier.execute(small, Operation.GENERATE)
    assert len(fake.calls) == 3
    await atelier.aclose()


async def test_dry_run_quotes_from_the_table_and_spends_nothing(tmp_path: Path) -> None:
    fake = FakeProvider()
    atelier = build_test_atelier(tmp_path, [fake], cost={"max_per_call_usd": 0.05})
    outcome = await atelier.execute(
        ImageCall(model="fake/fake-image", prompt="p", n=3, quality="high"), Operation.GENERATE, dry_run=True
    )
    assert outcome.dry_run and outcome.cost.estimate_usd == pytest.approx(0.12)
    assert any("would be refused" in note for note in outcome.notes)
    assert fake.calls == []
    assert (await usage_report(atelier.ledger, days=1))["calls"] == 0
    await atelier.aclose()


async def test_ask_first_uses_the_confirm_callback(tmp_path: Path) -> None:
    fake = FakeProvider()
    atelier = build_test_atelier(tmp_path, [fake], cost={"ask_above_usd": 0.015})
    call = ImageCall(model="fake/fake-image", prompt="p", n=2)  # 0.02
    asked: list[str] = []

    async def yes(message: str) -> bool:
        asked.append(message)
        return True

    async def no(message: str) -> bool:
        return False

    await atelier.execute(call, Operation.GENERATE, confirm=yes)
    assert "$0.0200" in asked[0]
    with pytest.raises(SpendLimitError, match="did not confirm"):
        await atelier.execute(call, Operation.GENERATE, confirm=no)
    with pytest.raises(SpendLimitError, match="cannot ask the user"):
        await atelier.execute(call, Operation.GENERATE)
    assert len(fake.calls) == 1
    await atelier.aclose()


async def test_dry_run_prices_a_provider_that_is_not_configured(tmp_path: Path) -> None:
    from atelier_core.plugin.errors import MissingCredentialsError

    fake = FakeProvider(needs_key=True, key_env_vars=["FAKE_API_KEY"])
    atelier = build_test_atelier(tmp_path, [fake])
    call = ImageCall(model="fake/fake-image", prompt="p", n=2)
    outcome = await atelier.execute(call, Operation.GENERATE, dry_run=True)
    assert outcome.cost.estimate_usd == pytest.approx(0.02)
    assert any("FAKE_API_KEY" in note for note in outcome.notes)
    with pytest.raises(MissingCredentialsError, match="FAKE_API_KEY"):
        await atelier.execute(call, Operation.GENERATE)
    await atelier.aclose()
