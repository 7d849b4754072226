"""MiniMax's image models, declared as data.

Facts come from MiniMax's API reference (platform.minimax.io / platform.minimaxi.com,
``image-generation-t2i`` and ``-i2i``): one endpoint, ``POST /v1/image_generation``,
serving ``image-01`` (aspect ratios or a custom size, subject reference) and
``image-01-live`` (painting styles; aspect ratios only, no 21:9). Output is always JPEG.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from atelier_core import CustomSizeRule, InputImageRules, ModelSpec, Operation, Pricing, SizeRules

__all__ = [
    "IMAGE_01",
    "IMAGE_01_LIVE",
    "MODELS",
    "PROMPT_MAX_CHARS",
    "RATIO_SIZES",
    "SEED_MAX",
    "STYLE_TYPES",
    "Image01LiveOptions",
    "Image01Options",
]

PROMPT_MAX_CHARS = 1500
# MiniMax documents seeds as non-negative integers; the wrappers that state a bound
# give 2**31 - 1, so a larger value is refused here instead of failing upstream (2013).
SEED_MAX = 2**31 - 1
REFERENCE_MAX_BYTES = 10 * 1024 * 1024

# The pixel size MiniMax produces for each aspect ratio (from its API reference).
RATIO_SIZES: dict[str, str] = {
    "1:1": "1024x1024",
    "16:9": "1280x720",
    "4:3": "1152x864",
    "3:2": "1248x832",
    "2:3": "832x1248",
    "3:4": "864x1152",
    "9:16": "720x1280",
    "21:9": "1344x576",
}
_LIVE_RATIOS = tuple(r for r in RATIO_SIZES if r != "21:9")  # 21:9 is image-01 only

# image-01-live's painting styles. The API takes the Chinese names; the English names
# are accepted as well and sent as their Chinese counterpart.
STYLE_TYPES: dict[str, str] = {
    "comic": "漫画",
    "energetic": "元气",
    "medieval": "中世纪",
    "watercolor": "水彩",
}

_PRICING = Pricing(
    per_image=0.0035,
    as_of="2026-11-21",
    source="https://platform.minimax.io/docs/pricing/overview (pay-as-you-go, international)",
    notes=(
        "not re-checked from this offline workspace; the mainland host bills in CNY "
        "(about ¥0.025 per image). Set cost.prices to override."
    ),
)


class Image01Options(BaseModel):
    """Extra options of ``image-01``."""

    model_config = ConfigDict(extra="forbid")

    prompt_optimizer: bool | None = Field(
        None, description="let MiniMax rewrite the prompt before generating (default false)"
    )
    aigc_watermark: bool | None = Field(None, description="embed MiniMax's AIGC watermark in the image (default false)")


class Image01LiveOptions(Image01Options):
    """Extra options of ``image-01-live``: the weight of the chosen ``style``."""

    style_weight: Annotated[float, Field(gt=0, le=1)] | None = Field(
        None,
        description="how strongly the style applies, in (0, 1]; MiniMax's default is 0.8. Needs style.",
    )


IMAGE_01 = ModelSpec(
    id="image-01",
    aliases=("minimax-image-01",),
    title="MiniMax image-01",
    description=(
        "MiniMax's general image model: aspect ratios or a custom size, up to 9 images, "
        "seed, and a subject reference (pass one character portrait in images to keep "
        "that face). JPEG output."
    ),
    operations=frozenset({Operation.GENERATE}),
    sizes=SizeRules(
        aspect_ratios=tuple(RATIO_SIZES),
        default_aspect_ratio="1:1",
        ratio_sizes=dict(RATIO_SIZES),
        custom=CustomSizeRule(step=8, min_edge=512, max_edge=2048),
    ),
    output_formats=("jpeg",),
    default_output_format="jpeg",
    n_max=9,
    n_native_max=9,
    prompt_max_chars=PROMPT_MAX_CHARS,
    reference_images=InputImageRules(max_count=1, min_count=0, formats=("jpeg", "png"), max_bytes=REFERENCE_MAX_BYTES),
    seed=(0, SEED_MAX),
    options=Image01Options,
    pricing=_PRICING,
)

IMAGE_01_LIVE = ModelSpec(
    id="image-01-live",
    aliases=("minimax-image-01-live",),
    title="MiniMax image-01-live",
    description=(
        "MiniMax's stylised variant: painting styles (comic, energetic, medieval, "
        "watercolor) with a style weight. Aspect ratios only (no custom size, no 21:9) "
        "and no subject reference — use image-01 for those. JPEG output."
    ),
    operations=frozenset({Operation.GENERATE}),
    sizes=SizeRules(
        aspect_ratios=_LIVE_RATIOS,
        default_aspect_ratio="1:1",
        ratio_sizes={r: RATIO_SIZES[r] for r in _LIVE_RATIOS},
    ),
    output_formats=("jpeg",),
    default_output_format="jpeg",
    n_max=9,
    n_native_max=9,
    prompt_max_chars=PROMPT_MAX_CHARS,
    seed=(0, SEED_MAX),
    styles=(*STYLE_TYPES, *STYLE_TYPES.values()),
    options=Image01LiveOptions,
    pricing=_PRICING,
)

MODELS: tuple[ModelSpec, ...] = (IMAGE_01, IMAGE_01_LIVE)
