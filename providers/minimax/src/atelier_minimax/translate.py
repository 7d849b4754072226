"""Pure translation between Atelier and MiniMax's ``/v1/image_generation``.

No I/O here: :func:`build_body` turns an :class:`~atelier_core.ImageRequest` into the
JSON MiniMax expects; :func:`parse_answer` turns MiniMax's answer (HTTP status, headers,
raw body) into a :class:`~atelier_core.ProviderResult` or raises the right
:mod:`atelier_core.plugin.errors` type.

MiniMax answers HTTP 200 even for API errors: the outcome is ``base_resp.status_code``
(0 = success), so every answer is read through :func:`error_for_status`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from atelier_core import (
    AtelierError,
    AuthenticationError,
    ImageRequest,
    InputImage,
    ItemFailure,
    ProviderImage,
    ProviderResult,
    QuotaExceededError,
    RateLimitedError,
    SafetyRefusalError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamUnavailableError,
    Usage,
    decode_base64,
    error_from_status,
)

from .models import RATIO_SIZES, STYLE_TYPES

__all__ = [
    "DEFAULT_STYLE_WEIGHT",
    "ENDPOINT",
    "PROVIDER",
    "STATUS_KINDS",
    "StatusKind",
    "applied_for",
    "build_body",
    "data_url",
    "decode_image",
    "error_for_http",
    "error_for_status",
    "excerpt",
    "parse_answer",
    "request_id_from",
    "style_type",
]

PROVIDER = "minimax"
ENDPOINT = "/v1/image_generation"
DEFAULT_STYLE_WEIGHT = 0.8  # MiniMax's documented default, sent explicitly when a style is set
_EXCERPT_CHARS = 200


# -- request --------------------------------------------------------------------


def style_type(style: str) -> str:
    """The wire value of a style: English names map to MiniMax's Chinese names."""
    return STYLE_TYPES.get(style.lower(), style)


def data_url(image: InputImage) -> str:
    """An input image as the ``data:`` URL MiniMax accepts in ``image_file``."""
    return f"data:{image.mime_type};base64,{base64.b64encode(image.data).decode('ascii')}"


def build_body(request: ImageRequest) -> dict[str, Any]:
    """The JSON body for one ``POST /v1/image_generation``.

    Always asks for base64 (MiniMax's URLs expire after 24 h and would need a second,
    separately capped download). A custom size is sent as ``width``/``height`` without
    ``aspect_ratio``, because MiniMax ignores the size when both are present.
    """
    body: dict[str, Any] = {
        "model": request.model,
        "prompt": request.prompt or "",
        "response_format": "base64",
        "n": request.n,
    }
    if request.width and request.height:
        body["width"] = request.width
        body["height"] = request.height
    elif request.aspect_ratio:
        body["aspect_ratio"] = request.aspect_ratio
    if request.seed is not None:
        body["seed"] = request.seed
    options = request.options
    for key in ("prompt_optimizer", "aigc_watermark"):
        if options.get(key) is not None:
            body[key] = bool(options[key])
    if request.style:
        weight = options.get("style_weight")
        body["style"] = {
            "style_type": style_type(request.style),
            "style_weight": float(weight) if weight is not None else DEFAULT_STYLE_WEIGHT,
        }
    if request.images:
        body["subject_reference"] = [{"type": "character", "image_file": data_url(image)} for image in request.images]
    return body


def applied_for(request: ImageRequest) -> dict[str, Any]:
    """What MiniMax will really do with the request (sizes it produces, defaults it uses)."""
    applied: dict[str, Any] = {}
    if request.width and request.height:
        applied["size"] = f"{request.width}x{request.height}"
    elif request.aspect_ratio and request.aspect_ratio in RATIO_SIZES:
        applied["size"] = RATIO_SIZES[request.aspect_ratio]
    if request.style:
        applied["style"] = style_type(request.style)
        weight = request.options.get("style_weight")
        applied["style_weight"] = float(weight) if weight is not None else DEFAULT_STYLE_WEIGHT
    if request.images:
        applied["subject_reference"] = "character"
    return applied


