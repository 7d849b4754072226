"""Plan: everything that can refuse a call, before anything is sent or spent.

:func:`make_plan` resolves the model, reads every input once, validates the request
against the model's spec, quotes it, and resolves every output name the call will use
(all ``n`` of them, their sidecars, against the filesystem). The result is a
:class:`Plan`; its :class:`CallPlan` is the typed, versioned part a job stores.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field

from atelier_core.engine.cost import Quote, apply_price_override
from atelier_core.engine.outcome import CallOutcome, CostInfo
from atelier_core.engine.registry import ModelEntry
from atelier_core.engine.validation import Validated, validate_call
from atelier_core.media.inputs import InputBudget
from atelier_core.media.outputs import OutputSlot, plan_outputs
from atelier_core.plugin.errors import AtelierError, InvalidParameterError
from atelier_core.plugin.spec import Operation
from atelier_core.plugin.types import ImageCall, ImageRequest, InputImage

if TYPE_CHECKING:
    from atelier_core.engine.pipeline import Pipeline

__all__ = ["PLAN_VERSION", "CallPlan", "OutputRequest", "Plan", "dry_run_outcome", "make_plan", "quote", "resolve"]

PLAN_VERSION: Literal[1] = 1


class OutputRequest(BaseModel):
    """What the caller asked for the files: a name (numbered for n > 1) and overwrite."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    filename: str | None = None
    overwrite: bool = False


class CallPlan(BaseModel):
    """A call as a job stores it: typed, versioned, JSON round-trippable.

    ``model`` is the canonical id it resolved to; ``confirmed`` records that the user
    already confirmed the spend (so the job does not ask again).
    """

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = PLAN_VERSION
    model: str
    operation: Operation
    call: ImageCall
    output: OutputRequest = OutputRequest()
    confirmed: bool = False
    session: dict[str, Any] | None = Field(
        None,
        description="an edit-session turn: recorded in that session once the call has run "
        "(see SessionManager.turn_ref)",
    )


@dataclass(slots=True)
class Plan:
    """A call with everything decided and nothing spent: the input of the admit stage."""

    spec: CallPlan
    operation: Operation  # what is sent (an edit without a prompt may become a variation)
    entry: ModelEntry
    validated: Validated
    cost: CostInfo
    slots: list[OutputSlot] | None = None  # None: the store chooses the names
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    #: False when the caller inlines no image (return_image=none): no preview is made,
    #: and a PNG is verified by its structure and checksums instead of a full decode.
    #: Not stored: a job planned again after a restart makes its previews.
    want_preview: bool = True
    job_id: str | None = None  # set when the call runs as a background job (files carry it)
    #: queue-based vendors: where the send stage records a vendor task id (batch start,
    #: task id), and the task ids to resume polling instead of submitting again. Set by
    #: the job runner; not stored (the job row keeps the ids).
    vendor_task_sink: Callable[[int, str], Awaitable[None]] | None = None
    resume_tasks: dict[int, str] = field(default_factory=dict)
    keep_vendor_tasks: Callable[[], bool] | None = None  # True: a cancel leaves the vendor task running

    @property
    def request(self) -> ImageRequest:
        return self.validated.request

    @property
    def quote(self) -> Quote:
        return Quote(
            estimate_usd=self.cost.estimate_usd,
            images=self.request.n,
            basis=self.cost.basis,
            pricing_as_of=self.cost.pricing_as_of,
        )

    @property
    def planned_format(self) -> str:
        """The format the output names were planned for."""
        return self.request.output_format or "png"


def resolve(pipe: Pipeline, model: str | None) -> ModelEntry:
    """The model entry for ``model`` or the configured default model."""
    name = model or pipe.settings.default_model
    if not name:
        available = [e.canonical_id for e in pipe.registry.entries() if e.unavailable_reason() is None]
        raise InvalidParameterError(
            "model",
            None,
            "is required: no default model is configured",
            allowed=available or "no model is available; see list_available_models",
            fix="pass model (see list_available_models), or set default_model (ATELIER_DEFAULT_MODEL)",
        )
    return pipe.registry.resolve(name)


