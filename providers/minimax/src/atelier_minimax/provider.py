"""The MiniMax provider: declares the models, checks cross-field rules, makes the call."""

from __future__ import annotations

import time
from typing import ClassVar

import structlog

from atelier_core import (
    AtelierError,
    CallContext,
    ImageRequest,
    InvalidParameterError,
    MissingCredentialsError,
    ModelSpec,
    Provider,
    ProviderResult,
    ProviderSettings,
)

from .client import MiniMaxClient
from .models import MODELS
from .settings import MiniMaxSettings, resolve_base_url
from .translate import PROVIDER, applied_for, build_body, parse_answer

__all__ = ["MiniMaxProvider"]

log = structlog.get_logger("atelier.minimax")


class MiniMaxProvider(Provider[MiniMaxSettings]):
    """MiniMax ``image-01`` and ``image-01-live`` over ``POST /v1/image_generation``."""

    name: ClassVar[str] = PROVIDER
    title: ClassVar[str] = "MiniMax"
    models: ClassVar[tuple[ModelSpec, ...]] = MODELS
    key_env_vars: ClassVar[tuple[str, ...]] = ("MINIMAX_API_KEY",)

    def __init__(self) -> None:
        super().__init__()
        self._client: MiniMaxClient | None = None

    def configure(self, settings: ProviderSettings) -> None:
        if not isinstance(settings, MiniMaxSettings):  # e.g. a plain ProviderSettings in tests
            settings = MiniMaxSettings.model_validate(settings.model_dump())
        super().configure(settings)
        self._client = None  # built again, lazily, from the new settings

    @property
    def base_url(self) -> str:
        """Where requests go (raises ConfigurationError for a malformed host setting)."""
        return resolve_base_url(self.settings)

    def unavailable_reason(self, spec: ModelSpec) -> str | None:
        reason = super().unavailable_reason(spec)
        if reason is not None:
            return reason
        try:
            _ = self.base_url  # validates the configured host
        except AtelierError as exc:
            return str(exc)
        return None

    def check(self, request: ImageRequest, spec: ModelSpec) -> None:
        weight = request.options.get("style_weight")
        if weight is not None and not request.style:
            raise InvalidParameterError(
                "options.style_weight",
                weight,
                f"needs a style to weight on minimax/{spec.id}",
                allowed=[s for s in spec.styles if s.isascii()],
                fix='add style (e.g. style="watercolor"), or remove options.style_weight',
            )

    def _http(self) -> MiniMaxClient:
        if self._client is None:
            settings = self.settings
            if settings.api_key is None:
                raise MissingCredentialsError(
                    "MiniMax has no API key",
                    fix="set MINIMAX_API_KEY or ATELIER_PROVIDERS__MINIMAX__API_KEY",
                    provider=PROVIDER,
                )
            self._client = MiniMaxClient(
                base_url=self.base_url,
                api_key=settings.api_key.get_secret_value(),
                timeout_s=settings.timeout_s,
            )
        return self._client

    async def generate(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
        client = self._http()
        body = build_body(request)
        settings = self.settings
        rpm = settings.requests_per_minute
        # MiniMax sends no Retry-After with 1002; one request slot at the configured rate
        # is the honest wait to suggest (the core pauses the provider's queue for it).
        wait = round(60.0 / rpm, 3) if rpm else None
        await ctx.progress(0.0, f"asking MiniMax {request.model} for {request.n} image(s)")
        started = time.perf_counter()
        log.debug(
            "minimax request",
            model=request.model,
            n=request.n,
            host=client.base_url,
            subject_reference=bool(request.images),
            style=request.style,
        )
        answer = await client.post(body, timeout_s=ctx.timeout_s)
        secret = settings.api_key.get_secret_value() if settings.api_key else None
        try:
            result = parse_answer(
                answer.status,
                answer.headers,
                answer.body,
                requested=request.n,
                host=client.base_url,
                secret=secret,
                rate_limit_wait_s=wait,
            )
        except AtelierError as exc:
            log.info(
                "minimax call failed",
                model=request.model,
                error=exc.code,
                http_status=answer.status,
                request_id=exc.request_id,
                elapsed_s=round(time.perf_counter() - started, 3),
            )
            raise
        log.debug(
            "minimax answer",
            model=request.model,
            images=len(result.images),
            failures=len(result.failures),
            request_id=result.request_id,
            elapsed_s=round(time.perf_counter() - started, 3),
        )
        await ctx.progress(1.0, f"MiniMax returned {len(result.images)} image(s)")
        return result.model_copy(update={"applied": {**applied_for(request), **result.applied}})

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
