"""Plan: resolve the model, read the inputs, validate and quote. Nothing is sent, nothing spent."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


from atelier_core.engine.cost import Quote, apply_price_override
from atelier_core.plugin.errors import (
    AtelierError,
    InvalidParameterError,
    OutputPathError,
    shorten,
)
from atelier_core.engine.registry import ModelEntry
from atelier_core.media.inputs import InputBudget
from atelier_core.plugin.spec import Operation
from atelier_core.plugin.types import ImageCall, ImageRequest, InputImage
from atelier_core.engine.validation import Validated, validate_call
from typing import TYPE_CHECKING
from atelier_core.engine.outcome import CallOutcome, CostInfo
from atelier_core.engine.progress import Confirm

if TYPE_CHECKING:
    from atelier_core.engine.pipeline import Pipeline


@dataclass(slots=True)
class Prepared:
    """A validated call, ready to send: everything decided, nothing spent."""

    call: ImageCall
    operation: Operation
    entry: ModelEntry
    validated: Validated
    cost: CostInfo
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    confirm: Confirm | None = None
    on_saved: Callable[[str], Awaitable[None]] | None = None

    @property
    def quote(self) -> Quote:
        return Quote(
            estimate_usd=self.cost.estimate_usd, images=self.request.n, basis=self.cost.basis,
            pricing_as_of=self.cost.pricing_as_of,
        )

    @property
    def request(self) -> ImageRequest:
        return self.validated.request


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
            fix="pass model (see list_available_models), or set default_model "
            "(ATELIER_DEFAULT_MODEL)",
        )
    return pipe.registry.resolve(name)


async def prepare(pipe: Pipeline, call: ImageCall, operation: Operation, *, require_available: bool = True
) -> Prepared:
    """Resolve, read inputs, validate and quote. Spends nothing, sends nothing."""
    entry = resolve(pipe, call.model)
    notes: list[str] = []
    if (
        operation is Operation.EDIT
        and not (call.prompt or "").strip()
        and entry.spec.supports(Operation.VARIATION)
    ):
        operation = Operation.VARIATION
        notes.append("no prompt: made a variation of the input image")
    images, mask = await load_inputs(pipe, call)
    validated = validate_call(call, entry, operation, images, mask)
    if require_available:
        pipe.registry.require_available(entry)
    else:  # a dry run may price a provider that is not configured yet
        reason = entry.unavailable_reason()
        if reason is not None:
            notes.append(f"a real call would be refused now: {reason}")
    cost = quote(pipe, entry, validated.request)
    return Prepared(
        call=call, operation=operation, entry=entry, validated=validated, cost=cost,
        notes=[*notes, *validated.notes],
    )


def check_filename(pipe: Pipeline, prepared: Prepared, filename: str, overwrite: bool) -> None:
    """Refuse a bad or taken output name before anything is spent."""
    fmt = prepared.request.output_format or "png"
    parts = pipe.store.plan_path(filename, fmt)
    if not overwrite and pipe.store.root.joinpath(*parts).exists():
        raise OutputPathError(
            f"filename={shorten(filename)}: a file named {'/'.join(parts)} already exists "
            "in the output root",
            code="file_exists", parameter="filename", value=filename,
            fix="pass overwrite=true or another filename",
        )


async def load_inputs(pipe: Pipeline, call: ImageCall) -> tuple[list[InputImage], InputImage | None]:
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
    return CostInfo(
        estimate_usd=estimate,
        basis="price table" if estimate is not None else "unpriced",
        pricing_as_of=pricing.as_of if pricing else None,
    )


def dry_run_outcome(pipe: Pipeline, prepared: Prepared) -> CallOutcome:
    """What a dry run returns: the quote and the parameters, no images, no spend."""
    notes = [*prepared.notes, "dry run: nothing was sent to the provider"]
    try:
        if pipe.spend.check(prepared.quote, prepared.entry.canonical_id) == "ask":
            notes.append("a real call would ask the user to confirm (cost.ask_above_usd)")
    except AtelierError as exc:
        notes.append(f"a real call would be refused: {exc}")
    return CallOutcome(
        model=prepared.entry.canonical_id,
        provider=prepared.entry.provider_name,
        operation=prepared.operation,
        requested=prepared.validated.requested,
        applied=prepared.validated.applied,
        notes=notes,
        cost=prepared.cost,
        elapsed_s=round(time.perf_counter() - prepared.started, 4),
        dry_run=True,
    )
