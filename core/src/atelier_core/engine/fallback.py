"""Cross-provider fallback: opt-in per model in configuration (``fallbacks``).

When a call to a model fails with a rate limit or an unavailable provider (5xx, no
connection, or a provider that is not configured — then nothing was sent at all) **and
nothing can have been billed** (no answer came back, no request was
left in flight), the same call goes to the next listed model that can honour it as
given: it is planned again for that model, so a parameter the model lacks refuses it (it
is skipped, never silently dropped), a model-specific option it does not know refuses
it, and an option it would ignore (``applied.not_applied``) skips it too. The admit stage
then checks the same spend limits for it. ``applied.model`` names the model that made
the images; ``applied.fallback_from`` and the notes say why.

A call that may have been billed (a timeout after sending, an answer that broke off) is
never sent again to anyone: its error is raised as it is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog

from atelier_core.plugin.errors import (
    AtelierError,
    MissingCredentialsError,
    RateLimitedError,
    SpendLimitError,
    UpstreamUnavailableError,
)

if TYPE_CHECKING:
    from atelier_core.engine.outcome import CallOutcome
    from atelier_core.engine.pipeline import Pipeline
    from atelier_core.engine.plan import Plan
    from atelier_core.plugin.spec import Operation
    from atelier_core.plugin.types import ImageCall

__all__ = ["FALLBACK_ERRORS", "plan_with_fallback", "run_with_fallback"]

log = structlog.get_logger("atelier.fallback")

#: The failures that move a call to the next model: the provider could not take it now.
FALLBACK_ERRORS = (RateLimitedError, UpstreamUnavailableError)

RunOnce = Callable[..., Awaitable["CallOutcome"]]
MakePlan = Callable[..., Awaitable["Plan"]]


def _why(exc: AtelierError) -> str:
    return f"{exc.code}: {exc.message.rstrip('.')}"


async def run_with_fallback(pipe: Pipeline, plan: Plan, run_once: RunOnce, **kwargs: Any) -> CallOutcome:
    """``run_once(plan)``, then the configured fallbacks of its model while it fails
    with a rate limit or an unavailable provider and nothing was billed."""
    chain = list(pipe.settings.fallbacks.get(plan.entry.canonical_id, ()))
    try:
        return await run_once(plan, **kwargs)
    except FALLBACK_ERRORS as first:
        if not chain or getattr(first, "billing", None) is not None:
            raise
        failed = first
    origin = plan.entry.canonical_id
    notes = [f"{origin} failed ({_why(failed)}); nothing was billed for it"]
    for candidate in chain:
        try:
            call = plan.spec.call.model_copy(update={"model": candidate})
            other = await pipe.plan(call, plan.spec.operation, output=plan.spec.output, confirmed=plan.spec.confirmed)
        except AtelierError as exc:  # cannot honour the request as given (or is unavailable)
            notes.append(f"fallback {candidate} skipped: {_why(exc)}")
            continue
        ignored = other.validated.applied.get("not_applied")
        if ignored:
            notes.append(f"fallback {candidate} skipped: it would not apply {', '.join(ignored)}")
            continue
        log.info("falling back", model=origin, to=other.entry.canonical_id, code=failed.code)
        try:
            outcome = await run_once(other, **kwargs)
        except SpendLimitError as exc:  # the same limits hold; refused before anything was sent
            notes.append(f"fallback {other.entry.canonical_id} skipped: {_why(exc)}")
            continue
        except FALLBACK_ERRORS as exc:
            if getattr(exc, "billing", None) is not None:
                raise
            notes.append(f"fallback {other.entry.canonical_id} failed too ({_why(exc)}); nothing was billed for it")
            failed = exc
            continue
        outcome.applied["fallback_from"] = origin
        outcome.notes[:0] = [*notes, f"made by {outcome.model} instead (configured fallback of {origin})"]
        return outcome
    failed.message = f"{failed.message.rstrip('.')}. Fallbacks tried: " + "; ".join(notes[1:])
    failed.args = (failed.message,)
    raise failed


async def plan_with_fallback(
    pipe: Pipeline, make: MakePlan, call: ImageCall, operation: Operation, **kwargs: Any
) -> Plan:
    """``make(pipe, call, operation)``; when the model is unavailable (its provider is not
    configured or is disabled) and it has fallbacks, the plan of the first listed model that
    is available and takes the request as given. Nothing has been sent at this point."""
    try:
        return await make(pipe, call, operation, **kwargs)
    except MissingCredentialsError as first:
        if not kwargs.get("require_available", True):
            raise
        origin = pipe.resolve(call.model).canonical_id
        chain = list(pipe.settings.fallbacks.get(origin, ()))
        if not chain:
            raise
        failed = first
    notes = [f"{origin} is unavailable ({_why(failed)}); nothing was sent to it"]
    for candidate in chain:
        try:
            other = await make(pipe, call.model_copy(update={"model": candidate}), operation, **kwargs)
        except AtelierError as exc:
            notes.append(f"fallback {candidate} skipped: {_why(exc)}")
            continue
        ignored = other.validated.applied.get("not_applied")
        if ignored:
            notes.append(f"fallback {candidate} skipped: it would not apply {', '.join(ignored)}")
            continue
        log.info("falling back", model=origin, to=other.entry.canonical_id, code=failed.code)
        other.validated.applied["fallback_from"] = origin
        other.notes[:0] = [*notes, f"made by {other.entry.canonical_id} instead (configured fallback of {origin})"]
        return other
    failed.message = f"{failed.message.rstrip('.')}. Fallbacks tried: " + "; ".join(notes[1:])
    failed.args = (failed.message,)
    raise failed