# -- errors ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusKind:
    """How one ``base_resp.status_code`` maps to an Atelier error."""

    error: type[UpstreamError]
    code: str | None  # None keeps the error class's own code
    meaning: str
    fix: str


_KEY_FIX = (
    "check MINIMAX_API_KEY (or providers.minimax.api_key). Keys are per platform: a key "
    'from platform.minimaxi.com works only with region = "cn", a key from '
    'platform.minimax.io only with region = "global"'
)

STATUS_KINDS: dict[int, StatusKind] = {
    1000: StatusKind(
        UpstreamUnavailableError,
        None,
        "MiniMax reported an unknown server error",
        "try again in a moment",
    ),
    1001: StatusKind(
        UpstreamUnavailableError,
        None,
        "MiniMax timed out internally",
        "try again in a moment",
    ),
    1002: StatusKind(
        RateLimitedError,
        None,
        "MiniMax's rate limit for this account was reached",
        "wait and try again; set providers.minimax.requests_per_minute to your plan's "
        "limit so Atelier queues requests instead",
    ),
    1004: StatusKind(AuthenticationError, None, "MiniMax rejected the API key (not authorized)", _KEY_FIX),
    1008: StatusKind(
        QuotaExceededError,
        None,
        "the MiniMax account has insufficient balance",
        "top up the account on the MiniMax platform, or use another provider",
    ),
    1024: StatusKind(
        UpstreamUnavailableError,
        None,
        "MiniMax reported an internal error",
        "try again in a moment",
    ),
    1026: StatusKind(
        SafetyRefusalError,
        None,
        "MiniMax's moderation refused the input (prompt or subject reference) as sensitive",
        "rephrase the prompt or use another reference image; repeating the same request will be refused again",
    ),
    1027: StatusKind(
        SafetyRefusalError,
        None,
        "MiniMax's moderation refused the generated image as sensitive",
        "rephrase the prompt; repeating the same request will likely be refused again",
    ),
    1039: StatusKind(
        UpstreamError,
        "upstream_rejected",
        "MiniMax's token limit was exceeded",
        "shorten the prompt",
    ),
    2013: StatusKind(
        UpstreamError,
        "upstream_rejected",
        "MiniMax refused the request's parameters",
        "check the parameters against list_available_models; report it if Atelier sent them",
    ),
    2038: StatusKind(
        AuthenticationError,
        None,
        "the MiniMax account needs real-name verification before it can call the API",
        "complete the account verification on the MiniMax platform",
    ),
    2049: StatusKind(AuthenticationError, None, "MiniMax rejected the API key as invalid", _KEY_FIX),
    2061: StatusKind(
        UpstreamError,
        "model_not_in_plan",
        "this model is not included in the MiniMax account's plan",
        "upgrade the plan, or use a model the plan includes (e.g. minimax/image-01)",
    ),
}


def error_for_status(
    status_code: int,
    status_msg: str,
    *,
    request_id: str | None = None,
    host: str | None = None,
    rate_limit_wait_s: float | None = None,
) -> AtelierError:
    """The Atelier error for a non-zero ``base_resp.status_code`` (always returned, never raised)."""
    quoted = f"{status_code} {status_msg.strip()!r}" if status_msg.strip() else str(status_code)
    kind = STATUS_KINDS.get(status_code)
    if kind is None:
        return UpstreamError(
            f"MiniMax refused the request with status {quoted}",
            code="upstream_error",
            fix="see MiniMax's error-code reference; retrying unchanged is unlikely to help",
            provider=PROVIDER,
            request_id=request_id,
        )
    fix = kind.fix
    if kind.error is AuthenticationError and host:
        fix = f"{fix} (this server calls {host})"
    return kind.error(
        f"{kind.meaning} (MiniMax status {quoted})",
        code=kind.code,
        fix=fix,
        retry_after_s=rate_limit_wait_s if kind.error is RateLimitedError else None,
        provider=PROVIDER,
        request_id=request_id,
    )


