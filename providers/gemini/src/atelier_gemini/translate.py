"""Pure translation between Atelier's request/result and google-genai's shapes.

Nothing here does I/O or imports google-genai: requests become plain dicts the SDK
accepts (``GenerateContentConfigDict`` and friends), responses are read by attribute
(duck-typed), and errors are classified by their attributes and class names. That keeps
every rule testable without a server.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from atelier_core import (
    AtelierError,
    AuthenticationError,
    ImageRequest,
    ItemFailure,
    ModelSpec,
    Pricing,
    ProviderImage,
    ProviderResult,
    QuotaExceededError,
    RateLimitedError,
    SafetyRefusalError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    Usage,
    error_from_status,
    redact,
    retry_after_from_headers,
)

__all__ = [
    "IMAGE_BLOCK_REASONS",
    "excerpt",
    "gemini_config",
    "gemini_contents",
    "gemini_cost",
    "imagen_edit_config",
    "imagen_generate_config",
    "imagen_mask",
    "map_error",
    "parse_gemini",
    "parse_imagen",
    "retry_after_seconds",
    "usage_from_gemini",
    "vertex_only_parameters",
]

PROVIDER = "gemini"
_EXCERPT_CHARS = 200

# Candidate finish reasons that mean "refused or filtered", from google-genai 3.4
# types.FinishReason. With no image part they become a SafetyRefusalError.
IMAGE_BLOCK_REASONS = frozenset(
    {
        "SAFETY",
        "PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "IMAGE_OTHER",
        "NO_IMAGE",
        "MODEL_ARMOR",
    }
)
_REPHRASE = "rephrase the prompt (or change the input images); refusals are not retried"


def excerpt(text: str, limit: int = _EXCERPT_CHARS) -> str:
    """One line, at most ``limit`` characters (for quoting model text in errors)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _enum_name(value: Any) -> str | None:
    """``FinishReason.IMAGE_SAFETY`` / ``"IMAGE_SAFETY"`` → ``"IMAGE_SAFETY"``."""
    if value is None:
        return None
    name = getattr(value, "value", value)
    return str(name)


# -- Gemini native image models: request ------------------------------------------


def gemini_contents(request: ImageRequest) -> list[dict[str, Any]]:
    """The ``contents`` of a generateContent call: the prompt, then every input image.

    Edits and composition send all input images as inline parts of the same user turn,
    in the order given (the first is the one edited).
    """
    parts: list[dict[str, Any]] = []
    if request.prompt:
        parts.append({"text": request.prompt})
    for image in request.images:
        parts.append({"inline_data": {"data": image.data, "mime_type": image.mime_type}})
    return [{"role": "user", "parts": parts}]


def vertex_only_parameters(request: ImageRequest) -> list[tuple[str, Any]]:
    """Parameters google-genai 3.4 refuses in Developer API mode (``_ImageConfig_to_mldev``
    raises for person_generation, prominent_people, output_mime_type and
    output_compression_quality)."""
    found: list[tuple[str, Any]] = []
    for key in ("person_generation", "prominent_people"):
        if request.options.get(key) is not None:
            found.append((f"options.{key}", request.options[key]))
    if request.output_format and request.output_format != "png":
        found.append(("output_format", request.output_format))
    if request.output_compression is not None:
        found.append(("output_compression", request.output_compression))
    return found


def gemini_config(request: ImageRequest, spec: ModelSpec, *, vertex: bool) -> dict[str, Any]:
    """``GenerateContentConfig`` as a dict: image output, aspect ratio, tier, options."""
    options = request.options
    include_text = options.get("include_text", True)
    image_config: dict[str, Any] = {}
    if request.aspect_ratio:
        image_config["aspect_ratio"] = request.aspect_ratio
    if request.resolution and spec.sizes.resolutions:
        image_config["image_size"] = request.resolution
    if vertex:
        if options.get("person_generation"):
            image_config["person_generation"] = options["person_generation"]
        if options.get("prominent_people"):
            image_config["prominent_people"] = options["prominent_people"]
        if request.output_format and request.output_format != "png":
            image_config["output_mime_type"] = f"image/{request.output_format}"
        if request.output_compression is not None:
            # output_compression has OpenAI's meaning everywhere (0-100, 100 = least
            # compression, the best quality), which is what Vertex's JPEG quality means too.
            image_config["output_compression_quality"] = request.output_compression
    config: dict[str, Any] = {
        "response_modalities": ["TEXT", "IMAGE"] if include_text else ["IMAGE"],
    }
    if image_config:
        config["image_config"] = image_config
    if request.seed is not None:
        config["seed"] = request.seed
    if options.get("temperature") is not None:
        config["temperature"] = options["temperature"]
    return config


