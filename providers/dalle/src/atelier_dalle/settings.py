"""Settings of the DALL·E-shape provider.

Own settings (``ATELIER_PROVIDERS__DALLE__*`` / ``[providers.dalle]``) come first; the
OpenAI SDK's usual variables are fallbacks, so one key can serve both plugins while a
self-hosted server or an Azure resource gets its own.
"""

from __future__ import annotations

import json
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator

from atelier_core import ProviderSettings

__all__ = ["OPENAI_API_HOST", "DalleSettings", "ResponseFormat"]

ResponseFormat = Literal["b64_json", "url", "omit"]
OPENAI_API_HOST = "api.openai.com"
_PREFIX = "ATELIER_PROVIDERS__DALLE__"


def _alias(field: str, *vendor: str) -> AliasChoices:
    # The field name (what the core passes in), the full prefixed variable (so the class
    # also reads it when used on its own), then vendor fallbacks: own settings always win.
    return AliasChoices(field, f"{_PREFIX}{field.upper()}", *vendor)


class DalleSettings(ProviderSettings):
    """Settings for ``providers.dalle``; every field is documented in docs/providers/dalle.md."""

    api_key: SecretStr | None = Field(None, validation_alias=_alias("api_key", "OPENAI_API_KEY"))
    base_url: str | None = Field(None, validation_alias=_alias("base_url", "OPENAI_BASE_URL"))
    needs_key: bool = Field(
        True, description="false for a self-hosted server that takes no key (no Authorization header)"
    )
    response_format: ResponseFormat = Field(
        "b64_json",
        description="what to ask the server for: b64_json, url (downloaded), or omit the parameter",
    )
    download_hosts: list[str] = Field(
        default_factory=list,
        description="origins (scheme://host:port; a bare host means https on 443) image URLs may be downloaded from besides the API server itself",
    )
    builtin_models: list[str] = Field(
        default_factory=lambda: ["dall-e-3", "dall-e-2"],
        description="which built-in models to offer ([] for only the models declared below)",
    )
    deployments: dict[str, str] = Field(
        default_factory=dict,
        description="model id -> name sent upstream (Azure deployment or the server's model name)",
    )
    models: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="extra models the server offers, with their capabilities"
    )
    azure_endpoint: str | None = Field(None, validation_alias=_alias("azure_endpoint", "AZURE_OPENAI_ENDPOINT"))
    azure_api_version: str = Field("2024-02-01", validation_alias=_alias("azure_api_version", "OPENAI_API_VERSION"))
    azure_api_key: SecretStr | None = Field(None, validation_alias=_alias("azure_api_key", "AZURE_OPENAI_API_KEY"))

    @field_validator("builtin_models", "download_hosts", "deployments", "models", mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        # The core hands variables over as text: accept JSON, and "a, b" for lists.
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text[:1] in "[{":
            try:
                return json.loads(text)
            except ValueError:
                return value  # pydantic then names the field and the problem
        return [part for part in text.replace(",", " ").split() if part]

    @property
    def azure(self) -> bool:
        """Azure OpenAI mode: on when an Azure endpoint is configured."""
        return bool(self.azure_endpoint)

    @property
    def effective_key(self) -> SecretStr | None:
        """The key sent upstream: in Azure mode the Azure key first, else ``api_key``."""
        if self.azure and self.azure_api_key is not None:
            return self.azure_api_key
        return self.api_key

    @property
    def server_url(self) -> str:
        """The server this provider talks to (for messages and the download allow-list)."""
        if self.azure_endpoint:
            return self.azure_endpoint
        return self.base_url or f"https://{OPENAI_API_HOST}/v1"

    @property
    def server_label(self) -> str:
        """``server_url`` as shown in messages: no user:password, query or fragment."""
        parts = urlsplit(self.server_url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    @property
    def server_host(self) -> str:
        return urlsplit(self.server_url).hostname or ""

    @property
    def is_openai_api(self) -> bool:
        """True when requests go to OpenAI's own API, where dall-e-2/3 are retired."""
        return not self.azure and self.server_host == OPENAI_API_HOST

    def key_variables(self) -> list[str]:
        """The variables that set the key, in the order they are read (for messages)."""
        if self.azure:
            return [f"{_PREFIX}AZURE_API_KEY", "AZURE_OPENAI_API_KEY", f"{_PREFIX}API_KEY"]
        return [f"{_PREFIX}API_KEY", "OPENAI_API_KEY"]