def excerpt(body: bytes, secret: str | None = None) -> str:
    """A short, one-line, redacted piece of an answer body for an error message."""
    text = body[: _EXCERPT_CHARS * 4].decode("utf-8", "replace")
    if secret:
        text = text.replace(secret, "[redacted]")
    text = " ".join(text.split())
    return text[:_EXCERPT_CHARS] + ("…" if len(text) > _EXCERPT_CHARS else "")


def error_for_http(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    request_id: str | None = None,
    host: str | None = None,
    secret: str | None = None,
    rate_limit_wait_s: float | None = None,
) -> AtelierError:
    """The Atelier error for a non-2xx HTTP answer."""
    # Some gateways and MiniMax itself may put a base_resp in a 4xx body: prefer it.
    if 400 <= status < 500:
        payload = _try_json(body)
        base = payload.get("base_resp") if isinstance(payload, dict) else None
        if isinstance(base, dict):
            code = _int_or_none(base.get("status_code"))
            if code:
                return error_for_status(
                    code,
                    str(base.get("status_msg") or ""),
                    request_id=request_id,
                    host=host,
                    rate_limit_wait_s=rate_limit_wait_s,
                )
    # Otherwise the ladder every HTTP vendor shares, with MiniMax's own fixes.
    error = error_from_status(
        status,
        excerpt(body, secret),
        provider=PROVIDER,
        headers=headers,
        request_id=request_id,
        secrets=[secret],
        key_variables=("MINIMAX_API_KEY",),
        safety=False,
    )
    if isinstance(error, AuthenticationError):
        error.fix = _KEY_FIX + (f" (this server calls {host})" if host else "")
    elif isinstance(error, RateLimitedError) and error.retry_after_s is None:
        error.retry_after_s = rate_limit_wait_s
    elif error.code == "endpoint_not_found":
        error.fix = (
            f"check providers.minimax.base_url / MINIMAX_API_HOST ({ENDPOINT} was not found): "
            "it should be the API root, e.g. https://api.minimax.io"
        )
    return error


# -- answer ---------------------------------------------------------------------


def request_id_from(headers: Mapping[str, str], payload: Any = None) -> str | None:
    """MiniMax's trace id: the ``Trace-Id`` header, else the body's ``id``."""
    for name in ("trace-id", "x-trace-id", "minimax-request-id"):
        value = headers.get(name)
        if value:
            return value.strip()[:128]
    if isinstance(payload, dict):
        value = payload.get("id")
        if isinstance(value, str | int) and str(value).strip():
            return str(value).strip()[:128]
    return None


def decode_image(item: Any) -> bytes:
    """Strict base64 → bytes; raises ``ValueError`` saying what is wrong."""
    if not isinstance(item, str) or not item.strip():
        raise ValueError("the image entry is empty or not a string")
    return decode_base64(item, what="the image")


def _mime(data: bytes) -> str | None:
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    return None  # the core sniffs and verifies every image anyway


