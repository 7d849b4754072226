"""The provider object: declares the models and makes the one upstream call per request."""

from __future__ import annotations

import asyncio
import contextlib
import time
import warnings
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, ClassVar

import structlog

from atelier_core import (
    AtelierError,
    CallContext,
    ConfigurationError,
    ImageRequest,
    ItemFailure,
    ModelSpec,
    Operation,
    Provider,
    ProviderImage,
    ProviderResult,
    ProviderSettings,
    UpstreamProtocolError,
    Usage,
    bounded_transport,
)

from . import convert
from .errors import PROVIDER, Target, cut_off, map_status, timeout_error, unreachable
from .models import BUILTIN, Wire, build_extra
from .settings import DalleSettings
from .translate import Item, parse_response, request_kwargs, sniff_mime

if TYPE_CHECKING:
    from openai import AsyncOpenAI

__all__ = ["DalleProvider"]

log = structlog.get_logger("atelier.providers.dalle")

_CONVERTED_CACHE = 8  # converted uploads kept per provider (fan-out reuses them)


class DalleProvider(Provider[DalleSettings]):
    """The DALL·E image API shape: Azure OpenAI, LocalAI and other compatible servers."""

    name: ClassVar[str] = "dalle"
    title: ClassVar[str] = "DALL·E API shape (Azure OpenAI, LocalAI, OpenAI-compatible servers)"
    models: ClassVar[tuple[ModelSpec, ...]] = tuple(spec for spec, _ in BUILTIN.values())
    key_env_vars: ClassVar[tuple[str, ...]] = ("OPENAI_API_KEY",)

    def __init__(self) -> None:
        super().__init__()
        self.settings: DalleSettings = DalleSettings.model_construct()
        self._catalog: dict[str, tuple[ModelSpec, Wire]] = dict(BUILTIN)
        self._converted: OrderedDict[tuple[int, str], tuple[bytes, bytes]] = OrderedDict()
        self._client: AsyncOpenAI | None = None
        self._client_identity: tuple[Any, ...] | None = None

    # -- declaration ---------------------------------------------------------------

    def configure(self, settings: ProviderSettings) -> None:
        """Take the settings and build the catalogue (built-ins + configured extras). No I/O."""
        if not isinstance(settings, DalleSettings):
            settings = DalleSettings.model_validate(settings.model_dump())
        if settings.azure_endpoint and settings.base_url:
            raise ConfigurationError(
                "providers.dalle has both base_url and azure_endpoint set",
                parameter="providers.dalle.base_url",
                fix="set base_url for an OpenAI-compatible server, or azure_endpoint for Azure OpenAI, "
                "not both (either may come from OPENAI_BASE_URL / AZURE_OPENAI_ENDPOINT)",
            )
        unknown = [m for m in settings.builtin_models if m not in BUILTIN]
        if unknown:
            raise ConfigurationError(
                f"providers.dalle.builtin_models names unknown models: {', '.join(unknown)}",
                parameter="providers.dalle.builtin_models",
                allowed=list(BUILTIN),
                fix="list built-in ids only; declare other models under [providers.dalle.models.<id>]",
            )
        catalog = {m: BUILTIN[m] for m in BUILTIN if m in settings.builtin_models}
        for model_id, raw in settings.models.items():
            catalog[model_id] = build_extra(model_id, raw)  # replaces a built-in of that id
        super().configure(settings)
        self.settings = settings
        self._catalog = catalog
        # A configured model without a price is declared unpriced (the user chose so;
        # cost.allow_unpriced decides whether it may be called).
        self.unpriced = frozenset(  # type: ignore[misc]
            model_id for model_id, (spec, _) in catalog.items() if spec.pricing is None and model_id not in BUILTIN
        )

    def catalog(self) -> tuple[ModelSpec, ...]:
        return tuple(spec for spec, _ in self._catalog.values())

    def unavailable_reason(self, spec: ModelSpec) -> str | None:
        settings = self.settings
        if not settings.enabled:
            return "provider dalle is disabled (providers.dalle.enabled = false)"
        if settings.needs_key and settings.effective_key is None:
            return (
                f"no API key for dalle: set {' or '.join(settings.key_variables())}; for a "
                "self-hosted server that takes no key set ATELIER_PROVIDERS__DALLE__NEEDS_KEY=false"
            )
        return None

    def check(self, request: ImageRequest, spec: ModelSpec) -> None:
        """Refuse input images no conversion can make acceptable (no decoding here)."""
        if request.operation is Operation.GENERATE or not request.images:
            return
        wire = self._wire(request.model)
        convert.quick_check(
            request.images[0],
            where="images[0]",
            model=spec.id,
            max_bytes=wire.input_max_bytes,
            needs_transparency=(
                request.operation is Operation.EDIT and request.mask is None and wire.edit_needs_transparency
            ),
        )
        if request.mask is not None:
            convert.quick_check(
                request.mask,
                where="mask",
                model=spec.id,
                max_bytes=wire.input_max_bytes,
                needs_transparency=False,
            )

    # -- the work ------------------------------------------------------------------

    async def generate(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
        return await self._call(request, ctx, files={})

    async def edit(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
        wire = self._wire(request.model)
        needs_alpha = request.mask is None and wire.edit_needs_transparency
        files = {"image": await self._upload(request, "image", wire, needs_alpha)}
        if request.mask is not None:
            files["mask"] = await self._upload(request, "mask", wire, False)
        return await self._call(request, ctx, files=files)

    async def variation(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
        wire = self._wire(request.model)
        files = {"image": await self._upload(request, "variation", wire, False)}
        return await self._call(request, ctx, files=files)

    def warm_up(self) -> None:
        """Import the SDK ahead of the first call (the core calls this in a worker thread),
        with the HTTP transport it imports only when its first client is made."""
        import openai  # noqa: F401

        with contextlib.suppress(ImportError):  # httpx2's transport (not our dependency to name)
            import httpcore2  # noqa: F401

    async def aclose(self) -> None:
        """Close the reused SDK client (its pooled connections)."""
        client, self._client = self._client, None
        self._client_identity = None
        if client is not None:
            await client.close()

    # -- pieces --------------------------------------------------------------------

    def _wire(self, model: str) -> Wire:
        return self._catalog[model][1]

    def _target(self, request: ImageRequest, ctx: CallContext) -> Target:
        s = self.settings
        wire = self._wire(request.model)
        return Target(
            model=f"{self.name}/{request.model}",
            upstream_model=self._upstream_name(request.model, wire),
            server=s.server_label,
            is_openai_api=s.is_openai_api,
            azure=s.azure,
            retired_by_openai=wire.retired_by_openai,
            key_variables=tuple(s.key_variables()),
            timeout_s=self._timeout(ctx),
        )

    def _upstream_name(self, model: str, wire: Wire) -> str:
        return self.settings.deployments.get(model) or wire.upstream_model

    def _timeout(self, ctx: CallContext) -> float:
        limits = [t for t in (self.settings.timeout_s, ctx.timeout_s) if t and t > 0]
        return min(limits) if limits else 120.0

    async def _upload(
        self, request: ImageRequest, role: convert.Role, wire: Wire, needs_alpha: bool
    ) -> tuple[str, bytes, str]:
        image = request.mask if role == "mask" else request.images[0]
        assert image is not None
        key = (id(image.data), role + ("+alpha" if needs_alpha else ""))
        cached = self._converted.get(key)
        # Identity, not equality: the cache holds the source bytes, so ids cannot be reused.
        if cached is not None and cached[0] is image.data:
            data = cached[1]
        else:
            data = await asyncio.to_thread(
                convert.to_upload,
                image,
                role=role,
                where="mask" if role == "mask" else "images[0]",
                model=request.model,
                max_bytes=wire.input_max_bytes,
                needs_transparency=needs_alpha,
            )
            self._converted[key] = (image.data, data)
            while len(self._converted) > _CONVERTED_CACHE:
                self._converted.popitem(last=False)
        return ("mask.png" if role == "mask" else "image.png", data, "image/png")

    def _client_for_call(self) -> AsyncOpenAI:
        """The SDK client for this configuration, made on first use and reused.

        A new client per call would pay a connection and an SSL context (~50 ms) every
        time. The client is keyed by the settings it was built from and by the running
        event loop (its connection pool belongs to that loop): a reconfigured provider or
        a new loop gets a new client. :meth:`aclose` closes it.
        """
        import openai

        s = self.settings
        key = s.effective_key.get_secret_value() if s.effective_key is not None else "unused"
        loop = asyncio.get_running_loop()
        identity = (loop, s.azure, s.azure_endpoint, s.azure_api_version, s.server_url, s.timeout_s, hash(key))
        if self._client is not None and self._client_identity == identity and not loop.is_closed():
            return self._client
        client: AsyncOpenAI
        # Answers are read only up to what the requested images can take.
        http = openai.DefaultAsyncHttpxClient(transport=bounded_transport(), timeout=s.timeout_s)
        if s.azure:
            client = openai.AsyncAzureOpenAI(
                azure_endpoint=s.azure_endpoint or "",
                api_version=s.azure_api_version,
                api_key=key,
                max_retries=0,  # the core owns the one retry layer
                timeout=s.timeout_s,
                http_client=http,
            )
        else:
            client = openai.AsyncOpenAI(
                api_key=key, base_url=s.server_url, max_retries=0, timeout=s.timeout_s, http_client=http
            )
        self._client, self._client_identity = client, identity
        return client

    async def _call(
        self, request: ImageRequest, ctx: CallContext, *, files: dict[str, tuple[str, bytes, str]]
    ) -> ProviderResult:
        import openai

        wire = self._wire(request.model)
        target = self._target(request, ctx)
        response_format = wire.response_format or self.settings.response_format
        kwargs = request_kwargs(request, wire, response_format=response_format, upstream_model=target.upstream_model)
        kwargs.update(files)
        headers: dict[str, Any] = {}
        if self.settings.effective_key is None:
            headers["Authorization"] = openai.Omit()  # no key: send no Authorization header
        await ctx.progress(0.05, f"asking {target.server} for {request.n} image(s)")
        started = time.perf_counter()
        try:
            body, request_id = await _send(self._client_for_call(), request.operation, kwargs, headers, target)
        except Exception as exc:
            log.debug(
                "upstream call failed",
                model=target.model,
                operation=request.operation.value,
                error=type(exc).__name__,
                elapsed_s=round(time.perf_counter() - started, 3),
            )
            raise _mapped(exc, target) from None
        log.debug(
            "upstream call",
            model=target.model,
            operation=request.operation.value,
            n=request.n,
            request_id=request_id,
            bytes=len(body),
            elapsed_s=round(time.perf_counter() - started, 3),
        )
        await ctx.progress(0.8, "reading the images")
        # JSON and base64 of a few MB take tens of ms: off the event loop, and the raw body
        # is dropped as soon as it is parsed.
        parsing = asyncio.to_thread(
            parse_response, body, model=target.model, base_url=target.server, provider=self.name
        )
        del body
        items = await parsing
        return await self._result(items, request, ctx, target, request_id)

    async def _result(
        self,
        items: list[Item],
        request: ImageRequest,
        ctx: CallContext,
        target: Target,
        request_id: str | None,
    ) -> ProviderResult:
        items = items[: request.n]  # never hand back more than was asked (and quoted)
        hosts = self._download_hosts()
        fetched = await asyncio.gather(*(self._materialise(item, ctx, hosts) for item in items))
        images: list[ProviderImage] = []
        failures: list[ItemFailure] = []
        errors: list[AtelierError] = []
        for item, outcome in zip(items, fetched, strict=True):
            if isinstance(outcome, AtelierError):
                errors.append(outcome)
                failures.append(ItemFailure(index=item.index, code=outcome.code, message=str(outcome)))
                continue
            images.append(
                ProviderImage(data=outcome, mime_type=sniff_mime(outcome), revised_prompt=item.revised_prompt)
            )
        for index in range(len(items), request.n):
            failures.append(
                ItemFailure(
                    index=index,
                    code="no_image_returned",
                    message=f"the server returned {len(items)} of {request.n} images",
                )
            )
        if not images:
            # Nothing usable: the whole call failed, with the first reason.
            raise (
                errors[0]
                if errors
                else UpstreamProtocolError(
                    f"{target.model}: the server returned no image",
                    code="no_image_returned",
                    provider=self.name,
                    request_id=request_id,
                )
            )
        if failures:
            log.warning("partial result", model=target.model, images=len(images), failed=len(failures))
        applied: dict[str, Any] = {}
        if target.upstream_model != request.model:
            applied["upstream_model"] = target.upstream_model
        return ProviderResult(
            images=images,
            failures=failures,
            usage=Usage(images=len(images)),
            request_id=request_id,
            applied=applied,
        )

    def _download_hosts(self) -> list[str]:
        """Origins image URLs may come from: the API server's (scheme, host and port) and
        ``download_hosts`` (a bare host there means https on port 443)."""
        server = self.settings.server_url if self.settings.server_host else None
        return [h for h in (server, *self.settings.download_hosts) if h]

    async def _materialise(self, item: Item, ctx: CallContext, hosts: list[str]) -> bytes | AtelierError:
        """The item's bytes (downloaded when the server gave a URL), or why there are none."""
        if item.problem is not None:
            return UpstreamProtocolError(
                f"image {item.index}: {item.problem}", code="invalid_image_data", provider=self.name
            )
        if item.data is not None:
            return item.data
        assert item.url is not None
        try:
            return await ctx.download(item.url, hosts)
        except AtelierError as exc:
            fix = 'retry; if it persists, set providers.dalle.response_format = "b64_json"'
            if exc.code == "url_not_allowed":
                fix = (
                    "the server linked the image on a host not allowed for downloads: add that host "
                    "to providers.dalle.download_hosts if you trust it, or set "
                    'providers.dalle.response_format = "b64_json"'
                )
            return UpstreamProtocolError(
                f"image {item.index}: the server returned a URL that could not be downloaded: {exc.message}",
                code=exc.code,
                fix=fix,
                provider=self.name,
            )


async def _send(
    client: AsyncOpenAI,
    operation: Operation,
    kwargs: dict[str, Any],
    headers: dict[str, Any],
    target: Target,
) -> tuple[bytes, str | None]:
    """Send one request; the raw body and request id. SDK errors propagate to the caller.

    The streaming-response form returns once the headers arrive, so a failure while the
    body is read is known to come *after* the server accepted (and may bill) the call.
    """
    import httpx2

    images = client.images.with_streaming_response
    method: Any = {
        Operation.GENERATE: images.generate,
        Operation.EDIT: images.edit,
        Operation.VARIATION: images.create_variation,
    }[operation]
    with warnings.catch_warnings():
        # The SDK flags create_variation deprecated (OpenAI retired the endpoint); the
        # servers this plugin talks to still implement it.
        warnings.simplefilter("ignore", DeprecationWarning)
        pending = method(**kwargs, timeout=target.timeout_s, extra_headers=headers)
    async with asyncio.timeout(target.timeout_s):  # one total deadline, body included
        async with pending as response:
            request_id = response.headers.get("x-request-id")
            try:
                body: bytes = await response.read()
            except httpx2.TimeoutException:
                raise timeout_error(target) from None
            except httpx2.HTTPError as exc:
                raise cut_off(target, type(exc).__name__, request_id) from None
    return body, request_id


def _mapped(exc: Exception, target: Target) -> Exception:
    """The Atelier error for whatever the SDK call raised (Atelier errors pass through)."""
    import openai

    if isinstance(exc, AtelierError):
        return exc
    if isinstance(exc, TimeoutError | openai.APITimeoutError):
        return timeout_error(target)
    if isinstance(exc, openai.APIStatusError):
        return map_status(exc, target)
    if isinstance(exc, openai.APIConnectionError):
        return unreachable(target, type(exc.__cause__ or exc).__name__)
    if isinstance(exc, openai.OpenAIError):
        return UpstreamProtocolError(
            f"{target.model}: unexpected answer from {target.server} ({type(exc).__name__})",
            provider=PROVIDER,
        )
    return exc  # a bug, not an upstream failure: let it surface as itself
