"""The router: one call from an :class:`ImageCall` to saved, verified files.

:class:`Pipeline` is the service every front end (MCP server, CLI, jobs, sessions) uses.
Build it with :meth:`Pipeline.build`; there is no module-level instance.

``execute`` runs a call in small, separately callable steps:

1. :meth:`Pipeline.prepare` — resolve the model, read input images, validate, quote. Nothing
   is sent upstream; every refusal happens here.
2. :meth:`Pipeline.admit` — the spend limits (and ask-first confirmation); the quote is
   held while the call runs.
3. :meth:`Pipeline.perform` — limits, the one retry layer, fan-out, verification, storage.
4. :meth:`Pipeline.account` — the cost ledger records what was billed.

Routing rule: ``edit`` with no prompt on a model that supports ``variation`` becomes a
variation (the input image re-imagined without instructions).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog

from atelier_core.engine.cost import Ledger, SpendGuard
from atelier_core.plugin.errors import (
    UpstreamTimeoutError,
)
from atelier_core.media.fetch import SafeFetcher
from atelier_core.media.inputs import InputIntake
from atelier_core.engine.throttle import LimiterPool, Sleep
from atelier_core.logging import add_secret, add_url_credentials
from atelier_core.engine.registry import ModelEntry, Registry, build_registry
from atelier_core.settings import Settings
from atelier_core.plugin.spec import Operation
from atelier_core.media.storage import OutputStore
from atelier_core.media.thumbnails import Thumbnails
from atelier_core.state.database import StateStore
from atelier_core.plugin.types import ImageCall, ImageRequest

from atelier_core.engine.outcome import CallOutcome, CostInfo, ImageRecord, PreviewCache
from atelier_core.engine.progress import SAVING_FRACTION, SENT_FRACTION, Confirm, Monotonic, PartialSink, Progress, report
from atelier_core.engine.plan import Prepared, check_filename, dry_run_outcome, prepare, quote, resolve
from atelier_core.engine.send import perform
from atelier_core.engine.describe import describe_models

__all__ = [
    "Pipeline",
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


# -- the service -------------------------------------------------------------------


class Pipeline:
    """The image service: registry, storage, input intake, limits and the call path."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry | Callable[[], Registry],
        *,
        store: OutputStore,
        intake: InputIntake,
        fetcher: SafeFetcher,
        limits: LimiterPool,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.settings = settings
        # A registry, or how to build one on first use (plugins, catalogues and provider
        # settings are not needed to answer initialize and tools/list).
        self._registry: Registry | None = None if callable(registry) else registry
        self._make_registry: Callable[[], Registry] | None = registry if callable(registry) else None
        self._registry_lock = threading.Lock()  # the warm-up thread and a first call may race
        self._thumbnails: Thumbnails | None = None
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
    def registry(self) -> Registry:
        """The model registry, built on first use (see :meth:`warm_up`)."""
        if self._registry is None:
            with self._registry_lock:
                if self._registry is None:
                    assert self._make_registry is not None
                    self._registry = self._make_registry()
        return self._registry

    @property
    def thumbnails(self) -> Thumbnails:
        """Kept renditions of saved images (history and job listings), made on first use."""
        if self._thumbnails is None:
            self._thumbnails = Thumbnails(self.settings.resolved_data_dir / "thumbnails")
        return self._thumbnails

    @property
    def registry_built(self) -> bool:
        return self._registry is not None

    def warm_up(self) -> None:
        """Build what the first call needs, ahead of it (blocking; run it in a thread).

        The registry (plugins, catalogues, provider settings), then each usable
        provider's :meth:`~atelier_core.plugin.provider.Provider.warm_up` (its vendor SDK's
        import), then the image library. Failures are the first call's to report.
        """
        registry = self.registry
        for provider in registry.providers.values():
            if all(provider.unavailable_reason(spec) is not None for spec in provider.catalog()):
                continue  # nothing of it can be called: its SDK can wait
            try:
                provider.warm_up()
            except Exception as exc:  # a broken SDK surfaces on the call, with context
                log.debug("provider warm-up failed", provider=provider.name, error=type(exc).__name__)
        from atelier_core.media import images

        images.warm_up()

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
    ) -> Pipeline:
        """Build the service from settings (default: environment + config file)."""
        settings = settings or Settings()

        def registry() -> Registry:
            built = build_registry(settings, plugins=plugins, entry_points=entry_points)
            for provider in built.providers.values():
                for value in dict(provider.settings).values():
                    if hasattr(value, "get_secret_value"):
                        add_secret(value)  # masked wherever errors and log lines go
                add_url_credentials(dict(provider.settings))  # e.g. a base_url with user:password@
            return built

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
        if self._registry is not None:
            await self._registry.aclose()

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
        progress = Monotonic(progress) if progress is not None else None
        prepared = await prepare(self, call, operation, require_available=not dry_run)
        if filename is not None:
            check_filename(self, prepared, filename, overwrite)
        await report(progress, 0.05, f"validated for {prepared.entry.canonical_id}")
        if dry_run:
            return dry_run_outcome(self, prepared)
        prepared.confirm = confirm
        prepared.on_saved = saved  # told each file's path as soon as it is published
        hold = await self.admit(prepared)
        try:
            try:
                outcome = await perform(self, 
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
        return resolve(self, model)

    async def prepare(self, call: ImageCall, operation: Operation, *, require_available: bool = True) -> Prepared:
        """Resolve, read inputs, validate and quote. Spends nothing, sends nothing."""
        return await prepare(self, call, operation, require_available=require_available)

    def check_filename(self, prepared: Prepared, filename: str, overwrite: bool) -> None:
        """Refuse a bad or taken output name before anything is spent."""
        check_filename(self, prepared, filename, overwrite)

    def quote(self, entry: ModelEntry, request: ImageRequest) -> CostInfo:
        """Price estimate before the call, from the provider's price table."""
        return quote(self, entry, request)

    def dry_run_outcome(self, prepared: Prepared) -> CallOutcome:
        """What a dry run returns: the quote and the parameters, no images, no spend."""
        return dry_run_outcome(self, prepared)

    async def perform(self, prepared: Prepared, *, filename: str | None = None, overwrite: bool = False,
                      progress: Progress | None = None, partial: PartialSink | None = None) -> CallOutcome:
        """Call the provider (limits, retries, fan-out), verify and save every image."""
        return await perform(self, prepared, filename=filename, overwrite=overwrite, progress=progress,
                             partial=partial)

    def describe_models(self, provider: str | None = None, capability: str | None = None) -> dict[str, Any]:
        """Data for ``list_available_models``: every model, compactly, plus diagnostics."""
        return describe_models(self, provider, capability)


def _run_id() -> str:
    """Identifies this server run in the ledger (for the per-run spend limit)."""
    import os
    import secrets

    return f"{os.getpid()}-{secrets.token_hex(6)}"
