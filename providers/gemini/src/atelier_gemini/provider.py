"""The Gemini provider: settings, availability, model checks and the SDK calls.

google-genai is imported inside methods only, so registering the provider costs nothing
and a missing SDK only affects calls. One client is built lazily per provider and
closed by :meth:`GeminiProvider.aclose`.
"""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, ClassVar

import structlog
from pydantic import AliasChoices, Field, SecretStr

from atelier_core import (
    CallContext,
    ConfigurationError,
    ImageRequest,
    InvalidParameterError,
    ModelSpec,
    Provider,
    ProviderResult,
    ProviderSettings,
    bounded_transport,
)

from . import translate
from .models import MODELS, RETIRED, VERTEX, is_imagen

if TYPE_CHECKING:
    from google.genai import Client

__all__ = ["GeminiProvider", "GeminiSettings"]

log = structlog.get_logger("atelier.providers.gemini")

# Output text/thinking price per million tokens, for the cost after a call (the spec's
# Pricing has no output-text rate). Same date and source as the model price table.
_OUTPUT_TEXT_PER_MTOK = {
    "gemini-2.5-flash-image": 2.50,
    "gemini-3-pro-image": 12.0,
    "gemini-3-pro-image-preview": 12.0,
    "gemini-3.1-flash-image": 3.0,
    "gemini-3.1-flash-image-preview": 3.0,
}


class GeminiSettings(ProviderSettings):
    """Settings for the Gemini provider (``[providers.gemini]`` / ``ATELIER_PROVIDERS__GEMINI__*``).

    The vendor's own variables work too: ``GOOGLE_API_KEY`` (wins, as in google-genai) or
    ``GEMINI_API_KEY``; ``GOOGLE_GENAI_USE_VERTEXAI``; ``GOOGLE_CLOUD_PROJECT``;
    ``GOOGLE_CLOUD_LOCATION``. ``GOOGLE_GEMINI_BASE_URL`` / ``GOOGLE_VERTEX_BASE_URL`` and
    ``GOOGLE_GENAI_API_VERSION`` are read by google-genai itself when ``base_url`` /
    ``api_version`` are not set here.
    """

    api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("GOOGLE_API_KEY", "GEMINI_API_KEY"),
        description="Gemini Developer API key, or a Vertex AI express-mode key",
    )
    vertexai: bool = Field(
        False,
        validation_alias=AliasChoices("GOOGLE_GENAI_USE_VERTEXAI"),
        description="use Vertex AI instead of the Gemini Developer API",
    )
    project: str | None = Field(
        None, validation_alias=AliasChoices("GOOGLE_CLOUD_PROJECT"), description="Vertex AI project"
    )
    location: str | None = Field(
        None,
        validation_alias=AliasChoices("GOOGLE_CLOUD_LOCATION"),
        description="Vertex AI location (google-genai's default: global)",
    )
    api_version: str | None = Field(None, description="API version path segment (v1, v1beta, v1beta1)")
    timeout_s: float = 180.0


