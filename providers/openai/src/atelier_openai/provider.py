"""The OpenAI provider: model-specific checks and the one async call per operation."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import structlog

from atelier_core import (
    AtelierError,
    CallContext,
    ImageRequest,
    InvalidParameterError,
    ModelSpec,
    Operation,
    Provider,
    ProviderResult,
    UpstreamProtocolError,
    bounded_transport,
    decode_base64,
)

from . import host_prices, translate
from .models import CATALOGUE, FAMILIES, RETIRED, build_spec
from .settings import OpenAISettings

if TYPE_CHECKING:
    from openai import AsyncOpenAI

__all__ = ["OpenAIProvider"]

log = structlog.get_logger("atelier.providers.openai")


class OpenAIProvider(Provider[OpenAISettings]):
    """OpenAI GPT Image models through the official ``openai`` SDK (``AsyncOpenAI``)."""

    name: ClassVar[str] = "openai"
    title: ClassVar[str] = "OpenAI GPT Image"
    models = CATALOGUE
    retired = RETIRED
    key_env_vars: ClassVar[tuple[str, ...]] = ("OPENAI_API_KEY",)

    def __init__(self) -> None:
        super().__init__()
        self._client: AsyncOpenAI | None = None
        self._catalog: tuple[ModelSpec, ...] = CATALOGUE

    # -- declaration ---------------------------------------------------------------

    def configure(self, settings: Any) -> None:
        super().configure(settings)
        conf = self.settings
        if conf.transparent_preview or conf.svg_output:
            self._catalog = tuple(
                build_spec(mid, caps, aliases, transparent_preview=conf.transparent_preview, svg_output=conf.svg_output)
                for mid, (caps, aliases) in FAMILIES.items()
            )

    def catalog(self) -> tuple[ModelSpec, ...]:
        return self._catalog

    def unavailable_reason(self, spec: ModelSpec) -> str | None:
        if not self.settings.enabled:
            return "provider openai is disabled (providers.openai.enabled = false)"
        conf = self.settings
        if conf.api_key is None or not conf.api_key.get_secret_value().strip():
            if conf.azure:
                return "no API key for Azure OpenAI: set AZURE_OPENAI_API_KEY or ATELIER_PROVIDERS__OPENAI__API_KEY"
            return "no API key for openai: set OPENAI_API_KEY or ATELIER_PROVIDERS__OPENAI__API_KEY"
        if conf.azure:
            missing = [
                var
                for var, value in (
                    ("AZURE_OPENAI_ENDPOINT", conf.azure_endpoint or conf.base_url),
                    ("OPENAI_API_VERSION", conf.azure_api_version),
                )
                if not value
            ]
            if missing:
                return f"Azure OpenAI mode needs {' and '.join(missing)}"
        return None

    def check(self, request: ImageRequest, spec: ModelSpec) -> None:
        """Rules that relate several values (where each option applies is in the spec's
        ``applies``, checked by the core); all raise before any call."""
        fmt = request.output_format
        name = f"openai/{spec.id}"
        if request.background == "transparent" and fmt not in ("png", "webp"):
            raise InvalidParameterError(
                "background",
                "transparent",
                f"needs png or webp output on {name}, not {fmt}",
                allowed=["png", "webp"],
                fix="use output_format=png or webp, or background=opaque",
            )
        options = request.options
        if options.get("markup"):
            _check_markup(request)
        route = self.settings.route_for(
            spec.id, edit=request.operation is Operation.EDIT, requested=options.get("route")
        )
        if route == "responses":
            if request.n != 1:
                raise InvalidParameterError(
                    "n",
                    request.n,
                    "must be 1 on the Responses API route (one image per turn)",
                    allowed="1",
                    fix="ask for one image, or use options.route=images",
                )
            for key in ("markup", "partial_images"):
                if options.get(key):
                    raise InvalidParameterError(
                        f"options.{key}",
                        options[key],
                        "is not available on the Responses API route",
                        fix="remove it, or use options.route=images",
                    )
        elif options.get("previous_response_id"):
            raise InvalidParameterError(
                "options.previous_response_id",
                options["previous_response_id"],
                "only continues a Responses API turn",
                fix="add options.route=responses, or remove it",
            )
        if fmt == "svg" and request.n != 1:
            raise InvalidParameterError(
                "n", request.n, "must be 1 for SVG output", allowed="1", fix="ask for one SVG per call"
            )

    # -- the work ------------------------------------------------------------------

    def _client_for_call(self) -> AsyncOpenAI:
        """The SDK client, created on first use and reused (closed in :meth:`aclose`)."""
        if self._client is not None:
            return self._client
        import openai

        conf = self.settings
        key = conf.api_key.get_secret_value() if conf.api_key else None
        common: dict[str, Any] = {
            "api_key": key,
            "organization": conf.organization,
            "project": conf.project,
            # The core owns the one retry layer; SDK retries would multiply attempts.
            "max_retries": 0,
            "timeout": conf.timeout_s,
            # Answers are read only up to what the requested images can take.
            "http_client": openai.DefaultAsyncHttpxClient(transport=bounded_transport(), timeout=conf.timeout_s),
        }
        if conf.azure:
            endpoint = conf.azure_endpoint
            self._client = openai.AsyncAzureOpenAI(
                api_version=conf.azure_api_version,
                **({"azure_endpoint": endpoint} if endpoint else {"base_url": conf.base_url}),
                **common,
            )
        else:
            self._client = openai.AsyncOpenAI(base_url=conf.base_url, **common)
        return self._client

    def estimate_extra_cost(self, request: ImageRequest, spec: ModelSpec) -> tuple[float, str] | None:
        """On the Responses route: an allowance for the host model's tokens (billed on top)."""
        if self._route(request) != "responses":
            return None
        host = self.settings.responses_model
        price = host_prices.price_of(host, self.settings.responses_model_prices)
        tokens_in, tokens_out = host_prices.host_estimate(request)
        if price is None:
            return 0.0, (
                f"the Responses API host model {host} has no known price: its tokens (billed by OpenAI on "
                "top of the image) are not in this estimate; set providers.openai.responses_model_prices"
            )
        allowance = host_prices.host_cost(price, tokens_in, tokens_out)
        return allowance, (
            f"the estimate includes ${allowance:.6f} for the Responses API host model {host} (an allowance "
            f"of {tokens_in} input and {tokens_out} output tokens at ${price.input_per_mtok:g}/"
            f"${price.output_per_mtok:g} per 1M, prices as of {price.as_of}); the cost counts the tokens it used"
        )

    def _route(self, request: ImageRequest) -> str:
        return self.settings.route_for(
            request.model, edit=request.operation is Operation.EDIT, requested=request.options.get("route")
        )

    async def generate(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
        if self._route(request) == "responses":
            return await self._respond(request, ctx)
        kwargs = translate.generate_kwargs(request, self.settings, translate.partials_for(request, self.settings))
        return await self._call(request, ctx, kwargs)

    async def edit(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
        if self._route(request) == "responses":
            return await self._respond(request, ctx)
        kwargs = translate.edit_kwargs(request, self.settings, translate.partials_for(request, self.settings))
        return await self._call(request, ctx, kwargs)

    async def _call(self, request: ImageRequest, ctx: CallContext, kwargs: dict[str, Any]) -> ProviderResult:
        client = self._client_for_call()
        images = client.images
        timeout = min(self.settings.timeout_s, ctx.timeout_s) if ctx.timeout_s else self.settings.timeout_s
        method = images.edit if request.operation is Operation.EDIT else images.generate
        raw_method = (
            images.with_raw_response.edit if request.operation is Operation.EDIT else images.with_raw_response.generate
        )
        log.debug(
            "openai call",
            model=request.model,
            operation=request.operation.value,
            n=request.n,
            stream=bool(kwargs.get("stream")),
        )
        try:
            if kwargs.get("stream"):
                return await self._stream(request, ctx, method, kwargs, timeout)
            raw = await raw_method(**kwargs, timeout=timeout)
            request_id = raw.headers.get("x-request-id")
            try:
                response = raw.parse()
            except Exception as exc:
                error = translate.map_error(exc, model=request.model, settings=self.settings)
                error.request_id = error.request_id or request_id
                raise error from None
            # The raw body (MBs of base64) is parsed: do not hold it while the decode waits
            # for a worker thread (20 concurrent 4K answers would pin 27 MB each).
            del raw
            items = await self._fetch_url_items(response.data or [], ctx)
            return await asyncio.to_thread(
                translate.result_from_items,
                items,
                request,
                usage=response.usage,
                request_id=request_id,
                applied=translate.applied_from(response),
                texts=_svg_note(response),
            )
        except Exception as exc:
            raise self._mapped(exc, request) from None

    async def _respond(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
        """One turn through the Responses API ``image_generation`` tool (``route=responses``)."""
        client = self._client_for_call()
        timeout = min(self.settings.timeout_s, ctx.timeout_s) if ctx.timeout_s else self.settings.timeout_s
        kwargs = translate.responses_kwargs(request, self.settings)
        log.debug(
            "openai responses call",
            model=request.model,
            operation=request.operation.value,
            chained=bool(kwargs.get("previous_response_id")),
        )
        try:
            raw = await client.responses.with_raw_response.create(**kwargs, timeout=timeout)
            request_id = raw.headers.get("x-request-id")
            response = raw.parse()
            del raw
            return await asyncio.to_thread(
                translate.result_from_response,
                response,
                request,
                request_id=request_id,
                host_model=self.settings.responses_model,
                settings=self.settings,
            )
        except Exception as exc:
            raise self._mapped(exc, request) from None

    async def _fetch_url_items(self, items: list[Any], ctx: CallContext) -> list[Any]:
        """Gateways (LiteLLM and others) may answer with image URLs instead of base64.

        Those are downloaded through the core's capped fetcher, and only from the
        configured base URL's origin (scheme, host and port); OpenAI itself always answers
        GPT Image calls with base64, so without a custom base URL a URL item stays a
        listed failure.
        """
        origin = (
            self.settings.base_url if self.settings.base_url and urlsplit(self.settings.base_url).hostname else None
        )
        if origin is None or not any(getattr(i, "url", None) and not getattr(i, "b64_json", None) for i in items):
            return items
        fetched: list[Any] = []
        for item in items:
            url = getattr(item, "url", None)
            if getattr(item, "b64_json", None) or not url:
                fetched.append(item)
                continue
            try:
                data = await ctx.download(url, [origin])
            except AtelierError as exc:
                log.warning("gateway image URL not downloaded", code=exc.code)
                fetched.append(item)  # becomes a listed failure, the others are kept
                continue
            fetched.append(
                SimpleNamespace(
                    b64_json=base64.b64encode(data).decode(), revised_prompt=getattr(item, "revised_prompt", None)
                )
            )
        return fetched

    async def _stream(
        self, request: ImageRequest, ctx: CallContext, method: Any, kwargs: dict[str, Any], timeout: float
    ) -> ProviderResult:
        stream = await method(**kwargs, timeout=timeout)
        request_id = stream.response.headers.get("x-request-id")
        partials = int(kwargs.get("partial_images") or 0)
        finals: list[Any] = []
        usage: Any = None
        applied: dict[str, Any] = {}
        try:
            async for event in stream:
                kind = getattr(event, "type", "")
                if kind.endswith("partial_image"):
                    index = int(getattr(event, "partial_image_index", 0))
                    try:
                        preview = decode_base64(event.b64_json, what="a partial image")
                    except ValueError:
                        log.warning("undecodable partial image skipped", index=index)
                        continue
                    await ctx.partial_image(preview, index)
                    await ctx.progress((index + 1) / (partials + 1), f"partial image {index + 1} of {partials}")
                elif kind.endswith("completed"):
                    finals.append(event)
                    usage = getattr(event, "usage", None)
                    applied = translate.applied_from(event)
        except Exception as exc:
            error = self._mapped(exc, request, log_it=False)  # an error event, or a broken stream
            if error.request_id is None:
                error.request_id = request_id
            raise error from None
        finally:
            await stream.close()
        if not finals:
            raise UpstreamProtocolError(
                "openai's stream ended without the final image (only partial previews arrived); "
                "no partial image was saved",
                provider=translate.PROVIDER,
                request_id=request_id,
                fix="try again",
            )
        await ctx.progress(1.0, "image received")
        return await asyncio.to_thread(
            translate.result_from_items,
            finals,
            request,
            usage=usage,
            request_id=request_id,
            applied=applied,
        )

    def _mapped(self, exc: BaseException, request: ImageRequest, *, log_it: bool = True) -> AtelierError:
        error = translate.map_error(
            exc,
            model=request.model,
            settings=self.settings,
            known=[spec.id for spec in self._catalog],
            retired=self.retired,
            operation=request.operation,
        )
        if log_it:  # once per call, at the outermost handler; never the message (may quote input)
            log.info("openai call failed", model=request.model, code=error.code, request_id=error.request_id)
        return error

    def warm_up(self) -> None:
        """Import the SDK ahead of the first call (the core calls this in a worker thread),
        with the HTTP transport it imports only when its first client is made."""
        import openai  # noqa: F401

        with contextlib.suppress(ImportError):  # httpx2's transport (not our dependency to name)
            import httpcore2  # noqa: F401

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()


def _check_markup(request: ImageRequest) -> None:
    """The markup overlay: the last input image, a transparent PNG the size of the first."""

    def refuse(problem: str, fix: str) -> InvalidParameterError:
        return InvalidParameterError("options.markup", True, problem, fix=fix)

    if len(request.images) < 2:
        raise refuse(
            "needs at least two images: the image(s) to edit, then the markup overlay last",
            "append the transparent markup PNG as the last entry of images",
        )
    first, overlay = request.images[0], request.images[-1]
    if overlay.format != "png" or not overlay.has_alpha:
        raise refuse(
            f"needs the last image to be a PNG with transparency (got {overlay.format}"
            f"{'' if overlay.has_alpha else ' without alpha'})",
            "save the markup overlay as a PNG with a transparent background",
        )
    if (overlay.width, overlay.height) != (first.width, first.height):
        raise refuse(
            f"overlay is {overlay.width}x{overlay.height} but the first image is {first.width}x{first.height}",
            "make the markup overlay exactly the size of the first image",
        )


def _svg_note(response: Any) -> list[str]:
    usage = getattr(response, "svg_usage", None)
    if usage is None:
        return []
    return [
        f"SVG authoring by {usage.model} used {usage.total_tokens} tokens "
        f"({usage.reasoning_tokens} reasoning), billed separately from the image tokens"
    ]
