"""Atelier's errors: one small hierarchy, written for the model that reads them.

Every error carries a stable ``code`` (a member of :class:`ErrorCode`, the one list of
codes, defined in :mod:`atelier_core.plugin.codes`, re-exported here and documented in
docs/plugins.md) and a message that says what was wrong, what is allowed and how to fix it. The MCP layer turns each into a tool error (``isError``);
nothing else ever reaches the client, so no stack trace and no secret can leak.

    AtelierError
    ├── RequestError                  the caller can fix it; nothing was sent upstream
    │   ├── UnknownModelError         no such model id or alias (suggests the closest)
    │   ├── RetiredModelError         the model was retired upstream (names the replacement)
    │   ├── UnsupportedCapabilityError  the model cannot do this operation or option
    │   ├── InvalidParameterError     a parameter value is not allowed for the model
    │   ├── InputImageError           an input image could not be read or is not allowed
    │   ├── OutputPathError           the requested output path is refused
    │   ├── NotFoundError             an unknown job, session or image id
    │   └── SpendLimitError           the call would exceed a configured spend limit
    ├── ConfigurationError            the server is not set up for this call
    │   └── MissingCredentialsError   the provider has no key; names the variable to set
    ├── UpstreamError                 the provider failed; ``retryable`` says whether to retry
    │   ├── RateLimitedError          429 and friends; ``retry_after_s`` when known
    │   ├── QuotaExceededError        billing or quota exhausted (not retryable)
    │   ├── AuthenticationError       the provider rejected the credentials
    │   ├── SafetyRefusalError        refused by the provider's safety system (never retried)
    │   ├── UpstreamTimeoutError      no answer in time; the call may still have been billed
    │   ├── UpstreamUnavailableError  5xx or connection failure
    │   └── UpstreamProtocolError     malformed answer: bad JSON, undecodable image, no image
    ├── StorageError                  the image could not be written
    └── PluginError                   a plugin misbehaved (crashed, blocked, broke its contract)

Each class fixes its code. ``code=`` may only pick one of the refinements the class
lists in ``variants`` (``InputImageError(..., code="mask_needs_alpha")``); any other
value raises ``ValueError``, so a subclass can never lose its code (a
``SafetyRefusalError`` is always ``safety_refusal``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from difflib import get_close_matches
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

from atelier_core.plugin.codes import ErrorCode

__all__ = [
    "AtelierError",
    "AuthenticationError",
    "ConfigurationError",
    "ErrorCode",
    "InputImageError",
    "InvalidParameterError",
    "MissingCredentialsError",
    "NotFoundError",
    "OutputPathError",
    "PluginError",
    "QuotaExceededError",
    "RateLimitedError",
    "RequestError",
    "RetiredModelError",
    "SafetyRefusalError",
    "SpendLimitError",
    "StorageError",
    "UnknownModelError",
    "UnsupportedCapabilityError",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamTimeoutError",
    "UpstreamUnavailableError",
    "closest",
    "retry_after_from_headers",
    "shorten",
]

_MAX_VALUE_CHARS = 120


def shorten(value: Any, limit: int = _MAX_VALUE_CHARS) -> str:
    """Render a received value for an error message: repr-like, one line, bounded."""
    text = value if isinstance(value, str) else repr(value)
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    if len(text) > limit:
        text = f"{text[: limit - 20]}…(+{len(text) - limit + 20} chars)"
    return text


def closest(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The candidates closest to ``word``, best first (for "did you mean" hints)."""
    pool = list(dict.fromkeys(candidates))
    hits = get_close_matches(word, pool, n=n, cutoff=0.5)
    lowered = word.lower()
    for candidate in pool:  # substring matches help with short aliases ("flash", "mini")
        if len(hits) >= n:
            break
        if lowered and lowered in candidate.lower() and candidate not in hits:
            hits.append(candidate)
    return hits[:n]