class GeminiProvider(Provider[GeminiSettings]):
    """Gemini native image models (generateContent) and Imagen (Vertex AI :predict)."""

    name: ClassVar[str] = "gemini"
    title: ClassVar[str] = "Google Gemini and Imagen"
    models: ClassVar[tuple[ModelSpec, ...]] = MODELS
    retired = RETIRED
    unpriced = frozenset({"gemini-3.1-flash-lite-image"})  # no published price in our table
    key_env_vars: ClassVar[tuple[str, ...]] = ("GOOGLE_API_KEY", "GEMINI_API_KEY")
    needs_key: ClassVar[bool] = False  # Vertex AI may use application default credentials

    def __init__(self) -> None:
        super().__init__()
        self._client: Client | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    @property
    def vertex(self) -> bool:
        return bool(getattr(self.settings, "vertexai", False))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "backend": "vertex-ai" if self.vertex else "gemini-developer-api"}

    # -- availability and checks ---------------------------------------------------

    def unavailable_reason(self, spec: ModelSpec) -> str | None:
        if not self.settings.enabled:
            return "provider gemini is disabled (providers.gemini.enabled = false)"
        settings = self.settings
        key = settings.api_key
        if spec.requires == VERTEX and not self.vertex:
            return (
                f"{spec.id} needs Vertex AI (google-genai only offers Imagen there): set "
                "GOOGLE_GENAI_USE_VERTEXAI=true plus GOOGLE_CLOUD_PROJECT and GOOGLE_CLOUD_LOCATION "
                "with application default credentials, or a Vertex express-mode key in GOOGLE_API_KEY"
            )
        if self.vertex:
            if key is None and not getattr(settings, "project", None):
                return (
                    "Vertex AI mode needs GOOGLE_CLOUD_PROJECT (and GOOGLE_CLOUD_LOCATION, default "
                    "global) with application default credentials, or an express-mode key in "
                    "GOOGLE_API_KEY"
                )
            return None
        if key is None:
            return (
                "no API key for gemini: set GOOGLE_API_KEY or GEMINI_API_KEY (or "
                "ATELIER_PROVIDERS__GEMINI__API_KEY), or use Vertex AI with GOOGLE_GENAI_USE_VERTEXAI=true"
            )
        return None

    def check(self, request: ImageRequest, spec: ModelSpec) -> None:
        name = f"gemini/{spec.id}"
        if is_imagen(spec):
            self._check_imagen(request, spec, name)
            return
        if not self.vertex:
            for parameter, value in translate.vertex_only_parameters(request):
                raise InvalidParameterError(
                    parameter,
                    value,
                    f"is only supported in Vertex AI mode for {name} (google-genai refuses it on the "
                    "Gemini Developer API" + (", which returns PNG)" if parameter.startswith("output_") else ")"),
                    fix="remove it, or configure Vertex AI (GOOGLE_GENAI_USE_VERTEXAI=true)",
                    code="unsupported_parameter",
                )

    def _check_imagen(self, request: ImageRequest, spec: ModelSpec, name: str) -> None:
        options = request.options
        if request.seed is not None and options.get("add_watermark") is True:
            raise InvalidParameterError(
                "seed",
                request.seed,
                f"cannot be combined with options.add_watermark=true on {name}",
                fix="drop the seed, or leave add_watermark unset (a seed turns the watermark off)",
            )
        if request.mask is None and options.get("mask_mode") == "user_provided":
            raise InvalidParameterError(
                "options.mask_mode",
                "user_provided",
                f"needs a mask on {name}",
                fix="pass mask (transparent pixels mark the area to change), or use background/foreground",
            )
        if request.mask is not None and options.get("mask_mode") not in (None, "user_provided"):
            raise InvalidParameterError(
                "options.mask_mode",
                options["mask_mode"],
                f"conflicts with the mask given to {name}",
                fix="drop the mask or options.mask_mode",
            )

    # -- cost ----------------------------------------------------------------------

    def estimate_cost(self, request: ImageRequest, spec: ModelSpec) -> float | None:
        pricing = spec.pricing
        if pricing is None:
            return None
        tier = request.resolution or spec.sizes.default_resolution
        price = pricing.image_price(None, tier)
        return None if price is None else round(price * request.n, 6)

    # -- the SDK client ------------------------------------------------------------

    def _build_client(self) -> Client:
        try:
            from google import genai
            from google.genai import types
        except ImportError as exc:  # pragma: no cover - the distribution depends on it
            raise ConfigurationError(
                "google-genai is not installed", fix="install atelier-gemini with its dependencies"
            ) from exc
        settings = self.settings
        # HttpOptions.timeout is in milliseconds. No retry_options: google-genai then makes
        # exactly one attempt, and the core's single retry layer decides about retries.
        import httpx2

        http = types.HttpOptions(
            timeout=max(1, int(settings.timeout_s * 1000)),
            base_url=settings.base_url or None,
            api_version=settings.api_version or None,
            # No idle keep-alive connections: an image call takes seconds, so a new
            # connection costs little, and nothing stays bound to a finished event loop.
            # Answers are read only up to what the requested images can take.
            async_client_args={"transport": bounded_transport(limits=httpx2.Limits(max_keepalive_connections=0))},
        )
        key = settings.api_key.get_secret_value() if settings.api_key is not None else None
        try:
            if self.vertex:
                if key and not settings.project:
                    return genai.Client(vertexai=True, api_key=key, http_options=http)  # express mode
                return genai.Client(
                    vertexai=True,
                    project=settings.project,
                    location=settings.location or "global",
                    http_options=http,
                )
            return genai.Client(vertexai=False, api_key=key, http_options=http)
        except ValueError as exc:
            raise ConfigurationError(
                f"google-genai could not be set up: {translate.excerpt(str(exc), 200)}",
                provider=self.name,
                fix="check providers.gemini settings (api key, vertexai, project, location)",
            ) from None
        except Exception as exc:  # e.g. google.auth DefaultCredentialsError for Vertex without ADC
            raise ConfigurationError(
                f"Vertex AI credentials could not be loaded: {type(exc).__name__}",
                provider=self.name,
                fix="run gcloud auth application-default login, or use an express-mode key in GOOGLE_API_KEY",
            ) from None

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[Client]:
        """The client for calls on the running event loop.

        Building a google-genai client costs ~0.1–0.4 s (it makes a sync and an async
        HTTP client, each with its own TLS context), so one is kept per event loop. It
        keeps no idle connections (see ``_build_client``), so a loop that ends (a test,
        a worker thread) leaves no open socket behind.
        """
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client, self._client_loop = self._build_client(), loop
        yield self._client

    def _secrets(self) -> list[str]:
        key = self.settings.api_key
        return [key.get_secret_value()] if key is not None else []

    def _error(self, exc: BaseException, spec_id: str, imagen: bool) -> Exception:
        mapped = translate.map_error(
            exc, model=f"gemini/{spec_id}", key_vars=self.key_env_vars, secrets=self._secrets(), imagen=imagen
        )
        log.info("gemini call failed", model=spec_id, error=mapped.code, kind=type(exc).__name__)
        return mapped

    # -- the work ------------------------------------------------------------------

    async def generate(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
        if request.model.startswith("imagen-"):
            return await self._imagen_generate(request, ctx)
        return await self._gemini(request, ctx)

    async def edit(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
        if request.model.startswith("imagen-"):
            return await self._imagen_edit(request, ctx)
        return await self._gemini(request, ctx)

    def _spec(self, model: str) -> ModelSpec:
        for spec in self.catalog():
            if spec.id == model:
                return spec
        raise ConfigurationError(f"gemini has no model {model}")  # the core only sends known ids

    async def _gemini(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
        spec = self._spec(request.model)
        contents = translate.gemini_contents(request)
        config = translate.gemini_config(request, spec, vertex=self.vertex)
        await ctx.progress(0.05, f"asking {spec.id}")
        try:
            async with self._session() as client:
                response = await client.aio.models.generate_content(
                    model=spec.id,
                    contents=contents,  # type: ignore[arg-type]
                    config=config,  # type: ignore[arg-type]
                )
        except Exception as exc:
            raise self._error(exc, spec.id, imagen=False) from None
        result = translate.parse_gemini(response, request, model=f"gemini/{spec.id}")
        result.cost_usd = translate.gemini_cost(
            getattr(response, "usage_metadata", None), spec.pricing, _OUTPUT_TEXT_PER_MTOK.get(spec.id)
        )
        return result

    async def _imagen_generate(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
        spec = self._spec(request.model)
        config, applied = translate.imagen_generate_config(request, spec)
        await ctx.progress(0.05, f"asking {spec.id}")
        try:
            async with self._session() as client:
                with warnings.catch_warnings():
                    # The SDK marks generate_images deprecated with a once-per-process
                    # warning, raised when the coroutine is created (not awaited).
                    warnings.simplefilter("ignore")
                    pending = client.aio.models.generate_images(
                        model=spec.id, prompt=request.prompt or "", config=config
                    )
                response = await pending
        except Exception as exc:
            raise self._error(exc, spec.id, imagen=True) from None
        result = translate.parse_imagen(response, request, model=f"gemini/{spec.id}")
        result.applied.update(applied)
        return result

    async def _imagen_edit(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
        from google.genai import types

        spec = self._spec(request.model)
        config, mask_config, applied = translate.imagen_edit_config(request)
        source = request.images[0]
        references: list[Any] = [
            types.RawReferenceImage(
                reference_id=1,
                reference_image=types.Image(image_bytes=source.data, mime_type=source.mime_type),
            )
        ]
        if mask_config.get("mask_mode"):
            # A mask reference: the caller's mask (converted to Imagen's white-means-edit
            # convention) or an automatic background/foreground segmentation.
            mask_image = None
            if request.mask is not None:
                data = await asyncio.to_thread(translate.imagen_mask, request.mask.data)
                mask_image = types.Image(image_bytes=data, mime_type="image/png")
            references.append(
                types.MaskReferenceImage(
                    reference_id=2,
                    reference_image=mask_image,
                    config=types.MaskReferenceConfig(**{k: v for k, v in mask_config.items() if v is not None}),
                )
            )
        await ctx.progress(0.05, f"asking {spec.id}")
        try:
            async with self._session() as client:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    pending = client.aio.models.edit_image(
                        model=spec.id,
                        prompt=request.prompt or "",
                        reference_images=references,
                        config=config,
                    )
                response = await pending
        except Exception as exc:
            raise self._error(exc, spec.id, imagen=True) from None
        result = translate.parse_imagen(response, request, model=f"gemini/{spec.id}")
        result.applied.update(applied)
        return result

    def warm_up(self) -> None:
        """Import the SDK ahead of the first call (the core calls this in a worker thread)."""
        from google.genai import types  # noqa: F401

    async def aclose(self) -> None:
        """Close the client (idempotent)."""
        client, self._client, self._client_loop = self._client, None, None
        if client is not None:
            try:
                await client.aio.aclose()
            except RuntimeError:  # built on an event loop that has since closed
                log.debug("gemini client closed on another loop")