# -- Gemini native image models: response ------------------------------------------


def usage_from_gemini(metadata: Any, images: int) -> Usage | None:
    """``usage_metadata`` → :class:`Usage` (input split by modality when reported)."""
    if metadata is None:
        return None
    text_in = image_in = None
    for detail in getattr(metadata, "prompt_tokens_details", None) or ():
        modality = _enum_name(getattr(detail, "modality", None))
        count = getattr(detail, "token_count", None) or 0
        if modality == "TEXT":
            text_in = (text_in or 0) + count
        elif modality == "IMAGE":
            image_in = (image_in or 0) + count
    output = getattr(metadata, "candidates_token_count", None)
    thoughts = getattr(metadata, "thoughts_token_count", None)
    if thoughts:
        output = (output or 0) + thoughts  # thinking tokens are billed as output
    return Usage(
        input_tokens=getattr(metadata, "prompt_token_count", None),
        output_tokens=output,
        total_tokens=getattr(metadata, "total_token_count", None),
        input_text_tokens=text_in,
        input_image_tokens=image_in,
        images=images,
    )


def gemini_cost(metadata: Any, pricing: Pricing | None, output_text_per_mtok: float | None) -> float | None:
    """USD from reported tokens: image output tokens at the image rate, text and thinking
    output at the text rate, input by modality. ``None`` without usage or prices."""
    if metadata is None or pricing is None or pricing.output_image_per_mtok is None:
        return None
    image_out = text_out = 0
    details = getattr(metadata, "candidates_tokens_details", None) or ()
    for detail in details:
        modality = _enum_name(getattr(detail, "modality", None))
        count = getattr(detail, "token_count", None) or 0
        if modality == "IMAGE":
            image_out += count
        else:
            text_out += count
    if not details:
        image_out = getattr(metadata, "candidates_token_count", None) or 0
    text_out += getattr(metadata, "thoughts_token_count", None) or 0
    cost = image_out * pricing.output_image_per_mtok
    if output_text_per_mtok is not None:
        cost += text_out * output_text_per_mtok
    usage = usage_from_gemini(metadata, 0)
    assert usage is not None
    text_in, image_in = usage.input_text_tokens, usage.input_image_tokens
    if text_in is None and image_in is None:
        text_in = usage.input_tokens
    if text_in and pricing.input_text_per_mtok is not None:
        cost += text_in * pricing.input_text_per_mtok
    if image_in and pricing.input_image_per_mtok is not None:
        cost += image_in * pricing.input_image_per_mtok
    return round(cost / 1_000_000, 6)


