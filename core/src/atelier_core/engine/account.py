"""Account: every answer that may have been billed goes into the ledger.

Billed: the images that came back usable, whether or not they could be stored. Maybe
billed: a request that timed out after it was sent, an answer that could not be used
(bad base64, a corrupt image, no image), a call abandoned after sending. Spend limits
count both (the ledger sums ``cost_usd``, else the estimate). A call that produced nothing
but may have cost money raises an error that says so and how much.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import structlog

from atelier_core.plugin.errors import AtelierError

if TYPE_CHECKING:
    from atelier_core.engine.pipeline import Pipeline
    from atelier_core.engine.plan import Plan
    from atelier_core.engine.receive import Received

__all__ = ["Charge", "account", "charge_of", "say_billed"]

log = structlog.get_logger("atelier.router")

Status = Literal["billed", "partial", "maybe_billed"]


@dataclass(frozen=True, slots=True)
class Charge:
    """One ledger line: what a call cost, or may have cost."""

    status: Status
    images: int  # usable images billed
    cost_usd: float | None  # billed images at their settled cost + possibly billed ones at the estimate
    maybe_billed: int = 0
    usage: dict[str, object] | None = None
    request_id: str | None = None


def charge_of(
    plan: Plan, received: Received | None, *, stored: int | None = None, images: int | None = None
) -> Charge | None:
    """The ledger line for a call's answers; None when nothing can have been billed.

    ``received`` None: ``images`` were sent and nothing came back (abandoned mid-call).
    """
    per_image = (plan.cost.estimate_usd / max(1, plan.request.n)) if plan.cost.estimate_usd is not None else None
    if received is None:
        count = images or plan.request.n
        return Charge(
            "maybe_billed", 0, round(per_image * count, 6) if per_image is not None else None, maybe_billed=count
        )
    billed = len(received.images)
    if not billed and not received.maybe_billed and not received.extra_usd:
        return None
    cost = received.cost.cost_usd if billed or received.extra_usd else None
    if received.maybe_billed and per_image is not None:
        cost = round((cost or 0.0) + per_image * received.maybe_billed, 6)
    if not billed and not received.maybe_billed:
        status: Status = "billed"  # only a charge beyond the images (no image came back)
    elif not billed:
        status = "maybe_billed"
    elif received.maybe_billed or received.failures or (stored is not None and stored < billed):
        status = "partial"
    else:
        status = "billed"
    usage = received.usage.model_dump(exclude_none=True) if received.usage else None
    return Charge(
        status,
        billed,
        cost,
        maybe_billed=received.maybe_billed,
        usage=usage,
        request_id=received.request_id or _request_id(received),
    )


def _request_id(received: Received) -> str | None:
    """A request id from the errors (a timed-out request may still carry one)."""
    return next((error.request_id for error in received.errors if error.request_id), None)


async def account(pipe: Pipeline, plan: Plan, charge: Charge | None, *, hold: str | None = None) -> None:
    """Record ``charge``; the call's spend ``hold`` ends in the same transaction."""
    if charge is None:
        return
    entry = plan.entry
    try:
        await pipe.spend.record(
            provider=entry.provider_name,
            model=entry.canonical_id,
            operation=plan.operation.value,
            images=charge.images,
            quote=plan.quote,
            cost_usd=charge.cost_usd,
            status=charge.status,
            usage=charge.usage,
            request_id=charge.request_id,
            hold=hold,
        )
    except Exception as exc:  # the images are saved; a ledger failure must not lose them
        log.error("ledger write failed", error=f"{type(exc).__name__}: {exc}")


def say_billed(error: AtelierError, charge: Charge | None) -> AtelierError:
    """Tell the caller of a failed call what it may have cost (and that it is recorded)."""
    if charge is None:
        return error
    amount = f" (about ${charge.cost_usd:.4f})" if charge.cost_usd is not None else ""
    if charge.images:
        said = f"the provider billed for {charge.images} image(s) that could not be saved{amount}"
    else:
        said = f"the provider may have billed this call{amount}"
    error.message = (
        f"{error.message.rstrip('.')}. Note: {said}; it is recorded in get_usage and counts toward the spend limits"
    )
    error.args = (error.message,)
    error.billing = "billed" if charge.images else "maybe_billed"
    error.billed_usd = charge.cost_usd
    return error
