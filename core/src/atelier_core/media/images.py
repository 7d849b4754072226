"""Image bytes: recognise, check and shrink them, safely.

Everything here is synchronous CPU work (Pillow decoding and encoding). Async callers —
the router, the input intake — run it in a worker thread with ``asyncio.to_thread`` so
the event loop keeps serving other calls while a 4K image is decoded.

Safety rules applied to every image, whether a user sent it or a provider returned it:

- The format is decided by **magic bytes** (:func:`sniff`), never by a file extension
  or a declared MIME type.
- Pillow is opened with an **allow-list of decoders** (``Image.open(..., formats=...)``),
  so no exotic decoder (FITS, TIFF, PSD, ICO, …) ever runs on untrusted bytes.
- The **declared dimensions are checked against a pixel cap before decoding**, so a
  decompression bomb (a tiny file declaring 50 000 × 50 000 pixels) is refused without
  allocating its pixels. Pillow's own ``DecompressionBomb*`` signals become our error.
- The image is then **fully decoded** (first frame of an animation) to prove it is not
  truncated or corrupt; PNG, WebP and GIF files are also checked for their end marker.
- A provider's image must **end exactly where its own structure ends**
  (:func:`image_length`): trailing bytes make it unusable, so a saved file is the image
  byte for byte as received and nothing else.

User inputs fail with :class:`~atelier_core.plugin.errors.InputImageError`; provider output
fails with :class:`~atelier_core.plugin.errors.UpstreamProtocolError` (a truncated upstream
image must never be saved).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

# Pillow is imported inside the functions that decode or encode: the server imports this
# module at start-up, and Pillow's import (~15-30 ms) belongs to the first image instead.

from atelier_core.media.formats import ImageInfo, check_png_structure, image_length, mime_type, sniff, tail_problem
from atelier_core.plugin.errors import AtelierError, InputImageError, UpstreamProtocolError, shorten

__all__ = [
    "DEFAULT_FORMATS",
    "DecodedImage",
    "ImageInfo",
    "Preview",
    "check_png_structure",
    "decode_image",
    "image_length",
    "inspect_image",
    "make_preview",
    "mime_type",
    "sniff",
    "verify_output",
]

DEFAULT_FORMATS: tuple[str, ...] = ("png", "jpeg", "webp", "gif")

# Our format names → Pillow plugin names (used for the decoder allow-list).
_PILLOW_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "gif": "GIF"}


def warm_up() -> None:
    """Import Pillow and the codecs a call uses, ahead of the first call (blocking)."""
    from PIL import Image, ImageOps, JpegImagePlugin, PngImagePlugin, WebPImagePlugin  # noqa: F401

    Image.preinit()


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """A checked image together with its decoded Pillow image (first frame loaded).

    Lets a caller verify and preview an image with a single decode.
    """

    info: ImageInfo
    image: Image.Image


@dataclass(frozen=True, slots=True)
class Preview:
    """A small inline rendition of an image (for the MCP result)."""

    data: bytes
    mime_type: str
    width: int
    height: int


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def decode_image(
    data: bytes,
    *,
    max_pixels: int,
    formats: Sequence[str] = DEFAULT_FORMATS,
    parameter: str = "image",
    upstream: bool = False,
    provider: str | None = None,
) -> DecodedImage:
    """Check ``data`` and decode its first frame; the building block of
    :func:`inspect_image` and :func:`verify_output`.

    ``upstream=True`` raises :class:`UpstreamProtocolError` (provider output) instead of
    :class:`InputImageError` (caller input).
    """

    def fail(code: str, message: str, *, allowed: Any = None, fix: str | None = None) -> AtelierError:
        if upstream:
            return UpstreamProtocolError(
                f"the provider returned an unusable image: {message}",
                code="upstream_invalid_image",
                provider=provider,
                fix="retry the call; if it keeps happening, report it to the provider",
            )
        return InputImageError(f"{parameter}: {message}", code=code, parameter=parameter, allowed=allowed, fix=fix)

    from PIL import Image

    allowed_names = [f for f in formats if f in _PILLOW_FORMAT]
    if not data:
        raise fail("empty_image_file", "the image is empty (0 bytes)", fix="send a non-empty image")
    fmt = sniff(data)
    if fmt is None or fmt not in allowed_names:
        what = fmt.upper() if fmt else "not a PNG, JPEG, WebP or GIF image (by its content)"
        raise fail(
            "unsupported_image_media_type",
            f"unsupported image type: {what}",
            allowed=[f.upper() for f in allowed_names],
            fix="convert the image to one of the allowed formats (the file name's extension is ignored)",
        )
    try:
        with warnings.catch_warnings():
            # Pillow warns above Image.MAX_IMAGE_PIXELS and raises above twice that;
            # both must become our error, never a stray warning or a decode. (The filter
            # change is process-wide and not thread-safe before Python 3.14; a race can
            # only let the warning through as a warning, and our own max_pixels check
            # below still applies.)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[_PILLOW_FORMAT[fmt]])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise fail(
            "image_too_many_pixels",
            f"the image declares too many pixels ({shorten(str(exc), 160)})",
            fix=f"send an image of at most {max_pixels:,} pixels",
        ) from None
    except Exception as exc:  # Pillow raises many types for malformed headers
        raise fail(
            "image_parse_error",
            f"the {fmt.upper()} header cannot be parsed ({type(exc).__name__})",
            fix="send a valid, complete image file",
        ) from None
    width, height = image.size
    if width <= 0 or height <= 0:
        image.close()
        raise fail("image_parse_error", f"the image declares an empty size {width}x{height}")
    if width * height > max_pixels:
        image.close()
        raise fail(
            "image_too_many_pixels",
            f"the image is {width}x{height} = {width * height:,} pixels, above the limit of {max_pixels:,}",
            fix=f"downscale it to at most {max_pixels:,} pixels",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.seek(0)
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        image.close()
        raise fail(
            "image_too_many_pixels",
            "the image declares too many pixels",
            fix=f"send an image of at most {max_pixels:,} pixels",
        ) from None
    except Exception as exc:
        image.close()
        raise fail(
            "image_parse_error",
            f"the {fmt.upper()} data cannot be decoded ({shorten(str(exc) or type(exc).__name__, 100)})",
            fix="send a valid, complete image file (it may be truncated or corrupt)",
        ) from None
    problem = tail_problem(fmt, data)
    if problem is not None:
        image.close()
        raise fail("image_parse_error", problem, fix="send a valid, complete image file")
    if upstream:
        # The saved file is exactly the image: anything after its end (junk appended to
        # a valid image) makes the answer unusable, never a file with a tail.
        end = image_length(fmt, data)
        if end is None or end != len(data):
            image.close()
            problem = (
                f"the {fmt.upper()} structure is cut off or broken"
                if end is None
                else f"{len(data) - end:,} bytes that are not part of the image follow the "
                f"{fmt.upper()}'s end (at byte {end:,})"
            )
            raise fail("image_parse_error", problem)
    info = ImageInfo(format=fmt, width=width, height=height, has_alpha=_has_alpha(image))
    return DecodedImage(info=info, image=image)


def inspect_image(
    data: bytes,
    *,
    max_pixels: int,
    formats: Sequence[str] = DEFAULT_FORMATS,
    parameter: str = "image",
) -> ImageInfo:
    """Check a caller's image: allowed format by content, pixel cap before decoding,
    full decode. Raises :class:`InputImageError` (codes ``empty_image_file``,
    ``unsupported_image_media_type``, ``image_too_many_pixels``, ``image_parse_error``)."""
    decoded = decode_image(data, max_pixels=max_pixels, formats=formats, parameter=parameter)
    decoded.image.close()
    return decoded.info


def verify_output(data: bytes, *, max_pixels: int, provider: str | None = None) -> ImageInfo:
    """Check an image a provider returned before it is saved. Raises
    :class:`UpstreamProtocolError` (code ``upstream_invalid_image``) on anything that is
    not a complete PNG/JPEG/WebP/GIF within the pixel cap."""
    decoded = decode_image(data, max_pixels=max_pixels, upstream=True, provider=provider)
    decoded.image.close()
    return decoded.info


def _encode(image: Image.Image, fmt: str, quality: int) -> bytes:
    out = io.BytesIO()
    if fmt == "webp":
        # method=0 (fastest): ~10 ms for a 512² preview instead of ~60 ms at method=4,
        # for files of about the same size at the same quality (measured, bench/).
        image.save(out, "WEBP", quality=quality, method=0)
    else:
        image.save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()


_EXIF_ORIENTATION = 0x0112


def _shrunk(frame: Image.Image, edge: int) -> Image.Image:
    """``frame`` fitted into ``edge`` x ``edge`` (aspect kept, like ``thumbnail``), as a
    new image; ``frame`` itself is never copied at full size."""
    from PIL import Image

    width, height = frame.size
    scale = min(1.0, edge / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == frame.size:
        return frame
    # reducing_gap=1.0: an integer box reduction (area averaging) as far as it goes, then
    # LANCZOS for the rest. 1024->512 takes 2 ms instead of 20 ms with a full LANCZOS
    # pass (thumbnail()'s gap of 2.0 does no box step at a factor of 2); a preview
    # cannot tell the difference.
    return frame.resize(size, Image.Resampling.LANCZOS, reducing_gap=1.0)


def make_preview(
    source: bytes | Image.Image | DecodedImage,
    *,
    max_edge: int = 512,
    max_bytes: int = 150_000,
    fmt: str = "webp",
) -> Preview:
    """A small WebP or JPEG rendition (``fmt="auto"``: JPEG, or WebP when the image has
    transparency): EXIF orientation applied, first frame of an
    animation, longest edge ≤ ``max_edge`` (aspect kept), encoded at decreasing quality
    and then decreasing size until it fits in ``max_bytes``.

    ``source`` may be raw bytes (decoded here; only call this on bytes already checked
    by :func:`inspect_image` / :func:`verify_output`), or an already-decoded image from
    :func:`decode_image` so each image is decoded once. The source image is not modified.
    JPEG has no alpha: transparent areas are flattened onto white.
    """
    from PIL import Image, ImageOps

    if fmt not in ("webp", "jpeg", "auto"):
        raise ValueError(f"preview format must be 'auto', 'webp' or 'jpeg', not {fmt!r}")
    if isinstance(source, DecodedImage):
        source = source.image
    if isinstance(source, Image.Image):
        image = source
    else:
        image = Image.open(io.BytesIO(source), formats=list(_PILLOW_FORMAT.values()))
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    # Every step below avoids a full-size copy when it has nothing to do: exif_transpose
    # and convert() copy even when the image needs no change, and a 3840x2160 copy is
    # 33 MB and ~40 ms. The frame is only shrunk into new, small images.
    frame = image
    if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        frame = ImageOps.exif_transpose(image) or image
    alpha = _has_alpha(frame)
    if fmt == "auto":
        # JPEG encodes ~10x faster than WebP at the same size (0.6 vs 7 ms for 512²) but
        # has no alpha: WebP only where there is transparency to keep.
        fmt = "webp" if alpha else "jpeg"
    if fmt == "webp":
        wanted = "RGBA" if alpha else "RGB"
        if frame.mode != wanted:
            frame = frame.convert(wanted)
    elif alpha:
        rgba = frame.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        frame = flat
    elif frame.mode != "RGB":
        frame = frame.convert("RGB")
    edge = max_edge
    best = b""
    while True:
        scaled = _shrunk(frame, edge)
        for quality in (85, 75, 65, 50, 35):
            best = _encode(scaled, fmt, quality)
            if len(best) <= max_bytes:
                return Preview(best, mime_type(fmt), scaled.width, scaled.height)
        if edge <= 16:
            # A 16-pixel image at quality 35 is a few hundred bytes; a budget below
            # that is a configuration error, but we still return the smallest try.
            return Preview(best, mime_type(fmt), scaled.width, scaled.height)
        edge = max(16, int(edge * 0.75))