def parse_gemini(response: Any, request: ImageRequest, *, model: str) -> ProviderResult:
    """A generateContent response → images, texts and usage; or the right error.

    Never an empty success: a prompt block, a refusing finish reason, or a text-only
    answer each raise, quoting what the model said.
    """
    request_id = getattr(response, "response_id", None)
    feedback = getattr(response, "prompt_feedback", None)
    block = _enum_name(getattr(feedback, "block_reason", None)) if feedback is not None else None
    candidates = list(getattr(response, "candidates", None) or ())
    if block and block != "BLOCKED_REASON_UNSPECIFIED":
        detail = getattr(feedback, "block_reason_message", None)
        raise SafetyRefusalError(
            f"{model} refused the prompt: block reason {block}" + (f" ({excerpt(detail)})" if detail else ""),
            fix=_REPHRASE,
            provider=PROVIDER,
            request_id=request_id,
        )
    if not candidates:
        raise UpstreamProtocolError(
            f"{model} answered with no candidates and no block reason",
            code="no_image_returned",
            provider=PROVIDER,
            request_id=request_id,
            fix="try again; report it if it persists",
        )
    images: list[ProviderImage] = []
    texts: list[str] = []
    reasons: list[str] = []
    for candidate in candidates:
        reason = _enum_name(getattr(candidate, "finish_reason", None))
        if reason:
            reasons.append(reason)
        content = getattr(candidate, "content", None)
        for part in getattr(content, "parts", None) or ():
            if getattr(part, "thought", None):
                continue  # interim "thinking" images and text are not results
            blob = getattr(part, "inline_data", None)
            data = getattr(blob, "data", None) if blob is not None else None
            mime = getattr(blob, "mime_type", None) if blob is not None else None
            if data and (mime is None or str(mime).startswith("image/")):
                images.append(ProviderImage(data=data, mime_type=mime))
            text = getattr(part, "text", None)
            if text and text.strip():
                texts.append(text.strip())
    if not images:
        said = f' The model said: "{excerpt(" ".join(texts))}"' if texts else ""
        blocked = [r for r in reasons if r in IMAGE_BLOCK_REASONS]
        if blocked:
            message = getattr(candidates[0], "finish_message", None)
            extra = f" ({excerpt(message)})" if message else ""
            raise SafetyRefusalError(
                f"{model} returned no image: finish reason {blocked[0]}{extra}.{said}",
                fix=_REPHRASE,
                provider=PROVIDER,
                request_id=request_id,
            )
        why = f"finish reason {reasons[0]}" if reasons else "no finish reason"
        raise UpstreamProtocolError(
            f"{model} returned no image ({why}).{said}",
            code="no_image_returned",
            provider=PROVIDER,
            request_id=request_id,
            fix="ask explicitly for an image in the prompt, or rephrase it",
        )
    kept = images[: max(1, request.n)]
    return ProviderResult(
        images=kept,
        texts=texts,
        usage=usage_from_gemini(getattr(response, "usage_metadata", None), len(kept)),
        request_id=request_id,
    )


# -- Imagen -------------------------------------------------------------------------


def _imagen_common(request: ImageRequest) -> tuple[dict[str, Any], dict[str, Any]]:
    """Config shared by generate and edit, plus what was applied on the caller's behalf."""
    options = request.options
    config: dict[str, Any] = {"number_of_images": request.n, "include_rai_reason": True}
    applied: dict[str, Any] = {}
    if request.aspect_ratio:
        config["aspect_ratio"] = request.aspect_ratio
    if request.negative_prompt:
        config["negative_prompt"] = request.negative_prompt
    if request.output_format:
        config["output_mime_type"] = f"image/{request.output_format}"
    if request.output_compression is not None:  # same scale as OpenAI's (100 = best quality)
        config["output_compression_quality"] = request.output_compression
    for key in ("person_generation", "safety_filter_level", "guidance_scale", "enhance_prompt"):
        if options.get(key) is not None:
            config[key] = options[key]
    watermark = options.get("add_watermark")
    if request.seed is not None:
        config["seed"] = request.seed
        if watermark is None:
            # Imagen ignores a seed while the (default) watermark is on.
            watermark = False
            applied["options.add_watermark"] = False
    if watermark is not None:
        config["add_watermark"] = watermark
    return config, applied