def _try_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def parse_answer(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    requested: int,
    host: str | None = None,
    secret: str | None = None,
    rate_limit_wait_s: float | None = None,
) -> ProviderResult:
    """MiniMax's answer → result, or raise the matching Atelier error.

    ``requested`` is the ``n`` that was sent: images that did not come back are listed
    as item failures, so a partial answer saves what arrived and reports the rest.
    """
    header_id = request_id_from(headers)
    if not 200 <= status < 300:
        raise error_for_http(
            status,
            headers,
            body,
            request_id=header_id,
            host=host,
            secret=secret,
            rate_limit_wait_s=rate_limit_wait_s,
        )
    payload = _try_json(body)
    if not isinstance(payload, dict):
        what = "not JSON" if payload is None else f"JSON {type(payload).__name__}, not an object"
        ctype = headers.get("content-type", "?")
        raise UpstreamProtocolError(
            f"MiniMax answered HTTP {status} with a body that is {what} "
            f"(content-type {ctype}): {excerpt(body, secret) or '<empty>'}",
            fix="retry; if it persists, check providers.minimax.base_url points at MiniMax",
            provider=PROVIDER,
            request_id=header_id,
        )
    request_id = request_id_from(headers, payload)
    base = payload.get("base_resp")
    if base is not None and not isinstance(base, dict):
        raise UpstreamProtocolError(
            f"MiniMax's base_resp is {type(base).__name__}, not an object",
            provider=PROVIDER,
            request_id=request_id,
        )
    if base:
        code = _int_or_none(base.get("status_code", 0))
        if code is None:
            raise UpstreamProtocolError(
                f"MiniMax's base_resp.status_code is not a number: {base.get('status_code')!r}",
                provider=PROVIDER,
                request_id=request_id,
            )
        if code != 0:
            raise error_for_status(
                code,
                str(base.get("status_msg") or ""),
                request_id=request_id,
                host=host,
                rate_limit_wait_s=rate_limit_wait_s,
            )

    raw_metadata = payload.get("metadata")
    metadata: dict[str, Any] = raw_metadata if isinstance(raw_metadata, dict) else {}
    success_count = _int_or_none(metadata.get("success_count"))
    failed_count = _int_or_none(metadata.get("failed_count"))
    counts = f"success_count {success_count}, failed_count {failed_count}"
    data = payload.get("data")
    items = data.get("image_base64") if isinstance(data, dict) else None

    if not items:
        if isinstance(data, dict) and data.get("image_urls"):
            raise UpstreamProtocolError(
                "MiniMax returned image URLs although base64 was requested",
                fix="check that providers.minimax.base_url points at MiniMax's API",
                provider=PROVIDER,
                request_id=request_id,
            )
        if success_count == 0:
            raise UpstreamError(
                f"MiniMax generated no image ({counts}) and gave no reason",
                code="no_image_returned",
                fix="try again or rephrase the prompt; MiniMax often drops images its output moderation rejects",
                provider=PROVIDER,
                request_id=request_id,
            )
        raise UpstreamProtocolError(
            f"MiniMax's answer holds no images (data.image_base64 missing or empty; {counts})",
            fix="retry; if it persists, report it to MiniMax with the request id",
            provider=PROVIDER,
            request_id=request_id,
        )
    if not isinstance(items, list):
        raise UpstreamProtocolError(
            f"MiniMax's data.image_base64 is {type(items).__name__}, not a list",
            provider=PROVIDER,
            request_id=request_id,
        )

    images: list[ProviderImage] = []
    problems: list[tuple[str, str]] = []  # (code, message) per image that did not arrive
    for position, item in enumerate(items[:requested]):
        try:
            data_bytes = decode_image(item)
        except ValueError as exc:
            problems.append(("upstream_protocol_error", f"MiniMax image {position + 1}: {exc}"))
            continue
        images.append(ProviderImage(data=data_bytes, mime_type=_mime(data_bytes)))
    if not images:
        first = problems[0][1] if problems else "no image decoded"
        raise UpstreamProtocolError(
            f"none of MiniMax's {len(items)} image(s) could be decoded: {first}",
            fix="retry; the answer was probably truncated in transit",
            provider=PROVIDER,
            request_id=request_id,
        )
    missing = requested - min(len(items), requested)
    problems += [
        (
            "not_generated",
            f"MiniMax returned {len(items)} of {requested} images ({counts}); "
            "it gives no per-image reason (often its output moderation)",
        )
    ] * missing
    # The core numbers a result's images 0..k-1 and its failures after them.
    failures = [
        ItemFailure(index=len(images) + offset, code=code, message=message)
        for offset, (code, message) in enumerate(problems)
    ]
    return ProviderResult(
        images=images,
        failures=failures,
        usage=Usage(images=len(images)),
        request_id=request_id,
    )
