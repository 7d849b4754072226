"""Image formats from bytes alone: what an image is and where it ends, without decoding.

:func:`sniff` decides the format by magic bytes (never by extension or declared MIME
type); :func:`image_length` finds where an image's own structure ends (PNG chunks to
IEND, WebP RIFF size, GIF blocks, JPEG segments to EOI); :func:`check_png_structure`
walks a PNG's chunks and CRCs without decoding its pixels. Pillow-free, so cheap to import.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from atelier_core.plugin.errors import AtelierError, UpstreamProtocolError

__all__ = ["ImageInfo", "check_png_structure", "image_length", "mime_type", "sniff", "tail_problem"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def sniff(data: bytes) -> str | None:
    """The image format of ``data`` from its magic bytes: ``png``, ``jpeg``, ``webp``,
    ``gif`` — or ``None`` for anything else (including text files named ``.png``)."""
    head = bytes(data[:16])
    if head.startswith(_PNG_SIGNATURE):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


def mime_type(fmt: str) -> str:
    """``image/<fmt>`` for one of our format names."""
    return f"image/{fmt}"


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What a checked image is: sniffed format and its pixel size."""

    format: str
    width: int
    height: int
    has_alpha: bool

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def mime_type(self) -> str:
        return mime_type(self.format)


def tail_problem(fmt: str, data: bytes) -> str | None:
    """A structural end-of-file check Pillow does not make (it decodes a PNG whose
    IEND chunk is cut off without complaint)."""
    if fmt == "png" and _PNG_IEND not in data[-4096:] and _PNG_IEND not in data:
        return "the PNG ends before its IEND chunk (file truncated)"
    if fmt == "webp" and len(data) >= 8:
        (riff_size,) = struct.unpack("<I", data[4:8])
        if len(data) < riff_size + 8:
            return f"the WebP declares {riff_size + 8} bytes but has only {len(data)} (file truncated)"
    if fmt == "gif" and b";" not in data[-64:]:
        return "the GIF has no trailer byte (file truncated)"
    return None


def image_length(fmt: str, data: bytes) -> int | None:
    """Where the image in ``data`` ends, by its own structure (PNG chunks up to IEND,
    the WebP RIFF size, GIF blocks up to the trailer, JPEG segments and entropy-coded
    data up to EOI), or ``None`` when the structure is cut off or broken. Bytes after
    that point are not part of the image."""
    try:
        if fmt == "png":
            position = len(_PNG_SIGNATURE)
            while position + 12 <= len(data):
                (length,) = struct.unpack(">I", data[position : position + 4])
                kind = data[position + 4 : position + 8]
                position += 12 + length
                if kind == b"IEND":
                    return position if position <= len(data) else None
            return None
        if fmt == "webp":
            (riff_size,) = struct.unpack("<I", data[4:8])
            end = 8 + riff_size + (riff_size & 1)
            return end if end <= len(data) else None
        if fmt == "gif":
            return _gif_length(data)
        if fmt == "jpeg":
            return _jpeg_length(data)
    except (struct.error, IndexError):
        return None
    return None


def _gif_sub_blocks(data: bytes, position: int) -> int:
    while True:
        size = data[position]
        position += 1 + size
        if size == 0:
            return position


def _gif_length(data: bytes) -> int | None:
    flags = data[10]
    position = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    while position < len(data):
        block = data[position]
        if block == 0x3B:  # trailer
            return position + 1
        if block == 0x21:  # extension: label, then sub-blocks
            position = _gif_sub_blocks(data, position + 2)
        elif block == 0x2C:  # image: descriptor, local colour table, LZW code size, data
            local = data[position + 9]
            position += 10 + (3 * 2 ** ((local & 7) + 1) if local & 0x80 else 0)
            position = _gif_sub_blocks(data, position + 1)
        else:
            return None
    return None


def _jpeg_length(data: bytes) -> int | None:
    position = 2  # after SOI
    size = len(data)
    while position + 1 < size:
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == 0xD9:  # EOI
            return position + 2
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # no length
            position += 2
            continue
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        position += 2 + length
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next real marker
            while True:
                position = data.find(b"\xff", position)
                if position < 0 or position + 1 >= size:
                    return None
                following = data[position + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
                    position += 1 if following == 0xFF else 2
                    continue
                break
    return None


_PNG_COLOR_TYPES = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}


def check_png_structure(data: bytes, *, max_pixels: int, provider: str | None = None) -> ImageInfo:
    """Verify a provider's PNG without decoding it: the signature, every chunk's length
    and CRC-32, an ``IHDR`` first with a valid size, bit depth and colour type, at least
    one ``IDAT``, and ``IEND`` last with nothing after it.

    A byte changed or lost in transit fails a CRC (or the length walk), a truncated file
    has no ``IEND``: such an image is never saved. It does not inflate the pixel data, so
    a PNG an encoder wrote wrongly with correct checksums passes; :func:`decode_image`
    (needed anyway when a preview is made) catches that too. Measured on a 2.4 MB
    1024² PNG: ~0.7 ms against ~18-40 ms for the full decode (``docs/performance.md``).
    """
    import struct
    import zlib

    def fail(message: str) -> AtelierError:
        return UpstreamProtocolError(
            f"the provider returned an unusable image: {message}",
            code="upstream_invalid_image",
            provider=provider,
            fix="retry the call; if it keeps happening, report it to the provider",
        )

    if not data.startswith(_PNG_SIGNATURE):
        raise fail("not a PNG (no PNG signature)")
    view = memoryview(data)
    pos, end = len(_PNG_SIGNATURE), len(data)
    header: tuple[int, int, int, int] | None = None
    transparency = idat = False
    while True:
        if pos + 12 > end:
            raise fail(f"the PNG is truncated after {pos:,} bytes (no IEND chunk)")
        length, kind = struct.unpack_from(">I4s", data, pos)
        body_end = pos + 8 + length
        if body_end + 4 > end:
            raise fail(f"the PNG is truncated inside its {kind!r} chunk at byte {pos:,}")
        (crc,) = struct.unpack_from(">I", data, body_end)
        if zlib.crc32(view[pos + 4 : body_end]) != crc:
            raise fail(f"the PNG's {kind.decode('latin-1')!r} chunk at byte {pos:,} is corrupt (CRC mismatch)")
        if header is None:
            if kind != b"IHDR" or length != 13:
                raise fail("the PNG does not start with an IHDR chunk")
            width, height, depth, color = struct.unpack_from(">IIBB", data, pos + 8)
            if width == 0 or height == 0 or depth not in _PNG_COLOR_TYPES.get(color, ()):
                raise fail(f"the PNG header is invalid ({width}x{height}, depth {depth}, colour type {color})")
            if width * height > max_pixels:
                raise fail(
                    f"the image is {width}x{height} = {width * height:,} pixels, above the limit of {max_pixels:,}"
                )
            header = (width, height, depth, color)
        elif kind == b"IDAT":
            idat = True
        elif kind == b"tRNS":
            transparency = True
        pos = body_end + 4
        if kind == b"IEND":
            break
    if not idat:
        raise fail("the PNG has no image data (no IDAT chunk)")
    if pos != end:
        raise fail(f"the PNG has {end - pos:,} unexpected bytes after its IEND chunk")
    width, height, _depth, color = header
    return ImageInfo(format="png", width=width, height=height, has_alpha=color in (4, 6) or transparency)