def imagen_generate_config(request: ImageRequest, spec: ModelSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """``GenerateImagesConfig`` as a dict, and parameters applied on the caller's behalf."""
    config, applied = _imagen_common(request)
    if request.resolution and spec.sizes.resolutions:
        config["image_size"] = request.resolution
    return config, applied


_EDIT_MODES = {
    "inpaint_insertion": "EDIT_MODE_INPAINT_INSERTION",
    "inpaint_removal": "EDIT_MODE_INPAINT_REMOVAL",
    "outpaint": "EDIT_MODE_OUTPAINT",
    "bgswap": "EDIT_MODE_BGSWAP",
}
_MASK_MODES = {
    "user_provided": "MASK_MODE_USER_PROVIDED",
    "background": "MASK_MODE_BACKGROUND",
    "foreground": "MASK_MODE_FOREGROUND",
}


def imagen_edit_config(request: ImageRequest) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``EditImageConfig`` dict, mask reference settings, and applied parameters."""
    config, applied = _imagen_common(request)
    options = request.options
    mask_mode = options.get("mask_mode") or ("user_provided" if request.mask is not None else None)
    if mask_mode or options.get("edit_mode"):
        config["edit_mode"] = _EDIT_MODES[options.get("edit_mode") or "inpaint_insertion"]
    else:
        # No mask and no mode: a mask-free edit of the whole image from the prompt.
        config["edit_mode"] = "EDIT_MODE_DEFAULT"
    mask: dict[str, Any] = {"mask_mode": _MASK_MODES[mask_mode] if mask_mode else None}
    if options.get("mask_dilation") is not None:
        mask["mask_dilation"] = options["mask_dilation"]
    return config, mask, applied


def imagen_mask(data: bytes) -> bytes:
    """Atelier's mask (transparent pixels = area to change) → Imagen's (white = change).

    Imagen reads a black-and-white mask; Atelier follows the OpenAI convention where
    alpha 0 marks the editable area, so the alpha channel is inverted into a grey PNG.
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as source:
        alpha = source.convert("RGBA").getchannel("A")
    mask = alpha.point(lambda a: 255 if a == 0 else 0)
    out = io.BytesIO()
    mask.save(out, "PNG")
    return out.getvalue()


def parse_imagen(response: Any, request: ImageRequest, *, model: str) -> ProviderResult:
    """A ``:predict`` response → images plus one failure per filtered or missing image."""
    images: list[ProviderImage] = []
    failures: list[ItemFailure] = []
    refusals: list[str] = []
    for generated in getattr(response, "generated_images", None) or ():
        image = getattr(generated, "image", None)
        data = getattr(image, "image_bytes", None) if image is not None else None
        if data:
            images.append(
                ProviderImage(
                    data=data,
                    mime_type=getattr(image, "mime_type", None),
                    revised_prompt=getattr(generated, "enhanced_prompt", None),
                )
            )
            continue
        reason = getattr(generated, "rai_filtered_reason", None)
        index = len(images) + len(failures)
        if reason:
            refusals.append(str(reason))
            failures.append(
                ItemFailure(index=index, code="safety_refusal", message=f"filtered by Imagen: {excerpt(str(reason))}")
            )
        else:
            failures.append(ItemFailure(index=index, code="no_image_returned", message="an item held no image"))
    missing = request.n - len(images) - len(failures)
    for _ in range(max(0, missing)):
        failures.append(
            ItemFailure(
                index=len(images) + len(failures),
                code="no_image_returned",
                message=f"{model} returned {len(images)} of {request.n} image(s) without a reason for the rest",
            )
        )
    if not images:
        if refusals:
            raise SafetyRefusalError(
                f"{model} filtered every image: {excerpt('; '.join(dict.fromkeys(refusals)))}",
                fix=_REPHRASE,
                provider=PROVIDER,
            )
        raise UpstreamProtocolError(
            f"{model} returned no image and no filter reason",
            code="no_image_returned",
            provider=PROVIDER,
            fix="try again, or rephrase the prompt",
        )
    return ProviderResult(
        images=images[: request.n],
        failures=failures,
        usage=Usage(images=len(images)),
    )


# -- errors -------------------------------------------------------------------------

_TIMEOUT_NAMES = {"TimeoutException", "ReadTimeout", "WriteTimeout", "PoolTimeout", "ConnectTimeout", "TimeoutError"}
_CONNECTION_NAMES = {
    "ConnectError",
    "ReadError",
    "WriteError",
    "NetworkError",
    "RemoteProtocolError",
    "ProtocolError",
    "ConnectionError",
    "ClientConnectionError",
    "ServerDisconnectedError",
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def retry_after_seconds(headers: Any, details: Any) -> float | None:
    """``Retry-After`` (seconds) or Google's ``RetryInfo.retryDelay`` ("31s"), if any."""
    try:
        seconds = retry_after_from_headers(headers)
    except Exception:  # a header container we do not know: no hint
        seconds = None
    if seconds is not None:
        return seconds
    for item in _detail_items(details):
        if str(item.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DURATION.match(str(item.get("retryDelay", "")))
            if match:
                return float(match[1])
    return None


def _detail_items(details: Any) -> Iterable[dict[str, Any]]:
    error = details.get("error", details) if isinstance(details, dict) else {}
    items = error.get("details") if isinstance(error, dict) else None
    return [item for item in items or () if isinstance(item, dict)]


def _scrub(text: str, secrets: Sequence[str]) -> str:
    return redact(text, secrets)


def map_error(
    exc: BaseException,
    *,
    model: str,
    key_vars: Sequence[str],
    secrets: Sequence[str] = (),
    imagen: bool = False,
) -> AtelierError:
    """Classify a google-genai or transport failure as an Atelier error.

    429 → rate limited (per-day quota → quota exceeded); 5xx and connection failures →
    unavailable (retryable); timeouts → timeout (not retried: may be billed); 401/403 and
    invalid keys → authentication; 404 → unknown model upstream; other 4xx → upstream
    error quoting Google's message; undecodable answers → protocol error.
    """
    if isinstance(exc, AtelierError):
        return exc
    names = _names(exc)
    code = getattr(exc, "code", None)
    if "APIError" in names and isinstance(code, int):
        return _map_api_error(exc, code, model=model, key_vars=key_vars, secrets=secrets, imagen=imagen)
    if names & _TIMEOUT_NAMES:
        return UpstreamTimeoutError(
            f"{model} did not answer in time",
            provider=PROVIDER,
            fix="raise providers.gemini.timeout_s, or try a faster model or a lower resolution; "
            "the generation may still have been billed, so it is not retried automatically",
        )
    if names & _CONNECTION_NAMES:
        return UpstreamUnavailableError(
            f"could not reach the Gemini API for {model}: {type(exc).__name__}",
            provider=PROVIDER,
            fix="check the network and providers.gemini.base_url; Atelier retries this automatically",
        )
    if names & {"JSONDecodeError", "ValidationError", "ValueError", "UnicodeDecodeError"}:
        return UpstreamProtocolError(
            f"{model} sent an answer that could not be read ({type(exc).__name__}: "
            f"{excerpt(_scrub(str(exc), secrets), 160)})",
            provider=PROVIDER,
            fix="try again; if it persists, check that providers.gemini.base_url points at a Gemini API",
        )
    return UpstreamError(
        f"{model} failed: {type(exc).__name__}: {excerpt(_scrub(str(exc), secrets), 160)}",
        provider=PROVIDER,
    )


def _map_api_error(
    exc: BaseException,
    code: int,
    *,
    model: str,
    key_vars: Sequence[str],
    secrets: Sequence[str],
    imagen: bool,
) -> AtelierError:
    status = getattr(exc, "status", None) or ""
    raw_message = getattr(exc, "message", None) or ""
    message = excerpt(_scrub(str(raw_message), secrets), 300) or "no message"
    details = getattr(exc, "details", None)
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    said = f"Google said: {status + ' ' if status else ''}{message}"
    keys = " or ".join(key_vars)
    detail_text = json.dumps(list(_detail_items(details)))
    if code == 429:
        # A per-day quota (or a model with no quota at all on this tier) will not clear
        # with a retry in seconds: report it as exhausted, not as a rate limit.
        if "PerDay" in detail_text or "limit: 0" in message:
            return QuotaExceededError(
                f"{model}: quota exhausted. {said}",
                provider=PROVIDER,
                fix="wait for the quota to reset or raise it (billing / quota settings in Google AI Studio "
                "or the Cloud console)",
            )
        return RateLimitedError(
            f"{model}: rate limited. {said}",
            provider=PROVIDER,
            retry_after_s=retry_after_seconds(headers, details),
            fix="slow down (providers.gemini.requests_per_minute / max_concurrency); Atelier retries it",
        )
    if code in (401, 403) or "API_KEY_INVALID" in detail_text or "API key not valid" in message:
        return AuthenticationError(
            f"{model}: Google rejected the credentials ({code}). {said}",
            provider=PROVIDER,
            fix=f"set a valid key in {keys}, or for Vertex AI check GOOGLE_CLOUD_PROJECT and the "
            "application default credentials (gcloud auth application-default login)",
        )
    if code == 404:
        fix = "call list_available_models; the model id may be wrong or not enabled for your key/project"
        if imagen:
            fix = (
                "Google discontinued the Imagen endpoints (migration to Gemini image models was due "
                "by 2026-06-30); use gemini/gemini-3.1-flash-image or gemini/gemini-3-pro-image"
            )
        return UpstreamError(
            f"{model} is not available upstream (404). {said}", code="model_not_found", provider=PROVIDER, fix=fix
        )
    # The rest is the ladder every HTTP vendor shares (the core's).
    error = error_from_status(
        code,
        f"{status + ' ' if status else ''}{message}",
        provider=PROVIDER,
        model=model.removeprefix(f"{PROVIDER}/"),
        headers=headers,
        secrets=secrets,
        safety=False,
    )
    if error.code == "upstream_rejected":
        error.fix = "change the parameter Google names above (list_available_models shows the allowed values)"
    return error
