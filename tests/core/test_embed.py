"""Metadata inside the files: inserted, never re-encoded; C2PA-signed files untouched."""

from __future__ import annotations

import io
import json
import struct
import zlib

import pytest
from PIL import Image

from atelier_core.media.embed import DIGITAL_SOURCE_TYPE, embed_metadata, has_c2pa

FIELDS = {
    "prompt": 'a fox & "hound" <at> dusk — ünïcode',
    "model": "placeholder/draw",
    "provider": "placeholder",
    "operation": "generate",
    "applied": {"size": "64x48", "quality": "high"},
    "seed": 7,
    "created": "2026-12-03T10:00:00+00:00",
    "software": "Atelier 0.test",
}


def _image(fmt: str, mode: str = "RGB", **save: object) -> bytes:
    image = Image.new(mode, (64, 48), (200, 30, 90, 128)[: len(mode)])
    for x in range(0, 64, 3):
        image.putpixel((x, x % 48), (10, 220, 40, 255)[: len(mode)])
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def _pixels(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGBA").tobytes()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_png_gets_text_chunks_and_xmp_with_the_same_pixels() -> None:
    original = _image("PNG")
    result = embed_metadata(original, "png", FIELDS)
    assert result.embedded and result.reason is None
    assert _pixels(result.data) == _pixels(original)
    with Image.open(io.BytesIO(result.data)) as image:
        image.load()
        text = image.text  # type: ignore[attr-defined]
    assert text["prompt"] == FIELDS["prompt"]
    params = json.loads(text["parameters"])
    assert params["model"] == "placeholder/draw" and params["applied"] == {"size": "64x48", "quality": "high"}
    assert params["seed"] == 7
    assert text["Software"] == "Atelier 0.test"
    assert DIGITAL_SOURCE_TYPE in text["XML:com.adobe.xmp"]
    # The original chunks follow unchanged: only whole chunks were inserted.
    assert original[33:] in result.data


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
@pytest.mark.parametrize("lossless", [False, True])
def test_webp_simple_and_extended_get_xmp_with_the_same_pixels(mode: str, lossless: bool) -> None:
    original = _image("WEBP", mode, lossless=lossless)
    result = embed_metadata(original, "webp", FIELDS, width=64, height=48)
    assert result.embedded
    assert _pixels(result.data) == _pixels(original)
    with Image.open(io.BytesIO(result.data)) as image:
        image.load()
        xmp = image.info["xmp"]
        assert image.size == (64, 48)
        assert image.mode == ("RGBA" if mode == "RGBA" else "RGB")
    xmp_text = xmp.decode() if isinstance(xmp, bytes) else xmp
    assert DIGITAL_SOURCE_TYPE in xmp_text and "a fox &amp; " in xmp_text
    # Embedding again does not add a second packet.
    again = embed_metadata(result.data, "webp", FIELDS, width=64, height=48)
    assert not again.embedded and again.data == result.data


def test_jpeg_gets_an_xmp_segment_after_the_jfif_header_with_the_same_pixels() -> None:
    original = _image("JPEG", quality=90)
    result = embed_metadata(original, "jpeg", FIELDS)
    assert result.embedded
    assert _pixels(result.data) == _pixels(original)  # same scan bytes, so the same decode
    with Image.open(io.BytesIO(result.data)) as image:
        xmp = image.info["xmp"]
    assert DIGITAL_SOURCE_TYPE.encode() in xmp
    assert "ünïcode".encode() in xmp
    assert result.data[2:4] == b"\xff\xe0"  # JFIF stays first


def test_png_with_a_c2pa_manifest_is_returned_byte_identical() -> None:
    plain = _image("PNG")
    manifest = b"\x00\x00\x00\x20jumb" + b"c2pa-signed-manifest-bytes" * 4
    signed = plain[:33] + _png_chunk(b"caBX", manifest) + plain[33:]
    assert has_c2pa(signed, "png")
    result = embed_metadata(signed, "png", FIELDS)
    assert not result.embedded and "C2PA" in (result.reason or "")
    assert result.data == signed


def test_jpeg_with_an_app11_jumbf_manifest_is_returned_byte_identical() -> None:
    plain = _image("JPEG")
    jumbf = b"JP" + b"\x02\x11" + b"\x00\x00\x00\x01" + b"\x00\x00\x00\x40jumb" + b"c2pa" * 12
    segment = b"\xff\xeb" + struct.pack(">H", len(jumbf) + 2) + jumbf
    signed = plain[:20] + segment + plain[20:]  # after the 18-byte JFIF APP0
    assert plain[2:4] == b"\xff\xe0" and struct.unpack(">H", plain[4:6])[0] == 16
    assert has_c2pa(signed, "jpeg")
    result = embed_metadata(signed, "jpeg", FIELDS)
    assert not result.embedded and result.data == signed


def test_webp_with_a_c2pa_chunk_is_returned_byte_identical() -> None:
    plain = embed_metadata(_image("WEBP"), "webp", {"prompt": "x"}, width=64, height=48).data
    chunk = b"C2PA" + struct.pack("<I", 8) + b"manifest"
    body = plain[12:] + chunk
    signed = b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + body
    result = embed_metadata(signed, "webp", FIELDS, width=64, height=48)
    assert not result.embedded and result.data == signed


def test_existing_xmp_is_kept_and_not_duplicated() -> None:
    original = _image("JPEG")
    first = embed_metadata(original, "jpeg", {"prompt": "first"}).data
    second = embed_metadata(first, "jpeg", {"prompt": "second"})
    assert not second.embedded and second.data == first
    png = embed_metadata(_image("PNG"), "png", {"prompt": "first"}).data
    again = embed_metadata(png, "png", {"prompt": "second"})
    assert not again.embedded and again.data == png


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "gif"])
def test_garbage_and_gif_come_back_unchanged(fmt: str) -> None:
    junk = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHD" if fmt == "png" else b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 3
    if fmt == "jpeg":
        junk = b"\xff\xd8\xff\xe0\x00"
    if fmt == "gif":
        junk = _image("GIF")
    result = embed_metadata(junk, fmt, FIELDS, width=64, height=48)
    assert not result.embedded and result.data == junk and result.reason
