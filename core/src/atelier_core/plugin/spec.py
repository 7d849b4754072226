"""Model specs: what a model can do, declared as data.

A provider declares a tuple of :class:`ModelSpec`. The core validates every request
against the spec before the provider is called, lists the spec in
``list_available_models`` and prices calls from it. Nothing here does I/O.
"""

from __future__ import annotations

import math
import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "SEED_RANGE_32",
    "Applies",
    "CustomSizeRule",
    "InputImageRules",
    "MaskRules",
    "ModelSpec",
    "Operation",
    "Pricing",
    "RetiredModel",
    "SizeRules",
    "parse_ratio",
    "parse_size",
]

_SIZE_RE = re.compile(r"^\s*(\d{1,6})\s*[xX×]\s*(\d{1,6})\s*$")
_RATIO_RE = re.compile(r"^\s*(\d{1,3})\s*:\s*(\d{1,3})\s*$")


def parse_size(text: str) -> tuple[int, int] | None:
    """``"1024x768"`` → ``(1024, 768)``; anything else → ``None``."""
    match = _SIZE_RE.match(text)
    if not match:
        return None
    return int(match[1]), int(match[2])


def parse_ratio(text: str) -> tuple[int, int] | None:
    """``"16:9"`` → ``(16, 9)``; anything else → ``None``."""
    match = _RATIO_RE.match(text)
    if not match or int(match[1]) == 0 or int(match[2]) == 0:
        return None
    return int(match[1]), int(match[2])


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Operation(StrEnum):
    """What a model can be asked to do."""

    GENERATE = "generate"
    EDIT = "edit"
    VARIATION = "variation"


class CustomSizeRule(_Frozen):
    """Free-form ``WxH`` sizes: every edge a multiple of ``step`` within the bounds."""

    step: int = Field(1, ge=1)
    min_edge: int = Field(1, ge=1)
    max_edge: int = Field(..., ge=1)
    max_aspect: float | None = Field(None, ge=1, description="longest edge ÷ shortest edge")
    min_pixels: int | None = None
    max_pixels: int | None = None

    def problems(self, width: int, height: int) -> list[str]:
        """Each rule the size breaks, in words; empty when the size is allowed."""
        out: list[str] = []
        if width % self.step or height % self.step:
            out.append(f"edges must be multiples of {self.step}")
        if min(width, height) < self.min_edge or max(width, height) > self.max_edge:
            out.append(f"each edge must be within {self.min_edge}–{self.max_edge} px")
        if self.max_aspect and max(width, height) / min(width, height) > self.max_aspect + 1e-9:
            out.append(f"aspect ratio must be within 1:{self.max_aspect:g} and {self.max_aspect:g}:1")
        pixels = width * height
        if self.min_pixels and pixels < self.min_pixels:
            out.append(f"total pixels must be at least {self.min_pixels:,}")
        if self.max_pixels and pixels > self.max_pixels:
            out.append(f"total pixels must be at most {self.max_pixels:,}")
        return out

    def nearest(self, width: int, height: int) -> tuple[int, int] | None:
        """The allowed size closest to ``width``×``height`` keeping its shape, if any."""
        ratio = width / height
        if self.max_aspect:
            ratio = min(max(ratio, 1 / self.max_aspect), self.max_aspect)
        area = float(width * height)
        if self.max_pixels:
            area = min(area, float(self.max_pixels))
        if self.min_pixels:
            area = max(area, float(self.min_pixels))
        best: tuple[float, tuple[int, int]] | None = None
        base_w = math.sqrt(area * ratio)
        for scale in (0.96, 0.98, 1.0, 1.02, 1.04):
            w0 = base_w * scale
            h0 = w0 / ratio
            for w in (math.floor(w0 / self.step) * self.step, math.ceil(w0 / self.step) * self.step):
                for h in (math.floor(h0 / self.step) * self.step, math.ceil(h0 / self.step) * self.step):
                    if w <= 0 or h <= 0 or self.problems(w, h):
                        continue
                    score = abs(w - width) + abs(h - height)
                    if best is None or score < best[0]:
                        best = (score, (w, h))
        return best[1] if best else None

    def describe(self) -> str:
        parts = [f"WxH with edges {self.min_edge}–{self.max_edge} px"]
        if self.step > 1:
            parts.append(f"multiples of {self.step}")
        if self.max_aspect:
            parts.append(f"aspect ratio within 1:{self.max_aspect:g}–{self.max_aspect:g}:1")
        if self.min_pixels or self.max_pixels:
            lo = f"{self.min_pixels:,}" if self.min_pixels else "0"
            hi = f"{self.max_pixels:,}" if self.max_pixels else "∞"
            parts.append(f"{lo}–{hi} total pixels")
        return ", ".join(parts)


