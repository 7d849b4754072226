"""Per-provider concurrency and rate limits, and the one retry layer.

Every provider call goes through a :class:`ProviderLimiter` (an adaptive concurrency
gate plus a requests-per-minute window shared by every caller of that provider) and
:func:`call_with_retries` (retries only errors marked ``retryable``).

The concurrency gate is adaptive (additive increase, multiplicative decrease, as TCP
does): it starts wide — every call goes out at once, up to ``max_concurrency`` when one
is configured — halves the number of calls in flight when the provider answers 429, and
lets one more call in after each success until it is wide again. A 429's
``Retry-After`` also pauses the provider's limiter for everyone, not just the caller
that saw it, so a burst of concurrent calls does not hammer a provider that asked for
quiet. A configured ``max_concurrency`` and ``requests_per_minute`` always hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

import structlog

from atelier_core.plugin.errors import AtelierError, RateLimitedError, UpstreamTimeoutError
from atelier_core.plugin.provider import ProviderSettings

__all__ = ["LimiterPool", "ProviderLimiter", "RetryPolicy", "call_with_retries"]

log = structlog.get_logger("atelier.limits")

T = TypeVar("T")
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class ProviderLimiter:
    """Adaptive concurrency + sliding-window requests-per-minute limit for one provider.

    ``max_concurrency`` is a hard cap (``None``: no cap). The current limit
    (:attr:`limit`) starts at the cap (unbounded without one); a :class:`RateLimitedError`
    from a call started since the last cut halves it (never below 1; 429s from calls that
    were already in flight when it was cut do not cut it again), and every call that
    succeeds raises it by one, back up to the cap.

    ``requests_per_minute`` of ``r`` allows at most ``max(1, floor(r))`` call starts in
    any window of ``60 s`` (for ``r < 1``: one start per ``60/r`` s). ``None`` = no limit.
    """

    def __init__(
        self,
        *,
        max_concurrency: int | None,
        requests_per_minute: float | None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        name: str = "",
    ) -> None:
        self.max_concurrency = None if max_concurrency is None else max(1, max_concurrency)
        self.limit: float = math.inf if self.max_concurrency is None else float(self.max_concurrency)
        self.name = name
        self._clock = clock
        self._sleep = sleep
        self._starts: deque[float] = deque()
        self._lock = asyncio.Lock()  # FIFO admission through the rate window
        self._waiting: deque[asyncio.Future[None]] = deque()  # FIFO admission through the gate
        self._generation = 0  # bumped at every cut; a 429 from an older call does not cut again
        self._paused_until = 0.0
        if requests_per_minute is not None and requests_per_minute > 0:
            self._capacity: int | None = max(1, int(requests_per_minute))
            self._window = 60.0 if requests_per_minute >= 1 else 60.0 / requests_per_minute
        else:
            self._capacity = None
            self._window = 60.0
        self.in_flight = 0

    def pause(self, seconds: float) -> None:
        """Hold every new call to this provider for ``seconds`` (e.g. a 429's Retry-After)."""
        if seconds > 0:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    @property
    def paused_for(self) -> float:
        return max(0.0, self._paused_until - self._clock())

    # -- the adaptive gate -----------------------------------------------------------

    def rate_limited(self, generation: int | None = None) -> None:
        """The provider answered 429: halve the calls in flight (at most once per wave)."""
        if generation is not None and generation != self._generation:
            return  # started before the last cut: that cut already answered this wave
        before = self.limit
        current = min(self.limit, float(max(1, self.in_flight)))
        self.limit = max(1.0, math.floor(current / 2))
        self._generation += 1
        log.info(
            "provider rate limited: fewer calls at once",
            provider=self.name,
            limit_before=None if math.isinf(before) else int(before),
            limit=int(self.limit),
        )

    def succeeded(self) -> None:
        """A call went through: let one more in, up to the cap."""
        if math.isinf(self.limit):
            return
        cap = math.inf if self.max_concurrency is None else float(self.max_concurrency)
        self.limit = min(cap, self.limit + 1)
        self._wake()

    def _wake(self) -> None:
        while self._waiting and self.in_flight < self.limit:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self.in_flight += 1  # handed over: the waiter owns this place now

    async def _enter(self) -> None:
        if not self._waiting and self.in_flight < self.limit:
            self.in_flight += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._leave()  # admitted and cancelled at once: give the place back
            else:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(waiter)
            raise

    def _leave(self) -> None:
        self.in_flight -= 1
        self._wake()

    # -- the rate window -------------------------------------------------------------

    async def _admit(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                if self._paused_until > now:
                    await self._sleep(self._paused_until - now)
                    continue
                if self._capacity is None:
                    return
                while self._starts and self._starts[0] <= now - self._window:
                    self._starts.popleft()
                if len(self._starts) < self._capacity:
                    self._starts.append(now)
                    return
                await self._sleep(self._starts[0] + self._window - now)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one place in the gate and one rate-window start for a provider call.

        The outcome steers the gate: a :class:`RateLimitedError` leaving the block cuts
        the limit, a clean exit widens it.
        """
        await self._enter()
        try:
            await self._admit()
            generation = self._generation
            yield
        except RateLimitedError:
            self.rate_limited(generation)
            raise
        else:
            self.succeeded()
        finally:
            self._leave()


class LimiterPool:
    """One :class:`ProviderLimiter` per provider, created on first use from its settings."""

    def __init__(self, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        self._clock = clock
        self._sleep = sleep
        self._limiters: dict[str, ProviderLimiter] = {}

    def get(self, provider: str, settings: ProviderSettings) -> ProviderLimiter:
        limiter = self._limiters.get(provider)
        if limiter is None:
            limiter = ProviderLimiter(
                max_concurrency=settings.max_concurrency,
                requests_per_minute=settings.requests_per_minute,
                clock=self._clock,
                sleep=self._sleep,
                name=provider,
            )
            self._limiters[provider] = limiter
        return limiter


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry ``retryable`` errors."""

    max_retries: int = 2
    retry_after_cap_s: float = 60.0
    backoff_base_s: float = 0.5
    timeout_s: float = 120.0

    @classmethod
    def from_settings(cls, settings: ProviderSettings) -> RetryPolicy:
        return cls(
            max_retries=max(0, settings.max_retries),
            retry_after_cap_s=max(0.0, settings.retry_after_cap_s),
            backoff_base_s=max(0.0, settings.backoff_base_s),
            timeout_s=settings.timeout_s,
        )

    def backoff(self, attempt: int) -> float:
        """Jittered exponential delay before retry number ``attempt`` (0-based), capped."""
        delay: float = self.backoff_base_s * float(2**attempt) * (0.5 + random.random())
        return min(delay, self.retry_after_cap_s) if self.retry_after_cap_s else delay


async def call_with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    limiter: ProviderLimiter,
    provider: str,
    sleep: Sleep = asyncio.sleep,
    on_retry: Callable[[int, AtelierError, float], Awaitable[None]] | None = None,
) -> T:
    """Run ``attempt`` inside the provider's limiter, retrying only ``retryable`` errors.

    Each attempt gets ``policy.timeout_s``; a timeout becomes :class:`UpstreamTimeoutError`
    and is never retried (the provider may have generated, and billed, the image).
    A rate limit whose ``retry_after_s`` exceeds ``retry_after_cap_s`` is not retried: the
    error goes back to the caller with the wait it was asked for.
    """
    retries = 0
    while True:
        try:
            async with limiter.slot():
                try:
                    async with asyncio.timeout(policy.timeout_s):
                        return await attempt()
                except TimeoutError:
                    raise UpstreamTimeoutError(
                        f"{provider} timed out after {policy.timeout_s:g}s; the provider may still "
                        "have billed it; not resubmitted",
                        provider=provider,
                        fix=f"try again, or raise providers.{provider}.timeout_s",
                    ) from None
        except AtelierError as exc:
            if isinstance(exc, RateLimitedError) and exc.retry_after_s is not None:
                # Everyone waits, not only this caller; bounded by the cap so a long
                # Retry-After does not silently stall unrelated calls for minutes.
                limiter.pause(min(exc.retry_after_s, policy.retry_after_cap_s))
            if not exc.retryable or retries >= policy.max_retries:
                raise
            if isinstance(exc, RateLimitedError) and exc.retry_after_s is not None:
                if exc.retry_after_s > policy.retry_after_cap_s:
                    raise
                delay = exc.retry_after_s
            else:
                delay = policy.backoff(retries)
            retries += 1
            log.info(
                "retrying provider call",
                provider=provider,
                error=exc.code,
                retry=retries,
                of=policy.max_retries,
                delay_s=round(delay, 3),
            )
            if on_retry is not None:
                await on_retry(retries, exc, delay)
            await sleep(delay)
