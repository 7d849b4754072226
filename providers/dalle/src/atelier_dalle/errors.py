"""Vendor failures → Atelier errors (the core's one retry layer acts on ``retryable``).

Takes the openai SDK's exceptions duck-typed (``status_code``, ``body``, ``code``,
``response.headers``), so this module never imports the SDK.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from atelier_core import (
    AtelierError,
    AuthenticationError,
    QuotaExceededError,
    RateLimitedError,
    RetiredModelError,
    SafetyRefusalError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    error_from_status,
    redact,
    retry_after_from_headers,
)
from atelier_core.plugin.errors import shorten

from .models import OPENAI_RETIRED_ON
from .translate import is_safety

__all__ = [
    "PROVIDER",
    "Target",
    "cut_off",
    "map_status",
    "model_missing",
    "parse_retry_after",
    "timeout_error",
    "unreachable",
]

PROVIDER = "dalle"
_MISSING_CODES = {"model_not_found", "DeploymentNotFound"}
GPT_IMAGE_REPLACEMENT = "openai/gpt-image-2"


@dataclass(frozen=True, slots=True)
class Target:
    """What a message needs to know about the call that failed."""

    model: str  # canonical id, e.g. "dalle/dall-e-3"
    upstream_model: str  # the name (or Azure deployment) sent upstream
    server: str  # the base URL or Azure endpoint
    is_openai_api: bool
    azure: bool
    retired_by_openai: bool
    key_variables: tuple[str, ...]
    timeout_s: float


# Retry-After parsing is the core's (shared by every provider).
parse_retry_after = retry_after_from_headers


def _body_parts(exc: Any) -> tuple[str, str, str]:
    """(code, type, message) of an SDK status error, whatever the body looked like."""
    body = getattr(exc, "body", None)
    code = getattr(exc, "code", None) or ""
    kind = getattr(exc, "type", None) or ""
    message = ""
    if isinstance(body, dict):
        message = str(body.get("message") or "")
        inner = body.get("inner_error") or body.get("innererror")
        if isinstance(inner, dict):
            inner_code = str(inner.get("code") or "")
            filters = inner.get("content_filter_results") or {}
            hits = [k for k, v in filters.items() if isinstance(v, dict) and v.get("filtered")]
            if hits:
                message = f"{message} (filtered: {', '.join(sorted(hits))})"
            code = code or inner_code
            if inner_code and is_safety(inner_code, ""):
                code = inner_code
    elif isinstance(body, str):
        message = body
    if not message:
        message = str(getattr(exc, "message", "") or "")
    return str(code), str(kind), shorten(_without_keys(message.strip()), 300)


# Servers echo the key they were sent ("Incorrect API key provided: sk-…"); never repeat it.
_KEY_ECHO = re.compile(r"(?i)(api key provided:\s*)\S+|\b(sk-[A-Za-z0-9_*\-]{4,})")


def _without_keys(message: str) -> str:
    return redact(message)


def map_status(exc: Any, target: Target) -> AtelierError:
    """The Atelier error for an HTTP error answer (an ``openai.APIStatusError``)."""
    status = int(getattr(exc, "status_code", 0) or 0)
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    request_id = getattr(exc, "request_id", None) or (headers.get("x-request-id") if headers else None)
    code, kind, message = _body_parts(exc)
    said = f"HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
    common: dict[str, Any] = {"provider": PROVIDER, "request_id": request_id}

    if is_safety(code, message) and status in (400, 403, 422, 200):
        return SafetyRefusalError(
            f'{target.model}: the server\'s safety system refused the request: "{message or code}"',
            fix="rephrase the prompt (and check input images); do not retry it unchanged",
            **common,
        )
    if status == 429:
        if code == "insufficient_quota" or kind == "insufficient_quota" or "quota" in code:
            return QuotaExceededError(
                f"{target.model}: the account's quota or billing limit is exhausted ({said})",
                fix="add credit or raise the quota on the account behind this key; retrying will not help",
                **common,
            )
        return RateLimitedError(
            f"{target.model}: rate limited by {target.server} ({said})",
            retry_after_s=parse_retry_after(headers),
            fix="wait and retry, or lower providers.dalle.max_concurrency / requests_per_minute",
            **common,
        )
    if status in (401, 403):
        variables = " or ".join(target.key_variables)
        return AuthenticationError(
            f"{target.model}: {target.server} rejected the credentials ({said})",
            parameter=target.key_variables[0] if target.key_variables else None,
            fix=f"set {variables} to a key valid for {target.server}",
            **common,
        )
    lowered = message.lower()
    if (
        target.is_openai_api
        and target.retired_by_openai
        and status in (400, 404)
        and (code == "model_not_found" or any(w in lowered for w in ("deprecated", "retired", "does not exist")))
    ):
        return model_missing(target, said, request_id)
    if code in _MISSING_CODES or (
        status >= 500
        and "model" in lowered
        and any(w in lowered for w in ("not found", "does not exist", "no such model"))
    ):
        # Some self-hosted servers answer an unknown model with a 500; retrying cannot help.
        return model_missing(target, said, request_id)
    if status == 404 and ("model" in lowered or "deployment" in lowered):
        return model_missing(target, said, request_id)
    # The rest is the ladder every HTTP vendor shares (the core's).
    parameter = getattr(exc, "param", None)
    error = error_from_status(
        status,
        message,
        provider=PROVIDER,
        model=target.model,
        vendor_code=code,
        headers=headers,
        request_id=request_id,
        parameter=str(parameter) if parameter else None,
        safety=False,
    )
    if error.code == "endpoint_not_found":
        error.fix = "check base_url (it usually ends in /v1) and that the server supports this operation"
    return error


def model_missing(target: Target, said: str, request_id: str | None = None) -> AtelierError:
    """The upstream says the model (or Azure deployment) does not exist."""
    if target.is_openai_api and target.retired_by_openai:
        error = RetiredModelError(
            target.model, retired_on=OPENAI_RETIRED_ON, replacement=GPT_IMAGE_REPLACEMENT, provider="OpenAI"
        )
        error.fix = (
            f"use a GPT Image model such as {GPT_IMAGE_REPLACEMENT}; or, to keep this API shape, point "
            "providers.dalle.base_url (or azure_endpoint) at a server that still serves it, "
            "such as an Azure OpenAI deployment or LocalAI"
        )
        error.request_id = request_id
        return error
    if target.azure:
        return UpstreamError(
            f"{target.model}: the Azure deployment {target.upstream_model!r} does not exist at "
            f"{target.server} ({said})",
            code="model_not_found",
            parameter=f"providers.dalle.deployments.{target.model.split('/', 1)[-1]}",
            value=target.upstream_model,
            fix="set providers.dalle.deployments.<model> to the deployment name shown in the Azure portal",
            provider=PROVIDER,
            request_id=request_id,
        )
    return UpstreamError(
        f"{target.model}: the server at {target.server} does not serve model {target.upstream_model!r} ({said})",
        code="model_not_found",
        parameter="model",
        value=target.upstream_model,
        fix="declare the model names the server serves (GET /v1/models) under "
        "[providers.dalle.models], or map this model with providers.dalle.deployments",
        provider=PROVIDER,
        request_id=request_id,
    )


def timeout_error(target: Target) -> UpstreamTimeoutError:
    return UpstreamTimeoutError(
        f"{target.model}: no answer from {target.server} within {target.timeout_s:g} s; the image "
        "may still have been generated and billed, so it is not retried automatically",
        fix="retry if you accept a possible second charge, or raise providers.dalle.timeout_s",
        provider=PROVIDER,
    )


def unreachable(target: Target, detail: str) -> UpstreamUnavailableError:
    return UpstreamUnavailableError(
        f"{target.model}: could not reach {target.server} ({detail})",
        fix="check that the server is running and base_url / azure_endpoint is right",
        provider=PROVIDER,
    )


def cut_off(target: Target, detail: str, request_id: str | None) -> UpstreamProtocolError:
    return UpstreamProtocolError(
        f"{target.model}: the answer from {target.server} was cut off ({detail}); the image may "
        "have been billed, so it is not retried automatically",
        fix="retry if you accept a possible second charge",
        provider=PROVIDER,
        request_id=request_id,
    )
