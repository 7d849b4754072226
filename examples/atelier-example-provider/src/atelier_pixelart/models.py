"""The models Pixel Forge offers, as data. Adding a model is adding a ModelSpec here."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from atelier_core import (
    CustomSizeRule,
    InputImageRules,
    ModelSpec,
    Operation,
    Pricing,
    SizeRules,
)

__all__ = ["MODELS", "PIXEL_1", "PIXEL_1_MINI", "PixelArtOptions"]


class PixelArtOptions(BaseModel):
    """Options only Pixel Forge has. ``extra="forbid"``: a misspelt option is an error."""

    model_config = ConfigDict(extra="forbid")

    palette: Literal["full", "gameboy", "nes", "pico8"] = Field(
        "full", description="colour palette the picture is limited to"
    )
    dither: bool = Field(False, description="dither gradients instead of banding them")


PIXEL_1 = ModelSpec(
    id="pixel-1",
    aliases=("pixel-art",),
    title="Pixel Forge pixel-1",
    description="Crisp pixel-art sprites and scenes up to 256x256; edits recolour and redraw.",
    operations=frozenset({Operation.GENERATE, Operation.EDIT}),
    sizes=SizeRules(
        presets=("32x32", "64x64", "128x128", "256x256"),
        default="64x64",
        custom=CustomSizeRule(step=8, min_edge=16, max_edge=256, max_aspect=4.0),
    ),
    output_formats=("png", "gif"),
    default_output_format="png",
    n_max=8,
    n_native_max=4,  # the API takes at most 4 per call; the core fans out above that
    prompt_max_chars=1000,
    input_images=InputImageRules(max_count=1, formats=("png",), max_bytes=2 * 1024 * 1024),
    seed=True,
    options=PixelArtOptions,
    pricing=Pricing(
        per_image=0.002,
        per_image_by_size={"256x256": 0.004},
        as_of="2026-11-21",
        source="Pixel Forge price list (fictional, for the example)",
    ),
)

PIXEL_1_MINI = ModelSpec(
    id="pixel-1-mini",
    title="Pixel Forge pixel-1 mini",
    description="Tiny icons (16x16 and 32x32), fast and cheap.",
    operations=frozenset({Operation.GENERATE}),
    sizes=SizeRules(presets=("16x16", "32x32"), default="32x32"),
    output_formats=("png",),
    n_max=4,
    prompt_max_chars=300,
    seed=True,
    options=PixelArtOptions,
    pricing=Pricing(per_image=0.0005, as_of="2026-11-21", source="Pixel Forge price list (fictional)"),
)

MODELS: tuple[ModelSpec, ...] = (PIXEL_1, PIXEL_1_MINI)