class SizeRules(_Frozen):
    """How a model's output size is chosen.

    Pixel-size models declare ``presets`` (``"1024x1024"``) and/or a ``custom`` rule.
    Aspect-ratio models declare ``aspect_ratios`` (``"16:9"``) and optional ``resolutions``
    (``"1K"``, ``"2K"``); ``ratio_sizes`` maps ``"16:9"`` (or ``"16:9@2K"``) to the pixel
    size the model actually produces, so a requested ``WxH`` can be mapped honestly.
    """

    presets: tuple[str, ...] = ()
    allow_auto: bool = False
    default: str | None = Field(None, description="size used when the caller gives none")
    custom: CustomSizeRule | None = None
    aspect_ratios: tuple[str, ...] = ()
    default_aspect_ratio: str | None = None
    resolutions: tuple[str, ...] = ()
    default_resolution: str | None = None
    ratio_sizes: dict[str, str] = Field(default_factory=dict)

    @field_validator("presets")
    @classmethod
    def _presets_are_sizes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for preset in value:
            if parse_size(preset) is None:
                raise ValueError(f"preset {preset!r} is not WxH")
        return value

    @field_validator("aspect_ratios")
    @classmethod
    def _ratios_are_ratios(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for ratio in value:
            if parse_ratio(ratio) is None:
                raise ValueError(f"aspect ratio {ratio!r} is not W:H")
        return value

    @property
    def takes_pixels(self) -> bool:
        return bool(self.presets or self.custom)

    def describe(self) -> str:
        parts: list[str] = []
        if self.presets:
            parts.append(", ".join(self.presets))
        if self.allow_auto:
            parts.append("auto")
        if self.custom:
            parts.append(self.custom.describe())
        if self.aspect_ratios:
            parts.append("aspect ratios " + ", ".join(self.aspect_ratios))
        if self.resolutions:
            parts.append("resolutions " + ", ".join(self.resolutions))
        return "; ".join(parts) or "fixed by the model"


class MaskRules(_Frozen):
    """Mask support for edits. Transparent pixels (alpha 0) mark the area to change."""

    formats: tuple[str, ...] = ("png",)
    max_bytes: int = 4 * 1024 * 1024
    same_size_as_first_image: bool = True
    needs_alpha: bool = True
    required: bool = Field(False, description="edits need a mask (the core refuses an edit without one)")


class InputImageRules(_Frozen):
    """What an edit or variation accepts as input images."""

    max_count: int = Field(1, ge=1)
    min_count: int = Field(1, ge=0)
    max_bytes: int = 50 * 1024 * 1024
    formats: tuple[str, ...] = ("png", "jpeg", "webp")
    must_be_square: bool = False
    mask: MaskRules | None = None


class Pricing(_Frozen):
    """An indicative price, in USD, dated and sourced.

    ``per_image`` is the default per output image; ``per_image_by_quality`` and
    ``per_image_by_size`` refine it (keys: a quality, a ``WxH`` or a resolution tier,
    or ``"<quality>@<size>"`` for both). Token prices are per million tokens and, when a
    provider reports usage, give the cost after the call.
    """

    per_image: float | None = None
    per_image_by_quality: dict[str, float] = Field(default_factory=dict)
    per_image_by_size: dict[str, float] = Field(default_factory=dict)
    per_image_by_quality_size: dict[str, float] = Field(default_factory=dict)
    input_text_per_mtok: float | None = None
    input_image_per_mtok: float | None = None
    output_image_per_mtok: float | None = None
    as_of: str = Field(..., description="date the prices were checked, YYYY-MM-DD")
    source: str = ""
    notes: str = ""

    def image_price(self, quality: str | None, size_key: str | None) -> float | None:
        """Best matching per-image price for a quality and size key (``WxH`` or tier)."""
        if quality and size_key and f"{quality}@{size_key}" in self.per_image_by_quality_size:
            return self.per_image_by_quality_size[f"{quality}@{size_key}"]
        if quality and quality in self.per_image_by_quality:
            return self.per_image_by_quality[quality]
        if size_key and size_key in self.per_image_by_size:
            return self.per_image_by_size[size_key]
        return self.per_image


SEED_RANGE_32 = (0, 2**32 - 1)
"""The seed range most vendors take (unsigned 32-bit); ``seed=True`` means this."""


class Applies(_Frozen):
    """When a parameter applies: the core refuses it, before any call, otherwise.

    Keys of :attr:`ModelSpec.applies` name the parameter: a request field (``"mask"``,
    ``"background"``, ``"negative_prompt"``) or an option (``"options.input_fidelity"``).
    A parameter counts as given when it is set and not ``False``/empty. Every condition
    given must hold::

        applies={"options.input_fidelity": Applies(operations={Operation.EDIT}),
                 "options.markup": Applies(operations={Operation.EDIT}, mask=False),
                 "options.frame_count": Applies(output_formats=("gif",))}
    """

    operations: frozenset[Operation] | None = Field(None, description="only for these operations")
    mask: bool | None = Field(None, description="True: only with a mask; False: only without one")
    output_formats: tuple[str, ...] | None = Field(None, description="only for these output formats")
    input_formats: tuple[str, ...] | None = Field(
        None, description="only when every input image is in one of these formats"
    )
    fix: str | None = Field(None, description="the fix to suggest instead of the generated one")

    def describe(self) -> str:
        parts: list[str] = []
        if self.operations is not None:
            parts.append(" and ".join(sorted(op.value for op in self.operations)) + " only")
        if self.mask is True:
            parts.append("with a mask only")
        if self.mask is False:
            parts.append("not with a mask")
        if self.output_formats is not None:
            parts.append(f"output_format {'/'.join(self.output_formats)} only")
        if self.input_formats is not None:
            parts.append(f"{'/'.join(self.input_formats)} input images only")
        return ", ".join(parts) or "always"


class RetiredModel(_Frozen):
    """A model a provider no longer serves: kept out of the catalogue, explained on use."""

    id: str
    retired_on: str
    replacement: str
    guide: str = Field("", description="where the mapping from old names to current ones is documented")


class ModelSpec(_Frozen):
    """Everything the core needs to know about one model, as data.

    ``id`` is the provider-local model name (``"gpt-image-2"``); the canonical id is
    ``"<provider>/<id>"`` and is filled in by the registry. Unset capabilities mean
    "not supported": a request that uses them is refused before any call.
    """

    id: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@+-]*$")
    aliases: tuple[str, ...] = ()
    title: str = ""
    description: str = ""
    operations: frozenset[Operation] = frozenset({Operation.GENERATE})
    sizes: SizeRules = Field(default_factory=SizeRules)
    qualities: tuple[str, ...] = ()
    default_quality: str | None = None
    output_formats: tuple[str, ...] = ("png",)
    default_output_format: str | None = None
    compression_formats: tuple[str, ...] = Field((), description="formats that accept output_compression (0-100)")
    backgrounds: tuple[str, ...] = Field((), description="e.g. ('auto', 'opaque', 'transparent')")
    n_max: int = Field(1, ge=1)
    n_native_max: int | None = Field(
        None, description="images per upstream call; the core fans out above it (None = n_max)"
    )
    prompt_max_chars: int | None = None
    prompt_required_for: frozenset[Operation] = frozenset({Operation.GENERATE, Operation.EDIT})
    input_images: InputImageRules | None = Field(
        None, description="inputs for edit/variation (the first image is the one edited)"
    )
    reference_images: InputImageRules | None = Field(
        None, description="optional reference images on generate (e.g. a subject portrait)"
    )
    seed: tuple[int, int] | None = Field(
        None,
        description="the inclusive range of seeds the vendor takes (None: no seed); "
        "True means SEED_RANGE_32. The core checks every seed a fan-out sends",
    )
    negative_prompt: bool = False
    styles: tuple[str, ...] = ()
    options: type[BaseModel] | None = Field(
        None, description="model-specific extra options: a pydantic model with extra='forbid'"
    )
    option_renames: dict[str, str] = Field(
        default_factory=dict,
        description="option names other servers use → the option they are sent as here "
        "(e.g. user → safety_identifier); the call says so in its notes",
    )
    ignored_options: dict[str, str] = Field(
        default_factory=dict,
        description="options accepted for compatibility but not applied on this model → why "
        "(reported under applied.not_applied and in the notes)",
    )
    pricing: Pricing | None = None
    streams_partial_images: bool = False
    returns_revised_prompt: bool = False
    requires: str | None = Field(
        None, description="a provider mode this model needs (e.g. 'vertex'); checked by the provider"
    )
    applies: dict[str, Applies] = Field(
        default_factory=dict,
        description="when a parameter or option applies (operation, mask, formats); checked by the core",
    )

    @field_validator("seed", mode="before")
    @classmethod
    def _seed_range(cls, value: Any) -> Any:
        if value is True:
            return SEED_RANGE_32
        if value is False:
            return None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        # Every structural problem at once, in words; the registry and the contract kit
        # add the rest (see atelier_core.plugin.checks).
        problems: list[str] = []
        if self.options is not None:
            extra = self.options.model_config.get("extra")
            if extra != "forbid":
                problems.append("the options model must set extra='forbid'")
        ops = self.operations
        if (Operation.EDIT in ops or Operation.VARIATION in ops) and self.input_images is None:
            problems.append("edit/variation models must declare input_images")
        if self.default_quality and self.default_quality not in self.qualities:
            problems.append(f"default_quality {self.default_quality!r} is not in qualities {list(self.qualities)}")
        if self.default_output_format and self.default_output_format not in self.output_formats:
            problems.append(
                f"default_output_format {self.default_output_format!r} is not in output_formats "
                f"{list(self.output_formats)}"
            )
        known = set(self.options.model_fields) if self.options is not None else set()
        if not set(self.option_renames.values()) <= known:
            problems.append("option_renames must point to options of the model")
        if set(self.ignored_options) & known:
            problems.append("an ignored option cannot also be an option of the model")
        if not set(self.compression_formats) <= set(self.output_formats):
            problems.append("compression_formats must be output formats")
        if self.n_native_max is not None and self.n_native_max > self.n_max:
            problems.append(f"n_native_max {self.n_native_max} exceeds n_max {self.n_max}")
        if self.seed is not None and self.seed[0] > self.seed[1]:
            problems.append(f"seed range {self.seed} is empty (low > high)")
        sizes = self.sizes
        if sizes.default and sizes.default != "auto" and parse_size(sizes.default) is None:
            problems.append(f"sizes.default {sizes.default!r} must be WxH or 'auto'")
        if sizes.default_aspect_ratio and sizes.default_aspect_ratio not in sizes.aspect_ratios:
            problems.append(f"default_aspect_ratio {sizes.default_aspect_ratio!r} is not in aspect_ratios")
        if sizes.default_resolution and sizes.default_resolution not in sizes.resolutions:
            problems.append(f"default_resolution {sizes.default_resolution!r} is not in resolutions")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def supports(self, operation: Operation) -> bool:
        return operation in self.operations

    @property
    def native_batch(self) -> int:
        return self.n_native_max or self.n_max

    def describe_options(self) -> dict[str, Any]:
        """JSON-schema properties of the extra options (for list_available_models)."""
        if self.options is None:
            return {}
        schema = self.options.model_json_schema()
        props: dict[str, Any] = schema.get("properties", {})
        return props
