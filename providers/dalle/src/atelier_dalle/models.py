"""The models, declared as data: the two built-in DALL·E models and configured extras.

Each model has a :class:`~atelier_core.ModelSpec` (what the core validates and lists)
and a :class:`Wire` record (how its parameters travel: which fields are sent, what to
ask for as ``response_format``, what an input image must be after conversion).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from atelier_core import (
    ConfigurationError,
    CustomSizeRule,
    InputImageRules,
    MaskRules,
    ModelSpec,
    Operation,
    Pricing,
    SizeRules,
)

from .settings import ResponseFormat

__all__ = [
    "BUILTIN",
    "DALL_E_2",
    "DALL_E_3",
    "INPUT_MAX_BYTES",
    "OPENAI_RETIRED_ON",
    "ExtraModel",
    "Wire",
    "build_extra",
]

OPENAI_RETIRED_ON = "2026-05-12"
INPUT_MAX_BYTES = 4 * 1024 * 1024  # "a square PNG less than 4MB", after our conversion
# What the core accepts before conversion. The API limit applies to the PNG we upload
# and is checked after conversion; this only bounds the work.
_INTAKE_MAX_BYTES = 20 * 1024 * 1024
_INTAKE_FORMATS = ("png", "jpeg", "webp", "gif")
OutputFormat = Literal["png", "jpeg", "webp"]


@dataclass(frozen=True, slots=True)
class Wire:
    """How one model's request travels (the parts of the API shape that vary by model)."""

    upstream_model: str
    response_format: ResponseFormat | None = None  # None: the provider-wide setting
    send_quality: bool = False
    send_style: bool = False
    send_output_format: bool = False
    edit_needs_transparency: bool = False  # no mask: the image's transparent area is edited
    input_max_bytes: int = INPUT_MAX_BYTES
    retired_by_openai: bool = False
    extra_body: tuple[tuple[str, Any], ...] = ()


# Historic OpenAI list prices, unchanged from DevDay (2023-11-06) until the retirement.
_HISTORIC = "OpenAI API pricing page, list price from 2023-11-06 until retirement on 2026-05-12"
_NOTE = "Azure OpenAI and self-hosted servers bill differently: override with cost.prices"

DALL_E_3 = ModelSpec(
    id="dall-e-3",
    aliases=("dalle-3", "dalle3"),
    title="DALL·E 3",
    description=(
        "DALL·E 3 API shape (Azure OpenAI deployments, OpenAI-compatible servers). "
        "One image per upstream call; Atelier fans out for n > 1. Returns a revised prompt."
    ),
    operations=frozenset({Operation.GENERATE}),
    sizes=SizeRules(presets=("1024x1024", "1792x1024", "1024x1792"), default="1024x1024"),
    qualities=("standard", "hd"),
    default_quality="standard",
    output_formats=("png",),
    n_max=4,
    n_native_max=1,
    prompt_max_chars=4000,
    styles=("vivid", "natural"),
    returns_revised_prompt=True,
    pricing=Pricing(
        per_image_by_quality_size={
            "standard@1024x1024": 0.040,
            "standard@1792x1024": 0.080,
            "standard@1024x1792": 0.080,
            "hd@1024x1024": 0.080,
            "hd@1792x1024": 0.120,
            "hd@1024x1792": 0.120,
        },
        as_of="2023-11-06",
        source=_HISTORIC,
        notes=_NOTE,
    ),
)

_SQUARE_PNG_INPUT = InputImageRules(
    max_count=1,
    min_count=1,
    max_bytes=_INTAKE_MAX_BYTES,
    formats=_INTAKE_FORMATS,
    must_be_square=True,
    mask=MaskRules(formats=("png", "webp"), max_bytes=_INTAKE_MAX_BYTES, needs_alpha=True),
)

DALL_E_2 = ModelSpec(
    id="dall-e-2",
    aliases=("dalle-2", "dalle2"),
    title="DALL·E 2",
    description=(
        "DALL·E 2 API shape: generate, edit one square PNG (transparent area or mask marks "
        "what changes) and variations of one square PNG (edit_image without a prompt)."
    ),
    operations=frozenset({Operation.GENERATE, Operation.EDIT, Operation.VARIATION}),
    sizes=SizeRules(presets=("256x256", "512x512", "1024x1024"), default="1024x1024"),
    output_formats=("png",),
    n_max=10,
    prompt_max_chars=1000,
    input_images=_SQUARE_PNG_INPUT,
    pricing=Pricing(
        per_image_by_size={"256x256": 0.016, "512x512": 0.018, "1024x1024": 0.020},
        as_of="2023-11-06",
        source=_HISTORIC,
        notes=_NOTE + "; edits and variations cost the same per image",
    ),
)

BUILTIN: dict[str, tuple[ModelSpec, Wire]] = {
    "dall-e-3": (
        DALL_E_3,
        Wire("dall-e-3", send_quality=True, send_style=True, retired_by_openai=True),
    ),
    "dall-e-2": (
        DALL_E_2,
        # OpenAI's dall-e-2 edited the transparent area when no mask was given; the servers
        # that serve this shape now differ, so an opaque image is passed on, not refused.
        Wire("dall-e-2", retired_by_openai=True),
    ),
}


def _listish(value: Any) -> Any:
    # Variables arrive as strings: accept "a,b" and "a b" as well as lists.
    if isinstance(value, str):
        return [part for part in value.replace(",", " ").split() if part]
    return value


