"""The Gemini provider's models, as data.

Two families, two SDK calls:

- **Gemini native image models** ("Nano Banana") answer ``generateContent`` with image
  parts. Aspect ratio and resolution tier go in ``generationConfig.imageConfig``; input
  images for edits and composition are inline parts of the same request; one image per
  call (the core fans out above ``n_native_max``).
- **Imagen** answers ``:predict`` through ``generate_images`` / ``edit_image``, which
  google-genai 3.4 only allows in Vertex AI mode (``requires="vertex"``).

Facts are checked against the installed google-genai 3.4 (``types.ImageConfig``,
``GenerateImagesConfig``, ``EditImageConfig`` and their converters in ``models.py``) and
Google's published model pages; see docs/providers/gemini.md for sources and dates.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from atelier_core import (
    InputImageRules,
    MaskRules,
    ModelSpec,
    Operation,
    Pricing,
    RetiredModel,
    SizeRules,
)

__all__ = [
    "GEMINI_RATIOS",
    "IMAGEN_RATIOS",
    "MODELS",
    "PRICES_AS_OF",
    "PRICES_SOURCE",
    "RETIRED",
    "VERTEX",
    "GeminiImageOptions",
    "ImagenEditOptions",
    "ImagenOptions",
    "is_imagen",
]

VERTEX = "vertex"
PRICES_AS_OF = "2026-11-21"
PRICES_SOURCE = (
    "https://ai.google.dev/gemini-api/docs/pricing and "
    "https://cloud.google.com/vertex-ai/generative-ai/pricing (stored copies; indicative)"
)

# ImageConfig.aspect_ratio docstring in google-genai 3.4 (types.py).
GEMINI_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "9:16", "16:9", "21:9")
# GenerateImagesConfig.aspect_ratio docstring in google-genai 3.4.
IMAGEN_RATIOS = ("1:1", "3:4", "4:3", "9:16", "16:9")

# Pixel sizes each ratio produces (Google's image-generation docs). A requested WxH that
# equals one of these maps exactly; others map to the nearest ratio within 3 %.
_FLASH_25_SIZES = {
    "1:1": "1024x1024",
    "2:3": "832x1248",
    "3:2": "1248x832",
    "3:4": "864x1184",
    "4:3": "1184x864",
    "9:16": "768x1344",
    "16:9": "1344x768",
    "21:9": "1536x672",
}
_GEMINI_3_SIZES_1K = {
    "1:1": "1024x1024",
    "2:3": "848x1264",
    "3:2": "1264x848",
    "3:4": "896x1200",
    "4:3": "1200x896",
    "9:16": "768x1376",
    "16:9": "1376x768",
    "21:9": "1584x672",
}


def _tiered(base: dict[str, str], tiers: dict[str, int]) -> dict[str, str]:
    out: dict[str, str] = {}
    for tier, factor in tiers.items():
        for ratio, size in base.items():
            w, h = (int(v) for v in size.split("x"))
            out[f"{ratio}@{tier}"] = f"{w * factor}x{h * factor}"
    return out


_GEMINI_3_SIZES = _tiered(_GEMINI_3_SIZES_1K, {"1K": 1, "2K": 2, "4K": 4})


class GeminiImageOptions(BaseModel):
    """Extra options for Gemini image models (``options`` on generate/edit)."""

    model_config = ConfigDict(extra="forbid")

    person_generation: Literal["ALLOW_ALL", "ALLOW_ADULT", "ALLOW_NONE"] | None = Field(
        None, description="whether people may be depicted (Vertex AI mode only in google-genai 3.4)"
    )
    prominent_people: Literal["ALLOW_PROMINENT_PEOPLE", "BLOCK_PROMINENT_PEOPLE"] | None = Field(
        None, description="celebrities allowed or blocked (Vertex AI mode only)"
    )
    include_text: bool = Field(True, description="let the model answer with text parts beside the image (TEXT+IMAGE)")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="sampling temperature")


class ImagenOptions(BaseModel):
    """Extra options for Imagen generation (Vertex AI)."""

    model_config = ConfigDict(extra="forbid")

    person_generation: Literal["DONT_ALLOW", "ALLOW_ADULT", "ALLOW_ALL"] | None = Field(
        None, description="whether people may be depicted"
    )
    safety_filter_level: (
        Literal["BLOCK_LOW_AND_ABOVE", "BLOCK_MEDIUM_AND_ABOVE", "BLOCK_ONLY_HIGH", "BLOCK_NONE"] | None
    ) = Field(None, description="how strictly outputs are filtered")
    add_watermark: bool | None = Field(
        None, description="SynthID watermark (Google's default is on; a seed needs it off)"
    )
    enhance_prompt: bool | None = Field(None, description="let Google rewrite the prompt")
    guidance_scale: float | None = Field(None, ge=0.0, le=100.0, description="prompt adherence")


class ImagenEditOptions(ImagenOptions):
    """Extra options for Imagen edits (the capability model)."""

    edit_mode: Literal["inpaint_insertion", "inpaint_removal", "outpaint", "bgswap"] | None = Field(
        None,
        description="what to do in the masked area (default inpaint_insertion with a mask; "
        "without a mask or mask_mode the whole image is edited from the prompt)",
    )
    mask_mode: Literal["user_provided", "background", "foreground"] | None = Field(
        None,
        description="where the edit area comes from: the given mask (default when a mask is "
        "passed) or an automatic background/foreground segmentation",
    )
    mask_dilation: float | None = Field(None, ge=0.0, le=1.0, description="grow the mask by this fraction")


def _gemini(
    id: str,
    *,
    title: str,
    description: str,
    aliases: tuple[str, ...] = (),
    resolutions: tuple[str, ...] = (),
    ratio_sizes: dict[str, str] | None = None,
    max_inputs: int,
    pricing: Pricing | None,
) -> ModelSpec:
    inputs = InputImageRules(
        max_count=max_inputs,
        min_count=1,
        max_bytes=7 * 1024 * 1024,
        formats=("png", "jpeg", "webp", "gif"),
    )
    return ModelSpec(
        id=id,
        aliases=aliases,
        title=title,
        description=description,
        operations=frozenset({Operation.GENERATE, Operation.EDIT}),
        sizes=SizeRules(
            aspect_ratios=GEMINI_RATIOS,
            default_aspect_ratio="1:1",
            resolutions=resolutions,
            default_resolution="1K" if resolutions else None,
            ratio_sizes=ratio_sizes or {},
        ),
        output_formats=("png", "jpeg"),
        default_output_format="png",
        compression_formats=("jpeg",),
        n_max=4,
        n_native_max=1,
        prompt_max_chars=30_000,
        input_images=inputs,
        reference_images=inputs.model_copy(update={"min_count": 0}),
        seed=True,
        options=GeminiImageOptions,
        pricing=pricing,
    )


def _gemini_price(
    per_image: float, by_tier: dict[str, float], text_in: float, image_in: float, image_out: float
) -> Pricing:
    return Pricing(
        per_image=per_image,
        per_image_by_size=by_tier,
        input_text_per_mtok=text_in,
        input_image_per_mtok=image_in,
        output_image_per_mtok=image_out,
        as_of=PRICES_AS_OF,
        source=PRICES_SOURCE,
        notes="token-priced: the cost after a call comes from the reported image tokens",
    )


_FLASH_25_PRICE = _gemini_price(0.039, {}, 0.30, 0.30, 30.0)
_PRO_3_PRICE = _gemini_price(0.134, {"1K": 0.134, "2K": 0.134, "4K": 0.24}, 2.0, 2.0, 120.0)
_FLASH_31_PRICE = _gemini_price(0.067, {"1K": 0.067, "2K": 0.101, "4K": 0.151}, 0.50, 0.50, 60.0)

_GEMINI_MODELS = (
    _gemini(
        "gemini-2.5-flash-image",
        aliases=("nano-banana",),
        title="Gemini 2.5 Flash Image (Nano Banana)",
        description="Fast native Gemini image generation and editing; 1K output; up to 3 input images.",
        ratio_sizes=_FLASH_25_SIZES,
        max_inputs=3,
        pricing=_FLASH_25_PRICE,
    ),
    _gemini(
        "gemini-3-pro-image",
        aliases=("nano-banana-pro",),
        title="Gemini 3 Pro Image (Nano Banana Pro)",
        description="Highest-quality Gemini image model with reasoning; 1K/2K/4K; up to 14 input images.",
        resolutions=("1K", "2K", "4K"),
        ratio_sizes=_GEMINI_3_SIZES,
        max_inputs=14,
        pricing=_PRO_3_PRICE,
    ),
    _gemini(
        "gemini-3-pro-image-preview",
        title="Gemini 3 Pro Image (preview name)",
        description="The preview model id of Gemini 3 Pro Image; 1K/2K/4K; up to 14 input images.",
        resolutions=("1K", "2K", "4K"),
        ratio_sizes=_GEMINI_3_SIZES,
        max_inputs=14,
        pricing=_PRO_3_PRICE,
    ),
    _gemini(
        "gemini-3.1-flash-image",
        aliases=("nano-banana-2",),
        title="Gemini 3.1 Flash Image (Nano Banana 2)",
        description="Fast, near-Pro quality Gemini image model; 1K/2K/4K; up to 14 input images.",
        resolutions=("1K", "2K", "4K"),
        ratio_sizes=_GEMINI_3_SIZES,
        max_inputs=14,
        pricing=_FLASH_31_PRICE,
    ),
    _gemini(
        "gemini-3.1-flash-image-preview",
        title="Gemini 3.1 Flash Image (preview name)",
        description="The preview model id of Gemini 3.1 Flash Image; 1K/2K/4K; up to 14 input images.",
        resolutions=("1K", "2K", "4K"),
        ratio_sizes=_GEMINI_3_SIZES,
        max_inputs=14,
        pricing=_FLASH_31_PRICE,
    ),
    _gemini(
        "gemini-3.1-flash-lite-image",
        aliases=("nano-banana-2-lite",),
        title="Gemini 3.1 Flash-Lite Image (Nano Banana 2 Lite)",
        description="Cheapest, fastest Gemini image model; 1K output; best with one input image. "
        "No published price in our table: cost is reported from token usage only when known.",
        max_inputs=3,
        pricing=None,
    ),
)

_IMAGEN_NOTE = (
    " Vertex AI only. Google listed Imagen endpoints as discontinued (migration to Gemini image "
    "models recommended before 2026-06-30); calls fail with 'model not found' once your project "
    "loses access."
)


def _imagen(
    id: str, *, title: str, aliases: tuple[str, ...], resolutions: tuple[str, ...], n_native: int, price: float
) -> ModelSpec:
    return ModelSpec(
        id=id,
        aliases=aliases,
        title=title,
        description=f"{title} text-to-image through generate_images.{_IMAGEN_NOTE}",
        operations=frozenset({Operation.GENERATE}),
        sizes=SizeRules(
            aspect_ratios=IMAGEN_RATIOS,
            default_aspect_ratio="1:1",
            resolutions=resolutions,
            default_resolution=None,
            # Imagen's outputs (e.g. 896x1280 for 3:4) are more than 3 % off the nominal
            # ratio, so no exact ratio_sizes are declared: a WxH maps by nominal ratio.
        ),
        output_formats=("png", "jpeg"),
        default_output_format="png",
        compression_formats=("jpeg",),
        n_max=4,
        n_native_max=n_native,
        prompt_max_chars=10_000,
        seed=True,
        options=ImagenOptions,
        pricing=Pricing(per_image=price, as_of=PRICES_AS_OF, source=PRICES_SOURCE),
        requires=VERTEX,
    )


_IMAGEN_MODELS = (
    _imagen(
        "imagen-4.0-generate-001",
        title="Imagen 4",
        aliases=("imagen-4", "imagen-4.0"),
        resolutions=("1K", "2K"),
        n_native=4,
        price=0.04,
    ),
    _imagen(
        "imagen-4.0-fast-generate-001",
        title="Imagen 4 Fast",
        aliases=("imagen-4-fast",),
        resolutions=("1K",),
        n_native=4,
        price=0.02,
    ),
    _imagen(
        "imagen-4.0-ultra-generate-001",
        title="Imagen 4 Ultra",
        aliases=("imagen-4-ultra",),
        resolutions=("1K", "2K"),
        n_native=1,
        price=0.06,
    ),
    ModelSpec(
        id="imagen-3.0-capability-001",
        aliases=("imagen-edit", "imagen-3-capability"),
        title="Imagen 3 capability (edits)",
        description="Mask-based Imagen editing (inpaint insert/remove, outpaint, background swap) "
        f"through edit_image.{_IMAGEN_NOTE}",
        operations=frozenset({Operation.EDIT}),
        sizes=SizeRules(aspect_ratios=IMAGEN_RATIOS, default_aspect_ratio=None),
        output_formats=("png", "jpeg"),
        default_output_format="png",
        compression_formats=("jpeg",),
        n_max=4,
        n_native_max=4,
        prompt_max_chars=10_000,
        input_images=InputImageRules(
            max_count=1,
            min_count=1,
            max_bytes=10 * 1024 * 1024,
            formats=("png", "jpeg", "webp"),
            mask=MaskRules(formats=("png",), max_bytes=10 * 1024 * 1024),
        ),
        seed=True,
        negative_prompt=True,
        options=ImagenEditOptions,
        pricing=Pricing(per_image=0.02, as_of=PRICES_AS_OF, source=PRICES_SOURCE),
        requires=VERTEX,
    ),
)

MODELS: tuple[ModelSpec, ...] = (*_GEMINI_MODELS, *_IMAGEN_MODELS)

# Ids Google shut down (Vertex AI Imagen 3 page: "Discontinuation date: June 30, 2026"); named so a caller gets the replacement instead of "unknown model".
RETIRED: tuple[RetiredModel, ...] = (
    RetiredModel(id="imagen-3.0-generate-002", retired_on="2026-06-30", replacement="gemini/gemini-3.1-flash-image"),
    RetiredModel(id="imagen-3.0-generate-001", retired_on="2026-06-30", replacement="gemini/gemini-3.1-flash-image"),
)


def is_imagen(spec: ModelSpec) -> bool:
    """Imagen models go through ``:predict`` (generate_images / edit_image)."""
    return spec.id.startswith("imagen-")
