"""A scriptable fake provider: real images, scripted failures, a record of every call.

:class:`FakeProvider` is a complete provider (it passes the provider contract) whose
answers a test scripts in advance, and it is its own plugin::

    fake = FakeProvider()
    fake.script(Outcome(error=RateLimitedError("slow down", retry_after_s=0.01)), Outcome())
    registry = build_registry(settings, plugins=[("fake", fake)], entry_points=False)
    ... call through the core ...
    assert [c.operation for c in fake.calls] == ["generate", "generate"]
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from atelier_core.plugin.hookspecs import hookimpl
from atelier_core.plugin.provider import CallContext, Provider, ProviderSettings
from atelier_core.plugin.spec import (
    CustomSizeRule,
    InputImageRules,
    MaskRules,
    ModelSpec,
    Operation,
    Pricing,
    SizeRules,
)
from atelier_core.plugin.types import ImageRequest, ItemFailure, ProviderImage, ProviderResult, Usage
from atelier_core.testing.samples import make_image

__all__ = ["FakeCall", "FakeProvider", "Outcome", "fake_spec"]

_DEFAULTS: dict[str, Any] = {
    "title": "Fake image model",
    "description": "Scripted test model: returns solid pictures of the requested size.",
    "operations": frozenset({Operation.GENERATE, Operation.EDIT, Operation.VARIATION}),
    "sizes": SizeRules(
        presets=("256x256", "512x512", "1024x1024", "1536x1024", "1024x1536"),
        allow_auto=True,
        default="1024x1024",
        custom=CustomSizeRule(step=16, min_edge=64, max_edge=2048, max_aspect=3.0),
    ),
    "qualities": ("low", "medium", "high"),
    "output_formats": ("png", "jpeg", "webp"),
    "default_output_format": "png",
    "compression_formats": ("jpeg", "webp"),
    "backgrounds": ("auto", "opaque", "transparent"),
    "n_max": 4,
    "input_images": InputImageRules(max_count=4, mask=MaskRules()),
    "seed": True,
    "pricing": Pricing(
        per_image=0.01,
        per_image_by_quality={"low": 0.005, "medium": 0.01, "high": 0.04},
        as_of="2026-01-01",
        source="test fixture",
    ),
}


def fake_spec(id: str = "fake-image", **overrides: Any) -> ModelSpec:
    """A fully featured model spec for tests; any field can be overridden."""
    return ModelSpec(**{**_DEFAULTS, "id": id, **overrides})


@dataclass
class Outcome:
    """What the fake does for one call.

    By default it returns ``request.n`` images of the requested size and format.
    ``error`` raises instead (an Atelier error, or any exception to play a buggy provider) (after ``delay_s``); ``fail`` lists indices that come back as
    :class:`~atelier_core.ItemFailure` (a partial failure); ``images`` overrides the
    count; ``data`` returns these exact bytes for every image (e.g. corrupt bytes);
    ``size``/``format`` force what is drawn; ``partials`` streams that many partial
    previews first; ``hang`` waits until cancelled.
    """

    error: Exception | None = None
    delay_s: float | None = None
    hang: bool = False
    fail: Sequence[int] = ()
    images: int | None = None
    data: bytes | None = None
    size: tuple[int, int] | None = None
    format: str | None = None
    partials: int = 0
    revised_prompt: str | None = None
    texts: Sequence[str] = ()
    usage: Usage | None = None
    request_id: str | None = None
    cost_usd: float | None = None


@dataclass(frozen=True)
class FakeCall:
    """One call the fake received."""

    operation: str
    request: ImageRequest
    started: float
    finished: float | None = field(default=None, compare=False)


class FakeProvider(Provider):
    """A provider whose answers are scripted. Also a plugin: it registers itself.

    ``name`` is the provider slug (so several fakes can be loaded side by side);
    ``models`` defaults to one :func:`fake_spec`; ``unpriced`` defaults to every model
    without pricing; ``latency_s`` is the default delay of
    each call; ``needs_key`` makes it unavailable until ``api_key`` is configured
    (``key_env_vars`` then names ``FAKE_API_KEY``-style variables in the reason).
    """

    def __init__(
        self,
        name: str = "fake",
        *,
        models: Iterable[ModelSpec] | None = None,
        script: Iterable[Outcome] = (),
        latency_s: float = 0.0,
        needs_key: bool = False,
        key_env_vars: Sequence[str] = (),
        settings_class: type[ProviderSettings] = ProviderSettings,
        unpriced: Iterable[str] | None = None,
    ) -> None:
        # Per-instance declarations (class variables on real providers): several
        # differently named fakes can coexist.
        self.name = name  # type: ignore[misc]
        self.title = f"Fake provider {name}"  # type: ignore[misc]
        self.models = tuple(models) if models is not None else (fake_spec(),)  # type: ignore[misc]
        self.needs_key = needs_key  # type: ignore[misc]
        self.key_env_vars = tuple(key_env_vars)  # type: ignore[misc]
        self.settings_class = settings_class  # type: ignore[misc]
        # A fake's prices are the test's business: by default its unpriced models are
        # declared so (pass unpriced=() to have the registry hold them to a price).
        if unpriced is None:
            unpriced = (s.id for s in self.models if s.pricing is None)
        self.unpriced = frozenset(unpriced)  # type: ignore[misc]
        super().__init__()
        self.latency_s = latency_s
        self.calls: list[FakeCall] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.closed = 0
        self._script: deque[Outcome] = deque(script)
        self._rules: list[tuple[Callable[[ImageRequest], bool], Outcome]] = []

    # -- scripting -----------------------------------------------------------------

    def script(self, *outcomes: Outcome) -> FakeProvider:
        """Queue outcomes for the next calls, in order (then back to the default)."""
        self._script.extend(outcomes)
        return self

    def when(self, predicate: Callable[[ImageRequest], bool], outcome: Outcome) -> FakeProvider:
        """Answer every call whose request matches ``predicate`` with ``outcome``."""
        self._rules.append((predicate, outcome))
        return self

    @property
    def pending(self) -> int:
        """Scripted outcomes not used yet."""
        return len(self._script)

    # -- the plugin ----------------------------------------------------------------

    @hookimpl
    def register_providers(self, register: Callable[[Provider[Any]], None]) -> None:
        register(self)

    # -- the work ------------------------------------------------------------------

    async def generate(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
        return await self._answer(request, ctx)

    async def edit(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
        return await self._answer(request, ctx)

    async def variation(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
        return await self._answer(request, ctx)

    async def aclose(self) -> None:
        self.closed += 1

    def _next(self, request: ImageRequest) -> Outcome:
        if self._script:
            return self._script.popleft()
        for predicate, outcome in self._rules:
            if predicate(request):
                return outcome
        return Outcome()

    async def _answer(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
        outcome = self._next(request)
        call = FakeCall(request.operation.value, request, time.monotonic())
        index = len(self.calls)
        self.calls.append(call)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._perform(request, ctx, outcome)
        finally:
            self.in_flight -= 1
            self.calls[index] = FakeCall(call.operation, request, call.started, time.monotonic())

    async def _perform(self, request: ImageRequest, ctx: CallContext, outcome: Outcome) -> ProviderResult:
        import anyio  # here, not at module level: importing a plugin module stays light

        delay = self.latency_s if outcome.delay_s is None else outcome.delay_s
        if outcome.hang:
            await anyio.sleep_forever()  # until cancelled
        if delay:
            await anyio.sleep(delay)
        if outcome.error is not None:
            raise outcome.error
        width, height = outcome.size or self._size(request)
        fmt = outcome.format or request.output_format or "png"
        alpha = request.background == "transparent"
        for step in range(outcome.partials):
            await ctx.partial_image(make_image(max(16, width // 8), max(16, height // 8), "png"), 0)
            await ctx.progress((step + 1) / (outcome.partials + 1), f"partial {step + 1}")
        count = request.n if outcome.images is None else outcome.images
        failed = set(outcome.fail)
        images: list[ProviderImage] = []
        failures: list[ItemFailure] = []
        for i in range(count):
            if i in failed:
                failures.append(ItemFailure(index=i, code="not_generated", message=f"image {i} failed (scripted)"))
                continue
            data = (
                outcome.data
                if outcome.data is not None
                else make_image(width, height, fmt, color=(30 + 40 * i % 200, 90, 160), alpha=alpha)
            )
            images.append(
                ProviderImage(
                    data=data,
                    mime_type=f"image/{fmt}",
                    revised_prompt=outcome.revised_prompt,
                    seed=None if request.seed is None else request.seed + i,
                )
            )
        await ctx.progress(1.0, "done")
        return ProviderResult(
            images=images,
            failures=failures,
            usage=outcome.usage,
            request_id=outcome.request_id or f"fake-{len(self.calls)}",
            texts=list(outcome.texts),
            applied={"size": f"{width}x{height}"},
            cost_usd=outcome.cost_usd,
        )

    @staticmethod
    def _size(request: ImageRequest) -> tuple[int, int]:
        if request.width and request.height:
            return request.width, request.height
        if request.images:
            return request.images[0].width, request.images[0].height
        if request.aspect_ratio:
            a, b = (int(v) for v in request.aspect_ratio.split(":"))
            return (512, round(512 * b / a)) if a >= b else (round(512 * a / b), 512)
        return 256, 256