class ExtraModel(BaseModel):
    """A model the configured server offers, with the capabilities the user states.

    Declared under ``[providers.dalle.models.<id>]``; see docs/providers/dalle.md.
    """

    model_config = ConfigDict(extra="forbid")

    upstream_model: str | None = Field(None, description="name sent upstream (default: the id)")
    title: str = ""
    description: str = ""
    aliases: list[str] = Field(default_factory=list)
    operations: list[Operation] = Field(default_factory=lambda: [Operation.GENERATE])
    sizes: list[str] = Field(default_factory=lambda: ["1024x1024"])
    default_size: str | None = None
    custom_sizes: CustomSizeRule | None = None
    qualities: list[str] = Field(default_factory=list)
    default_quality: str | None = None
    styles: list[str] = Field(default_factory=list)
    n_max: int = Field(1, ge=1, le=100)
    n_native_max: int | None = Field(None, ge=1, le=100)
    prompt_max_chars: int | None = Field(None, ge=1)
    output_formats: list[OutputFormat] = ["png"]  # pydantic copies mutable defaults
    response_format: ResponseFormat | None = None
    returns_revised_prompt: bool = False
    mask: bool = True
    edit_needs_transparency: bool = False
    input_must_be_square: bool = True
    input_max_bytes: int = Field(INPUT_MAX_BYTES, ge=1)
    price_per_image: float | None = Field(None, ge=0)
    price_per_image_by_size: dict[str, float] = Field(default_factory=dict)
    price_as_of: str | None = Field(
        None, description="YYYY-MM-DD the configured price was checked (default: the day the server starts)"
    )
    extra_body: dict[str, Any] = Field(default_factory=dict)

    @field_validator("aliases", "operations", "sizes", "qualities", "styles", "output_formats", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _listish(value)


def build_extra(model_id: str, raw: dict[str, Any]) -> tuple[ModelSpec, Wire]:
    """Turn one ``[providers.dalle.models.<id>]`` table into a spec and wire record.

    Raises :class:`~atelier_core.ConfigurationError` naming the table and field.
    """
    where = f"providers.dalle.models.{model_id}"
    if not isinstance(raw, dict):
        raise ConfigurationError(
            f"{where} = {raw!r} is not a table of settings",
            parameter=where,
            fix=f"write it as [{where}] with keys such as sizes, n_max, operations",
        )
    try:
        extra = ExtraModel.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(table)"
        problem = "is not a known setting" if first["type"] == "extra_forbidden" else first["msg"]
        raise ConfigurationError(
            f"{where}.{field} = {first.get('input')!r} {problem}",
            parameter=f"{where}.{field}",
            allowed=", ".join(ExtraModel.model_fields),
            fix=f"correct [{where}] in the config file (see docs/providers/dalle.md)",
        ) from None
    ops = frozenset(extra.operations)
    inputs = None
    if Operation.EDIT in ops or Operation.VARIATION in ops:
        mask = None
        if extra.mask and Operation.EDIT in ops:
            mask = MaskRules(formats=("png", "webp"), max_bytes=_INTAKE_MAX_BYTES, needs_alpha=True)
        inputs = InputImageRules(
            max_count=1,
            min_count=1,
            max_bytes=max(_INTAKE_MAX_BYTES, extra.input_max_bytes),
            formats=_INTAKE_FORMATS,
            must_be_square=extra.input_must_be_square,
            mask=mask,
        )
    pricing = None
    if extra.price_per_image is not None or extra.price_per_image_by_size:
        pricing = Pricing(
            per_image=extra.price_per_image,
            per_image_by_size=extra.price_per_image_by_size,
            as_of=extra.price_as_of or date.today().isoformat(),
            source="configuration",
        )
    try:
        spec = ModelSpec(
            id=model_id,
            aliases=tuple(extra.aliases),
            title=extra.title or model_id,
            description=extra.description or f"{model_id} on the configured server (declared in {where})",
            operations=ops,
            sizes=SizeRules(
                presets=tuple(extra.sizes),
                default=extra.default_size or (extra.sizes[0] if extra.sizes else None),
                custom=extra.custom_sizes,
            ),
            qualities=tuple(extra.qualities),
            default_quality=extra.default_quality,
            output_formats=tuple(extra.output_formats),
            n_max=extra.n_max,
            n_native_max=extra.n_native_max,
            prompt_max_chars=extra.prompt_max_chars,
            input_images=inputs,
            styles=tuple(extra.styles),
            returns_revised_prompt=extra.returns_revised_prompt,
            pricing=pricing,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigurationError(
            f"[{where}] is inconsistent: {first['msg'].removeprefix('Value error, ')}",
            parameter=where,
            fix=f"correct [{where}] in the config file (see docs/providers/dalle.md)",
        ) from None
    if extra.default_size and extra.default_size not in extra.sizes and extra.custom_sizes is None:
        raise ConfigurationError(
            f"{where}.default_size = {extra.default_size!r} is not one of its sizes",
            parameter=f"{where}.default_size",
            allowed=extra.sizes,
            fix="add it to sizes or pick one of them",
        )
    wire = Wire(
        upstream_model=extra.upstream_model or model_id,
        response_format=extra.response_format,
        send_quality=bool(extra.qualities),
        send_style=bool(extra.styles),
        # One declared format needs no parameter; several only work if the server takes it.
        send_output_format=len(extra.output_formats) > 1,
        edit_needs_transparency=extra.edit_needs_transparency,
        input_max_bytes=extra.input_max_bytes,
        extra_body=tuple(sorted(extra.extra_body.items())),
    )
    return spec, wire
