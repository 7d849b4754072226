"""MiniMax's settings and how the API host is chosen.

MiniMax runs two separate platforms with separate accounts and keys: international
(``https://api.minimax.io``) and mainland China (``https://api.minimaxi.com``). A key
works only on the platform that issued it, so the host is a setting, not a guess.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator

from atelier_core import ConfigurationError, ProviderSettings

__all__ = ["HOSTS", "MiniMaxSettings", "resolve_base_url"]

_PREFIX = "ATELIER_PROVIDERS__MINIMAX__"

HOSTS: dict[str, str] = {
    "global": "https://api.minimax.io",
    "cn": "https://api.minimaxi.com",
}


class MiniMaxSettings(ProviderSettings):
    """``[providers.minimax]`` / ``ATELIER_PROVIDERS__MINIMAX__*``, plus MiniMax's own
    ``MINIMAX_API_KEY`` and ``MINIMAX_API_HOST`` variables.

    The host is the first of: ``base_url`` (tests, gateways), ``api_host`` (or
    ``MINIMAX_API_HOST``), ``region`` (``global`` or ``cn``); default international.
    """

    # The aliases list the prefixed Atelier name first so it wins over the vendor
    # variable; the bare field name still works as a keyword (populate_by_name) without
    # making a bare API_KEY environment variable count.
    api_key: SecretStr | None = Field(None, validation_alias=AliasChoices(f"{_PREFIX}API_KEY", "MINIMAX_API_KEY"))
    api_host: str | None = Field(
        None,
        validation_alias=AliasChoices(f"{_PREFIX}API_HOST", "MINIMAX_API_HOST"),
        description="API host, e.g. https://api.minimaxi.com (overrides region)",
    )
    region: Literal["global", "cn"] = Field(
        "global", description="global = api.minimax.io, cn = api.minimaxi.com (mainland China)"
    )
    # MiniMax plans are often limited to 10 requests per minute; the core queues a
    # burst under this limit instead of letting MiniMax reject it with 1002.
    requests_per_minute: float | None = 10.0

    @field_validator("region", mode="before")
    @classmethod
    def _region_aliases(cls, value: object) -> object:
        if isinstance(value, str):
            lowered = value.strip().lower()
            return {"international": "global", "intl": "global", "china": "cn", "mainland": "cn"}.get(lowered, lowered)
        return value


def _normalise_url(value: str, setting: str) -> str:
    text = value.strip()
    if "://" not in text:
        text = f"https://{text}"  # MINIMAX_API_HOST is often given as a bare host
    parts = urlsplit(text)
    text = text.rstrip("/")
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigurationError(
            f"{setting}={value!r} is not an http(s) URL",
            parameter=setting,
            value=value,
            allowed=list(HOSTS.values()),
            fix=f"set {setting} to {HOSTS['global']} or {HOSTS['cn']}",
            provider="minimax",
        )
    if text.endswith("/v1"):  # the API root is wanted; /v1/... is added per request
        text = text[: -len("/v1")]
    return text


def resolve_base_url(settings: MiniMaxSettings) -> str:
    """The API root every request goes to, from the settings (no I/O)."""
    if settings.base_url:
        return _normalise_url(settings.base_url, "providers.minimax.base_url")
    if settings.api_host:
        return _normalise_url(settings.api_host, "MINIMAX_API_HOST")
    return HOSTS[settings.region]
