"""Provenance inside the image file: prompt, model, parameters and the IPTC source type.

:func:`embed_metadata` returns the same image with metadata *inserted* into its
container, never re-encoded: the pixel data (PNG ``IDAT``, JPEG scan, WebP bitstream)
is copied byte for byte, so the image decodes to exactly the same pixels.

- **PNG**: ``iTXt`` chunks after ``IHDR``: ``prompt``, ``parameters`` (JSON: model,
  provider, operation, applied parameters, seed, time), ``Software`` and an XMP packet
  (keyword ``XML:com.adobe.xmp``).
- **JPEG**: an ``APP1`` XMP segment after the ``APP0``/Exif segments at the start.
- **WebP**: an ``XMP `` chunk; a simple (``VP8 ``/``VP8L``) file becomes the extended
  form (a ``VP8X`` header naming the canvas size, alpha and XMP flags) around the same
  bitstream.
- **GIF** and anything unrecognised are left as they are.

The XMP packet carries ``Iptc4xmpExt:DigitalSourceType`` =
``trainedAlgorithmicMedia`` (the IPTC term for media made by a generative model),
``dc:description`` (the prompt) and ``xmp:CreatorTool``.

**Signed files are never touched.** A file carrying a C2PA manifest (PNG ``caBX``
chunk, JPEG ``APP11`` JUMBF segment, WebP ``C2PA`` chunk) comes back byte-identical:
the manifest's hard binding hashes the file's bytes around it, so inserting anything
would break the vendor's signature even if the manifest itself were kept. Such files
are described by their sidecar and the image index only. A file that already has an
XMP packet keeps it and gets no second one (PNG text chunks are still added).

Writing these few chunk formats here is simpler and safer than a dependency: Pillow
re-encodes on save (changing pixels and dropping unknown chunks), and exiftool-style
libraries rewrite whole containers.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

__all__ = ["DIGITAL_SOURCE_TYPE", "Embedded", "embed_metadata", "has_c2pa", "xmp_packet"]

DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
XMP_JPEG_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
_MAX_JPEG_SEGMENT = 65533  # payload bytes in one marker segment (length field counts itself)
_MAX_PROMPT_CHARS = 8000  # keeps every packet well inside one JPEG segment


@dataclass(frozen=True, slots=True)
class Embedded:
    """The bytes to save and whether metadata went into them (and why not)."""

    data: bytes
    embedded: bool
    reason: str | None = None


def xmp_packet(fields: Mapping[str, Any]) -> bytes:
    """A small XMP packet: IPTC digital source type, prompt, tool, model."""
    prompt = str(fields.get("prompt") or "")[:_MAX_PROMPT_CHARS]
    software = str(fields.get("software") or "Atelier")
    model = str(fields.get("model") or "")
    description = (
        (f'<dc:description><rdf:Alt><rdf:li xml:lang="x-default">{escape(prompt)}</rdf:li></rdf:Alt></dc:description>')
        if prompt
        else ""
    )
    body = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"'
        ' xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:xmp="http://ns.adobe.com/xap/1.0/"'
        ' xmlns:atelier="https://atelier.invalid/ns/1.0/"'
        f' Iptc4xmpExt:DigitalSourceType="{DIGITAL_SOURCE_TYPE}"'
        f' xmp:CreatorTool="{escape(software, {chr(34): "&quot;"})}"'
        f' atelier:model="{escape(model, {chr(34): "&quot;"})}">'
        f"{description}</rdf:Description></rdf:RDF></x:xmpmeta>"
        '<?xpacket end="w"?>'
    )
    return body.encode("utf-8")


def _parameters_json(fields: Mapping[str, Any]) -> str:
    keep = ("model", "provider", "operation", "applied", "seed", "created")
    return json.dumps(
        {k: fields[k] for k in keep if fields.get(k) is not None}, ensure_ascii=False, sort_keys=True, default=str
    )


# -- C2PA detection -------------------------------------------------------------------


def has_c2pa(data: bytes, fmt: str) -> bool:
    """Whether the file carries a C2PA manifest (then it must stay byte-identical)."""
    if fmt == "png":
        return any(kind == b"caBX" for kind, _start, _end in _png_chunks(data))
    if fmt == "jpeg":
        return any(marker == 0xEB and payload[:2] == b"JP" for marker, payload, _s, _e in _jpeg_segments(data))
    if fmt == "webp":
        return any(kind == b"C2PA" for kind, _start, _end in _riff_chunks(data))
    return False


# -- PNG ----------------------------------------------------------------------------------


def _png_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, start, end) of every chunk; start/end span length field to CRC."""
    if not data.startswith(PNG_SIGNATURE):
        return []
    out: list[tuple[bytes, int, int]] = []
    pos = len(PNG_SIGNATURE)
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            break
        out.append((kind, pos, end))
        pos = end
        if kind == b"IEND":
            break
    return out


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _itxt(keyword: str, text: str) -> bytes:
    # keyword \0 compression-flag(0) method(0) language-tag \0 translated-keyword \0 text (UTF-8)
    body = keyword.encode("latin-1") + b"\x00\x00\x00" + b"\x00" + b"\x00" + text.encode("utf-8")
    return _png_chunk(b"iTXt", body)


def _png_text_keywords(data: bytes, chunks: list[tuple[bytes, int, int]]) -> set[str]:
    found: set[str] = set()
    for kind, start, end in chunks:
        if kind in (b"tEXt", b"iTXt", b"zTXt"):
            found.add(data[start + 8 : end - 4].split(b"\x00", 1)[0].decode("latin-1"))
    return found


