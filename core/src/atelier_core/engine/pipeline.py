"""The router: one call from an :class:`ImageCall` to saved, verified files.

:class:`Atelier` is the service every front end (MCP server, CLI, jobs, sessions) uses.
Build it with :meth:`Atelier.build`; there is no module-level instance.

``execute`` runs a call in small, separately callable steps:

1. :meth:`Atelier.prepare` — resolve the model, read input images, validate, quote. Nothing
   is sent upstream; every refusal happens here.
2. :meth:`Atelier.admit` — the spend limits (and ask-first confirmation); the quote is
   held while the call runs.
3. :meth:`Atelier.perform` — limits, the one retry layer, fan-out, verification, storage.
4. :meth:`Atelier.account` — the cost ledger records what was billed.

Routing rule: ``edit`` with no prompt on a model that supports ``variation`` becomes a
variation (the input image re-imagined without instructions).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field

from atelier_core.media import images as imaging
from atelier_core.engine.cost import Ledger, Quote, SpendGuard, apply_price_override
from atelier_core.plugin.errors import (
    AtelierError,
    AuthenticationError,
    ConfigurationError,
    InputImageError,
    InvalidParameterError,
    OutputPathError,
    QuotaExceededError,
    RateLimitedError,
    RequestError,
    SafetyRefusalError,
    StorageError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    shorten,
)
from atelier_core.media.fetch import SafeFetcher
from atelier_core.media.inputs import InputIntake
from atelier_core.engine.throttle import LimiterPool, RetryPolicy, Sleep, call_with_retries
from atelier_core.logging import add_secret, scrub
from atelier_core.plugin.provider import CallContext
from atelier_core.engine.registry import ModelEntry, Registry, build_registry
from atelier_core.settings import Settings
from atelier_core.plugin.spec import Operation
from atelier_core.media.storage import OutputStore
from atelier_core.state.database import StateStore
from atelier_core.plugin.types import ImageCall, ImageRequest, InputImage, ItemFailure, ProviderResult, Usage
from atelier_core.engine.validation import Validated, validate_call

__all__ = [
    "Atelier",
    "CallOutcome",
    "CostInfo",
    "ImageRecord",
    "Prepared",
    "PreviewCache",
    "Progress",
    "PartialSink",
    "SAVING_FRACTION",
    "SENT_FRACTION",
]

log = structlog.get_logger("atelier.router")

Progress = Callable[[float, str], Awaitable[None]]
Confirm = Callable[[str], Awaitable[bool]]
"""Asks the user to confirm a call (MCP elicitation); True means go ahead."""
#: Progress above this means a request has been sent upstream (a limiter slot was held):
#: from then on the provider may bill. At or above ``SAVING_FRACTION``: verifying and saving.
SENT_FRACTION = 0.1
SAVING_FRACTION = 0.85
PartialSink = Callable[[bytes, int], Awaitable[None]]


# -- results -----------------------------------------------------------------------


class ImageRecord(BaseModel):
    """One saved image."""

    path: str
    uri: str = Field(description="file:// URI of the full image")
    resource_uri: str = Field(description="atelier:// URI readable with resources/read")
    width: int
    height: int
    format: str
    bytes: int
    sha256: str
    seed: int | None = None
    revised_prompt: str | None = None
    sidecar: str | None = None


class CostInfo(BaseModel):
    """What the call was expected to cost and what it cost (USD)."""

    estimate_usd: float | None = None
    cost_usd: float | None = None
    basis: str = "unpriced"
    pricing_as_of: str | None = None


class CallOutcome(BaseModel):
    """The result of one call, JSON round-trippable (jobs persist and re-render it).

    ``failures`` lists requested images that did not come back (partial success); the
    images that did are saved and listed in ``images`` — the caller should not pay again
    for them.
    """

    model_config = ConfigDict(extra="forbid")

    model: str
    provider: str
    operation: Operation
    images: list[ImageRecord] = Field(default_factory=list)
    failures: list[ItemFailure] = Field(default_factory=list)
    requested: dict[str, Any] = Field(default_factory=dict)
    applied: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    usage: Usage | None = None
    cost: CostInfo = Field(default_factory=CostInfo)
    texts: list[str] = Field(default_factory=list)
    request_id: str | None = None
    elapsed_s: float = 0.0
    dry_run: bool = False
    job: dict[str, Any] | None = Field(
        None, description="set when the call continues as a background job: its id and state"
    )


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


@dataclass(slots=True)
class _Batch:
    """One upstream call of a fanned-out request: ``request.n`` images from ``start``."""

    start: int
    request: ImageRequest
    result: ProviderResult | None = None
    error: AtelierError | None = None


# Most meaningful first when every part of a call failed.
_ERROR_RANK: tuple[type[AtelierError], ...] = (
    RequestError,
    ConfigurationError,
    AuthenticationError,
    QuotaExceededError,
    SafetyRefusalError,
    RateLimitedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    UpstreamProtocolError,
    StorageError,
    UpstreamError,
)


def _rank(error: AtelierError) -> int:
    for index, kind in enumerate(_ERROR_RANK):
        if isinstance(error, kind):
            return index
    return len(_ERROR_RANK)


# -- the service -------------------------------------------------------------------


class Atelier:
    """The image service: registry, storage, input intake, limits and the call path."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        *,
        store: OutputStore,
        intake: InputIntake,
        fetcher: SafeFetcher,
        limits: LimiterPool,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        self.intake = intake
        self.fetcher = fetcher
        self.limits = limits
        self._sleep = sleep
        self._state: StateStore | None = None
        self._ledger: Ledger | None = None
        self.spend = SpendGuard(settings.cost, self._get_ledger, run_id=_run_id())
        #: Previews made while verifying new images (one decode per image), keyed by
        #: (path, sha256); the MCP layer takes them instead of decoding the file again.
        self.previews = PreviewCache()

    @property
    def state(self) -> StateStore:
        """The state database (jobs, sessions, ledger), opened on first use."""
        if self._state is None:
            self._state = StateStore.open(self.settings.resolved_data_dir)
        return self._state

    def _get_ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = Ledger(self.state)
        return self._ledger

    @property
    def ledger(self) -> Ledger:
        return self._get_ledger()

    @classmethod
    def build(
        cls,
        settings: Settings | None = None,
        *,
        plugins: Sequence[tuple[str, object]] | None = None,
        entry_points: bool = True,
        sleep: Sleep = asyncio.sleep,
    ) -> Atelier:
        """Build the service from settings (default: environment + config file)."""
        settings = settings or Settings()
        registry = build_registry(settings, plugins=plugins, entry_points=entry_points)
        for provider in registry.providers.values():
            for value in dict(provider.settings).values():
                if hasattr(value, "get_secret_value"):
                    add_secret(value)  # masked wherever errors and log lines go
        storage = settings.storage
        store = OutputStore(settings.output_dir, file_mode=storage.file_mode)
        fetcher = SafeFetcher(timeout_s=storage.remote_timeout_s, max_bytes=storage.remote_max_bytes)
        intake = InputIntake(
            roots=[settings.output_dir, *storage.input_dirs],
            store=store,
            fetcher=fetcher,
            allow_remote=storage.allow_remote_inputs,
            max_bytes=storage.max_input_bytes,
            max_pixels=storage.max_input_pixels,
        )
        return cls(
            settings, registry, store=store, intake=intake, fetcher=fetcher,
            limits=LimiterPool(sleep=sleep), sleep=sleep,
        )

    async def aclose(self) -> None:
        """Close provider clients opened lazily."""
        await self.registry.aclose()

    # -- the call path ---------------------------------------------------------------

    async def execute(
        self,
        call: ImageCall,
        operation: Operation,
        *,
        filename: str | None = None,
        overwrite: bool = False,
        progress: Progress | None = None,
        partial: PartialSink | None = None,
        dry_run: bool = False,
        confirm: Confirm | None = None,
        saved: Callable[[str], Awaitable[None]] | None = None,
    ) -> CallOutcome:
        """Run one generate/edit/variation call end to end.

        Raises an :class:`AtelierError` when nothing could be produced; returns an outcome
        with ``failures`` when only some images came back.
        """
        progress = _Monotonic(progress) if progress is not None else None
        prepared = await self.prepare(call, operation, require_available=not dry_run)
        if filename is not None:
            self.check_filename(prepared, filename, overwrite)
        await _report(progress, 0.05, f"validated for {prepared.entry.canonical_id}")
        if dry_run:
            return self.dry_run_outcome(prepared)
        prepared.confirm = confirm
        prepared.on_saved = saved  # told each file's path as soon as it is published
        hold = await self.admit(prepared)
        try:
            try:
                outcome = await self.perform(
                    prepared, filename=filename, overwrite=overwrite, progress=progress,
                    partial=partial,
                )
            except UpstreamTimeoutError as exc:
                await asyncio.to_thread(self.account, prepared, None, request_id=exc.request_id)
                raise
            # A ledger write is a SQLite commit (synced to disk): never on the event loop.
            await asyncio.to_thread(self.account, prepared, outcome)
        finally:
            self.spend.release(hold)
        return outcome

    async def admit(self, prepared: Prepared) -> int:
        """Apply the spend limits; ask the user first above the threshold. Holds the quote."""
        quote = prepared.quote
        verdict, hold = self.spend.admit(quote, prepared.entry.canonical_id)
        if verdict == "ask":
            confirmed = False
            if prepared.confirm is not None:
                message = (
                    f"Generate {prepared.request.n} image(s) with {prepared.entry.canonical_id} "
                    f"for an estimated ${quote.estimate_usd or 0:.4f}?"
                )
                try:
                    confirmed = await prepared.confirm(message)
                except Exception as exc:  # a client that fails to answer has not confirmed
                    log.warning("confirmation failed", error=type(exc).__name__)
            if not confirmed:
                self.spend.release(hold)
                raise self.spend.ask_refusal(quote, asked=prepared.confirm is not None)
        return hold

    def account(self, prepared: Prepared, outcome: CallOutcome | None, *, request_id: str | None = None) -> None:
        """Record a billed (or possibly billed) call in the ledger. Unbilled failures are not."""
        entry = prepared.entry
        if outcome is None:  # timed out: the provider may have billed it
            images, cost, status, usage = 0, prepared.cost.estimate_usd, "maybe_billed", None
        elif outcome.images:
            images, cost = len(outcome.images), outcome.cost.cost_usd
            status = "partial" if outcome.failures else "billed"
            usage = outcome.usage.model_dump(exclude_none=True) if outcome.usage else None
            request_id = outcome.request_id
        else:
            return
        try:
            self.spend.record(
                provider=entry.provider_name, model=entry.canonical_id,
                operation=prepared.operation.value, images=images, quote=prepared.quote,
                cost_usd=cost, status=status, usage=usage, request_id=request_id,
            )
        except Exception as exc:  # the images are saved; a ledger failure must not lose them
            log.error("ledger write failed", error=f"{type(exc).__name__}: {exc}")

    def resolve(self, model: str | None) -> ModelEntry:
        """The model entry for ``model`` or the configured default model."""
        name = model or self.settings.default_model
        if not name:
            available = [e.canonical_id for e in self.registry.entries() if e.unavailable_reason() is None]
            raise InvalidParameterError(
                "model",
                None,
                "is required: no default model is configured",
                allowed=available or "no model is available; see list_available_models",
                fix="pass model (see list_available_models), or set default_model "
                "(ATELIER_DEFAULT_MODEL)",
            )
        return self.registry.resolve(name)

    async def prepare(
        self, call: ImageCall, operation: Operation, *, require_available: bool = True
    ) -> Prepared:
        """Resolve, read inputs, validate and quote. Spends nothing, sends nothing."""
        entry = self.resolve(call.model)
        notes: list[str] = []
        if (
            operation is Operation.EDIT
            and not (call.prompt or "").strip()
            and entry.spec.supports(Operation.VARIATION)
        ):
            operation = Operation.VARIATION
            notes.append("no prompt: made a variation of the input image")
        images, mask = await self._load_inputs(call)
        validated = validate_call(call, entry, operation, images, mask)
        if require_available:
            self.registry.require_available(entry)
        else:  # a dry run may price a provider that is not configured yet
            reason = entry.unavailable_reason()
            if reason is not None:
                notes.append(f"a real call would be refused now: {reason}")
        cost = self.quote(entry, validated.request)
        return Prepared(
            call=call, operation=operation, entry=entry, validated=validated, cost=cost,
            notes=[*notes, *validated.notes],
        )

    def check_filename(self, prepared: Prepared, filename: str, overwrite: bool) -> None:
        """Refuse a bad or taken output name before anything is spent."""
        fmt = prepared.request.output_format or "png"
        parts = self.store.plan_path(filename, fmt)
        if not overwrite and self.store.root.joinpath(*parts).exists():
            raise OutputPathError(
                f"filename={shorten(filename)}: a file named {'/'.join(parts)} already exists "
                "in the output root",
                code="file_exists", parameter="filename", value=filename,
                fix="pass overwrite=true or another filename",
            )

    async def _load_inputs(self, call: ImageCall) -> tuple[list[InputImage], InputImage | None]:
        loaded = [
            await self.intake.load(reference, parameter=f"images[{index}]")
            for index, reference in enumerate(call.images)
        ]
        mask = await self.intake.load(call.mask, parameter="mask") if call.mask else None
        return loaded, mask

    def quote(self, entry: ModelEntry, request: ImageRequest) -> CostInfo:
        """Price estimate before the call, from the provider's price table."""
        spec = apply_price_override(entry.spec, entry.canonical_id, self.settings.cost)
        pricing = spec.pricing
        estimate = entry.provider.estimate_cost(request, spec)
        return CostInfo(
            estimate_usd=estimate,
            basis="price table" if estimate is not None else "unpriced",
            pricing_as_of=pricing.as_of if pricing else None,
        )

    def dry_run_outcome(self, prepared: Prepared) -> CallOutcome:
        """What a dry run returns: the quote and the parameters, no images, no spend."""
        notes = [*prepared.notes, "dry run: nothing was sent to the provider"]
        try:
            if self.spend.check(prepared.quote, prepared.entry.canonical_id) == "ask":
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

    async def perform(
        self,
        prepared: Prepared,
        *,
        filename: str | None = None,
        overwrite: bool = False,
        progress: Progress | None = None,
        partial: PartialSink | None = None,
    ) -> CallOutcome:
        """Call the provider (limits, retries, fan-out), verify and save every image."""
        entry = prepared.entry
        request = prepared.request
        provider = entry.provider
        notes = list(prepared.notes)
        batches = _split(request, entry.spec.native_batch)
        if len(batches) > 1:
            notes.append(f"n={request.n} sent as {len(batches)} parallel calls of at most "
                         f"{entry.spec.native_batch}")
        limiter = self.limits.get(provider.name, provider.settings)
        policy = RetryPolicy.from_settings(provider.settings)
        done = 0

        async def batch_progress(fraction: float, message: str) -> None:
            # Providers report 0–1 per call; map it into the calling band (0.1–0.85).
            await _report(progress, 0.1 + 0.75 * (done + fraction) / len(batches), message)

        ctx = CallContext(
            timeout_s=policy.timeout_s,
            progress=batch_progress,
            partial_image=partial,
            download=self._download,
        )

        async def _sent(batch: _Batch) -> ProviderResult:
            # Runs with a limiter slot held: report it, so jobs can tell queued from sent.
            await batch_progress(0.01, f"sent to {entry.canonical_id}")
            return await provider.run(batch.request, ctx)

        async def run(batch: _Batch) -> None:
            nonlocal done
            try:
                batch.result = await call_with_retries(
                    lambda: _sent(batch),
                    policy=policy, limiter=limiter, provider=provider.name, sleep=self._sleep,
                )
                if not isinstance(batch.result, ProviderResult):
                    raise UpstreamProtocolError(
                        f"{provider.name} returned {type(batch.result).__name__}, not a result",
                        provider=provider.name,
                    )
            except AtelierError as exc:
                batch.error = _scrubbed(exc)
            except Exception:
                # A provider bug: keep the details in the server log (they may hold
                # anything), tell the caller only that it happened.
                log.exception("provider raised an unexpected exception", provider=provider.name)
                batch.error = UpstreamError(
                    f"provider {provider.name} failed unexpectedly (an internal error; details "
                    "are in the server log)",
                    code="provider_internal_error", provider=provider.name,
                )
            finally:
                done += 1

        await _report(progress, SENT_FRACTION, f"calling {entry.canonical_id}")
        async with asyncio.TaskGroup() as group:
            for batch in batches:
                group.create_task(run(batch))
        await _report(progress, SAVING_FRACTION, "verifying and saving")
        outcome = await self._collect(prepared, batches, notes, filename, overwrite)
        await _report(progress, 1.0, f"saved {len(outcome.images)} image(s)")
        return outcome

    async def _download(self, url: str, allowed_hosts: Sequence[str]) -> bytes:
        """Fetch an image URL a provider returned (its host only, size and time capped)."""
        try:
            return await self.fetcher.fetch(url, allowed_hosts=list(allowed_hosts), parameter="provider image URL")
        except InputImageError as exc:  # the provider's answer is at fault, not the caller
            raise UpstreamProtocolError(
                f"could not download the image the provider returned: {exc.message}",
                code=exc.code, fix=exc.fix,
            ) from None

    async def _collect(
        self,
        prepared: Prepared,
        batches: list[_Batch],
        notes: list[str],
        filename: str | None,
        overwrite: bool,
    ) -> CallOutcome:
        entry = prepared.entry
        request = prepared.request
        failures: list[ItemFailure] = []
        errors: list[AtelierError] = []
        usage: Usage | None = None
        texts: list[str] = []
        request_ids: list[str] = []
        applied = dict(prepared.validated.applied)
        provider_cost: float | None = None
        records: list[ImageRecord] = []
        pending: list[tuple[int, Any]] = []  # (global index, ProviderImage)
        for batch in batches:
            if batch.error is not None:
                errors.append(batch.error)
                failures.extend(
                    ItemFailure(index=batch.start + i, code=batch.error.code, message=str(batch.error))
                    for i in range(batch.request.n)
                )
                continue
            result = batch.result
            assert result is not None
            usage = result.usage.merged(usage) if result.usage else usage
            texts.extend(result.texts)
            if result.request_id:
                request_ids.append(result.request_id)
            applied.update(result.applied)
            if result.cost_usd is not None:
                provider_cost = (provider_cost or 0.0) + result.cost_usd
            for failure in result.failures:
                failures.append(failure.model_copy(update={"index": batch.start + failure.index}))
            for local, image in enumerate(result.images[: batch.request.n]):
                pending.append((batch.start + local, image))
            accounted = min(len(result.images), batch.request.n) + len(result.failures)
            for missing in range(accounted, batch.request.n):
                failures.append(ItemFailure(
                    index=batch.start + missing, code="missing_image",
                    message=f"{entry.provider_name} returned {len(result.images)} of "
                    f"{batch.request.n} requested image(s) without saying why",
                ))
        request_id = ", ".join(dict.fromkeys(request_ids)) or None
        saved_count = 0
        for index, image in pending:
            try:
                decoded = await asyncio.to_thread(self._verify, image.data, entry.provider_name)
            except AtelierError as exc:
                log.warning("provider returned an invalid image", provider=entry.provider_name,
                            index=index, error=exc.code)
                failures.append(ItemFailure(index=index, code=exc.code, message=str(exc)))
                errors.append(exc)
                continue
            info = decoded.info
            metadata = self._metadata(prepared, image, index, request_id, usage)
            name = _numbered(filename, saved_count) if filename else None
            # Verified: the file is written while another thread makes the preview from
            # the same decode (both release the GIL for most of their work).
            shrinking = asyncio.ensure_future(asyncio.to_thread(self._preview, decoded, entry.provider_name))
            try:
                saved = await asyncio.to_thread(
                    self.store.save, image.data, info.format, filename=name, overwrite=overwrite,
                    metadata=metadata, width=info.width, height=info.height,
                )
            except AtelierError as exc:
                failures.append(ItemFailure(index=index, code=exc.code, message=str(exc)))
                errors.append(exc)
                continue
            finally:
                preview = await shrinking  # never raises: a failed preview is None
                decoded.image.close()
            saved_count += 1
            if prepared.on_saved is not None:
                await prepared.on_saved(str(saved.path))
            if preview is not None:
                self.previews.put(str(saved.path), saved.sha256, preview)
            records.append(ImageRecord(
                path=str(saved.path), uri=saved.uri, resource_uri=saved.resource_uri,
                width=saved.width, height=saved.height, format=saved.format, bytes=saved.bytes,
                sha256=saved.sha256, seed=image.seed, revised_prompt=image.revised_prompt,
                sidecar=str(saved.sidecar) if saved.sidecar else None,
            ))
        failures.sort(key=lambda f: f.index)
        if not records:
            raise _most_meaningful(errors, entry, request.n, failures)
        if failures:
            notes.append(f"{len(records)} of {request.n} image(s) produced; {len(failures)} failed "
                         "(see failures); the saved ones are kept — do not pay for them again")
        cost = self.settle(prepared, usage, provider_cost, len(records))
        return CallOutcome(
            model=entry.canonical_id,
            provider=entry.provider_name,
            operation=prepared.operation,
            images=records,
            failures=failures,
            requested=prepared.validated.requested,
            applied=applied,
            notes=notes,
            usage=usage,
            cost=cost,
            texts=texts,
            request_id=request_id,
            elapsed_s=round(time.perf_counter() - prepared.started, 4),
        )

    def _verify(self, data: bytes, provider: str) -> imaging.DecodedImage:
        """Fully decode a returned image (worker thread: a 4K PNG takes a third of a
        second); raises UpstreamProtocolError when it is not a complete image. The caller
        makes the preview from this decode and closes it."""
        return imaging.decode_image(
            data, max_pixels=self.settings.storage.max_input_pixels, upstream=True, provider=provider
        )

    def _preview(self, decoded: imaging.DecodedImage, provider: str) -> imaging.Preview | None:
        """The default preview from an existing decode (worker thread); None if it fails."""
        settings = self.settings.preview
        try:
            return imaging.make_preview(decoded, max_edge=settings.max_edge,
                                        max_bytes=settings.max_bytes, fmt=settings.format)
        except Exception as exc:  # a preview is a convenience; the MCP layer retries from the file
            log.warning("preview failed", provider=provider, error=type(exc).__name__)
            return None

    def settle(
        self, prepared: Prepared, usage: Usage | None, provider_cost: float | None, delivered: int
    ) -> CostInfo:
        """The cost after the call: provider's figure, else from usage, else the estimate pro rata."""
        entry = prepared.entry
        request = prepared.request
        quote = prepared.cost
        if provider_cost is not None:
            return quote.model_copy(update={"cost_usd": round(provider_cost, 6), "basis": "provider"})
        if usage is not None:
            from_usage = entry.provider.cost_from_usage(usage, request, entry.spec, delivered)
            if from_usage is not None:
                return quote.model_copy(update={"cost_usd": from_usage, "basis": "usage"})
        if quote.estimate_usd is not None:
            share = quote.estimate_usd * delivered / max(1, request.n)
            return quote.model_copy(update={"cost_usd": round(share, 6)})
        return quote

    def _metadata(
        self, prepared: Prepared, image: Any, index: int, request_id: str | None, usage: Usage | None
    ) -> dict[str, Any]:
        """The sidecar written beside each image: enough to reproduce and account for it."""
        return {
            "model": prepared.entry.canonical_id,
            "provider": prepared.entry.provider_name,
            "operation": prepared.operation.value,
            "prompt": prepared.request.prompt,
            "requested": prepared.validated.requested,
            "applied": prepared.validated.applied,
            "index": index,
            "seed": image.seed,
            "revised_prompt": image.revised_prompt,
            "request_id": request_id,
            "usage": usage.model_dump(exclude_none=True) if usage else None,
            "cost": prepared.cost.model_dump(),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    # -- catalogue -------------------------------------------------------------------

    def describe_models(
        self, provider: str | None = None, capability: str | None = None
    ) -> dict[str, Any]:
        """Data for ``list_available_models``: every model, compactly, plus diagnostics."""
        if capability is not None and capability not in {op.value for op in Operation}:
            raise InvalidParameterError(
                "capability", capability, "is not a capability",
                allowed=[op.value for op in Operation],
            )
        if provider is not None and provider not in self.registry.providers:
            raise InvalidParameterError(
                "provider", provider, "is not a loaded provider",
                allowed=sorted(self.registry.providers) or "none loaded",
            )
        models = [describe_entry(entry) for entry in self.registry.entries(provider, capability)]
        out: dict[str, Any] = {"models": models}
        if self.settings.default_model:
            out["default_model"] = self.settings.default_model
        diagnostics = self.registry.diagnostics()
        problems = [p for p in diagnostics.get("plugins", []) if p.get("status") != "loaded"]
        if problems or diagnostics.get("problems"):
            out["plugin_problems"] = {"plugins": problems, "problems": diagnostics.get("problems", [])}
        return out


def describe_entry(entry: ModelEntry) -> dict[str, Any]:
    """One model for ``list_available_models``: only what is set, compactly."""
    spec = entry.spec
    reason = entry.unavailable_reason()
    out: dict[str, Any] = {"id": entry.canonical_id}
    if spec.aliases:
        out["aliases"] = list(spec.aliases)
    out["provider"] = entry.provider_name
    out["available"] = reason is None
    if reason:
        out["reason"] = reason
    if spec.title:
        out["title"] = spec.title
    out["operations"] = sorted(op.value for op in spec.operations)
    sizes: dict[str, Any] = {}
    rules = spec.sizes
    if rules.presets:
        sizes["presets"] = list(rules.presets)
    if rules.allow_auto:
        sizes["auto"] = True
    if rules.custom:
        sizes["custom"] = rules.custom.describe()
    if rules.aspect_ratios:
        sizes["aspect_ratios"] = list(rules.aspect_ratios)
    if rules.resolutions:
        sizes["resolutions"] = list(rules.resolutions)
    if rules.default:
        sizes["default"] = rules.default
    out["sizes"] = sizes
    for key in ("qualities", "backgrounds", "styles"):
        value = getattr(spec, key)
        if value:
            out[key] = list(value)
    out["formats"] = list(spec.output_formats)
    out["n_max"] = spec.n_max
    if spec.prompt_max_chars:
        out["prompt_max"] = spec.prompt_max_chars
    for key, rules_ in (("inputs", spec.input_images), ("references", spec.reference_images)):
        if rules_ is not None:
            info: dict[str, Any] = {"max": rules_.max_count, "formats": list(rules_.formats)}
            if rules_.must_be_square:
                info["square"] = True
            if rules_.mask is not None:
                info["mask"] = True
            out[key] = info
    flags = [name for name in ("seed", "negative_prompt") if getattr(spec, name)]
    if flags:
        out["supports"] = flags
    options = spec.describe_options()
    if options:
        out["options"] = options
    if spec.pricing is not None:
        price: dict[str, Any] = {
            k: v for k, v in spec.pricing.model_dump(exclude_defaults=True).items()
            if k not in ("source",)
        }
        out["price_usd"] = price
    return out


class PreviewCache:
    """The default previews of recently saved images, until the MCP layer renders them.

    Bounded (oldest dropped first); :meth:`take` removes the entry, so a preview is held
    only between saving an image and answering the call (or a job's first collection).
    """

    def __init__(self, limit: int = 32) -> None:
        self.limit = limit
        self._items: OrderedDict[tuple[str, str], imaging.Preview] = OrderedDict()

    def put(self, path: str, sha256: str, preview: imaging.Preview) -> None:
        self._items[(path, sha256)] = preview
        while len(self._items) > self.limit:
            self._items.popitem(last=False)

    def take(self, path: str, sha256: str) -> imaging.Preview | None:
        return self._items.pop((path, sha256), None)


class _Monotonic:
    """Forward progress only when it grows (MCP requires increasing progress values)."""

    def __init__(self, sink: Progress) -> None:
        self._sink = sink
        self._last = -1.0

    async def __call__(self, fraction: float, message: str) -> None:
        if fraction > self._last:
            self._last = fraction
            await self._sink(fraction, message)


async def _report(progress: Progress | None, fraction: float, message: str) -> None:
    if progress is None:
        return
    try:
        await progress(max(0.0, min(1.0, fraction)), message)
    except Exception as exc:  # a broken progress channel must never fail the call
        log.debug("progress report failed", error=type(exc).__name__)


def _split(request: ImageRequest, batch: int) -> list[_Batch]:
    """Split a request for ``n`` images into upstream calls of at most ``batch`` each."""
    batch = max(1, batch)
    if request.n <= batch:
        return [_Batch(0, request)]
    out: list[_Batch] = []
    for start in range(0, request.n, batch):
        update: dict[str, Any] = {"n": min(batch, request.n - start)}
        if request.seed is not None:
            # Distinct, reproducible seeds per part; otherwise each part repeats the first.
            update["seed"] = request.seed + start
        out.append(_Batch(start, request.model_copy(update=update)))
    return out


def _scrubbed(error: AtelierError) -> AtelierError:
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


def _numbered(filename: str, index: int) -> str:
    """``cat.png`` → ``cat.png``, ``cat-2.png``, ``cat-3.png`` for a multi-image call."""
    if index == 0:
        return filename
    path = Path(filename)
    return str(path.with_name(f"{path.stem}-{index + 1}{path.suffix}"))


def _most_meaningful(
    errors: list[AtelierError], entry: ModelEntry, n: int, failures: list[ItemFailure]
) -> AtelierError:
    if errors:
        return min(errors, key=_rank)
    return UpstreamProtocolError(
        f"{entry.canonical_id} returned no image"
        + (f" ({failures[0].message})" if failures else ""),
        provider=entry.provider_name,
        fix="try again; if it persists, change the prompt or the model",
    )


def _run_id() -> str:
    """Identifies this server run in the ledger (for the per-run spend limit)."""
    import os
    import secrets

    return f"{os.getpid()}-{secrets.token_hex(6)}"
