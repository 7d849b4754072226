"""Concurrency and rate limits, and the one retry layer (fake clock, no real waiting)."""

from __future__ import annotations

import asyncio

import pytest

from atelier_core.engine.throttle import LimiterPool, ProviderLimiter, RetryPolicy, call_with_retries
from atelier_core.plugin.errors import (
    AuthenticationError,
    RateLimitedError,
    SafetyRefusalError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from atelier_core.plugin.provider import ProviderSettings

pytestmark = pytest.mark.anyio


class FakeTime:
    """A clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def test_rpm_window_admits_capacity_then_waits_for_the_oldest_start() -> None:
    t = FakeTime()
    limiter = ProviderLimiter(max_concurrency=10, requests_per_minute=2, clock=t.clock, sleep=t.sleep)
    starts = []
    for _ in range(5):
        async with limiter.slot():
            starts.append(t.now)
    assert starts == [0.0, 0.0, 60.0, 60.0, 120.0]


async def test_fractional_rpm_spaces_single_starts() -> None:
    t = FakeTime()
    limiter = ProviderLimiter(max_concurrency=1, requests_per_minute=0.5, clock=t.clock, sleep=t.sleep)
    starts = []
    for _ in range(3):
        async with limiter.slot():
            starts.append(t.now)
    assert starts == [0.0, 120.0, 240.0]


async def test_no_rpm_means_no_waiting() -> None:
    t = FakeTime()
    limiter = ProviderLimiter(max_concurrency=2, requests_per_minute=None, clock=t.clock, sleep=t.sleep)
    for _ in range(50):
        async with limiter.slot():
            pass
    assert t.sleeps == []


async def test_pause_holds_every_new_call() -> None:
    t = FakeTime()
    limiter = ProviderLimiter(max_concurrency=4, requests_per_minute=None, clock=t.clock, sleep=t.sleep)
    limiter.pause(7.5)
    assert limiter.paused_for == 7.5
    async with limiter.slot():
        assert t.now == 7.5
    limiter.pause(1.0)
    limiter.pause(0.5)  # a shorter pause never shortens a longer one
    async with limiter.slot():
        assert t.now == 8.5


async def test_concurrency_cap_is_respected() -> None:
    limiter = ProviderLimiter(max_concurrency=2, requests_per_minute=None)
    peak = 0

    async def work() -> None:
        nonlocal peak
        async with limiter.slot():
            peak = max(peak, limiter.in_flight)
            await asyncio.sleep(0.01)

    await asyncio.gather(*(work() for _ in range(6)))
    assert peak == 2
    assert limiter.in_flight == 0


def test_pool_makes_one_limiter_per_provider() -> None:
    pool = LimiterPool()
    settings = ProviderSettings(max_concurrency=3, requests_per_minute=10)
    first = pool.get("a", settings)
    assert pool.get("a", settings) is first
    assert pool.get("b", settings) is not first
    assert first.max_concurrency == 3


def test_backoff_is_jittered_exponential_and_capped() -> None:
    policy = RetryPolicy(max_retries=5, retry_after_cap_s=3.0, backoff_base_s=0.5)
    for attempt, base in enumerate([0.5, 1.0, 2.0]):
        for _ in range(20):
            assert 0.5 * base <= policy.backoff(attempt) <= 1.5 * base
    assert policy.backoff(10) == 3.0


def _policy(**kw: float) -> RetryPolicy:
    values = {"max_retries": 2, "retry_after_cap_s": 30.0, "backoff_base_s": 1.0, "timeout_s": 5.0}
    values.update(kw)
    return RetryPolicy(**values)  # type: ignore[arg-type]


async def _run(errors: list[Exception | None], policy: RetryPolicy, t: FakeTime) -> tuple[list[int], object]:
    attempts: list[int] = []
    limiter = ProviderLimiter(max_concurrency=1, requests_per_minute=None, clock=t.clock, sleep=t.sleep)

    async def attempt() -> str:
        attempts.append(len(attempts))
        error = errors.pop(0) if errors else None
        if error is not None:
            raise error
        return "ok"

    try:
        result: object = await call_with_retries(attempt, policy=policy, limiter=limiter, provider="p", sleep=t.sleep)
    except Exception as exc:
        result = exc
    return attempts, result


async def test_rate_limit_waits_retry_after_then_succeeds() -> None:
    t = FakeTime()
    attempts, result = await _run([RateLimitedError("slow", retry_after_s=4.0)], _policy(), t)
    assert result == "ok" and len(attempts) == 2
    assert sum(t.sleeps) == pytest.approx(4.0)  # the pause and the retry wait overlap, not add up


async def test_retry_after_over_the_cap_is_not_retried_and_keeps_the_wait() -> None:
    t = FakeTime()
    attempts, result = await _run([RateLimitedError("slow", retry_after_s=120.0)], _policy(retry_after_cap_s=30), t)
    assert isinstance(result, RateLimitedError) and result.retry_after_s == 120.0
    assert len(attempts) == 1
    assert "Retry after 120 s" in str(result)


async def test_unavailable_is_retried_up_to_max_retries_with_backoff() -> None:
    t = FakeTime()
    errors: list[Exception | None] = [UpstreamUnavailableError("503")] * 5
    attempts, result = await _run(errors, _policy(max_retries=2), t)
    assert isinstance(result, UpstreamUnavailableError)
    assert len(attempts) == 3
    assert 0.5 <= t.sleeps[0] <= 1.5 and 1.0 <= t.sleeps[1] <= 3.0


@pytest.mark.parametrize(
    "failure",
    [
        SafetyRefusalError("refused"),
        AuthenticationError("bad key"),
        UpstreamTimeoutError("slow"),
    ],
)
async def test_non_retryable_errors_are_raised_at_once(failure: Exception) -> None:
    t = FakeTime()
    attempts, result = await _run([failure], _policy(), t)
    assert result is failure and len(attempts) == 1 and t.sleeps == []


async def test_attempt_timeout_becomes_upstream_timeout_and_is_not_retried() -> None:
    limiter = ProviderLimiter(max_concurrency=1, requests_per_minute=None)
    calls = 0

    async def hang() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(30)

    with pytest.raises(UpstreamTimeoutError) as caught:
        await call_with_retries(hang, policy=_policy(timeout_s=0.05), limiter=limiter, provider="p")
    assert calls == 1
    message = str(caught.value)
    assert "timed out after 0.05s" in message and "not resubmitted" in message and "billed" in message


async def test_a_429_pauses_the_provider_for_concurrent_callers() -> None:
    t = FakeTime()
    limiter = ProviderLimiter(max_concurrency=4, requests_per_minute=None, clock=t.clock, sleep=t.sleep)
    seen: list[float] = []

    async def limited() -> str:
        raise RateLimitedError("slow", retry_after_s=9.0)

    with pytest.raises(RateLimitedError):
        await call_with_retries(limited, policy=_policy(max_retries=0), limiter=limiter, provider="p", sleep=t.sleep)

    async def other() -> str:
        seen.append(t.now)
        return "ok"

    assert await call_with_retries(other, policy=_policy(), limiter=limiter, provider="p", sleep=t.sleep) == "ok"
    assert seen == [9.0]


# -- the adaptive gate -------------------------------------------------------------------


async def _burst(limiter: ProviderLimiter, calls: int, outcome: object = None) -> int:
    """Start ``calls`` slots at once; how many got in before any finished.

    Then every slot ends with ``outcome`` raised inside it (an error), or cleanly.
    """
    release = asyncio.Event()

    async def one() -> None:
        try:
            async with limiter.slot():
                await release.wait()
                if isinstance(outcome, Exception):
                    raise outcome
        except RateLimitedError:
            pass

    tasks = [asyncio.create_task(one()) for _ in range(calls)]
    for _ in range(5):
        await asyncio.sleep(0)
    admitted = limiter.in_flight
    release.set()
    await asyncio.gather(*tasks)
    assert limiter.in_flight == 0
    return admitted


async def test_without_a_cap_every_call_goes_out_at_once() -> None:
    limiter = ProviderLimiter(max_concurrency=None, requests_per_minute=None)
    assert await _burst(limiter, 100) == 100
    assert limiter.in_flight == 0


async def test_a_configured_cap_still_holds() -> None:
    limiter = ProviderLimiter(max_concurrency=3, requests_per_minute=None)
    assert await _burst(limiter, 20) == 3
    for _ in range(10):
        limiter.succeeded()
    assert limiter.limit == 3  # success never widens past the cap


async def test_a_429_halves_the_calls_in_flight_once_per_wave_then_success_grows_it_back() -> None:
    limiter = ProviderLimiter(max_concurrency=None, requests_per_minute=None)
    # 20 calls in flight all get 429: the limit is cut once (to 10), not twenty times.
    await _burst(limiter, 20, RateLimitedError("slow"))
    assert limiter.limit == 10
    # The next burst is held to 10 at once; a 429 from it cuts again (those calls started after the cut).
    assert await _burst(limiter, 10, RateLimitedError("slow")) == 10
    assert limiter.limit == 5
    # Each success lets one more in.
    assert await _burst(limiter, 30) == 5
    assert limiter.limit == 35
    assert await _burst(limiter, 30) == 30


async def test_a_429_never_cuts_below_one_and_a_cap_bounds_the_regrowth() -> None:
    limiter = ProviderLimiter(max_concurrency=4, requests_per_minute=None)
    for _ in range(5):
        await _burst(limiter, 1, RateLimitedError("slow"))
    assert limiter.limit == 1
    assert await _burst(limiter, 6) == 1
    assert limiter.limit == 4
    assert await _burst(limiter, 6) == 4
    assert limiter.limit == 4


async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    limiter = ProviderLimiter(max_concurrency=1, requests_per_minute=None)
    held = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with limiter.slot():
            held.set()
            await release.wait()

    first = asyncio.create_task(holder())
    await held.wait()
    waiting = asyncio.create_task(holder())
    await asyncio.sleep(0)
    waiting.cancel()
    release.set()
    await first
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert limiter.in_flight == 0
    async with limiter.slot():
        assert limiter.in_flight == 1


def test_the_default_has_no_fixed_cap() -> None:
    limiter = LimiterPool().get("a", ProviderSettings())
    assert limiter.max_concurrency is None and limiter.limit == float("inf")
