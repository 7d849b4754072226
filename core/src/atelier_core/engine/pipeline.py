"""The pipeline: one call from an :class:`ImageCall` to saved, verified, accounted files.

:class:`Pipeline` is the service every front end (MCP server, CLI, jobs, sessions) uses.
Build it with :meth:`Pipeline.build`; there is no module-level instance.

A call runs in typed stages, each in its own module, in one direction:

    plan (plan.py) → admit (here) → send (send.py) → receive (receive.py)
         → store (save.py) → account (account.py)

:meth:`Pipeline.plan` makes a :class:`~atelier_core.engine.plan.Plan` (every refusal
happens there, before any money is spent); :meth:`Pipeline.run` takes it through the
rest; :meth:`Pipeline.execute` does both.

Routing rule: ``edit`` with no prompt on a model that supports ``variation`` becomes a
variation (the input image re-imagined without instructions).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from atelier_core.engine.account import Charge, account, charge_of, say_billed
from atelier_core.engine.cost import Ledger, SpendGuard
from atelier_core.engine.describe import describe_models
from atelier_core.engine.fallback import plan_with_fallback, run_with_fallback
from atelier_core.engine.library import ImageLibrary
from atelier_core.engine.outcome import CallOutcome, CostInfo, ImageRecord, PreviewCache
from atelier_core.engine.plan import CallPlan, OutputRequest, Plan, dry_run_outcome, make_plan, quote, resolve
from atelier_core.engine.progress import (
    SAVING_FRACTION,
    SENT_FRACTION,
    Confirm,
    Monotonic,
    PartialSink,
    Progress,
    report,
)
from atelier_core.engine.receive import Received, most_meaningful, receive
from atelier_core.engine.registry import ModelEntry, Registry, build_registry
from atelier_core.engine.save import OnSaved, Stored, store
from atelier_core.engine.send import Sent, batches_for, send
from atelier_core.engine.throttle import LimiterPool, Sleep
from atelier_core.logging import add_secret, add_url_credentials, secrets_of
from atelier_core.media.fetch import SafeFetcher
from atelier_core.media.inputs import InputIntake
from atelier_core.media.storage import OutputStore
from atelier_core.media.thumbnails import Thumbnails
from atelier_core.plugin.spec import Operation
from atelier_core.plugin.types import ImageCall, ImageRequest
from atelier_core.settings import Settings
from atelier_core.state.store import StateStore

if TYPE_CHECKING:
    from atelier_core.media.objects import BucketStore

__all__ = [
    "SAVING_FRACTION",
    "SENT_FRACTION",
    "CallOutcome",
    "CallPlan",
    "CostInfo",
    "ImageRecord",
    "OutputRequest",
    "PartialSink",
    "Pipeline",
    "Plan",
    "PreviewCache",
    "Progress",
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
        sleep: Sleep = anyio.sleep,
    ) -> None:
        self.settings = settings
        # A registry, or how to build one on first use (plugins, catalogues and provider
        # settings are not needed to answer initialize and tools/list).
        self._registry: Registry | None = None if callable(registry) else registry
        self._make_registry: Callable[[], Registry] | None = registry if callable(registry) else None
        self._registry_lock = threading.Lock()  # the warm-up thread and a first call may race
        self._thumbnails: Thumbnails | None = None
        self._decode_limiter: tuple[object, anyio.CapacityLimiter] | None = None
        self.store = store
        self._bucket: BucketStore | None = None
        intake.bucket = lambda: self.bucket  # inputs made by another replica
        self.intake = intake
        self.fetcher = fetcher
        self.limits = limits
        self._sleep = sleep
        self._state: StateStore | None = None
        self._library: ImageLibrary | None = None
        self.spend = SpendGuard(settings.cost, lambda: self.state, run_id=_run_id())
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
    def bucket(self) -> BucketStore | None:
        """The S3-compatible bucket every image is also kept in (``storage.url``), or None."""
        storage = self.settings.storage
        if self._bucket is None and storage.url:
            from atelier_core.media.objects import BucketStore

            self._bucket = BucketStore(
                storage.url, endpoint_url=storage.endpoint_url, presign_ttl_s=storage.presign_ttl_s
            )
        return self._bucket

    def decode_limiter(self) -> anyio.CapacityLimiter:
        """How many returned images are decoded at once, over every call of this process.

        One per CPU core (at least two): more threads only take turns on the cores, while
        each decode in progress holds a full decoded frame (4 MB for 1024², 33 MB for
        4K) — a burst of 100 answers must not hold 40 of them at once (anyio's default).
        The answers waiting for a turn hold only their encoded bytes.
        """
        import asyncio  # the limiter belongs to the running event loop: one per loop

        loop = asyncio.get_running_loop()
        if self._decode_limiter is None or self._decode_limiter[0] is not loop:
            self._decode_limiter = (loop, anyio.CapacityLimiter(max(2, os.cpu_count() or 2)))
        return self._decode_limiter[1]

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
        """The state database (jobs, sessions, ledger, spend reservations, idempotency keys),
        connected and migrated on first use."""
        if self._state is None:
            self._state = StateStore.from_settings(self.settings)
        return self._state

    @property
    def library(self) -> ImageLibrary:
        """Every saved image: the index in the state database and the files."""
        if self._library is None:
            self._library = ImageLibrary(self.store, self.state.images)
        return self._library

    @property
    def ledger(self) -> Ledger:
        return self.state.ledger

    @classmethod
    def build(
        cls,
        settings: Settings | None = None,
        *,
        plugins: Sequence[tuple[str, object]] | None = None,
        entry_points: bool = True,
        sleep: Sleep = anyio.sleep,
    ) -> Pipeline:
        """Build the service from settings (default: environment + config file)."""
        settings = settings or Settings()

        def registry() -> Registry:
            built = build_registry(settings, plugins=plugins, entry_points=entry_points)
            for secret in secrets_of(settings, [p.settings for p in built.providers.values()]):
                add_secret(secret)  # masked wherever errors and log lines go
            for provider in built.providers.values():
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
        pipeline = cls(
            settings,
            registry,
            store=store,
            intake=intake,
            fetcher=fetcher,
            limits=LimiterPool(sleep=sleep),
            sleep=sleep,
        )
        if settings.plugins.strict:
            pipeline.registry  # noqa: B018 - strict plugins: a broken one stops the start, not a call
        return pipeline

    async def aclose(self) -> None:
        """Close provider clients opened lazily, and the state database."""
        if self._registry is not None:
            await self._registry.aclose()
        if self._state is not None:
            await self._state.aclose()

    # -- the call path ---------------------------------------------------------------

    async def plan(
        self,
        call: ImageCall,
        operation: Operation,
        *,
        output: OutputRequest | None = None,
        confirmed: bool = False,
        require_available: bool = True,
        check_outputs: bool = True,
    ) -> Plan:
        """The plan stage: every check that can refuse the call. Sends nothing, spends nothing.
        A model that is unavailable here moves to its configured fallbacks (engine/fallback.py)."""
        return await plan_with_fallback(
            self,
            make_plan,
            call,
            operation,
            output=output,
            confirmed=confirmed,
            require_available=require_available,
            check_outputs=check_outputs,
        )

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
        saved: OnSaved | None = None,
    ) -> CallOutcome:
        """Plan and run one generate/edit/variation call (see :meth:`run`)."""
        plan = await self.plan(
            call, operation, output=OutputRequest(filename=filename, overwrite=overwrite), require_available=not dry_run
        )
        if dry_run:
            return await dry_run_outcome(self, plan)
        return await self.run(plan, progress=progress, partial=partial, confirm=confirm, saved=saved)

    async def run(
        self,
        plan: Plan,
        *,
        progress: Progress | None = None,
        partial: PartialSink | None = None,
        confirm: Confirm | None = None,
        saved: OnSaved | None = None,
    ) -> CallOutcome:
        """:meth:`run_once`, and on a rate limit or an unavailable provider with nothing
        billed, the model's configured fallbacks (see :mod:`atelier_core.engine.fallback`)."""
        return await run_with_fallback(
            self, plan, self.run_once, progress=progress, partial=partial, confirm=confirm, saved=saved
        )

    async def run_once(
        self,
        plan: Plan,
        *,
        progress: Progress | None = None,
        partial: PartialSink | None = None,
        confirm: Confirm | None = None,
        saved: OnSaved | None = None,
    ) -> CallOutcome:
        """admit → send → receive → store → account, for a plan made by :meth:`plan`.

        Raises an :class:`AtelierError` when nothing could be produced (saying so when the
        call may have been billed); returns an outcome with ``failures`` when only some
        images came back. ``saved`` is told each file's path as soon as it is published.
        """
        progress = Monotonic(progress) if progress is not None else None
        await report(progress, 0.05, f"validated for {plan.entry.canonical_id}")
        hold = await self.admit(plan, None if plan.spec.confirmed else confirm)
        sent = batches_for(plan)
        charge: Charge | None = None
        try:
            try:
                await send(self, plan, sent, progress=progress, partial=partial)
            except BaseException:
                # Abandoned while requests were out (the client gave up, the job was
                # cancelled): the provider may still bill them.
                if sent.in_flight:
                    charge = charge_of(plan, None, images=sent.in_flight)
                raise
            received = await receive(self, plan, sent)
            charge = charge_of(plan, received)
            stored = await store(self, plan, received, on_saved=saved)
            charge = charge_of(plan, received, stored=len(stored.records))
            await report(progress, 1.0, f"saved {len(stored.records)} image(s)")
            if not stored.records:
                raise say_billed(
                    most_meaningful(
                        [*received.errors, *stored.errors], plan.entry, [*received.failures, *stored.failures]
                    ),
                    charge,
                )
            return self._outcome(plan, sent, received, stored)
        finally:
            if charge is not None:
                # Shielded: a cancelled call still records what it may have cost.
                with anyio.CancelScope(shield=True):
                    await account(self, plan, charge, hold=hold)
            with anyio.CancelScope(shield=True):
                await self.spend.release(hold)

    def _outcome(self, plan: Plan, sent: Sent, received: Received, stored: Stored) -> CallOutcome:
        failures = sorted([*received.failures, *stored.failures], key=lambda f: f.index)
        notes = [*plan.notes, *sent.notes, *received.notes, *stored.notes]
        if failures:
            notes.append(
                f"{len(stored.records)} of {plan.request.n} image(s) produced; {len(failures)} failed "
                "(see failures); the saved ones are kept — do not pay for them again"
            )
        if received.maybe_billed:
            notes.append(
                f"{received.maybe_billed} image(s) came back unusable or not at all and may have "
                "been billed; recorded in get_usage"
            )
        return CallOutcome(
            model=plan.entry.canonical_id,
            provider=plan.entry.provider_name,
            operation=plan.operation,
            images=stored.records,
            failures=failures,
            requested=plan.validated.requested,
            applied=received.applied,
            notes=notes,
            usage=received.usage,
            cost=received.cost,
            texts=received.texts,
            request_id=received.request_id,
            elapsed_s=round(time.perf_counter() - plan.started, 4),
            continuation=received.continuation,
        )

    async def admit(self, plan: Plan, confirm: Confirm | None = None) -> str | None:
        """The admit stage: spend limits, and ask the user first above the threshold.
        Holds the quote until the caller releases it (``spend.release``)."""
        quote = plan.quote
        verdict, hold = await self.spend.admit(quote, plan.entry.canonical_id)
        if verdict == "ask" and not plan.spec.confirmed:
            confirmed = False
            if confirm is not None:
                try:
                    confirmed = await confirm(self.ask_message(plan))
                except Exception as exc:  # a client that fails to answer has not confirmed
                    log.warning("confirmation failed", error=type(exc).__name__)
            if not confirmed:
                await self.spend.release(hold)
                raise self.spend.ask_refusal(quote, asked=confirm is not None)
        return hold

    @staticmethod
    def ask_message(plan: Plan) -> str:
        """The question asked before a call above ``cost.ask_above_usd``."""
        return (
            f"Generate {plan.request.n} image(s) with {plan.entry.canonical_id} "
            f"for an estimated ${plan.quote.estimate_usd or 0:.4f}?"
        )

    def resolve(self, model: str | None) -> ModelEntry:
        """The model entry for ``model`` or the configured default model."""
        return resolve(self, model)

    def quote(self, entry: ModelEntry, request: ImageRequest) -> CostInfo:
        """Price estimate before the call, from the provider's price table."""
        return quote(self, entry, request)

    async def dry_run_outcome(self, plan: Plan) -> CallOutcome:
        """What a dry run returns: the quote and the parameters, no images, no spend."""
        return await dry_run_outcome(self, plan)

    def describe_models(self, provider: str | None = None, capability: str | None = None) -> dict[str, Any]:
        """Data for ``list_available_models``: every model, compactly, plus diagnostics."""
        return describe_models(self, provider, capability)


def _run_id() -> str:
    """Identifies this server run in the ledger (for the per-run spend limit)."""
    import os
    import secrets

    return f"{os.getpid()}-{secrets.token_hex(6)}"
