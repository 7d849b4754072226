"""Pure translation between Atelier and the OpenAI Images API.

Nothing here does I/O. Requests become the keyword arguments of ``images.generate`` /
``images.edit``; responses (``ImagesResponse`` or streamed completed events) become a
:class:`~atelier_core.ProviderResult`; SDK exceptions become Atelier errors. The SDK is
imported only inside :func:`map_error`, never at module import.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from atelier_core import (
    AtelierError,
    AuthenticationError,
    ConfigurationError,
    ImageRequest,
    InputImage,
    ItemFailure,
    Operation,
    ProviderImage,
    ProviderResult,
    QuotaExceededError,
    RetiredModel,
    RetiredModelError,
    SafetyRefusalError,
    UnknownModelError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    Usage,
    decode_base64,
    error_from_status,
    retry_after_from_headers,
)
from atelier_core import redact as core_redact

from . import host_prices
from .host_prices import host_cost
from .settings import OpenAISettings

__all__ = [
    "PROVIDER",
    "edit_kwargs",
    "generate_kwargs",
    "image_from_b64",
    "map_error",
    "parse_retry_after",
    "partials_for",
    "redact",
    "responses_kwargs",
    "result_from_items",
    "result_from_response",
    "usage_from",
]

PROVIDER = "openai"
_SAFETY_CODES = {"moderation_blocked", "content_policy_violation", "image_content_policy_violation"}
_QUOTA_CODES = {"insufficient_quota", "billing_hard_limit_reached", "billing_not_active"}
_KEYLIKE = re.compile(r"\b(sk-[A-Za-z0-9_\-*]{4,}|[A-Za-z0-9]{32,})\b")
_MAX_MESSAGE = 400


# -- requests ------------------------------------------------------------------------


def partials_for(request: ImageRequest, settings: OpenAISettings) -> int:
    """How many partial previews to stream for this call (0 = plain, non-streaming call).

    GIF and SVG output cannot stream ("does not support streaming, partial images"), so
    the settings default never applies to them; an explicit option is refused in check().
    """
    explicit = request.options.get("partial_images")
    if explicit is not None:
        return int(explicit)
    if request.output_format in ("gif", "svg"):
        return 0
    return settings.partial_images


def _common(request: ImageRequest, settings: OpenAISettings, partials: int) -> dict[str, Any]:
    options = request.options
    kwargs: dict[str, Any] = {
        "model": settings.upstream_model(request.model),
        "prompt": request.prompt or "",
        "n": request.n,
        "size": request.size or "auto",
    }
    optional = {
        "quality": request.quality,
        "output_format": request.output_format,
        "output_compression": request.output_compression,
        "background": request.background,
        "complexity": options.get("complexity"),
        "safety_identifier": options.get("safety_identifier"),
        "frame_count": options.get("frame_count"),
        "frame_duration_ms": options.get("frame_duration_ms"),
    }
    kwargs.update({key: value for key, value in optional.items() if value is not None})
    svg: dict[str, Any] = {}
    if options.get("svg_model") is not None:
        svg["model"] = options["svg_model"]
    if options.get("svg_reasoning_effort") is not None:
        svg["reasoning"] = {"effort": options["svg_reasoning_effort"]}
    if svg:
        kwargs["svg"] = svg
    if partials > 0:
        kwargs["stream"] = True
        kwargs["partial_images"] = partials
    return kwargs


def generate_kwargs(request: ImageRequest, settings: OpenAISettings, partials: int = 0) -> dict[str, Any]:
    """Keyword arguments for ``client.images.generate`` (every parameter mapped)."""
    kwargs = _common(request, settings, partials)
    if request.options.get("moderation") is not None:
        kwargs["moderation"] = request.options["moderation"]
    return kwargs


def _file(image: InputImage, name: str | None = None) -> tuple[str, bytes, str]:
    return (name or image.filename, image.data, image.mime_type)


def edit_kwargs(request: ImageRequest, settings: OpenAISettings, partials: int = 0) -> dict[str, Any]:
    """Keyword arguments for ``client.images.edit``: multipart files plus fields.

    Several images go as the ``image[]`` array; one image as a plain ``image`` part.
    With ``options.markup`` the last image is sent as ``markup`` instead (see models.py).
    """
    kwargs = _common(request, settings, partials)
    images: Sequence[InputImage] = request.images
    if request.options.get("markup"):
        *images, overlay = images
        kwargs["markup"] = _file(overlay, "markup.png")
    files = [_file(image, _unique_name(image, index)) for index, image in enumerate(images)]
    kwargs["image"] = files[0] if len(files) == 1 else files
    if request.mask is not None:
        kwargs["mask"] = _file(request.mask, "mask.png")
    if request.options.get("input_fidelity") is not None:
        kwargs["input_fidelity"] = request.options["input_fidelity"]
    return kwargs


def _data_url(image: InputImage) -> str:
    import base64

    return f"data:{image.mime_type};base64,{base64.b64encode(image.data).decode()}"


# Image-tool fields that mean the same as the Images API parameters of the same name.
_TOOL_FIELDS = ("quality", "output_format", "output_compression", "background")
_TOOL_OPTIONS = ("moderation", "input_fidelity", "complexity", "frame_count", "frame_duration_ms")


def responses_kwargs(request: ImageRequest, settings: OpenAISettings) -> dict[str, Any]:
    """Keyword arguments for ``client.responses.create`` with the ``image_generation`` tool.

    The host model (``settings.responses_model``) is made to call the tool once. Input
    images go as ``input_image`` data URLs, the mask as ``input_image_mask``. With
    ``options.previous_response_id`` the turn continues that response (OpenAI keeps the
    earlier image in the conversation), so the first image is not uploaded again unless
    a mask must apply to it.
    """
    options = request.options
    tool: dict[str, Any] = {
        "type": "image_generation",
        "model": settings.upstream_model(request.model),
        "action": "edit" if request.operation is Operation.EDIT else "generate",
        "size": request.size or "auto",
    }
    tool.update({k: getattr(request, k) for k in _TOOL_FIELDS if getattr(request, k) is not None})
    tool.update({k: options[k] for k in _TOOL_OPTIONS if options.get(k) is not None})
    previous = options.get("previous_response_id")
    images = list(request.images)
    if previous and images and request.mask is None:
        images = images[1:]  # the chained conversation already holds the image being edited
    content: list[dict[str, Any]] = [{"type": "input_text", "text": request.prompt or ""}]
    content += [{"type": "input_image", "image_url": _data_url(image)} for image in images]
    if request.mask is not None:
        tool["input_image_mask"] = {"image_url": _data_url(request.mask)}
    kwargs: dict[str, Any] = {
        "model": settings.responses_model,
        "input": [{"role": "user", "content": content}],
        "tools": [tool],
        "tool_choice": {"type": "image_generation"},
        "store": True,  # previous_response_id needs the response kept
    }
    if previous:
        kwargs["previous_response_id"] = previous
    if options.get("safety_identifier"):
        kwargs["safety_identifier"] = options["safety_identifier"]
    return kwargs


def result_from_response(
    response: Any, request: ImageRequest, *, request_id: str | None, host_model: str, settings: OpenAISettings
) -> ProviderResult:
    """A Responses API answer → result: each ``image_generation_call`` is one image.

    The response id comes back in ``continuation`` (edit sessions send it as
    ``options.previous_response_id`` with the next turn). A call that failed inside the
    tool (moderation) is a safety refusal when no image came back.
    """
    calls = [
        item
        for item in (getattr(response, "output", None) or [])
        if getattr(item, "type", None) == "image_generation_call"
    ]
    refused = [c for c in calls if getattr(c, "error", None) is not None and not getattr(c, "result", None)]
    items = [
        SimpleNamespace(b64_json=c.result, revised_prompt=getattr(c, "revised_prompt", None))
        for c in calls
        if getattr(c, "result", None)
    ]
    if not items and refused:
        error = refused[0].error
        raise _safety(str(getattr(error, "message", "") or "image generation was blocked"), None, request_id)
    if not items:
        raise UpstreamProtocolError(
            "openai's Responses API answered without an image_generation_call result "
            f"(the host model {host_model} did not produce an image)",
            provider=PROVIDER,
            request_id=request_id,
            fix="try again, or use options.route=images",
        )
    applied = applied_from(calls[0]) | {"route": "responses"}
    notes, extra = _host_charge(getattr(response, "usage", None), host_model, settings)
    result = result_from_items(items, request, usage=None, request_id=request_id, applied=applied)
    result.notes.extend(notes)
    result.extra_cost_usd = extra
    response_id = getattr(response, "id", None)
    if response_id:
        result.continuation = {"route": "responses", "previous_response_id": str(response_id)}
    return result


def _host_charge(usage: Any, host_model: str, settings: OpenAISettings) -> tuple[list[str], float | None]:
    """The host model's token charge (``extra_cost_usd``) and a note that says what it is."""
    tokens_in = getattr(usage, "input_tokens", None) if usage is not None else None
    tokens_out = getattr(usage, "output_tokens", None) if usage is not None else None
    price = host_prices.price_of(host_model, settings.responses_model_prices)
    if not isinstance(tokens_in, int) or not isinstance(tokens_out, int):
        return [
            f"the Responses API host model {host_model} reported no token usage: its tokens are billed "
            "by OpenAI on top of the image but are not in this cost"
        ], None
    if price is None:
        return [
            f"the Responses API host model {host_model} used {tokens_in} input and {tokens_out} output "
            "tokens; it has no known price, so they are not in this cost (set "
            "providers.openai.responses_model_prices)"
        ], None
    charge = host_cost(price, tokens_in, tokens_out)
    return [
        f"the cost includes ${charge:.6f} for the Responses API host model {host_model}: {tokens_in} input "
        f"and {tokens_out} output tokens at ${price.input_per_mtok:g}/${price.output_per_mtok:g} per 1M "
        f"(prices as of {price.as_of})"
    ], charge


