"""Logging: structlog and stdlib logging, one redacting pipeline, stderr only.

Call :func:`configure_logging` once at start-up, **before** the MCP server object is
built (the MCP SDK calls ``logging.basicConfig``, which does nothing once the root logger
has our handler). Afterwards:

- every record — ``structlog.get_logger("atelier.<area>")`` events and stdlib records
  from libraries (httpx2, openai, google-genai, mcp, uvicorn …) — is rendered by the same
  processors, as console lines or JSON (``logging.format``), **to stderr**: on the stdio
  transport stdout carries the protocol and nothing else;
- noisy library loggers are raised to WARNING unless ``logging.level`` is DEBUG;
- a **redaction** step runs last before rendering: values of secret-looking keys
  (``api_key``, ``authorization``, ``token``, ``secret``, ``password``,
  ``x-goog-api-key`` …) become ``[REDACTED]``; every registered secret value
  (:func:`add_secret`, the ``secrets`` argument, and the values of environment variables
  named like ``*_API_KEY``, ``*_TOKEN``, ``*_SECRET``, ``*_PASSWORD``) is replaced
  wherever it appears in any string, tracebacks included; ``sk-…`` keys, Google ``AIza…``
  keys, ``Bearer …`` credentials and ``key=``/``token=``/``sig=`` URL parameters are
  masked; credentials inside any URL (``scheme://user:password@host``) become
  ``scheme://[REDACTED]@host`` (:func:`redact_url_credentials`, applied by every
  function here); strings over 512 characters (base64 blobs) are shortened.

:func:`scrub` is the one redaction function for text that leaves the server (results,
errors, job records, ``doctor``); log lines get the same treatment through
:func:`redact`.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

import structlog

from atelier_core.settings import LoggingSettings

if TYPE_CHECKING:
    from atelier_core.settings import Settings

__all__ = [
    "REDACTED",
    "add_secret",
    "add_url_credentials",
    "configure_logging",
    "redact",
    "redact_url_credentials",
    "reset_logging",
    "scrub",
    "secrets_of",
]

REDACTED = "[REDACTED]"
MAX_STRING = 512
MAX_TRACEBACK = 8192
MIN_SECRET_CHARS = 6  # shorter values would redact ordinary words

NOISY_LOGGERS = (
    "httpx2", "httpcore2", "httpx", "httpcore", "openai", "google_genai", "google.genai",
    "mcp", "uvicorn.access", "uvicorn.error", "asyncio", "PIL", "hpack", "h11",
)  # fmt: skip

_SENSITIVE_KEY = re.compile(
    r"(^|[_-])(api[_-]?key|apikey|authorization|auth[_-]?token|token|access[_-]?token|refresh[_-]?token"
    r"|secret|client[_-]?secret|password|passwd|cookie|set-cookie|x-goog-api-key|x-api-key|signature)$",
    re.IGNORECASE,
)
_SECRET_ENV = re.compile(r"(API_KEY|APIKEY|TOKEN|SECRET|PASSWORD)$", re.IGNORECASE)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"), REDACTED),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{20,}"), REDACTED),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{6,}"), r"\1 " + REDACTED),
    (
        re.compile(
            r"(?i)([?&;](?:key|api[_-]?key|apikey|token|access_token|auth|sig|signature|x-goog-api-key"
            r"|x-amz-signature|x-amz-security-token|x-amz-credential)=)[^&\s#\"']+"
        ),
        r"\1" + REDACTED,
    ),
)

# The user-info part of any URL: ``scheme://`` then everything up to the last ``@`` before
# the host (a password may itself contain ``@`` or ``:``); never across ``/``, ``?``, ``#``
# or whitespace. Base64 and data: URLs contain no ``://``, so image data is never touched.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/?#\"'<>\\]*@")

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()
_secret_pattern: re.Pattern[str] | None = None


def add_secret(value: Any) -> None:
    """Register a secret value (str or pydantic ``SecretStr``) to be masked in every
    log line from now on. Values shorter than 6 characters are ignored."""
    global _secrets, _secret_pattern
    if value is None:
        return
    if hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    if not isinstance(value, str):
        return
    value = value.strip()
    if len(value) < MIN_SECRET_CHARS:
        return
    with _lock:
        if value in _secrets:
            return
        _secrets = _secrets | {value}
        # Longest first so a secret containing another is masked whole.
        ordered = sorted(_secrets, key=len, reverse=True)
        _secret_pattern = re.compile("|".join(re.escape(s) for s in ordered))


def redact_url_credentials(text: str) -> str:
    """``text`` with the credentials of every URL in it masked:
    ``https://user:pw@host/x`` → ``https://[REDACTED]@host/x``. Nothing else changes."""
    return _URL_USERINFO.sub(r"\1" + REDACTED + "@", text) if "://" in text else text


