"""Cross-provider fallback through an MCP client: opt-in per model, only when nothing was
billed, only to a model that takes the request as given, within the same spend limits,
and said so in applied.model, applied.fallback_from and the notes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from atelier_core import RateLimitedError, UpstreamTimeoutError, UpstreamUnavailableError
from atelier_core.testing import FakeProvider, Outcome, build_test_atelier, connect, fake_spec


def _providers(**fakes: FakeProvider) -> dict[str, Any]:
    # One attempt per call: the core's own retries are not what is tested here.
    return {name: {"max_retries": 0} for name in fakes}


def _text(result: Any) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


async def test_rate_limit_falls_back_to_the_next_model_that_takes_the_request(tmp_path: Path) -> None:
    busy = FakeProvider(
        "busy",
        models=[fake_spec("m")],
        script=[Outcome(error=RateLimitedError("busy rate-limited m", retry_after_s=30))],
    )
    plain = FakeProvider("plain", models=[fake_spec("m", seed=False)])  # cannot take seed: skipped
    spare = FakeProvider("spare", models=[fake_spec("m")])
    atelier = build_test_atelier(
        tmp_path,
        [busy, plain, spare],
        providers=_providers(busy=busy, plain=plain, spare=spare),
        fallbacks={"busy/m": ["plain/m", "spare/m"]},
    )
    async with connect(atelier) as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox", "model": "busy/m", "seed": 7})
        usage = await client.call_tool("get_usage", {})
    assert not result.is_error, _text(result)
    outcome = result.structured_content or {}
    assert outcome["model"] == "spare/m" and outcome["applied"]["model"] == "spare/m"
    assert outcome["applied"]["fallback_from"] == "busy/m" and outcome["applied"]["seed"] == 7
    notes = "\n".join(outcome["notes"])
    assert "busy/m failed (rate_limited" in notes and "nothing was billed" in notes
    assert "fallback plain/m skipped" in notes and "seed" in notes
    assert len(busy.calls) == 1 and plain.calls == [] and len(spare.calls) == 1
    assert spare.calls[0].request.seed == 7  # the request as given, nothing dropped
    assert list((usage.structured_content or {})["by_model"]) == ["spare/m"]


async def test_no_fallback_after_a_call_that_may_have_been_billed(tmp_path: Path) -> None:
    slow = FakeProvider(
        "slow", models=[fake_spec("m")], script=[Outcome(error=UpstreamTimeoutError("slow did not answer in time"))]
    )
    spare = FakeProvider("spare", models=[fake_spec("m")])
    atelier = build_test_atelier(
        tmp_path, [slow, spare], providers=_providers(slow=slow, spare=spare), fallbacks={"slow/m": ["spare/m"]}
    )
    async with connect(atelier) as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox", "model": "slow/m"})
    assert result.is_error and spare.calls == []
    assert (result.structured_content or {})["error"]["code"] == "upstream_timeout"


async def test_fallback_is_opt_in_and_keeps_the_spend_limits(tmp_path: Path) -> None:
    down = FakeProvider(
        "down",
        models=[fake_spec("m")],
        script=[
            Outcome(error=UpstreamUnavailableError("down failed with HTTP 503")),
            Outcome(error=UpstreamUnavailableError("down failed with HTTP 503")),
        ],
    )
    dear = FakeProvider("dear", models=[fake_spec("m", pricing={"per_image": 5.0, "as_of": "2026-11-21"})])
    other = FakeProvider("other", models=[fake_spec("m")])
    atelier = build_test_atelier(
        tmp_path,
        [down, dear, other],
        providers=_providers(down=down, dear=dear, other=other),
        fallbacks={"down/m": ["dear/m"]},
        cost={"max_per_call_usd": 1.0},
    )
    async with connect(atelier) as client:
        refused = await client.call_tool("generate_image", {"prompt": "a fox", "model": "down/m"})
        unlisted = await client.call_tool("generate_image", {"prompt": "a fox", "model": "other/m"})
    assert refused.is_error and dear.calls == []
    error = (refused.structured_content or {})["error"]
    assert error["code"] == "upstream_unavailable" and "fallback dear/m skipped: spend_limit" in error["message"]
    assert not unlisted.is_error and "fallback_from" not in (unlisted.structured_content or {})["applied"]


async def test_an_unconfigured_provider_falls_back_before_anything_is_sent(tmp_path: Path) -> None:
    keyed = FakeProvider("keyed", models=[fake_spec("m")], needs_key=True, key_env_vars=("KEYED_API_KEY",))
    spare = FakeProvider("spare", models=[fake_spec("m")])
    atelier = build_test_atelier(tmp_path, [keyed, spare], fallbacks={"keyed/m": ["spare/m"]})
    async with connect(atelier) as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox", "model": "keyed/m", "as_job": True})
        job = (result.structured_content or {})["job"]["job_id"]
        done = await client.call_tool("get_jobs", {"job_ids": [job], "wait_s": 10})
    outcome = (done.structured_content or {})["jobs"][0]["result"]
    assert outcome["model"] == "spare/m" and outcome["applied"]["fallback_from"] == "keyed/m"
    assert any("keyed/m is unavailable" in note and "KEYED_API_KEY" in note for note in outcome["notes"])
    assert keyed.calls == [] and len(spare.calls) == 1
