"""Settings: Atelier fills them from ``[providers.pixelart]`` in the config file,
``ATELIER_PROVIDERS__PIXELART__*`` variables, and the vendor's own variables below."""

from __future__ import annotations

from pydantic import Field, SecretStr

from atelier_core import ProviderSettings

__all__ = ["DEFAULT_BASE_URL", "PixelArtSettings"]

DEFAULT_BASE_URL = "https://api.pixelforge.example/v1"


class PixelArtSettings(ProviderSettings):
    # validation_alias names the vendor's usual variable; populate_by_name (set by
    # ProviderSettings) keeps ``api_key=...`` working for the config file and tests.
    api_key: SecretStr | None = Field(None, validation_alias="PIXELART_API_KEY", description="Pixel Forge API key")
    base_url: str = Field(DEFAULT_BASE_URL, validation_alias="PIXELART_BASE_URL", description="API root URL")
    timeout_s: float = Field(60.0, description="seconds to wait for one API call")