async def make_plan(
    pipe: Pipeline,
    call: ImageCall,
    operation: Operation,
    *,
    output: OutputRequest | None = None,
    confirmed: bool = False,
    require_available: bool = True,
    check_outputs: bool = True,
) -> Plan:
    """Resolve, read inputs (once), validate, quote and plan every output. Sends nothing.

    ``check_outputs=False`` skips the output names (a plan that will not run itself: the
    repeat of an idempotent call, answered from the earlier job)."""
    output = output or OutputRequest()
    entry = resolve(pipe, call.model)
    spec = CallPlan(model=entry.canonical_id, operation=operation, call=call, output=output, confirmed=confirmed)
    notes: list[str] = []
    if operation is Operation.EDIT and not (call.prompt or "").strip() and entry.spec.supports(Operation.VARIATION):
        operation = Operation.VARIATION
        notes.append("no prompt: made a variation of the input image")
    images, mask = await _load_inputs(pipe, call)
    validated = validate_call(call, entry, operation, images, mask)
    if require_available:
        pipe.registry.require_available(entry)
    else:  # a dry run may price a provider that is not configured yet
        reason = entry.unavailable_reason()
        if reason is not None:
            notes.append(f"a real call would be refused now: {reason}")
    plan = Plan(
        spec=spec,
        operation=operation,
        entry=entry,
        validated=validated,
        cost=quote(pipe, entry, validated.request),
        notes=[*notes, *validated.notes],
    )
    if plan.cost.extra_note:
        plan.notes.append(plan.cost.extra_note)
    if output.filename is not None and check_outputs:
        # Filesystem checks (lstat, reading a sidecar in the way): off the event loop.
        plan.slots = await anyio.to_thread.run_sync(
            functools.partial(
                plan_outputs,
                pipe.store,
                output.filename,
                plan.planned_format,
                plan.request.n,
                overwrite=output.overwrite,
            )
        )
        plan.notes.extend(slot.note for slot in plan.slots if slot.note)
    return plan


async def _load_inputs(pipe: Pipeline, call: ImageCall) -> tuple[list[InputImage], InputImage | None]:
    """The call's input images and mask, one at a time, within the call's total budget
    (``storage.max_call_input_bytes`` and ``max_call_input_pixels``)."""
    storage = pipe.settings.storage
    budget = InputBudget(max_bytes=storage.max_call_input_bytes, max_pixels=storage.max_call_input_pixels)
    loaded = [
        await pipe.intake.load(reference, parameter=f"images[{index}]", budget=budget)
        for index, reference in enumerate(call.images)
    ]
    mask = await pipe.intake.load(call.mask, parameter="mask", budget=budget) if call.mask else None
    return loaded, mask


def quote(pipe: Pipeline, entry: ModelEntry, request: ImageRequest) -> CostInfo:
    """Price estimate before the call, from the provider's price table."""
    spec = apply_price_override(entry.spec, entry.canonical_id, pipe.settings.cost)
    pricing = spec.pricing
    estimate = entry.provider.estimate_cost(request, spec)
    extra = entry.provider.estimate_extra_cost(request, spec)
    if extra is None:
        return CostInfo(
            estimate_usd=estimate,
            basis="price table" if estimate is not None else "unpriced",
            pricing_as_of=pricing.as_of if pricing else None,
        )
    allowance, note = extra
    return CostInfo(
        estimate_usd=round((estimate or 0.0) + allowance, 6) if estimate is not None else None,
        extra_estimate_usd=round(allowance, 6),
        extra_note=note,
        basis="price table" if estimate is not None else "unpriced",
        pricing_as_of=pricing.as_of if pricing else None,
    )


async def dry_run_outcome(pipe: Pipeline, plan: Plan) -> CallOutcome:
    """What a dry run returns: the quote and the parameters, no images, no spend."""
    notes = [*plan.notes, "dry run: nothing was sent to the provider"]
    try:
        if await pipe.spend.check(plan.quote, plan.entry.canonical_id) == "ask":
            notes.append("a real call would ask the user to confirm (cost.ask_above_usd)")
    except AtelierError as exc:
        notes.append(f"a real call would be refused: {exc}")
    return CallOutcome(
        model=plan.entry.canonical_id,
        provider=plan.entry.provider_name,
        operation=plan.operation,
        requested=plan.validated.requested,
        applied=plan.validated.applied,
        notes=notes,
        cost=plan.cost,
        elapsed_s=round(time.perf_counter() - plan.started, 4),
        dry_run=True,
    )
