"""What every HTTP provider repeats, said once: status → error, redaction, strict base64.

- :func:`error_from_status` — the Atelier error for a vendor's HTTP error answer, with the
  vendor's message shortened and redacted (keys it echoes never reach a result or a log).
- :func:`redact` — a vendor's text without secrets (configured keys, ``sk-…`` keys,
  ``Bearer`` tokens, credentials inside URLs).
- :func:`decode_base64` — strict base64 (standard or URL-safe, data: URLs accepted), with
  a plain error when the vendor's answer is not base64.
- :func:`~atelier_core.plugin.errors.retry_after_from_headers` — ``Retry-After`` as seconds.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from atelier_core.logging import scrub
from atelier_core.plugin.errors import (
    AtelierError,
    AuthenticationError,
    QuotaExceededError,
    RateLimitedError,
    SafetyRefusalError,
    UpstreamError,
    UpstreamUnavailableError,
    retry_after_from_headers,
    shorten,
)

__all__ = ["decode_base64", "error_from_status", "redact", "retry_after_from_headers"]

_MESSAGE_CHARS = 300
_KEYLIKE = re.compile(
    r"(?i)(api key provided:\s*)\S+"  # "Incorrect API key provided: sk-…"
    r"|\b(?:sk|pk|rk|key)-[A-Za-z0-9_*\-]{6,}"  # sk-… style keys, masked or not
    r"|\bAIza[0-9A-Za-z_\-]{20,}"  # Google API keys
    r"|(?i:bearer)\s+[A-Za-z0-9._\-+/=]{8,}"  # Authorization: Bearer …
    r"|(?<=://)[^/\s:@]+:[^/\s@]+@"  # user:password@ inside a URL
)
_QUOTA_WORDS = ("quota", "billing", "insufficient", "balance", "credit")
_SAFETY_WORDS = ("safety", "moderation", "content policy", "content_policy", "flagged", "blocked")


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with the given secrets, every secret the server registered and anything
    key-like replaced: the given ones first, then the core's one redaction
    (:func:`atelier_core.logging.scrub`) and the key shapes vendors echo."""
    out = str(text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            out = out.replace(secret, "[redacted]")

    def replace(match: re.Match[str]) -> str:
        if match.group(1):
            return match.group(1) + "[redacted]"
        return "[redacted]@" if match.group(0).endswith("@") else "[redacted]"

    return _KEYLIKE.sub(replace, scrub(out))


def decode_base64(data: str | bytes, *, what: str = "the image") -> bytes:
    """Strictly decode base64: the standard alphabet (or the URL-safe one), correct padding,
    nothing discarded; a ``data:`` URL prefix and line breaks are allowed. Raises
    ``ValueError`` naming ``what`` otherwise.

    ``base64.b64decode`` without ``validate=True`` silently drops junk characters, which
    would turn a corrupted answer into a plausible-looking (and wrong) file. One C pass
    (``a2b_base64`` in strict mode), no regex, no intermediate copy for clean input.
    """
    text = data.decode("ascii", "replace") if isinstance(data, bytes) else data
    if not text.isascii():
        raise ValueError(f"{what} contains non-ASCII characters, so it is not base64")
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        if not sep or ";base64" not in header:
            raise ValueError(f"{what} is a data: URL without base64 content")
    raw = text.strip()
    if "\n" in raw or "\r" in raw:
        raw = raw.replace("\n", "").replace("\r", "")
    if not raw:
        raise ValueError(f"{what} is empty")
    if "-" in raw or "_" in raw:
        raw = raw.replace("-", "+").replace("_", "/")
    if len(raw) % 4 or raw.endswith("==="):  # strict mode lets a run of padding through
        raise ValueError(f"{what} is not valid base64 (wrong length or characters; truncated?)")
    try:
        decoded = binascii.a2b_base64(raw, strict_mode=True)
    except binascii.Error as exc:
        raise ValueError(f"{what} is not valid base64 ({exc})") from None
    if not decoded:
        raise ValueError(f"{what} decodes to no bytes")
    return decoded


def error_from_status(
    status: int,
    message: str = "",
    *,
    provider: str,
    model: str | None = None,
    vendor_code: str = "",
    headers: Mapping[str, str] | None = None,
    request_id: str | None = None,
    secrets: Iterable[str | None] = (),
    key_variables: Sequence[str] = (),
    parameter: str | None = None,
    safety: bool | None = None,
) -> AtelierError:
    """The Atelier error for a vendor's HTTP error answer (returned, not raised).

    ``message`` and ``vendor_code`` are what the vendor said; the message is redacted
    (``secrets`` and anything key-like) and shortened before it is quoted. ``safety``
    says whether the vendor marked a safety refusal (``None``: guess from the words).
    The ladder: a safety refusal (400/403/422) → :class:`SafetyRefusalError`; 429 →
    :class:`RateLimitedError` with ``Retry-After`` (or :class:`QuotaExceededError` when
    the vendor speaks of quota or billing); 402 → quota; 401/403 →
    :class:`AuthenticationError` naming ``key_variables``; 404 → ``model_not_found`` when
    the vendor speaks of a model, else ``endpoint_not_found``; 408/409/425 and 5xx →
    :class:`UpstreamUnavailableError` (retryable); 413 → ``request_too_large``; any other 4xx → ``upstream_rejected``.
    """
    said_message = shorten(redact(message.strip(), secrets), _MESSAGE_CHARS)
    code = redact(vendor_code.strip(), secrets)
    said = f"HTTP {status}" + (f" {code}" if code else "") + (f": {said_message}" if said_message else "")
    who = f"{provider}/{model}" if model else provider
    lowered = f"{code} {said_message}".lower()
    common: dict[str, Any] = {"provider": provider, "request_id": request_id}
    if safety is None:
        safety = any(word in lowered for word in _SAFETY_WORDS)
    if safety and status in (400, 403, 422, 451, 200):
        return SafetyRefusalError(
            f"{who}: the vendor's safety system refused the request ({said})",
            fix="rephrase the prompt (and check input images); repeating it unchanged will be refused again",
            **common,
        )
    if status in (429, 402):
        if status == 402 or any(word in lowered for word in _QUOTA_WORDS):
            return QuotaExceededError(
                f"{who}: the account's quota or balance is exhausted ({said})",
                fix="add credit or raise the quota of the account behind this key; retrying will not help",
                **common,
            )
        return RateLimitedError(
            f"{who}: rate limited by {provider} ({said})",
            retry_after_s=retry_after_from_headers(headers),
            fix=f"wait and retry, or lower providers.{provider}.requests_per_minute",
            **common,
        )
    if status in (401, 403):
        variables = " or ".join(key_variables) or f"ATELIER_PROVIDERS__{provider.upper()}__API_KEY"
        return AuthenticationError(
            f"{who}: {provider} rejected the credentials ({said})",
            parameter=key_variables[0] if key_variables else None,
            fix=f"set {variables} to a valid key",
            **common,
        )
    if status == 404:
        if "model" in lowered or "deployment" in lowered:
            return UpstreamError(
                f"{who}: {provider} does not know this model ({said})",
                code="model_not_found",
                fix="use a model the account can call (list_available_models)",
                **common,
            )
        return UpstreamError(
            f"{who}: {provider} has no such endpoint ({said})",
            code="endpoint_not_found",
            fix="check base_url and that the server supports this operation",
            **common,
        )
    if status in (408, 409, 425) or status >= 500:
        return UpstreamUnavailableError(
            f"{who}: {provider} failed ({said})",
            fix="retry later; if it persists, check the vendor's status",
            **common,
        )
    if status == 413:
        return UpstreamError(
            f"{who}: {provider} refused the upload as too large ({said})",
            code="request_too_large",
            fix="use smaller input images",
            **common,
        )
    return UpstreamError(
        f"{who}: {provider} rejected the request ({said})",
        code="upstream_rejected",
        parameter=parameter,
        fix="adjust the parameter the vendor names; list_available_models shows what this model takes",
        **common,
    )
