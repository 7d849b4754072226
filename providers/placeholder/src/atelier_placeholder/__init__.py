"""The placeholder provider: draws deterministic placeholder pictures, offline.

It needs no key and no network, and it is *not* an AI model: it paints a gradient,
shapes and the prompt's words, seeded by (prompt, size, seed). Edits repaint exactly the
masked region (transparent mask pixels) and keep every other pixel. It serves the demo,
free dry runs of agent workflows, and is the simplest complete provider to read.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import textwrap
from collections.abc import Sequence
from typing import ClassVar

from atelier_core import (
    CallContext,
    CustomSizeRule,
    ImageRequest,
    InputImageRules,
    MaskRules,
    ModelSpec,
    Operation,
    Pricing,
    Provider,
    ProviderImage,
    ProviderResult,
    SizeRules,
    hookimpl,
)

__all__ = ["PlaceholderProvider", "register_providers"]

_FORMATS = ("png", "jpeg", "webp")
#: Said with every result, so nobody mistakes a placeholder for a generated image.
NOTICE = (
    "The placeholder provider draws placeholder pictures (a gradient, shapes and the prompt's words) "
    "locally. They are NOT AI images. Configure a real provider for those: see "
    "https://github.com/atelier-mcp/atelier/blob/main/docs/configuration.md"
)

PLACEHOLDER = ModelSpec(
    id="placeholder",
    aliases=("placeholder-image", "offline"),
    title="Offline placeholder",
    description="Draws labelled placeholder pictures locally. Free, instant, not AI.",
    operations=frozenset({Operation.GENERATE, Operation.EDIT, Operation.VARIATION}),
    sizes=SizeRules(
        presets=("256x256", "512x512", "1024x1024", "1536x1024", "1024x1536"),
        allow_auto=True,
        default="1024x1024",
        custom=CustomSizeRule(step=8, min_edge=64, max_edge=4096, max_aspect=4.0),
        aspect_ratios=("1:1", "3:2", "2:3", "4:3", "3:4", "16:9", "9:16"),
    ),
    qualities=("low", "medium", "high"),
    output_formats=_FORMATS,
    default_output_format="png",
    compression_formats=("jpeg", "webp"),
    backgrounds=("auto", "opaque", "transparent"),
    n_max=10,
    prompt_max_chars=32_000,
    prompt_required_for=frozenset({Operation.GENERATE, Operation.EDIT}),
    input_images=InputImageRules(
        max_count=16,
        min_count=1,
        max_bytes=50 * 1024 * 1024,
        formats=("png", "jpeg", "webp", "gif"),
        mask=MaskRules(formats=("png",), max_bytes=50 * 1024 * 1024),
    ),
    seed=True,
    negative_prompt=True,
    styles=("flat", "stripes", "dots"),
    pricing=Pricing(per_image=0.0, as_of="2026-11-21", source="local", notes="always free"),
)


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _palette(rng: random.Random) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    def colour() -> tuple[int, int, int]:
        return (rng.randrange(30, 226), rng.randrange(30, 226), rng.randrange(30, 226))

    return colour(), colour()


def _encode(image: object, fmt: str, compression: int | None) -> bytes:
    from PIL import Image

    assert isinstance(image, Image.Image)
    out = io.BytesIO()
    if fmt == "jpeg":
        # output_compression has OpenAI's meaning: 100 = least compression (best quality).
        quality = compression if compression is not None else 90
        image.convert("RGB").save(out, "JPEG", quality=max(5, quality))
    elif fmt == "webp":
        quality = compression if compression is not None else 90
        image.save(out, "WEBP", quality=max(5, quality))
    else:
        image.save(out, "PNG")
    return out.getvalue()


def draw(prompt: str, width: int, height: int, seed: int, style: str | None, transparent: bool) -> object:
    """Draw one placeholder picture (a PIL image). Deterministic in every argument."""
    from PIL import Image, ImageDraw

    rng = _rng(prompt, width, height, seed, style)
    top, bottom = _palette(rng)
    base = Image.new("RGBA", (width, height))
    px = ImageDraw.Draw(base)
    for y in range(height):
        t = y / max(1, height - 1)
        px.line(
            [(0, y), (width, y)],
            fill=(*(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)), 255),
        )
    if transparent:
        base.putalpha(0)
    for _ in range(rng.randrange(3, 8)):
        cx, cy = rng.randrange(width), rng.randrange(height)
        r = rng.randrange(max(4, min(width, height) // 12), max(8, min(width, height) // 3))
        fill = (rng.randrange(256), rng.randrange(256), rng.randrange(256), 255)
        if rng.random() < 0.5:
            px.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        else:
            px.rectangle([cx - r, cy - r // 2, cx + r, cy + r // 2], fill=fill)
    if style == "stripes":
        for x in range(0, width, 24):
            px.line([(x, 0), (x, height)], fill=(255, 255, 255, 90), width=6)
    elif style == "dots":
        for x in range(12, width, 32):
            for y in range(12, height, 32):
                px.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(255, 255, 255, 140))
    label = "\n".join(textwrap.wrap(prompt, width=max(8, width // 9))[:6])
    px.rectangle([0, height - 14 * (label.count("\n") + 1) - 16, width, height], fill=(0, 0, 0, 150))
    px.multiline_text((8, height - 14 * (label.count("\n") + 1) - 10), label, fill=(255, 255, 255, 255))
    px.text((8, 8), "PLACEHOLDER", fill=(255, 255, 255, 255))
    return base


def repaint(source: object, mask: object | None, prompt: str, seed: int, extras: Sequence[object]) -> object:
    """Repaint the transparent area of ``mask`` (or a central band without a mask).

    Pixels outside the area are copied unchanged. Extra input images are pasted as
    thumbnails into the area, so composition with several images is visible.
    """
    from PIL import Image, ImageDraw

    assert isinstance(source, Image.Image)
    base = source.convert("RGBA")
    width, height = base.size
    rng = _rng("edit", prompt, width, height, seed)
    colour, accent = _palette(rng)
    named = _named_colour(prompt)
    if named is not None:  # "add a red door" paints the area red: edits are easy to see
        colour = named
    paint = Image.new("RGBA", base.size, (*colour, 255))
    pd = ImageDraw.Draw(paint)
    for x in range(-height, width, 18):
        pd.line([(x, 0), (x + height, height)], fill=(*accent, 255), width=7)
    for index, extra in enumerate(extras):
        assert isinstance(extra, Image.Image)
        thumb = extra.convert("RGBA")
        thumb.thumbnail((max(16, width // 4), max(16, height // 4)))
        paint.alpha_composite(thumb, (8 + index * (width // 4 + 4) % max(1, width - 8), 8))
    if mask is not None:
        assert isinstance(mask, Image.Image)
        alpha = mask.convert("RGBA").getchannel("A")
        region = alpha.point(lambda a: 255 if a == 0 else 0)
    else:
        region = Image.new("L", base.size, 0)
        ImageDraw.Draw(region).rectangle([0, height // 3, width, 2 * height // 3], fill=255)
    box = region.getbbox() or (0, 0, width, height)
    pd.text((box[0] + 6, box[1] + 6), prompt[:60], fill=(255, 255, 255, 255))
    return Image.composite(paint, base, region)


_COLOURS = {
    "red": (200, 30, 30),
    "green": (30, 160, 60),
    "blue": (30, 70, 200),
    "yellow": (235, 200, 30),
    "orange": (235, 130, 20),
    "purple": (130, 50, 170),
    "pink": (235, 110, 170),
    "black": (20, 20, 20),
    "white": (240, 240, 240),
    "brown": (120, 75, 35),
    "grey": (128, 128, 128),
    "gray": (128, 128, 128),
}


def _named_colour(prompt: str) -> tuple[int, int, int] | None:
    for word in prompt.lower().replace(",", " ").split():
        if word in _COLOURS:
            return _COLOURS[word]
    return None


class PlaceholderProvider(Provider):
    name: ClassVar[str] = "placeholder"
    title: ClassVar[str] = "Offline placeholder (not AI)"
    models = (PLACEHOLDER,)
    needs_key = False

    async def generate(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
        width, height = request.width or 1024, request.height or 1024
        if request.aspect_ratio and not request.width:
            a, b = (int(v) for v in request.aspect_ratio.split(":"))
            width, height = (1024, round(1024 * b / a)) if a >= b else (round(1024 * a / b), 1024)
            width, height = width - width % 8, height - height % 8
        fmt = request.output_format or "png"
        seed = request.seed if request.seed is not None else 0
        prompt = request.prompt or ""
        images = []
        for index in range(request.n):
            await ctx.progress(index / request.n, f"drawing image {index + 1} of {request.n}")
            picture = await asyncio.to_thread(
                draw,
                prompt,
                width,
                height,
                seed + index,
                request.style,
                request.background == "transparent",
            )
            data = await asyncio.to_thread(_encode, picture, fmt, request.output_compression)
            images.append(ProviderImage(data=data, mime_type=f"image/{fmt}", seed=seed + index))
        return ProviderResult(
            images=images,
            applied={"size": f"{width}x{height}"},
            request_id=f"placeholder-{seed}",
            notes=[NOTICE],
        )

    async def edit(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
        from PIL import Image

        first, *others = request.images
        source = Image.open(io.BytesIO(first.data))
        source.load()
        mask = None
        if request.mask is not None:
            mask = Image.open(io.BytesIO(request.mask.data))
            mask.load()
        extras = []
        for image in others:
            opened = Image.open(io.BytesIO(image.data))
            opened.load()
            extras.append(opened)
        fmt = request.output_format or "png"
        seed = request.seed if request.seed is not None else 0
        images = []
        for index in range(request.n):
            await ctx.progress(index / request.n, f"editing image {index + 1} of {request.n}")
            result = await asyncio.to_thread(repaint, source, mask, request.prompt or "", seed + index, extras)
            data = await asyncio.to_thread(_encode, result, fmt, request.output_compression)
            images.append(ProviderImage(data=data, mime_type=f"image/{fmt}", seed=seed + index))
        return ProviderResult(images=images, applied={"size": f"{source.width}x{source.height}"}, notes=[NOTICE])

    async def variation(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
        from PIL import Image

        source = Image.open(io.BytesIO(request.images[0].data))
        source.load()
        fmt = request.output_format or "png"
        seed = request.seed if request.seed is not None else 0
        images = []
        for index in range(request.n):
            rng = _rng("variation", seed + index)
            shifted = source.convert("RGB").rotate(rng.choice([0, 90, 180, 270]))
            tinted = Image.blend(shifted, Image.new("RGB", shifted.size, _palette(rng)[0]), 0.3)
            images.append(
                ProviderImage(data=_encode(tinted, fmt, request.output_compression), mime_type=f"image/{fmt}")
            )
        return ProviderResult(images=images, notes=[NOTICE])


@hookimpl
def register_providers(register: object) -> None:
    assert callable(register)
    register(PlaceholderProvider())
