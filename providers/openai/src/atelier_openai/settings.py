"""Settings of the OpenAI provider.

Read from ``ATELIER_PROVIDERS__OPENAI__<FIELD>`` and the ``[providers.openai]`` table of
the config file (the core passes both in), and from OpenAI's usual variables:
``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ``OPENAI_ORG_ID``, ``OPENAI_PROJECT_ID`` and, in
Azure mode, ``AZURE_OPENAI_API_KEY``, ``AZURE_OPENAI_ENDPOINT``, ``OPENAI_API_VERSION``.

Aliases name the prefixed variable and the vendor variable only — never a bare
``API_KEY`` or ``BASE_URL``, which pydantic-settings would otherwise also read from the
environment and which belong to nobody in particular.
"""

from __future__ import annotations

from pydantic import AliasChoices, BaseModel, Field, SecretStr

from atelier_core import ProviderSettings

__all__ = ["HostModelPrice", "OpenAISettings"]

_P = "ATELIER_PROVIDERS__OPENAI__"


class HostModelPrice(BaseModel):
    """A Responses API host model's token prices (USD per 1M tokens)."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


def _env(field: str, *vendor: str) -> AliasChoices:
    return AliasChoices(_P + field.upper(), *vendor)


class OpenAISettings(ProviderSettings):
    """Everything the OpenAI provider can be told. Every field has a safe default."""

    api_key: SecretStr | None = Field(
        None,
        validation_alias=_env("api_key", "OPENAI_API_KEY", "AZURE_OPENAI_API_KEY"),
        description="API key (OPENAI_API_KEY; AZURE_OPENAI_API_KEY in Azure mode)",
    )
    base_url: str | None = Field(
        None,
        validation_alias=_env("base_url", "OPENAI_BASE_URL"),
        description="OpenAI-compatible endpoint, e.g. a LiteLLM proxy at http://host:4000/v1",
    )
    organization: str | None = Field(
        None,
        validation_alias=_env("organization", "OPENAI_ORG_ID"),
        description="OpenAI organization id (OPENAI_ORG_ID)",
    )
    project: str | None = Field(
        None,
        validation_alias=_env("project", "OPENAI_PROJECT_ID"),
        description="OpenAI project id (OPENAI_PROJECT_ID)",
    )
    timeout_s: float = Field(120.0, gt=0, description="per-call timeout in seconds (every SDK call)")
    partial_images: int = Field(
        0,
        ge=0,
        le=3,
        description="default number of streamed partial previews (0 = no streaming); a call's "
        "options.partial_images overrides it",
    )
    transparent_preview: bool = Field(
        False,
        description="offer background=transparent on gpt-image-2 (OpenAI calls it a preview there)",
    )
    svg_output: bool = Field(
        False,
        description="offer output_format=svg on the models that author SVG (needs OpenAI project "
        "access; SVG files are saved as documents, without a raster preview)",
    )
    model_names: dict[str, str] = Field(
        default_factory=dict,
        validation_alias=_env("model_names"),
        description="model id → name sent upstream: Azure deployment names, or a gateway's model names",
    )
    responses_model: str = Field(
        "gpt-4.1-mini",
        validation_alias=_env("responses_model", "OPENAI_RESPONSES_EDIT_MODEL"),
        description="host model of the Responses API route (route=responses): it calls the "
        "image_generation tool; its own tokens are billed at its own price (added to the call's cost)",
    )
    responses_model_prices: dict[str, HostModelPrice] = Field(
        default_factory=dict,
        validation_alias=_env("responses_model_prices"),
        description="host model token prices in USD per 1M tokens, over the built-in dated table, "
        'e.g. {"gpt-4.1-mini": {"input_per_mtok": 0.4, "output_per_mtok": 1.6}}',
    )
    responses_edit_models: list[str] = Field(
        default_factory=list,
        validation_alias=_env("responses_edit_models"),
        description="model ids whose edits use the Responses API route by default ('*' = all); "
        "a call's options.route overrides it",
    )
    force_responses_edits: bool = Field(
        False,
        validation_alias=_env("force_responses_edits", "OPENAI_FORCE_RESPONSES_EDITS"),
        description="every edit uses the Responses API route (as responses_edit_models = ['*'])",
    )
    azure: bool = Field(False, description="use Azure OpenAI (AsyncAzureOpenAI) instead of api.openai.com")
    azure_endpoint: str | None = Field(
        None,
        validation_alias=_env("azure_endpoint", "AZURE_OPENAI_ENDPOINT"),
        description="Azure resource endpoint, e.g. https://my-resource.openai.azure.com",
    )
    azure_api_version: str | None = Field(
        None,
        validation_alias=_env("azure_api_version", "OPENAI_API_VERSION"),
        description="Azure OpenAI API version, e.g. 2025-04-01-preview",
    )

    def route_for(self, model_id: str, *, edit: bool, requested: str | None) -> str:
        """``images`` or ``responses``: the call's choice, else the configured edit route."""
        if requested is not None:
            return requested
        if edit and (self.force_responses_edits or {"*", model_id} & set(self.responses_edit_models)):
            return "responses"
        return "images"

    def upstream_model(self, model_id: str) -> str:
        """The name sent as ``model`` (an Azure deployment or a gateway's name)."""
        return self.model_names.get(model_id, model_id)

    @property
    def key_variable(self) -> str:
        return "AZURE_OPENAI_API_KEY" if self.azure else "OPENAI_API_KEY"