def _embed_png(data: bytes, fields: Mapping[str, Any]) -> Embedded:
    chunks = _png_chunks(data)
    if not chunks or chunks[0][0] != b"IHDR":
        return Embedded(data, False, "not a well-formed PNG")
    present = _png_text_keywords(data, chunks)
    extra = b""
    prompt = fields.get("prompt")
    if prompt and "prompt" not in present:
        extra += _itxt("prompt", str(prompt))
    if "parameters" not in present:
        extra += _itxt("parameters", _parameters_json(fields))
    if "Software" not in present:
        extra += _itxt("Software", str(fields.get("software") or "Atelier"))
    if "XML:com.adobe.xmp" not in present:
        extra += _itxt("XML:com.adobe.xmp", xmp_packet(fields).decode("utf-8"))
    if not extra:
        return Embedded(data, False, "the file already carries metadata")
    after_header = chunks[0][2]
    return Embedded(data[:after_header] + extra + data[after_header:], True)


# -- JPEG ---------------------------------------------------------------------------------


def _jpeg_segments(data: bytes) -> list[tuple[int, bytes, int, int]]:
    """(marker, payload, start, end) of the marker segments before the scan data."""
    if not data.startswith(b"\xff\xd8"):
        return []
    out: list[tuple[int, bytes, int, int]] = []
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9 or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        end = pos + 2 + length
        if length < 2 or end > len(data):
            break
        out.append((marker, data[pos + 4 : end], pos, end))
        pos = end
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            break
    return out


def _embed_jpeg(data: bytes, fields: Mapping[str, Any]) -> Embedded:
    segments = _jpeg_segments(data)
    if not segments:
        return Embedded(data, False, "not a well-formed JPEG")
    if any(m == 0xE1 and p.startswith(XMP_JPEG_HEADER) for m, p, _s, _e in segments):
        return Embedded(data, False, "the file already carries XMP")
    payload = XMP_JPEG_HEADER + xmp_packet(fields)
    if len(payload) > _MAX_JPEG_SEGMENT:
        return Embedded(data, False, "the metadata does not fit one JPEG segment")
    # After SOI and the leading APP0 (JFIF) / APP1 (Exif) segments, where readers look.
    insert_at = 2
    for marker, _payload, _start, end in segments:
        if marker not in (0xE0, 0xE1):
            break
        insert_at = end
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return Embedded(data[:insert_at] + segment + data[insert_at:], True)


# -- WebP ---------------------------------------------------------------------------------


def _riff_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """(fourcc, start, end) of the chunks in a RIFF/WEBP file; end includes padding."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return []
    out: list[tuple[bytes, int, int]] = []
    pos = 12
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        end = pos + 8 + size + (size & 1)
        if pos + 8 + size > len(data):
            break
        out.append((kind, pos, min(end, len(data))))
        pos = end
    return out


def _riff_chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) & 1 else b"")


def _vp8l_has_alpha(data: bytes, start: int) -> bool:
    # VP8L: signature 0x2f, then 14 bits width-1, 14 bits height-1, 1 bit alpha_is_used.
    header = data[start + 8 : start + 13]
    if len(header) < 5 or header[0] != 0x2F:
        return False
    bits = int.from_bytes(header[1:5], "little")
    return bool((bits >> 28) & 1)


def _embed_webp(data: bytes, fields: Mapping[str, Any], width: int, height: int) -> Embedded:
    chunks = _riff_chunks(data)
    if not chunks:
        return Embedded(data, False, "not a well-formed WebP")
    kinds = [kind for kind, _s, _e in chunks]
    if b"XMP " in kinds:
        return Embedded(data, False, "the file already carries XMP")
    xmp = _riff_chunk(b"XMP ", xmp_packet(fields))
    body = data[12 : chunks[-1][2]]
    if kinds[0] == b"VP8X":
        start, end = chunks[0][1], chunks[0][2]
        flags = data[start + 8] | 0x04
        header = data[start : start + 8] + bytes([flags]) + data[start + 9 : end]
        body = header + data[end : chunks[-1][2]] + xmp
    elif kinds[0] in (b"VP8 ", b"VP8L"):
        if not (0 < width <= 1 << 24 and 0 < height <= 1 << 24):
            return Embedded(data, False, "unknown canvas size")
        alpha = kinds[0] == b"VP8L" and _vp8l_has_alpha(data, chunks[0][1])
        flags = 0x04 | (0x10 if alpha else 0)
        vp8x = _riff_chunk(
            b"VP8X", bytes([flags, 0, 0, 0]) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
        )
        body = vp8x + body + xmp
    else:
        return Embedded(data, False, "unrecognised WebP layout")
    return Embedded(b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + body, True)


# -- entry point --------------------------------------------------------------------------


def embed_metadata(data: bytes, fmt: str, fields: Mapping[str, Any], *, width: int = 0, height: int = 0) -> Embedded:
    """``data`` with provenance metadata inserted (see the module docstring).

    ``fields``: ``prompt``, ``model``, ``provider``, ``operation``, ``applied``, ``seed``,
    ``created``, ``software``. Never raises on odd input: the original bytes come back
    with ``embedded=False`` and a reason.
    """
    if has_c2pa(data, fmt):
        return Embedded(data, False, "the file carries a C2PA manifest; its signed bytes are kept as they are")
    try:
        if fmt == "png":
            return _embed_png(data, fields)
        if fmt == "jpeg":
            return _embed_jpeg(data, fields)
        if fmt == "webp":
            return _embed_webp(data, fields, width, height)
    except (struct.error, IndexError, ValueError):
        return Embedded(data, False, "the container could not be parsed")
    return Embedded(data, False, f"no embedded metadata for {fmt}")
