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

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    only from the hosts given, with the core's size and time caps.
    """

    def __init__(
        self,
        *,
        timeout_s: float,
        progress: Callable[[float, str], Awaitable[None]] | None = None,
        partial_image: Callable[[bytes, int], Awaitable[None]] | None = None,
        download: Callable[[str, Sequence[str]], Awaitable[bytes]] | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self._progress = progress
        self._partial = partial_image
        self._download = download

    async def progress(self, fraction: float, message: str) -> None:
        if self._progress is not None:
            await self._progress(max(0.0, min(1.0, fraction)), message)

    async def partial_image(self, data: bytes, index: int = 0) -> None:
        if self._partial is not None:
            await self._partial(data, index)

    async def download(self, url: str, allowed_hosts: Sequence[str]) -> bytes:
        if self._download is None:
            raise RuntimeError("this context cannot download")
        return await self._download(url, allowed_hosts)


class Provider:
    """Base class for providers. Override the class attributes and the async methods.

    ``name`` is the slug: the entry-point name, the prefix of canonical model ids
    (``<name>/<model>``) and the key of the provider's settings table.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    settings_class: ClassVar[type[ProviderSettings]] = ProviderSettings
    models: ClassVar[tuple[ModelSpec, ...]] = ()
    retired: ClassVar[tuple[RetiredModel, ...]] = ()
    key_env_vars: ClassVar[tuple[str, ...]] = ()
    needs_key: ClassVar[bool] = True

    def __init__(self) -> None:
        self.settings: ProviderSettings = self.settings_class.model_construct()

    # -- declaration ---------------------------------------------------------------

    def configure(self, settings: ProviderSettings) -> None:
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

    def cost_from_usage(
        self, usage: Usage, request: ImageRequest, spec: ModelSpec, images: int
    ) -> float | None:
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
        """Dispatch by operation (the core calls this)."""
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

    async def aclose(self) -> None:
        """Release clients opened lazily. Called at shutdown."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title or self.name}