def _unique_name(image: InputImage, index: int) -> str:
    stem, _, ext = image.filename.rpartition(".")
    return f"{index}-{stem or 'image'}.{ext}"


# -- responses -----------------------------------------------------------------------


def image_from_b64(text: str | None, *, expected_format: str | None, max_bytes: int | None = None) -> ProviderImage:
    """Decode one returned image strictly and check it is an image at all.

    Full verification (complete decode, truncation, pixel cap) is the core's job: the
    router verifies every image before anything is stored (see ``atelier_core.media.images``),
    so it is not done twice here. This catches what only the provider can tell apart:
    a missing field, broken base64, bytes that are no image format at all.
    """
    if not text:
        raise UpstreamProtocolError("openai returned an image entry without b64_json", provider=PROVIDER)
    if max_bytes is not None and len(text) > 4 * -(-max_bytes // 3) + 4:
        # Bounded before decoding: the core's cap for the requested size and format.
        raise UpstreamProtocolError(
            f"openai returned {len(text):,} characters of base64 for one image, more than the "
            f"{max_bytes:,} bytes an image of the requested size and format can take; not decoded",
            code="upstream_answer_too_large",
            provider=PROVIDER,
            retryable=False,
            fix="do not retry blindly (the call may have been billed); ask for a smaller size",
        )
    try:
        data = decode_base64(text, what="the image data")
    except ValueError as exc:
        raise UpstreamProtocolError(f"openai returned unusable image data: {exc}", provider=PROVIDER) from None
    if expected_format == "svg":
        head = data[:512].lstrip().lower()
        if not (head.startswith(b"<svg") or head.startswith(b"<?xml")) or b"</svg>" not in data[-512:].lower():
            raise UpstreamProtocolError(
                "openai returned SVG output that is not a complete SVG document", provider=PROVIDER
            )
        return ProviderImage(data=data, mime_type="image/svg+xml")
    from atelier_core.media.images import sniff  # Pillow-free, but keep import time minimal

    fmt = sniff(data)
    if fmt is None:
        raise UpstreamProtocolError(
            "openai returned data that is not a PNG, JPEG, WebP or GIF image", provider=PROVIDER
        )
    return ProviderImage(data=data, mime_type=f"image/{fmt}")


def usage_from(usage: Any, images: int | None = None) -> Usage | None:
    """SDK usage (``ImagesResponse.usage`` or a completed event's) → :class:`Usage`."""
    if usage is None:
        return None if images is None else Usage(images=images)
    details = getattr(usage, "input_tokens_details", None)
    return Usage(
        input_tokens=getattr(usage, "input_tokens", None),
        output_tokens=getattr(usage, "output_tokens", None),
        total_tokens=getattr(usage, "total_tokens", None),
        input_text_tokens=getattr(details, "text_tokens", None) if details is not None else None,
        input_image_tokens=getattr(details, "image_tokens", None) if details is not None else None,
        images=images,
    )


def result_from_items(
    items: Iterable[Any],
    request: ImageRequest,
    *,
    usage: Any = None,
    request_id: str | None = None,
    applied: Mapping[str, Any] | None = None,
    texts: Sequence[str] = (),
) -> ProviderResult:
    """Image items (anything with ``b64_json``) → result with per-item failures.

    Images that decode are kept even when others fail (they were generated and billed);
    if none decode, the call fails with :class:`UpstreamProtocolError`.
    """
    images: list[ProviderImage] = []
    failures: list[ItemFailure] = []
    seen = 0
    for index, item in enumerate(items):
        seen += 1
        try:
            image = image_from_b64(
                getattr(item, "b64_json", None),
                expected_format=request.output_format,
                max_bytes=request.max_image_bytes(),
            )
        except AtelierError as exc:
            if getattr(item, "b64_json", None) is None and getattr(item, "url", None):
                message = "openai returned a URL instead of base64 data (not a GPT Image answer)"
            else:
                message = exc.message
            failures.append(ItemFailure(index=index, code=exc.code, message=message))
            continue
        images.append(image.model_copy(update={"revised_prompt": getattr(item, "revised_prompt", None)}))
    if not images:
        if failures:
            first = failures[0]
            more = f" ({len(failures)} of {seen} images failed)" if seen > 1 else ""
            raise UpstreamProtocolError(
                first.message + more,
                provider=PROVIDER,
                request_id=request_id,
                code=first.code,
                fix="try again; nothing was saved",
            )
        raise UpstreamProtocolError(
            "openai answered without any image",
            provider=PROVIDER,
            request_id=request_id,
            fix="try again; nothing was saved",
        )
    for missing in range(seen, request.n):
        failures.append(
            ItemFailure(
                index=missing, code="no_image_returned", message=f"openai returned {seen} of {request.n} images"
            )
        )
    return ProviderResult(
        images=images,
        failures=failures,
        usage=usage_from(usage, len(images)),
        request_id=request_id,
        applied={k: v for k, v in (applied or {}).items() if v is not None},
        texts=list(texts),
    )


def applied_from(response: Any) -> dict[str, Any]:
    """What OpenAI reports it used (size for ``auto``, quality, background, format)."""
    return {name: getattr(response, name, None) for name in ("size", "quality", "background", "output_format")}


# -- errors --------------------------------------------------------------------------


def redact(text: str, secret: str | None = None) -> str:
    """Remove a key (and anything key-shaped) from an upstream message; bound its length."""
    text = " ".join(core_redact(text, [secret]).split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


# Retry-After parsing is the core's (shared by every provider).
parse_retry_after = retry_after_from_headers


def _body_fields(exc: Any) -> tuple[str | None, str | None, str | None, str]:
    """(code, type, param, message) from an SDK APIError."""
    body = getattr(exc, "body", None)
    code = getattr(exc, "code", None)
    etype = getattr(exc, "type", None)
    param = getattr(exc, "param", None)
    message = None
    if isinstance(body, Mapping):
        message = body.get("message")
    if not isinstance(message, str) or not message:
        message = getattr(exc, "message", None) or type(exc).__name__
    return code, etype, param, str(message)


def map_error(
    exc: BaseException,
    *,
    model: str,
    settings: OpenAISettings,
    known: Sequence[str] = (),
    retired: Sequence[RetiredModel] = (),
    operation: Operation = Operation.GENERATE,
) -> AtelierError:
    """An SDK (or decoding) exception → the Atelier error the caller should see."""
    import openai

    secret = settings.api_key.get_secret_value() if settings.api_key else None
    if isinstance(exc, AtelierError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return UpstreamTimeoutError(
            f"openai did not answer {model} within {settings.timeout_s:g}s; the image may still "
            "have been generated and billed, so it was not resubmitted",
            provider=PROVIDER,
            fix="try again later, ask for a smaller size or lower quality, or raise providers.openai.timeout_s",
        )
    if isinstance(exc, openai.APIConnectionError):
        cause = f"{type(exc.__cause__).__name__}: {exc.__cause__}" if exc.__cause__ else ""
        if "message body" in cause or "incomplete" in cause.lower():
            # The answer had started: the image was probably generated (and billed).
            return UpstreamError(
                "openai's answer broke off before it was complete; the image may still have "
                "been generated and billed, so it was not resubmitted",
                code="upstream_incomplete_answer",
                provider=PROVIDER,
                fix="try again if you want a new image; nothing was saved",
            )
        return UpstreamUnavailableError(
            f"could not reach openai at {settings.base_url or 'api.openai.com'}: {redact(str(exc.__cause__ or exc), secret)}",
            provider=PROVIDER,
            fix="check the network and OPENAI_BASE_URL; the call is retried automatically",
        )
    if isinstance(exc, openai.APIResponseValidationError):
        return UpstreamProtocolError(
            f"openai's answer did not match the Images API schema: {redact(exc.message, secret)}",
            provider=PROVIDER,
            request_id=_request_id(exc),
        )
    if isinstance(exc, openai.APIStatusError):
        return _status_error(
            exc, model=model, settings=settings, known=known, retired=retired, secret=secret, operation=operation
        )
    if isinstance(exc, openai.APIError):  # an error event inside a stream
        code, etype, _param, message = _body_fields(exc)
        if code in _SAFETY_CODES or ((etype or "").endswith("user_error") and "safety" in message.lower()):
            return _safety(message, secret, None)
        return UpstreamError(
            f"openai reported an error while streaming: {redact(message, secret)}" + (f" ({code})" if code else ""),
            provider=PROVIDER,
            fix="try again; no image was saved",
        )
    if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)):
        return UpstreamProtocolError(
            "openai answered with malformed JSON", provider=PROVIDER, fix="try again; nothing was saved"
        )
    if isinstance(exc, openai.OpenAIError):
        return UpstreamError(f"openai client error: {redact(str(exc), secret)}", provider=PROVIDER)
    return UpstreamProtocolError(
        f"openai's answer could not be read ({type(exc).__name__}: {redact(str(exc), secret)})",
        provider=PROVIDER,
    )


def _request_id(exc: Any) -> str | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    value = headers.get("x-request-id")
    return str(value) if value else None


def _safety(message: str, secret: str | None, request_id: str | None) -> SafetyRefusalError:
    return SafetyRefusalError(
        f"openai's safety system refused the request: {redact(message, secret)}",
        provider=PROVIDER,
        request_id=request_id,
        fix="rephrase the prompt (or change the input images) to stay within OpenAI's usage "
        "policies; retrying unchanged will be refused again",
    )


def _status_error(
    exc: Any,
    *,
    model: str,
    settings: OpenAISettings,
    known: Sequence[str],
    retired: Sequence[RetiredModel],
    secret: str | None,
    operation: Operation,
) -> AtelierError:
    status = int(exc.status_code)
    code, etype, param, message = _body_fields(exc)
    request_id = getattr(exc, "request_id", None) or _request_id(exc)
    text = redact(message, secret)
    headers = getattr(getattr(exc, "response", None), "headers", None)
    var = settings.key_variable

    if code in _SAFETY_CODES or (status == 400 and "safety system" in message.lower()):
        return _safety(message, secret, request_id)
    if status == 429 and (code in _QUOTA_CODES or etype in _QUOTA_CODES):
        return QuotaExceededError(
            f"openai quota exhausted: {text}",
            provider=PROVIDER,
            request_id=request_id,
            fix="add credit or raise the project's usage limit at platform.openai.com; waiting will not help",
        )
    if status == 401:
        return AuthenticationError(
            f"openai rejected the API key (401): {text}",
            provider=PROVIDER,
            request_id=request_id,
            fix=f"set a valid key in {var} (or ATELIER_PROVIDERS__OPENAI__API_KEY) and restart",
        )
    if status == 403:
        return AuthenticationError(
            f"openai refused access to {model} (403): {text}",
            provider=PROVIDER,
            request_id=request_id,
            fix=f"use a key from a project with access to {model} (organization verification may be "
            f"required) in {var}, or choose another model",
        )
    if status == 404:
        if settings.azure:
            return ConfigurationError(
                f"Azure OpenAI has no deployment named {settings.upstream_model(model)!r} for {model} (404): {text}",
                provider=PROVIDER,
                request_id=request_id,
                fix=f'set providers.openai.model_names = {{"{model}" = "<deployment>"}}',
            )
        for info in retired:
            if info.id == model:
                error: AtelierError = RetiredModelError(
                    model,
                    retired_on=info.retired_on,
                    replacement=info.replacement,
                    provider=PROVIDER,
                    guide=info.guide,
                )
                error.request_id = request_id
                return error
        error = UnknownModelError(settings.upstream_model(model), [k for k in known if k != model])
        error.message = f"{error.message}: openai does not serve it to this key (404: {text})"
        error.provider = PROVIDER
        error.request_id = request_id
        return error
    # The rest is every HTTP vendor's ladder: rate limits, 5xx, 413, other rejections.
    error = error_from_status(
        status,
        message,
        provider=PROVIDER,
        model=model,
        vendor_code=str(code or ""),
        headers=headers,
        request_id=request_id,
        secrets=[secret],
        key_variables=[var],
        parameter=param,
        safety=False,
    )
    if isinstance(error, UpstreamUnavailableError) and headers is not None and headers.get("x-should-retry") == "false":
        error.retryable = False
        error.fix = "openai asked not to retry this request"
    return error
