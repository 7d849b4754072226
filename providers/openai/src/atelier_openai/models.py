"""The GPT Image catalogue, as data: one :class:`ModelSpec` per model OpenAI serves.

Every fact is taken from the installed ``openai`` 3.54 SDK (``types/image_model.py``,
``types/image_generate_params.py``, ``types/image_edit_params.py`` and the docstrings
of ``resources/images.py``) unless the table below says otherwise; docs/providers/openai.md
lists the evidence per fact. Capabilities differ per family, so each family declares a
:class:`Caps` row and the specs (and their per-model options models) are built from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from atelier_core import (
    Applies,
    CustomSizeRule,
    InputImageRules,
    MaskRules,
    ModelSpec,
    Operation,
    Pricing,
    RetiredModel,
    SizeRules,
)

__all__ = [
    "CATALOGUE",
    "CUSTOM_SIZES",
    "FAMILIES",
    "PRESETS",
    "RETIRED",
    "Caps",
    "build_spec",
    "caps_for",
]

# "The standard sizes 1024x1024, 1536x1024, and 1024x1536 are supported by the GPT image
# models; auto is supported for models that allow automatic sizing." (size docstring)
PRESETS = ("1024x1024", "1536x1024", "1024x1536")

# "Width and height must both be divisible by 16 and the requested aspect ratio must be
# between 1:3 and 3:1 ... the maximum supported resolution is 3840x2160" (size docstring).
# 3840x2160 = 8,294,400 pixels is the upper band; the lower band (655,360 pixels) is
# OpenAI's published gpt-image-2 minimum (quoted by the gpt-image-2 MCP seed server).
CUSTOM_SIZES = CustomSizeRule(
    step=16,
    min_edge=16,
    max_edge=3840,
    max_aspect=3.0,
    min_pixels=655_360,
    max_pixels=8_294_400,
)

BASE_QUALITIES = ("low", "medium", "high", "auto")
# "gpt-image-2.5-sunburst and gpt-image-2.5-flare, including their 2026-09-08 snapshots,
# also support xhigh and max." (quality docstring)
TOP_QUALITIES = ("low", "medium", "high", "xhigh", "max", "auto")
RASTER_FORMATS = ("png", "jpeg", "webp")
# "output_compression ... only supported ... with the webp or jpeg output formats"
COMPRESSION_FORMATS = ("jpeg", "webp")
ALL_BACKGROUNDS = ("auto", "opaque", "transparent")
OPAQUE_BACKGROUNDS = ("auto", "opaque")

# Edit inputs (image docstring): png/webp/jpg, each < 50 MB, up to 16 images.
# Mask (mask docstring): PNG < 4 MB, same dimensions, applied to the first image.
EDIT_INPUTS = InputImageRules(
    max_count=16,
    min_count=1,
    max_bytes=50 * 1024 * 1024 - 1,
    formats=("png", "jpeg", "webp"),
    mask=MaskRules(formats=("png",), max_bytes=4 * 1024 * 1024 - 1, same_size_as_first_image=True),
)

_AS_OF = "2026-11-21"
_SOURCE = (
    "openai.com/api/pricing and developers.openai.com model pages, as quoted by public "
    "copies on the as_of date (no network access from the build); override with "
    "cost.prices"
)


def _token_pricing(
    text_in: float,
    image_in: float,
    image_out: float,
    per_image: dict[str, float],
    notes: str,
) -> Pricing:
    return Pricing(
        per_image=per_image.get("medium@1024x1024"),
        per_image_by_quality_size=per_image,
        per_image_by_quality={
            q: per_image[f"{q}@1024x1024"]
            for q in ("low", "medium", "high", "xhigh", "max")
            if f"{q}@1024x1024" in per_image
        },
        input_text_per_mtok=text_in,
        input_image_per_mtok=image_in,
        output_image_per_mtok=image_out,
        as_of=_AS_OF,
        source=_SOURCE,
        notes=notes,
    )


def _grid(
    square: tuple[float, float, float], wide: tuple[float, float, float], *, top: bool = False
) -> dict[str, float]:
    """Per-image prices by quality for the square and the two oblong presets.

    With ``top``, xhigh and max (no published per-image figure) are estimated at the high
    price — a lower bound — and priced from the reported tokens after the call.
    """
    out: dict[str, float] = {}
    for quality, sq, ob in zip(("low", "medium", "high"), square, wide, strict=True):
        tiers = (quality, "xhigh", "max") if top and quality == "high" else (quality,)
        for tier in tiers:
            out[f"{tier}@1024x1024"] = sq
            out[f"{tier}@1536x1024"] = ob
            out[f"{tier}@1024x1536"] = ob
    return out


# $5 text in / $8 image in / $30 image out per 1M tokens for gpt-image-2, 2.5 and 2.6.
_GPT2_NOTES = (
    "token-billed; per-image figures are OpenAI's 1024-px estimates; custom sizes, "
    "xhigh/max and complexity are priced from reported tokens after the call"
)
_GPT2_SQUARE, _GPT2_WIDE = (0.006, 0.053, 0.211), (0.005, 0.041, 0.165)
_GPT2_PRICING = _token_pricing(5.0, 8.0, 30.0, _grid(_GPT2_SQUARE, _GPT2_WIDE), _GPT2_NOTES)
# 2.5 and 2.6 keep gpt-image-2's token prices; their xhigh/max tiers get lower-bound estimates.
_GPT25_PRICING = _token_pricing(5.0, 8.0, 30.0, _grid(_GPT2_SQUARE, _GPT2_WIDE, top=True), _GPT2_NOTES)
_GPT15_PRICING = _token_pricing(
    5.0,
    8.0,
    32.0,
    _grid((0.009, 0.034, 0.133), (0.013, 0.05, 0.2)),
    "token-billed; per-image figures from OpenAI's gpt-image-1.5 table",
)
_MINI_PRICING = _token_pricing(
    2.0,
    2.5,
    8.0,
    _grid((0.005, 0.011, 0.036), (0.006, 0.015, 0.052)),
    "developers.openai.com/api/docs/models/gpt-image-1-mini",
)


@dataclass(frozen=True)
class Caps:
    """What one model family can do (the rows of the capability table)."""

    family: str
    title: str
    description: str
    custom_sizes: bool = False
    qualities: tuple[str, ...] = BASE_QUALITIES
    transparent: bool = True
    input_fidelity: tuple[str, ...] = ()
    markup: bool = False
    complexity: bool = False
    gif: bool = False
    svg: bool = False
    pricing: Pricing = field(default=_GPT2_PRICING)


_GPT2 = Caps(
    family="gpt-image-2",
    title="GPT Image 2",
    description="OpenAI's GPT Image 2: custom WxH up to 3840x2160, dense text; no transparent "
    "backgrounds (preview only).",
    custom_sizes=True,
    # "For gpt-image-2 and gpt-image-2-2026-04-21, this support is in preview" (background).
    transparent=False,
)
_GPT25 = Caps(
    family="gpt-image-2.5",
    title="GPT Image 2.5",
    description="GPT Image 2.5: custom WxH, xhigh/max quality, transparent backgrounds, markup-guided edits.",
    custom_sizes=True,
    qualities=TOP_QUALITIES,
    markup=True,  # markup: "Supports GPT Image 2.5. Cannot be combined with mask."
    pricing=_GPT25_PRICING,
)
# gpt-image-2.6-*: the SDK lists the ids (ImageModel, images.generate/edit `model`, and the
# Responses image tool's default) but its per-feature docstrings still name only 2.5. The
# 2026-11-04 launch notes (OpenAI's, as relayed by API gateways' docs) describe 2.6 as 2.5
# plus GIF and SVG output and the `complexity` parameter; we follow them (docs list this).
_GPT26 = Caps(
    family="gpt-image-2.6",
    title="GPT Image 2.6",
    description="GPT Image 2.6: everything in 2.5 plus animated GIF (and opt-in SVG) output and complexity control.",
    custom_sizes=True,
    qualities=TOP_QUALITIES,
    markup=True,
    complexity=True,
    gif=True,
    svg=True,
    pricing=_GPT25_PRICING,
)
_GPT15 = Caps(
    family="gpt-image-1.5",
    title="GPT Image 1.5",
    description="GPT Image 1.5: preset sizes, transparent backgrounds, input_fidelity high/low.",
    # "Supports high and low on gpt-image-1.5" (input_fidelity docstring)
    input_fidelity=("high", "low"),
    pricing=_GPT15_PRICING,
)
_MINI = Caps(
    family="gpt-image-1-mini",
    title="GPT Image 1 mini",
    description="GPT Image 1 mini: the low-cost GPT Image model; preset sizes.",
    input_fidelity=("low",),  # "gpt-image-1-mini supports only low"
    pricing=_MINI_PRICING,
)
_CHATGPT = Caps(
    family="chatgpt-image-latest",
    title="ChatGPT image (latest)",
    description="The image model currently used in ChatGPT (moving target); preset sizes.",
    pricing=_GPT15_PRICING,
)

#: model id → (family caps, aliases). Order is the catalogue order. No invented aliases:
#: every id is one the SDK lists, so canonical and short names are the upstream names.
FAMILIES: dict[str, tuple[Caps, tuple[str, ...]]] = {
    "gpt-image-2": (_GPT2, ()),
    "gpt-image-2-2026-04-21": (_GPT2, ()),
    "gpt-image-2.5-sunburst": (_GPT25, ()),
    "gpt-image-2.5-sunburst-2026-09-08": (_GPT25, ()),
    "gpt-image-2.5-flare": (_GPT25, ()),
    "gpt-image-2.5-flare-2026-09-08": (_GPT25, ()),
    "gpt-image-2.6-sunburst": (_GPT26, ()),
    "gpt-image-2.6-flare": (_GPT26, ()),
    "gpt-image-1.5": (_GPT15, ()),
    "gpt-image-1-mini": (_MINI, ()),
    "chatgpt-image-latest": (_CHATGPT, ()),
}

#: Where old model names and other servers' parameters are mapped to Atelier's.
MIGRATION_GUIDE = "docs/migrating.md"

#: Retired upstream and kept out of the catalogue; a call naming them is told why.
#: dall-e-2/3 (retired 2026-05-12) belong to the separate atelier-dalle plugin.
RETIRED = (
    RetiredModel(
        id="gpt-image-1",
        retired_on="2026-10-23",
        replacement="openai/gpt-image-2.5-sunburst (or openai/gpt-image-2.5-flare)",
        guide=MIGRATION_GUIDE,
    ),
)

# "For gpt-image-2, omit this parameter" (input_fidelity docstring): the newer families
# keep input images at high fidelity and take no setting.
_FIXED_FIDELITY = "{model} always keeps input images at high fidelity; OpenAI takes no input_fidelity for it"

_SVG_EFFORTS = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]


class _OptionsBase(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _options_model(model_id: str, caps: Caps, *, svg: bool) -> type[BaseModel]:
    """The model-specific ``options`` a caller may pass, as a pydantic model."""
    fields: dict[str, Any] = {
        "moderation": (
            Literal["low", "auto"] | None,
            Field(None, description="content-moderation level (generate only): low or auto"),
        ),
        "partial_images": (
            int | None,
            Field(
                None,
                ge=0,
                le=3,
                description="stream this many partial previews (0-3) while the image renders; "
                "each partial costs extra output tokens",
            ),
        ),
        "safety_identifier": (
            str | None,
            Field(
                None,
                min_length=1,
                max_length=256,
                description="stable hashed end-user id for OpenAI abuse monitoring",
            ),
        ),
    }
    fields["route"] = (
        Literal["images", "responses"] | None,
        Field(
            None,
            description="images (default): the Images API; responses: the Responses API image_generation "
            "tool (n=1; edit sessions chain its turns with previous_response_id)",
        ),
    )
    fields["previous_response_id"] = (
        str | None,
        Field(
            None,
            min_length=1,
            max_length=256,
            pattern=r"^[A-Za-z0-9_\-]+$",
            description="route=responses: continue this Responses API turn (edit sessions set it)",
        ),
    )
    if caps.input_fidelity:
        choices = tuple(caps.input_fidelity)
        fields["input_fidelity"] = (
            Literal[choices] | None,  # a Literal built from data (one per model family)
            Field(None, description=f"edit only: how closely to keep input features ({', '.join(choices)})"),
        )
    if caps.complexity:
        fields["complexity"] = (
            Literal["low", "medium", "high"] | None,
            Field(None, description="planning effort, independent of quality (low, medium, high)"),
        )
    if caps.markup:
        fields["markup"] = (
            bool | None,
            Field(
                None,
                description="edit only: send the LAST of `images` as a markup overlay (a transparent "
                "PNG the size of the first image) instead of as an input; not with mask",
            ),
        )
    if caps.gif:
        fields["frame_count"] = (
            int | None,
            Field(None, ge=2, le=16, description="GIF output only: number of frames (2-16, default 9)"),
        )
        fields["frame_duration_ms"] = (
            int | None,
            Field(None, ge=10, le=655_350, description="GIF output only: delay per frame in ms (default 200)"),
        )
    if svg:
        fields["svg_model"] = (
            str | None,
            Field(None, min_length=1, max_length=128, description="SVG output only: the SVG author model"),
        )
        fields["svg_reasoning_effort"] = (
            _SVG_EFFORTS | None,
            Field(None, description="SVG output only: the SVG author's reasoning effort"),
        )
    name = "OpenAIOptions_" + "".join(ch if ch.isalnum() else "_" for ch in model_id)
    model: type[BaseModel] = create_model(name, __base__=_OptionsBase, **fields)
    return model


def build_spec(
    model_id: str,
    caps: Caps,
    aliases: tuple[str, ...] = (),
    *,
    transparent_preview: bool = False,
    svg_output: bool = False,
) -> ModelSpec:
    """One :class:`ModelSpec` from a capability row.

    ``transparent_preview`` adds ``background=transparent`` to gpt-image-2 (a preview
    there); ``svg_output`` adds ``svg`` to the models that can author SVG. SVG is opt-in:
    OpenAI requires project access for it, and it is a vector document, not a raster
    image the rest of the pipeline can preview (see docs/providers/openai.md).
    """
    svg = caps.svg and svg_output
    formats = RASTER_FORMATS + (("gif",) if caps.gif else ()) + (("svg",) if svg else ())
    transparent = caps.transparent or transparent_preview
    options = _options_model(model_id, caps, svg=svg)
    return ModelSpec(
        id=model_id,
        aliases=aliases,
        title=caps.title if model_id == caps.family else f"{caps.title} ({model_id})",
        description=caps.description,
        operations=frozenset({Operation.GENERATE, Operation.EDIT}),
        sizes=SizeRules(
            presets=PRESETS,
            allow_auto=True,
            default="auto",
            custom=CUSTOM_SIZES if caps.custom_sizes else None,
        ),
        qualities=caps.qualities,
        output_formats=formats,
        default_output_format="png",
        compression_formats=COMPRESSION_FORMATS,
        backgrounds=ALL_BACKGROUNDS if transparent else OPAQUE_BACKGROUNDS,
        n_max=10,
        prompt_max_chars=32_000,
        prompt_required_for=frozenset({Operation.GENERATE, Operation.EDIT}),
        input_images=EDIT_INPUTS,
        options=options,
        applies=_applies(options, formats),
        # OpenAI replaced the Images API's `user` with `safety_identifier`; callers coming
        # from servers that still take `user` keep working (the call's notes say so).
        option_renames={"user": "safety_identifier"},
        ignored_options={} if caps.input_fidelity else {"input_fidelity": _FIXED_FIDELITY.format(model=model_id)},
        pricing=caps.pricing,
        streams_partial_images=True,
        returns_revised_prompt=False,
    )


def _applies(options: type[BaseModel], formats: tuple[str, ...]) -> dict[str, Applies]:
    """Where each option applies, as data: the core refuses it elsewhere before any call."""
    edit, generate = frozenset({Operation.EDIT}), frozenset({Operation.GENERATE})
    raster = tuple(f for f in formats if f in RASTER_FORMATS)
    rules = {
        "options.moderation": Applies(
            operations=generate,
            fix="remove options.moderation for edits (the OpenAI edits endpoint has no moderation setting)",
        ),
        "options.input_fidelity": Applies(operations=edit),
        "options.markup": Applies(operations=edit, mask=False),  # OpenAI allows one or the other
        "options.frame_count": Applies(output_formats=("gif",)),
        "options.frame_duration_ms": Applies(output_formats=("gif",)),
        "options.svg_model": Applies(output_formats=("svg",)),
        "options.svg_reasoning_effort": Applies(output_formats=("svg",)),
        "options.partial_images": Applies(
            output_formats=raster, fix="remove options.partial_images: GIF and SVG output cannot be streamed"
        ),
    }
    applies = {key: rule for key, rule in rules.items() if key.removeprefix("options.") in options.model_fields}
    if "gif" in formats:
        applies["mask"] = Applies(
            output_formats=tuple(f for f in formats if f != "gif"), fix="remove mask, or pick png/webp/jpeg output"
        )
    return applies


def caps_for(model_id: str) -> Caps:
    """The capability row of a catalogue model (KeyError for others)."""
    return FAMILIES[model_id][0]


CATALOGUE: tuple[ModelSpec, ...] = tuple(
    build_spec(model_id, caps, aliases) for model_id, (caps, aliases) in FAMILIES.items()
)
