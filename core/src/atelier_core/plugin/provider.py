"""The provider protocol: what a plugin implements.

A provider is a small object that *declares* (its name, settings class, model specs)
and *translates* (async ``generate`` / ``edit`` / ``variation`` that turn an
:class:`~atelier_core.plugin.types.ImageRequest` into a vendor call and the vendor's answer
into a :class:`~atelier_core.plugin.types.ProviderResult`).

Rules a provider follows:

- Construction does no I/O and imports no vendor SDK; import it inside the methods.
- Raise only :mod:`atelier_core.plugin.errors` types. Map vendor errors to them: the core's
  single retry layer retries ``retryable`` errors (honouring ``retry_after_s``), so the
  vendor SDK's own retries must be off (``max_retries=0`` or equivalent).
- Return raw encoded image bytes. The core verifies, stores, previews and reports them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, Generic, cast, get_args, get_origin

import anyio
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from typing_extensions import TypeVar

from atelier_core.plugin.errors import UnsupportedCapabilityError
from atelier_core.plugin.spec import ModelSpec, Operation, RetiredModel
from atelier_core.plugin.types import ImageRequest, ProviderResult, Usage

__all__ = ["CallContext", "Provider", "ProviderSettings"]


class ProviderSettings(BaseSettings):
    """Settings every provider has. Subclass it to add your own.

    Values come from ``ATELIER_PROVIDERS__<NAME>__<FIELD>`` variables and the
    ``[providers.<name>]`` table of the config file (the core passes both in by field
    name, and they win), and from the vendor's usual variables where a field declares
    them as aliases, e.g. ``api_key: SecretStr | None = Field(None,
    validation_alias=AliasChoices("OPENAI_API_KEY"))``. Do not list the bare field name
    (``"api_key"``) as an alias: pydantic-settings would then also read a generic
    ``API_KEY`` variable from the environment.
    """

    model_config = SettingsConfigDict(
        extra="ignore", populate_by_name=True, case_sensitive=False, env_nested_delimiter="__"
    )

    enabled: bool = True
    api_key: SecretStr | None = None
    base_url: str | None = None
    timeout_s: float = 120.0
    max_retries: int = 2
    retry_after_cap_s: float = 60.0
    backoff_base_s: float = 0.5
    max_concurrency: int | None = None  # a hard cap; unset = adaptive, no cap (engine.throttle)
    requests_per_minute: float | None = None


class CallContext:
    """What the core lends a provider for one call.

    ``progress`` reports a fraction (0–1) with a message; ``partial_image`` forwards a
    streamed partial preview; ``download`` fetches an image URL the provider returned,
    only from the hosts given, with the core's size and time caps; ``task_started``
    records a queue-based vendor's task id with the job.
    """

    def __init__(
        self,
        *,
        timeout_s: float,
        progress: Callable[[float, str], Awaitable[None]] | None = None,
        partial_image: Callable[[bytes, int], Awaitable[None]] | None = None,
        download: Callable[[str, Sequence[str]], Awaitable[bytes]] | None = None,
        task_started: Callable[[str], Awaitable[None]] | None = None,
        keep_vendor_task: Callable[[], bool] | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self._progress = progress
        self._partial = partial_image
        self._download = download
        self._task_started = task_started
        self._keep_vendor_task = keep_vendor_task

    @property
    def cancel_vendor_task_on_cancel(self) -> bool:
        """False while the server stops with the job kept to resume polling after a restart."""
        return not (self._keep_vendor_task is not None and self._keep_vendor_task())

    async def progress(self, fraction: float, message: str) -> None:
        if self._progress is not None:
            await self._progress(max(0.0, min(1.0, fraction)), message)

    async def partial_image(self, data: bytes, index: int = 0) -> None:
        if self._partial is not None:
            await self._partial(data, index)

    async def task_started(self, task_id: str) -> None:
        """Record a queue-based vendor's task id with the job (so a restart resumes it)."""
        if self._task_started is not None:
            await self._task_started(task_id)

    async def download(self, url: str, allowed_hosts: Sequence[str]) -> bytes:
        if self._download is None:
            raise RuntimeError("this context cannot download")
        return await self._download(url, allowed_hosts)


S = TypeVar("S", bound=ProviderSettings, default=ProviderSettings)


