"""Send: the provider call, with the limits, the one retry layer and fan-out into batches.

A batch error is kept on its batch, not raised: the receive stage decides what the call
produced, and the account stage what it may have cost."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from atelier_core.engine.progress import SAVING_FRACTION, SENT_FRACTION, PartialSink, Progress, report
from atelier_core.engine.throttle import RetryPolicy, call_with_retries
from atelier_core.logging import scrub
from atelier_core.plugin.answers import answer_limit, answer_limit_for
from atelier_core.plugin.errors import (
    AtelierError,
    InputImageError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
)
from atelier_core.plugin.provider import CallContext
from atelier_core.plugin.types import ImageRequest, ProviderResult

if TYPE_CHECKING:
    from atelier_core.engine.pipeline import Pipeline
    from atelier_core.engine.plan import Plan

log = structlog.get_logger("atelier.router")


@dataclass(slots=True)
class Batch:
    """One upstream call of a fanned-out request: ``request.n`` images from ``start``."""

    start: int
    request: ImageRequest
    result: ProviderResult | None = None
    error: AtelierError | None = None
    sent: bool = False  # a request left for the provider (it may bill from then on)

    @property
    def may_be_billed(self) -> bool:
        """The provider answered or may have worked on it, but gave nothing usable: a
        timeout after sending, or an answer that could not be used (bad base64, no image)."""
        return self.sent and isinstance(self.error, (UpstreamTimeoutError, UpstreamProtocolError))


@dataclass(slots=True)
class Sent:
    """What the send stage hands to receive: every batch with its result or its error."""

    batches: list[Batch]
    notes: list[str]

    @property
    def in_flight(self) -> int:
        """Images of batches sent and not answered (the provider may bill them)."""
        return sum(b.request.n for b in self.batches if b.sent and b.result is None and b.error is None)


def batches_for(plan: Plan) -> Sent:
    """The upstream calls a plan needs (the model's native batch size), not yet sent."""
    request = plan.request
    native = plan.entry.spec.native_batch
    batches = split_batches(request, native)
    notes = [f"n={request.n} sent as {len(batches)} parallel calls of at most {native}"] if len(batches) > 1 else []
    return Sent(batches=batches, notes=notes)


async def send(
    pipe: Pipeline, plan: Plan, sent: Sent, *, progress: Progress | None = None, partial: PartialSink | None = None
) -> None:
    """Call the provider for every batch of ``sent``: limits, the one retry layer, in
    parallel. Each batch keeps its result or its error."""
    entry = plan.entry
    provider = entry.provider
    batches = sent.batches
    limiter = pipe.limits.get(provider.name, provider.settings)
    policy = RetryPolicy.from_settings(provider.settings)
    done = 0

    async def batch_progress(fraction: float, message: str) -> None:
        # Providers report 0–1 per call; map it into the calling band (0.1–0.85).
        await report(progress, 0.1 + 0.75 * (done + fraction) / len(batches), message)

    ctx = CallContext(
        timeout_s=policy.timeout_s,
        progress=batch_progress,
        partial_image=partial,
        download=functools.partial(download, pipe),
    )

    def context_for(batch: Batch) -> CallContext:
        if plan.vendor_task_sink is None:
            return ctx
        sink = plan.vendor_task_sink

        async def task_started(task_id: str) -> None:
            await sink(batch.start, task_id)  # kept with the job: a restart resumes polling

        return CallContext(
            timeout_s=policy.timeout_s,
            progress=batch_progress,
            partial_image=partial,
            download=functools.partial(download, pipe),
            task_started=task_started,
            keep_vendor_task=plan.keep_vendor_tasks,
        )

    async def _sent(batch: Batch) -> ProviderResult:
        # Runs with a limiter slot held: report it, so jobs can tell queued from sent.
        await batch_progress(0.01, f"sent to {entry.canonical_id}")
        batch.sent = True
        # The most this answer can take: the providers' HTTP transport stops reading there.
        limit = answer_limit.set(answer_limit_for(batch.request.n, batch.request.max_image_bytes()))
        try:
            resumed = plan.resume_tasks.get(batch.start)
            if resumed is not None:  # a queue-based vendor's task from before a restart
                return await provider.wait(resumed, batch.request, context_for(batch))
            return await provider.run(batch.request, context_for(batch))
        finally:
            answer_limit.reset(limit)

    async def run(batch: Batch) -> None:
        nonlocal done
        try:
            batch.result = await call_with_retries(
                lambda: _sent(batch),
                policy=policy,
                limiter=limiter,
                provider=provider.name,
                sleep=pipe._sleep,
            )
            if not isinstance(batch.result, ProviderResult):
                raise UpstreamProtocolError(
                    f"{provider.name} returned {type(batch.result).__name__}, not a result",
                    provider=provider.name,
                )
        except AtelierError as exc:
            batch.error = scrubbed(exc)
        except Exception:
            # A provider bug: keep the details in the server log (they may hold
            # anything), tell the caller only that it happened.
            log.exception("provider raised an unexpected exception", provider=provider.name)
            batch.error = UpstreamError(
                f"provider {provider.name} failed unexpectedly (an internal error; details are in the server log)",
                code="provider_internal_error",
                provider=provider.name,
            )
        finally:
            done += 1

    await report(progress, SENT_FRACTION, f"calling {entry.canonical_id}")
    async with anyio.create_task_group() as group:
        for batch in batches:
            group.start_soon(run, batch)
    await report(progress, SAVING_FRACTION, "verifying and saving")


async def download(pipe: Pipeline, url: str, allowed_hosts: Sequence[str]) -> bytes:
    """Fetch an image URL a provider returned (its host only, size and time capped)."""
    try:
        return await pipe.fetcher.fetch(url, allowed_hosts=list(allowed_hosts), parameter="provider image URL")
    except InputImageError as exc:  # the provider's answer is at fault, not the caller
        raise UpstreamProtocolError(
            f"could not download the image the provider returned: {exc.message}",
            code=exc.code,
            fix=exc.fix,
        ) from None


def split_batches(request: ImageRequest, batch: int) -> list[Batch]:
    """Split a request for ``n`` images into upstream calls of at most ``batch`` each."""
    batch = max(1, batch)
    if request.n <= batch:
        return [Batch(0, request)]
    out: list[Batch] = []
    for start in range(0, request.n, batch):
        update: dict[str, Any] = {"n": min(batch, request.n - start)}
        if request.seed is not None:
            # Distinct, reproducible seeds per part; otherwise each part repeats the first.
            update["seed"] = request.seed + start
        out.append(Batch(start, request.model_copy(update=update)))
    return out


def scrubbed(error: AtelierError) -> AtelierError:
    """Mask secrets in a provider's error (vendors echo keys: "Incorrect API key provided:
    sk-…") before it reaches a result, a job record or a log line."""
    error.message = scrub(error.message)
    if error.fix:
        error.fix = scrub(error.fix)
    if isinstance(error.value, str):
        error.value = scrub(error.value)
    if isinstance(error.allowed, str):
        error.allowed = scrub(error.allowed)
    error.args = (error.message,)
    return error
