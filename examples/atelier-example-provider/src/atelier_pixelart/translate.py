"""Pure translation between Atelier and the Pixel Forge API. No I/O here.

Pixel Forge (fictional, defined by this example)::

    POST {base_url}/images         generate
    POST {base_url}/images/edits   edit (the input image travels base64-encoded)
    Authorization: Bearer <key>

    request  {"model", "prompt", "width", "height", "count", "format",
              "seed"?, "palette"?, "dither"?, "image"? (edits)}
    200      {"id": "req_…", "images": [{"b64": "…", "format": "png", "seed": 7}],
              "failed": [{"index": 1, "reason": "…"}]}
    error    {"error": {"type": "…", "message": "…"}} with status 400/401/402/422/429/5xx
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from atelier_core import (
    AtelierError,
    AuthenticationError,
    ImageRequest,
    ItemFailure,
    Operation,
    ProviderImage,
    ProviderResult,
    QuotaExceededError,
    RateLimitedError,
    SafetyRefusalError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamUnavailableError,
    Usage,
)

__all__ = ["PROVIDER", "endpoint", "error_from_response", "request_body", "result_from_response"]

PROVIDER = "pixelart"
KEY_VARIABLE = "PIXELART_API_KEY"


def endpoint(request: ImageRequest) -> str:
    """The API path for the request's operation."""
    return "/images/edits" if request.operation is Operation.EDIT else "/images"


def request_body(request: ImageRequest) -> dict[str, Any]:
    """The JSON body for a validated request.

    The core has already checked every value against the model spec, so this only
    renames: no defaults are invented and nothing is silently dropped.
    """
    body: dict[str, Any] = {
        "model": request.model,
        "prompt": request.prompt,
        "width": request.width,
        "height": request.height,
        "count": request.n,
        "format": request.output_format or "png",
    }
    if request.seed is not None:
        body["seed"] = request.seed
    body.update(request.options)  # palette, dither: validated by PixelArtOptions
    if request.operation is Operation.EDIT:
        body["image"] = base64.b64encode(request.images[0].data).decode("ascii")
    return body


def result_from_response(payload: Any, request: ImageRequest) -> ProviderResult:
    """Turn a 200 answer into a result; anything malformed is an UpstreamProtocolError."""
    if not isinstance(payload, Mapping) or not isinstance(payload.get("images"), list):
        raise UpstreamProtocolError("Pixel Forge answered without an images list", provider=PROVIDER)
    request_id = payload.get("id") if isinstance(payload.get("id"), str) else None
    images: list[ProviderImage] = []
    for position, item in enumerate(payload["images"]):
        if not isinstance(item, Mapping) or not isinstance(item.get("b64"), str):
            raise UpstreamProtocolError(
                f"Pixel Forge image {position} has no b64 data", provider=PROVIDER, request_id=request_id
            )
        try:
            data = base64.b64decode(item["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise UpstreamProtocolError(
                f"Pixel Forge image {position} is not valid base64", provider=PROVIDER, request_id=request_id
            ) from None
        fmt = item.get("format") if isinstance(item.get("format"), str) else request.output_format
        seed = item.get("seed") if isinstance(item.get("seed"), int) else None
        images.append(ProviderImage(data=data, mime_type=f"image/{fmt}" if fmt else None, seed=seed))
    failures = [
        ItemFailure(index=int(f.get("index", -1)), code="not_generated", message=str(f.get("reason") or "failed"))
        for f in payload.get("failed") or []
        if isinstance(f, Mapping)
    ]
    return ProviderResult(
        images=images,
        failures=failures,
        usage=Usage(images=len(images)),
        request_id=request_id,
    )


def error_from_response(status: int, payload: Any, headers: Mapping[str, str]) -> AtelierError:
    """Map an error answer to the Atelier error the core knows how to handle."""
    error = payload.get("error") if isinstance(payload, Mapping) else None
    kind = str(error.get("type", "")) if isinstance(error, Mapping) else ""
    message = str(error.get("message", "")) if isinstance(error, Mapping) else ""
    said = f"Pixel Forge says: {message}" if message else f"Pixel Forge answered HTTP {status}"
    request_id = headers.get("x-request-id")
    common: dict[str, Any] = {"provider": PROVIDER, "request_id": request_id}
    if status in (401, 403):
        return AuthenticationError(
            f"Pixel Forge rejected the API key ({said})",
            fix=f"check {KEY_VARIABLE} (or providers.pixelart.api_key)",
            **common,
        )
    if status == 402:
        return QuotaExceededError(f"Pixel Forge credits are used up ({said})", fix="top up the account", **common)
    if status == 422 and kind == "content_policy":
        return SafetyRefusalError(
            f"Pixel Forge refused the prompt for safety ({said})",
            fix="rephrase the prompt",
            **common,
        )
    if status == 429:
        return RateLimitedError(f"Pixel Forge is rate limiting ({said})", retry_after_s=_retry_after(headers), **common)
    if status >= 500:
        return UpstreamUnavailableError(f"Pixel Forge is unavailable ({said})", **common)
    return UpstreamError(f"Pixel Forge rejected the request ({said})", code="upstream_rejected", **common)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: let the core back off on its own
