"""The provider: declarations (name, settings, models) and one async call."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from atelier_core import (
    CallContext,
    ImageRequest,
    ModelSpec,
    Provider,
    ProviderResult,
    UpstreamProtocolError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)

from .models import MODELS
from .settings import PixelArtSettings
from .translate import PROVIDER, endpoint, error_from_response, request_body, result_from_response

if TYPE_CHECKING:
    import httpx2

__all__ = ["PixelArtProvider"]


class PixelArtProvider(Provider[PixelArtSettings]):
    name: ClassVar[str] = PROVIDER
    title: ClassVar[str] = "Pixel Forge (example plugin)"
    models: ClassVar[tuple[ModelSpec, ...]] = MODELS
    key_env_vars: ClassVar[tuple[str, ...]] = ("PIXELART_API_KEY",)

    def __init__(self) -> None:
        super().__init__()
        self._client: httpx2.AsyncClient | None = None

    async def generate(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
        return await self._call(request, ctx)

    async def edit(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
        return await self._call(request, ctx)

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    # -- the call ----------------------------------------------------------------------

    def _http(self) -> httpx2.AsyncClient:
        # Imported and built on first use: registration stays free of I/O and imports.
        import httpx2

        if self._client is None:
            settings = self.settings  # a PixelArtSettings: Provider[PixelArtSettings] types it
            key = settings.api_key.get_secret_value() if settings.api_key else ""
            self._client = httpx2.AsyncClient(
                base_url=settings.base_url.rstrip("/"),
                headers={"authorization": f"Bearer {key}"},
                timeout=httpx2.Timeout(settings.timeout_s, connect=10.0),
            )
        return self._client

    async def _call(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
        import httpx2

        await ctx.progress(0.0, f"asking Pixel Forge for {request.n} image(s)")
        try:
            response = await self._http().post(endpoint(request), json=request_body(request))
        except httpx2.TimeoutException:
            # Never retried by the core: the images may have been made (and billed).
            raise UpstreamTimeoutError(
                f"Pixel Forge did not answer within {self.settings.timeout_s:g} s",
                provider=PROVIDER,
                fix="try again later, or raise providers.pixelart.timeout_s",
            ) from None
        except httpx2.TransportError as exc:
            raise UpstreamUnavailableError(
                f"cannot reach Pixel Forge: {type(exc).__name__}", provider=PROVIDER
            ) from None
        payload = _json(response)
        if response.status_code >= 400:
            raise error_from_response(response.status_code, payload, response.headers)
        if payload is None:
            raise UpstreamProtocolError("Pixel Forge answered with invalid JSON", provider=PROVIDER)
        await ctx.progress(1.0, "received")
        return result_from_response(payload, request)


def _json(response: httpx2.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
