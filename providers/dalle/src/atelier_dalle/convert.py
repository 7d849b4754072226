"""Input images, converted as the DALL·E API demands, or refused before any call.

The API takes one square PNG under 4 MB. For edits the image must be RGBA (or LA / L:
the API answers "format must be in ['RGBA', 'LA', 'L']" otherwise) and, without a
mask, its transparent pixels mark the area to change. A mask is an RGBA PNG of the
same size whose transparent pixels mark that area.

:func:`quick_check` runs in ``check()`` (no decoding); :func:`to_upload` decodes and
converts (call it in a thread) and re-checks everything on the actual bytes.
"""

from __future__ import annotations

import io
from typing import Literal

from atelier_core import InputImage, InputImageError

__all__ = ["Role", "quick_check", "to_upload"]

Role = Literal["image", "mask", "variation"]
_EDIT_MODES = {"RGBA", "LA", "L"}
_OPEN_FORMATS = ["PNG", "JPEG", "WEBP", "GIF"]


def _too_large(where: str, size: int, limit: int, model: str) -> InputImageError:
    return InputImageError(
        f"{where} is {size:,} bytes as PNG, over {model}'s limit of {limit:,} bytes",
        parameter=where,
        allowed=f"a PNG under {limit:,} bytes",
        fix="downscale the image (dall-e-2 outputs at most 1024x1024, so 1024x1024 loses nothing)",
        code="image_file_too_large",
    )


def quick_check(
    image: InputImage,
    *,
    where: str,
    model: str,
    max_bytes: int,
    needs_transparency: bool,
) -> None:
    """Refuse what no conversion can fix, from what the core already knows."""
    if needs_transparency and not image.has_alpha:
        raise InputImageError(
            f"{where} ({image.source}) has no transparency and no mask was given; "
            f"{model} edits the transparent area of the image",
            parameter=where,
            fix="pass mask: a PNG of the same size whose transparent pixels mark the area "
            "to change (or erase that area of the image to transparency)",
            code="mask_or_transparency_required",
        )
    # A PNG we can upload unchanged is exactly this big; a converted one is checked later.
    if image.format == "png" and len(image.data) >= max_bytes:
        raise _too_large(where, len(image.data), max_bytes, model)


def to_upload(
    image: InputImage, *, role: Role, where: str, model: str, max_bytes: int, needs_transparency: bool
) -> bytes:
    """The PNG bytes to upload for ``image`` (the original bytes when already compliant).

    ``role`` is ``image`` (an edit's image: RGBA), ``mask`` (RGBA with at least one
    transparent pixel) or ``variation`` (any PNG mode the API reads).
    """
    from PIL import Image

    try:
        opened = Image.open(io.BytesIO(image.data), formats=_OPEN_FORMATS)
        opened.load()
    except Exception as exc:  # Pillow raises many types for bad data
        raise InputImageError(
            f"{where} ({image.source}) could not be decoded: {type(exc).__name__}",
            parameter=where,
            fix="pass a valid PNG, JPEG or WebP file",
            code="image_parse_error",
        ) from None
    with opened:
        if role == "variation":
            keep = opened.format == "PNG" and opened.mode in {"RGB", "RGBA", "L", "LA"}
            target = (
                opened.mode
                if opened.mode in {"RGB", "RGBA", "L", "LA"}
                else ("RGBA" if "transparency" in opened.info or "A" in opened.getbands() else "RGB")
            )
        else:
            keep = opened.format == "PNG" and (
                opened.mode == "RGBA" or (role == "image" and opened.mode in _EDIT_MODES)
            )
            target = "RGBA"
        converted = opened if keep else opened.convert(target)
        if role == "mask" or needs_transparency:
            _require_transparent_pixel(converted, where, role, model)
        if keep:
            data = image.data
        else:
            out = io.BytesIO()
            converted.save(out, "PNG")
            data = out.getvalue()
    if len(data) >= max_bytes:
        raise _too_large(where, len(data), max_bytes, model)
    return data


def _require_transparent_pixel(picture: object, where: str, role: Role, model: str) -> None:
    from PIL import Image

    assert isinstance(picture, Image.Image)
    bands = picture.getbands()
    lowest = picture.getchannel("A").getextrema()[0] if "A" in bands else 255
    if isinstance(lowest, (int, float)) and lowest < 255:
        return
    if role == "mask":
        raise InputImageError(
            f"mask has no transparent pixel, so {model} would change nothing",
            parameter="mask",
            fix="make the pixels to change fully transparent (alpha 0) in the mask",
            code="mask_has_no_transparency",
        )
    raise InputImageError(
        f"{where} has no transparent pixel and no mask was given, so {model} would change nothing",
        parameter=where,
        fix="pass mask: a PNG whose transparent pixels mark the area to change",
        code="mask_or_transparency_required",
    )
