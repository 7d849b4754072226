"""Small real images for tests: encoded bytes of a given size and format, and a reader.

Fake upstreams serve these, and contract checks decode what a provider returns with
:func:`read_image`. Everything is in memory; Pillow does the encoding.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

__all__ = ["SampleInfo", "make_image", "make_mask", "read_image"]

_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP", "gif": "GIF"}


@dataclass(frozen=True, slots=True)
class SampleInfo:
    """What :func:`read_image` found: the real format, size and whether it has alpha."""

    format: str
    width: int
    height: int
    has_alpha: bool

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


def make_image(
    width: int = 64,
    height: int = 64,
    format: str = "png",
    *,
    color: tuple[int, int, int] = (200, 60, 40),
    alpha: bool = False,
) -> bytes:
    """Encode a solid picture (with a contrasting square) of ``width``×``height``.

    ``format`` is ``png``, ``jpeg``, ``webp`` or ``gif``; ``alpha`` gives PNG/WebP a
    transparent border so transparency can be checked.
    """
    from PIL import Image, ImageDraw

    fmt = format.lower()
    if fmt not in _PIL_FORMATS:
        raise ValueError(f"make_image cannot encode {format!r}; use one of {sorted(_PIL_FORMATS)}")
    mode = "RGBA" if alpha and fmt in {"png", "webp"} else "RGB"
    image = Image.new(mode, (width, height), color + ((255,) if mode == "RGBA" else ()))
    draw = ImageDraw.Draw(image)
    inverse = tuple(255 - c for c in color)
    draw.rectangle([width // 4, height // 4, 3 * width // 4, 3 * height // 4], fill=inverse)
    if mode == "RGBA":
        edge = max(1, min(width, height) // 16)
        clear = (0, 0, 0, 0)
        draw.rectangle([0, 0, width, edge], fill=clear)
        draw.rectangle([0, height - edge, width, height], fill=clear)
    out = io.BytesIO()
    image.save(out, _PIL_FORMATS[fmt])
    return out.getvalue()


def make_mask(width: int = 64, height: int = 64) -> bytes:
    """An edit mask: an RGBA PNG whose centre is fully transparent (the area to change)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    ImageDraw.Draw(image).rectangle([width // 4, height // 4, 3 * width // 4, 3 * height // 4], fill=(0, 0, 0, 0))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def read_image(data: bytes) -> SampleInfo:
    """Decode ``data`` completely and report its real format and size.

    Raises ``ValueError`` when the bytes are not a complete image Pillow can decode.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # a full decode: truncated data fails here, not later
            fmt = (image.format or "").lower()
            has_alpha = image.mode in {"RGBA", "LA", "PA"} or "transparency" in image.info
            return SampleInfo(fmt, image.width, image.height, has_alpha)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"not a decodable image ({len(data)} bytes): {exc}") from None