def secrets_of(settings: Settings, provider_settings: Iterable[Any] = ()) -> list[str]:
    """Every secret value the configuration holds, for redaction: the HTTP tokens, the
    key-like entries of the ``[providers.*]`` tables, and the ``SecretStr`` fields of
    configured providers' settings (``provider_settings``). The one place secrets are found."""
    found: list[str] = []
    if settings.http.auth_token is not None:
        found.append(settings.http.auth_token.get_secret_value())
    found += [token.get_secret_value() for token in settings.http.tokens.values()]
    for table in settings.providers.values():
        for key, value in table.items():
            if _SECRET_KEY_WORDS.search(key) and isinstance(value, str) and value:
                found.append(value)
    for values in provider_settings:
        for value in dict(values).values():
            if hasattr(value, "get_secret_value") and value.get_secret_value():
                found.append(value.get_secret_value())
    return found


_SECRET_KEY_WORDS = re.compile(r"key|token|secret", re.IGNORECASE)


def add_url_credentials(value: Any, *, _depth: int = 0) -> None:
    """Register the user name and password of every URL in ``value`` (a string, or
    settings as nested dicts and lists, e.g. a provider's ``base_url``) as secrets, so
    they are masked even where they appear on their own."""
    if hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    if isinstance(value, Mapping) and _depth < 8:
        for item in value.values():
            add_url_credentials(item, _depth=_depth + 1)
        return
    if isinstance(value, (list, tuple)) and _depth < 8:
        for item in value:
            add_url_credentials(item, _depth=_depth + 1)
        return
    if not isinstance(value, str) or "://" not in value or "@" not in value:
        return
    from urllib.parse import unquote, urlsplit

    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return
    for part in (parts.password, parts.username):
        if part:
            add_secret(part)
            add_secret(unquote(part))


def _redact_text(text: str, limit: int = MAX_STRING) -> str:
    pattern = _secret_pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    text = redact_url_credentials(text)
    for regex, replacement in _PATTERNS:
        text = regex.sub(replacement, text)
    if len(text) > limit:
        text = f"{text[:limit]}…(+{len(text) - limit} chars)"
    return text


def scrub(text: str) -> str:
    """``text`` with every registered secret and secret-looking token masked, untruncated
    (for messages shown to clients, e.g. a provider error that echoes the key)."""
    return _redact_text(text, limit=sys.maxsize)


def redact(value: Any, *, _depth: int = 0) -> Any:
    """A copy of ``value`` with secrets masked (dicts, lists, tuples and strings, nested)."""
    if _depth > 8:
        return "…"
    if isinstance(value, str):
        return _redact_text(value)
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and _SENSITIVE_KEY.search(k) else redact(v, _depth=_depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, tuple):
        return tuple(redact(v, _depth=_depth + 1) for v in value)
    if isinstance(value, (list, set, frozenset)):
        return [redact(v, _depth=_depth + 1) for v in value]
    if hasattr(value, "get_secret_value"):
        return REDACTED
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return _redact_text(repr(value) if not isinstance(value, BaseException) else f"{type(value).__name__}: {value}")


def _redaction_processor(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        value = event_dict[key]
        if key in ("exception", "stack") and isinstance(value, str):
            event_dict[key] = _redact_text(value, MAX_TRACEBACK)
        elif key.startswith("_"):
            continue  # structlog's own bookkeeping (_record, _from_structlog)
        elif _SENSITIVE_KEY.search(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = redact(value)
    return event_dict


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at emit time (never stdout)."""

    _atelier = True

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _env_secrets() -> list[str]:
    return [value for name, value in os.environ.items() if _SECRET_ENV.search(name) and value]


def configure_logging(settings: LoggingSettings | None = None, *, secrets: Iterable[Any] = ()) -> None:
    """Route structlog and stdlib logging through one redacting pipeline to stderr.

    Safe to call again (re-configures). ``secrets`` are registered with
    :func:`add_secret`, as are secret-named environment variables.
    """
    settings = settings or LoggingSettings()
    for secret in [*secrets, *_env_secrets()]:
        add_secret(secret)
    level = getattr(logging, settings.level)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.format == "json"
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Tracebacks become text first, so redaction sees them too.
            structlog.processors.format_exc_info,
            _redaction_processor,
            renderer,
        ],
    )
    handler = _StderrHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for existing in list(root.handlers):
        # Replace our previous handler and anything that would write to stdout.
        if getattr(existing, "_atelier", False) or getattr(existing, "stream", None) is sys.stdout:
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if level == logging.DEBUG else logging.WARNING)


def reset_logging() -> None:
    """Undo :func:`configure_logging` (tests): structlog defaults, our handler removed,
    registered secrets kept."""
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_atelier", False):
            root.removeHandler(existing)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    structlog.reset_defaults()