def retry_after_from_headers(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """Seconds a rate-limited caller should wait, from HTTP response headers.

    Reads ``retry-after-ms`` first, then ``retry-after`` (seconds or an HTTP date; a date
    in the past gives ``0``). Header names are matched case-insensitively. Missing,
    negative, infinite or unparseable values give ``None``: the core then uses its own
    backoff. Use it for :class:`RateLimitedError`'s ``retry_after_s``.
    """
    if not headers:
        return None
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            value = float(raw_ms) / 1000.0
        except ValueError:
            value = -1.0
        if math.isfinite(value) and value >= 0:
            return round(value, 3)
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        return round(max(0.0, when.timestamp() - (time.time() if now is None else now)), 3)
    if not math.isfinite(value) or value < 0:
        return None
    return round(value, 3)


class AtelierError(Exception):
    """Base of every error Atelier reports.

    ``code`` is stable and machine-readable; ``str(error)`` is the whole human message.
    """

    code: ErrorCode = ErrorCode.ERROR
    retryable: bool = False
    #: Set by the core when the failed call may have cost money: ``"billed"`` or
    #: ``"maybe_billed"``, with the amount recorded in the ledger (USD, when known).
    billing: str | None = None
    billed_usd: float | None = None
    #: refinements of ``code`` this class (not its subclasses) may carry
    variants: ClassVar[frozenset[ErrorCode]] = frozenset({ErrorCode.JOBS_BUSY, ErrorCode.INTERNAL_ERROR})

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | str | None = None,
        parameter: str | None = None,
        value: Any = None,
        allowed: Sequence[str] | str | None = None,
        fix: str | None = None,
        retryable: bool | None = None,
        retry_after_s: float | None = None,
        provider: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None and code != type(self).code:
            self.code = self._variant(code)
        if retryable is not None:
            self.retryable = retryable
        self.parameter = parameter
        self.value = value
        self.allowed = allowed
        self.fix = fix
        self.retry_after_s = retry_after_s
        self.provider = provider
        self.request_id = request_id

    @classmethod
    def _variant(cls, code: ErrorCode | str) -> ErrorCode:
        # The refinements belong to the class that declares the code: a subclass that
        # declares none shares its parent's; one that declares its own has only those.
        owner = next(c for c in cls.__mro__ if "code" in c.__dict__)
        allowed = owner.__dict__.get("variants", frozenset())
        try:
            member = ErrorCode(code)
        except ValueError:
            member = None
        if member is None or member not in allowed:
            listed = ", ".join(sorted([cls.code, *allowed])) if allowed else cls.code
            raise ValueError(
                f"{cls.__name__} cannot carry code {code!r}: its code is fixed to {cls.code!r}"
                f" (refinements it may carry: {listed}); raise the error class that has the code"
            )
        return member

    def __str__(self) -> str:
        parts = [self.message.rstrip(".") + "."]
        if self.allowed is not None and self.allowed != "":
            allowed = self.allowed if isinstance(self.allowed, str) else ", ".join(self.allowed)
            parts.append(f"Allowed: {allowed}.")
        if self.fix:
            parts.append(f"Fix: {self.fix.rstrip('.')}.")
        if self.retry_after_s is not None:
            parts.append(f"Retry after {self.retry_after_s:g} s.")
        if self.request_id:
            parts.append(f"(provider request id {self.request_id})")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Structured form for tool results and job records (never holds secrets)."""
        out: dict[str, Any] = {"code": self.code, "message": str(self), "retryable": self.retryable}
        if self.parameter is not None:
            out["parameter"] = self.parameter
        if self.value is not None:
            out["received"] = shorten(self.value)
        if self.allowed is not None:
            out["allowed"] = self.allowed if isinstance(self.allowed, str) else list(self.allowed)
        if self.fix:
            out["fix"] = self.fix
        if self.retry_after_s is not None:
            out["retry_after_s"] = self.retry_after_s
        if self.provider:
            out["provider"] = self.provider
        if self.request_id:
            out["request_id"] = self.request_id
        if self.billing:
            out["billing"] = self.billing
            if self.billed_usd is not None:
                out["billed_usd"] = self.billed_usd
        return out


class RequestError(AtelierError):
    """The request cannot be served as given; the caller can fix it. Nothing was sent."""

    code = ErrorCode.INVALID_REQUEST
    variants = frozenset({ErrorCode.IDEMPOTENCY_CONFLICT, ErrorCode.SESSION_ENDED, ErrorCode.RESOURCE_TOO_LARGE})


class UnknownModelError(RequestError):
    code = ErrorCode.UNKNOWN_MODEL

    def __init__(self, name: str, known: Iterable[str]) -> None:
        known = list(known)
        hints = closest(name, known)
        fix = (
            f"did you mean {' or '.join(repr(h) for h in hints)}? Call list_available_models for every model"
            if hints
            else "call list_available_models for the models this server offers"
        )
        super().__init__(f"unknown model {shorten(name)!s}", parameter="model", value=name, fix=fix)
        self.suggestions = hints


class RetiredModelError(RequestError):
    code = ErrorCode.RETIRED_MODEL

    def __init__(self, name: str, *, retired_on: str, replacement: str, provider: str, guide: str = "") -> None:
        mapping = f" (the mapping from old model names and parameters is in {guide})" if guide else ""
        super().__init__(
            f"model {name} was retired by {provider} on {retired_on} and no longer serves requests",
            parameter="model",
            value=name,
            fix=f"use {replacement} instead{mapping}",
            provider=provider,
        )
        self.replacement = replacement


class UnsupportedCapabilityError(RequestError):
    code = ErrorCode.UNSUPPORTED_CAPABILITY


class InvalidParameterError(RequestError):
    code = ErrorCode.INVALID_PARAMETER
    variants = frozenset(
        {
            ErrorCode.AMBIGUOUS_MODEL,
            ErrorCode.UNSUPPORTED_PARAMETER,
            ErrorCode.SIZE_NOT_SUPPORTED,
            ErrorCode.SEED_OUT_OF_RANGE,
            ErrorCode.TOO_MANY_IMAGES,
            ErrorCode.INVALID_RESOURCE_URI,
            ErrorCode.UNSUPPORTED_CAPABILITY,
        }
    )

    def __init__(
        self,
        parameter: str,
        value: Any,
        problem: str,
        *,
        allowed: Sequence[str] | str | None = None,
        fix: str | None = None,
        code: ErrorCode | str | None = None,
    ) -> None:
        super().__init__(
            f"{parameter}={shorten(value)} {problem}",
            code=code,
            parameter=parameter,
            value=value,
            allowed=allowed,
            fix=fix,
        )


class InputImageError(RequestError):
    code = ErrorCode.INVALID_INPUT_IMAGE
    variants = frozenset(
        {
            ErrorCode.EMPTY_IMAGE_FILE,
            ErrorCode.FAILED_TO_DOWNLOAD_IMAGE,
            ErrorCode.IMAGE_FILE_NOT_FOUND,
            ErrorCode.IMAGE_FILE_TOO_LARGE,
            ErrorCode.IMAGE_NOT_SQUARE,
            ErrorCode.IMAGE_PARSE_ERROR,
            ErrorCode.IMAGE_TOO_MANY_PIXELS,
            ErrorCode.INPUT_PATH_OUTSIDE_ROOT,
            ErrorCode.INVALID_IMAGE_REFERENCE,
            ErrorCode.INVALID_BASE64_IMAGE,
            ErrorCode.CALL_INPUTS_TOO_LARGE,
            ErrorCode.MASK_HAS_NO_TRANSPARENCY,
            ErrorCode.MASK_MUST_BE_PNG,
            ErrorCode.MASK_NEEDS_ALPHA,
            ErrorCode.MASK_OR_TRANSPARENCY_REQUIRED,
            ErrorCode.MASK_SIZE_MISMATCH,
            ErrorCode.REMOTE_TIMEOUT,
            ErrorCode.SESSION_IMAGE_CHANGED,
            ErrorCode.UNSUPPORTED_IMAGE_FORMAT,
            ErrorCode.UNSUPPORTED_IMAGE_MEDIA_TYPE,
            ErrorCode.URL_NOT_ALLOWED,
        }
    )


class OutputPathError(RequestError):
    code = ErrorCode.OUTPUT_PATH_REFUSED
    variants = frozenset(
        {
            ErrorCode.EXTENSION_MISMATCH,
            ErrorCode.INVALID_OUTPUT_PATH,
            ErrorCode.FILE_EXISTS,
            ErrorCode.NAME_TOO_LONG,
            ErrorCode.OUTPUT_PATH_OUTSIDE_ROOT,
        }
    )


class NotFoundError(RequestError):
    code = ErrorCode.NOT_FOUND
    variants = frozenset(
        {
            ErrorCode.IMAGE_NOT_FOUND,
            ErrorCode.SESSION_NOT_FOUND,
            ErrorCode.JOB_NOT_FOUND,
        }
    )


class SpendLimitError(RequestError):
    code = ErrorCode.SPEND_LIMIT


class ConfigurationError(AtelierError):
    code = ErrorCode.CONFIGURATION_ERROR


class MissingCredentialsError(ConfigurationError):
    code = ErrorCode.MISSING_CREDENTIALS


class UpstreamError(AtelierError):
    """The provider failed. ``retryable`` tells the caller whether trying again may help."""

    code = ErrorCode.UPSTREAM_ERROR
    variants = frozenset(
        {
            ErrorCode.UPSTREAM_REJECTED,
            ErrorCode.MODEL_NOT_FOUND,
            ErrorCode.MODEL_NOT_IN_PLAN,
            ErrorCode.ENDPOINT_NOT_FOUND,
            ErrorCode.UPSTREAM_NOT_FOUND,
            ErrorCode.REQUEST_TOO_LARGE,
            ErrorCode.UPSTREAM_INCOMPLETE_ANSWER,
            ErrorCode.NO_IMAGE_RETURNED,
            ErrorCode.PROVIDER_INTERNAL_ERROR,
            ErrorCode.INTERRUPTED,
            ErrorCode.CANCELLED,
        }
    )


class RateLimitedError(UpstreamError):
    code = ErrorCode.RATE_LIMITED
    retryable = True


class QuotaExceededError(UpstreamError):
    code = ErrorCode.QUOTA_EXCEEDED


class AuthenticationError(UpstreamError):
    code = ErrorCode.AUTHENTICATION_FAILED


class SafetyRefusalError(UpstreamError):
    code = ErrorCode.SAFETY_REFUSAL


class UpstreamTimeoutError(UpstreamError):
    """No answer in time. Not retried automatically: the generation may have been billed."""

    code = ErrorCode.UPSTREAM_TIMEOUT


class UpstreamUnavailableError(UpstreamError):
    code = ErrorCode.UPSTREAM_UNAVAILABLE
    retryable = True


class UpstreamProtocolError(UpstreamError):
    code = ErrorCode.UPSTREAM_PROTOCOL_ERROR
    variants = frozenset(
        {
            ErrorCode.INVALID_IMAGE_DATA,
            ErrorCode.UPSTREAM_INVALID_IMAGE,
            ErrorCode.UPSTREAM_ANSWER_TOO_LARGE,
            ErrorCode.NO_IMAGE_RETURNED,
            ErrorCode.FAILED_TO_DOWNLOAD_IMAGE,
            ErrorCode.URL_NOT_ALLOWED,
            ErrorCode.IMAGE_FILE_TOO_LARGE,
            ErrorCode.REMOTE_TIMEOUT,
            ErrorCode.UNSUPPORTED_IMAGE_MEDIA_TYPE,
            ErrorCode.IMAGE_PARSE_ERROR,
        }
    )


class StorageError(AtelierError):
    code = ErrorCode.STORAGE_ERROR
    variants = frozenset({ErrorCode.WRITE_FAILED})


class PluginError(AtelierError):
    """A plugin misbehaved: it crashed (any exception, ``SystemExit`` included), returned
    something that is not a result, or broke its contract. Names the plugin; never retried."""

    code = ErrorCode.PLUGIN_FAILED
    variants = frozenset({ErrorCode.PROVIDER_INTERNAL_ERROR, ErrorCode.MISSING_IMAGE})