class Provider(Generic[S]):
    """Base class for providers. Override the class attributes and the async methods.

    ``name`` is the slug: the entry-point name, the prefix of canonical model ids
    (``<name>/<model>``) and the key of the provider's settings table.

    A provider is generic over its settings: ``class MyProvider(Provider[MySettings])``
    makes ``self.settings`` a ``MySettings`` (typed, no downcast) and sets
    ``settings_class`` for you.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    settings_class: ClassVar[type[ProviderSettings]] = ProviderSettings
    models: ClassVar[tuple[ModelSpec, ...]] = ()
    retired: ClassVar[tuple[RetiredModel, ...]] = ()
    #: model ids that deliberately declare no price (every other model must)
    unpriced: ClassVar[frozenset[str]] = frozenset()
    key_env_vars: ClassVar[tuple[str, ...]] = ()
    needs_key: ClassVar[bool] = True
    #: seconds between two poll() calls of a queue-based vendor
    poll_interval_s: ClassVar[float] = 2.0

    settings: S

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "settings_class" in cls.__dict__:
            return
        for base in cls.__dict__.get("__orig_bases__", ()):
            origin = get_origin(base)
            if isinstance(origin, type) and issubclass(origin, Provider):
                args = get_args(base)
                if args and isinstance(args[0], type) and issubclass(args[0], ProviderSettings):
                    cls.settings_class = args[0]

    def __init__(self) -> None:
        self.settings = cast(S, self.settings_class.model_construct())

    # -- declaration ---------------------------------------------------------------

    def configure(self, settings: S) -> None:
        """Receive settings. Called by the core once, before any other method. No I/O."""
        self.settings = settings

    def catalog(self) -> tuple[ModelSpec, ...]:
        """The models offered. Override to add models from settings (after configure)."""
        return self.models

    def unavailable_reason(self, spec: ModelSpec) -> str | None:
        """Why ``spec`` cannot be used right now (``None`` when it can). No I/O."""
        if not self.settings.enabled:
            return f"provider {self.name} is disabled (providers.{self.name}.enabled = false)"
        if self.needs_key and self.settings.api_key is None:
            names = [*self.key_env_vars, f"ATELIER_PROVIDERS__{self.name.upper()}__API_KEY"]
            return f"no API key for {self.name}: set {' or '.join(names)}"
        return None

    def check(self, request: ImageRequest, spec: ModelSpec) -> None:
        """Model-specific validation beyond the spec. Raise InvalidParameterError. No I/O."""

    # -- cost ----------------------------------------------------------------------

    def estimate_cost(self, request: ImageRequest, spec: ModelSpec) -> float | None:
        """USD estimate before the call, from the spec's price table."""
        pricing = spec.pricing
        if pricing is None:
            return None
        size_key = request.size or request.resolution
        price = pricing.image_price(request.quality, size_key)
        if price is None:
            return None
        return round(price * request.n, 6)

    def estimate_extra_cost(self, request: ImageRequest, spec: ModelSpec) -> tuple[float, str] | None:
        """A conservative USD allowance for a charge beyond the images (the later
        ``ProviderResult.extra_cost_usd``) and a note saying what it is; ``None`` when there
        is none. The core adds it to the quote the spend limits check."""
        return None

    def cost_from_usage(self, usage: Usage, request: ImageRequest, spec: ModelSpec, images: int) -> float | None:
        """USD cost after the call from reported token usage (``None`` to use the estimate)."""
        pricing = spec.pricing
        if pricing is None or pricing.output_image_per_mtok is None or usage.output_tokens is None:
            return None
        cost = usage.output_tokens * pricing.output_image_per_mtok
        text_in = usage.input_text_tokens
        image_in = usage.input_image_tokens
        if text_in is None and image_in is None and usage.input_tokens is not None:
            text_in = usage.input_tokens
        if text_in and pricing.input_text_per_mtok is not None:
            cost += text_in * pricing.input_text_per_mtok
        if image_in and pricing.input_image_per_mtok is not None:
            cost += image_in * pricing.input_image_per_mtok
        return round(cost / 1_000_000, 6)

    # -- the work ------------------------------------------------------------------

    async def generate(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
        raise UnsupportedCapabilityError(f"{self.name} cannot generate")

    async def edit(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
        raise UnsupportedCapabilityError(f"{self.name} cannot edit")

    async def variation(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
        raise UnsupportedCapabilityError(f"{self.name} cannot make variations")

    async def run(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
        """Dispatch by operation (the core calls this).

        A queue-based provider (one that overrides :meth:`submit`) is run as submit, then
        :meth:`poll` every ``poll_interval_s`` until it answers; the vendor's task id is
        handed to the core first (``ctx.task_started``), so a restarted server resumes
        polling, and a cancelled call cancels the vendor's task.
        """
        if self.queued:
            task_id = await self.submit(request, ctx)
            await ctx.task_started(task_id)
            return await self.wait(task_id, request, ctx)
        if request.operation is Operation.GENERATE:
            return await self.generate(request, ctx)
        if request.operation is Operation.EDIT:
            return await self.edit(request, ctx)
        return await self.variation(request, ctx)

    def warm_up(self) -> None:
        """Import what the first call needs (the vendor SDK), ahead of it.

        Called once in a worker thread soon after a client connected, so the first call
        does not wait for the import. Blocking is fine here; open no connections.
        """

    # -- queue-based vendors (submit → poll → fetch) ---------------------------------

    @property
    def queued(self) -> bool:
        """True when the provider talks to a queue-based vendor (overrides submit)."""
        return type(self).submit is not Provider.submit

    async def submit(self, request: ImageRequest, ctx: CallContext) -> str:
        """Start the work at a queue-based vendor; return the vendor's task id."""
        raise UnsupportedCapabilityError(f"{self.name} is not a queue-based provider")

    async def poll(self, task_id: str, request: ImageRequest, ctx: CallContext) -> ProviderResult | None:
        """The result of the vendor task (fetch the images), or ``None`` while it runs."""
        raise UnsupportedCapabilityError(f"{self.name} is not a queue-based provider")

    async def cancel(self, task_id: str) -> None:
        """Cancel the vendor task, where the vendor can (the default does nothing)."""

    async def wait(self, task_id: str, request: ImageRequest, ctx: CallContext) -> ProviderResult:
        """Poll ``task_id`` until it has a result (the core also calls this to resume).

        Cancelled (by the caller, a timeout or shutdown of a job that is not kept),
        it asks the vendor to cancel the task too.
        """
        try:
            while True:
                result = await self.poll(task_id, request, ctx)
                if result is not None:
                    return result
                await anyio.sleep(self.poll_interval_s)
        except anyio.get_cancelled_exc_class():
            if ctx.cancel_vendor_task_on_cancel:
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await self.cancel(task_id)
            raise

    async def aclose(self) -> None:
        """Release clients opened lazily. Called at shutdown."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title or self.name}
