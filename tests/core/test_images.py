"""images: sniffing, allow-listed decoding, bombs, truncation, previews."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from atelier_core.media.images import (
    check_png_structure,
    decode_image,
    inspect_image,
    make_preview,
    sniff,
    verify_output,
)
from atelier_core.plugin.errors import InputImageError, UpstreamProtocolError

MAX = 40_000_000


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kwargs)
    return out.getvalue()


def png(width: int = 32, height: int = 24, mode: str = "RGB") -> bytes:
    return encode(Image.new(mode, (width, height), "red"), "PNG")


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width``×``height`` (IDAT holds one row)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1)))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (png(), "png"),
        (encode(Image.new("RGB", (8, 8)), "JPEG"), "jpeg"),
        (encode(Image.new("RGB", (8, 8)), "WEBP"), "webp"),
        (encode(Image.new("P", (8, 8)), "GIF"), "gif"),
        (b"hello, this is text", None),
        (b"", None),
        (b"RIFF\x00\x00\x00\x00WAVE", None),
        (encode(Image.new("RGB", (8, 8)), "BMP"), None),
    ],
)
def test_sniff_by_magic_bytes(data: bytes, expected: str | None) -> None:
    assert sniff(data) == expected


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_inspect_accepts_the_four_formats(fmt: str) -> None:
    mode = "P" if fmt == "GIF" else "RGB"
    info = inspect_image(encode(Image.new(mode, (40, 30)), fmt), max_pixels=MAX)
    assert (info.format, info.width, info.height) == (fmt.lower(), 40, 30)
    assert info.mime_type == f"image/{fmt.lower()}"


def test_alpha_detection() -> None:
    assert inspect_image(png(mode="RGBA"), max_pixels=MAX).has_alpha
    assert not inspect_image(png(mode="RGB"), max_pixels=MAX).has_alpha
    assert inspect_image(png(mode="LA"), max_pixels=MAX).has_alpha


def test_text_file_named_png_is_refused_without_echoing_content() -> None:
    with pytest.raises(InputImageError) as info:
        inspect_image(b"OPENAI_API_KEY=sk-canary-123\n", max_pixels=MAX, parameter="images[0]")
    err = info.value
    assert err.code == "unsupported_image_media_type"
    assert err.parameter == "images[0]"
    assert "canary" not in str(err)
    assert "PNG" in str(err) and "Fix:" in str(err)


def test_empty_file() -> None:
    with pytest.raises(InputImageError) as info:
        inspect_image(b"", max_pixels=MAX)
    assert info.value.code == "empty_image_file"


@pytest.mark.parametrize("fmt", ["TIFF", "BMP", "ICO", "PPM"])
def test_exotic_formats_refused(fmt: str) -> None:
    data = encode(Image.new("RGB", (16, 16)), fmt)
    with pytest.raises(InputImageError) as info:
        inspect_image(data, max_pixels=MAX)
    assert info.value.code == "unsupported_image_media_type"


def test_format_allow_list_narrows() -> None:
    data = encode(Image.new("RGB", (8, 8)), "JPEG")
    with pytest.raises(InputImageError) as info:
        inspect_image(data, max_pixels=MAX, formats=("png",), parameter="mask")
    assert info.value.code == "unsupported_image_media_type"
    assert info.value.allowed == ["PNG"]


def test_bomb_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[object] = []
    real_load = Image.Image.load

    def spy(self: Image.Image) -> object:
        loads.append(self)
        return real_load(self)

    monkeypatch.setattr(Image.Image, "load", spy)
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    with pytest.raises(InputImageError) as info:
        inspect_image(bomb_png(50_000, 50_000), max_pixels=MAX)
    assert info.value.code == "image_too_many_pixels"
    assert loads == []


def test_pillow_bomb_signals_become_our_error() -> None:
    # 20 000 x 20 000 = 400 Mpx: above 2x Image.MAX_IMAGE_PIXELS → DecompressionBombError
    # in Image.open, even with a permissive cap of ours.
    with pytest.raises(InputImageError) as info:
        inspect_image(bomb_png(20_000, 20_000), max_pixels=10**12)
    assert info.value.code == "image_too_many_pixels"
    # 10 000 x 10 000 = 100 Mpx: above MAX_IMAGE_PIXELS → warning, which must not escape.
    with pytest.raises(InputImageError) as info:
        inspect_image(bomb_png(10_000, 10_000), max_pixels=10**12)
    assert info.value.code == "image_too_many_pixels"


def test_pixel_cap_message_names_size_and_limit() -> None:
    with pytest.raises(InputImageError) as info:
        inspect_image(png(100, 100), max_pixels=5_000)
    assert "100x100" in str(info.value) and "5,000" in str(info.value)


@pytest.mark.parametrize("cut", [12, 40])
def test_truncated_png(cut: int) -> None:
    data = encode(Image.effect_noise((64, 64), 50).convert("RGB"), "PNG")[:-cut]
    with pytest.raises(InputImageError) as info:
        inspect_image(data, max_pixels=MAX)
    assert info.value.code == "image_parse_error"


def test_truncated_jpeg_and_webp() -> None:
    noise = Image.effect_noise((64, 64), 50).convert("RGB")
    for fmt in ("JPEG", "WEBP"):
        data = encode(noise, fmt)
        with pytest.raises(InputImageError) as info:
            inspect_image(data[: len(data) // 2], max_pixels=MAX)
        assert info.value.code == "image_parse_error"


def test_corrupt_header() -> None:
    data = bytearray(png())
    data[16:24] = b"\xff" * 8  # IHDR width/height garbage, CRC now wrong
    with pytest.raises(InputImageError) as info:
        inspect_image(bytes(data), max_pixels=MAX)
    assert info.value.code in ("image_parse_error", "image_too_many_pixels")


def test_verify_output_raises_upstream_protocol_error() -> None:
    assert verify_output(png(), max_pixels=MAX).format == "png"
    for bad in (png()[:-12], b"<html>oops</html>", b""):
        with pytest.raises(UpstreamProtocolError) as info:
            verify_output(bad, max_pixels=MAX, provider="fake")
        assert info.value.provider == "fake"
        assert not info.value.retryable


def test_unusual_but_valid_images_are_accepted() -> None:
    cmyk = encode(Image.new("CMYK", (20, 10)), "JPEG")
    sixteen = encode(Image.new("I;16", (20, 10)), "PNG")
    palette = encode(Image.new("P", (20, 10)), "PNG")
    frames = [Image.new("RGB", (20, 10), c) for c in ("red", "blue")]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:])
    apng = io.BytesIO()
    frames[0].save(apng, "PNG", save_all=True, append_images=frames[1:])
    for data in (cmyk, sixteen, palette, out.getvalue(), apng.getvalue()):
        info = inspect_image(data, max_pixels=MAX)
        assert (info.width, info.height) == (20, 10)
        preview = make_preview(data, max_edge=8)
        assert max(preview.width, preview.height) == 8


def test_preview_downscales_keeps_aspect_and_budget() -> None:
    big = Image.effect_noise((1600, 900), 80).convert("RGB")
    preview = make_preview(encode(big, "PNG"), max_edge=512, max_bytes=150_000)
    assert (preview.width, preview.height) == (512, 288)
    assert preview.mime_type == "image/webp"
    assert len(preview.data) <= 150_000
    assert sniff(preview.data) == "webp"


def test_preview_shrinks_until_it_fits_tight_budget() -> None:
    noise = Image.effect_noise((1024, 1024), 120).convert("RGB")
    preview = make_preview(encode(noise, "PNG"), max_edge=1024, max_bytes=8_000, fmt="jpeg")
    assert len(preview.data) <= 8_000
    assert preview.width < 1024
    assert sniff(preview.data) == "jpeg"


def test_jpeg_preview_flattens_alpha_on_white() -> None:
    clear = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    preview = make_preview(encode(clear, "PNG"), fmt="jpeg")
    pixel = Image.open(io.BytesIO(preview.data)).convert("RGB").getpixel((5, 5))
    assert isinstance(pixel, tuple)
    assert all(channel > 240 for channel in pixel)


def test_preview_keeps_alpha_in_webp() -> None:
    half = encode(Image.new("RGBA", (10, 10), (255, 0, 0, 128)), "PNG")
    preview = make_preview(half)
    assert Image.open(io.BytesIO(preview.data)).mode == "RGBA"


def test_preview_applies_exif_orientation() -> None:
    image = Image.new("RGB", (40, 20), "blue")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    data = encode(image, "JPEG", exif=exif.tobytes())
    preview = make_preview(data)
    assert (preview.width, preview.height) == (20, 40)


def test_preview_from_decoded_image_decodes_once() -> None:
    decoded = decode_image(png(300, 100), max_pixels=MAX)
    preview = make_preview(decoded, max_edge=150)
    assert (preview.width, preview.height) == (150, 50)
    assert decoded.image.size == (300, 100)  # the source is not modified
    preview2 = make_preview(decoded.image, max_edge=30)
    assert (preview2.width, preview2.height) == (30, 10)


def test_preview_rejects_unknown_format() -> None:
    with pytest.raises(ValueError):
        make_preview(png(), fmt="png")


def test_provider_images_must_end_where_their_structure_ends() -> None:
    import os

    from atelier_core.media.images import image_length, verify_output

    for fmt, mode in (("PNG", "RGBA"), ("JPEG", "RGB"), ("WEBP", "RGB"), ("GIF", "RGB")):
        source = Image.frombytes(mode, (48, 32), os.urandom(48 * 32 * len(mode)))
        out = io.BytesIO()
        source.save(out, fmt, **({"progressive": True} if fmt == "JPEG" else {}))
        data = out.getvalue()
        name = fmt.lower()
        assert image_length(name, data) == len(data), fmt
        assert image_length(name, data[:-7]) is None, fmt
        assert verify_output(data, max_pixels=10_000).format == name
        with pytest.raises(UpstreamProtocolError) as info:
            verify_output(data + b"\0", max_pixels=10_000)
        assert "1 bytes that are not part of the image" in str(info.value), fmt
        with pytest.raises(UpstreamProtocolError):  # (a GIF's own tail check may say it first)
            verify_output(data + b"junk" * 1000, max_pixels=10_000)


def test_the_answer_cap_follows_the_requested_pixels_and_format() -> None:
    from atelier_core.plugin.spec import Operation
    from atelier_core.plugin.types import ImageRequest

    def cap(**fields: object) -> int:
        return ImageRequest(operation=Operation.GENERATE, model="m", **fields).max_image_bytes()

    assert cap(width=1024, height=1024) < cap(width=2048, height=2048)
    assert cap(width=1024, height=1024, output_format="jpeg") < cap(width=1024, height=1024, output_format="png")
    assert cap(resolution="1K") < cap(resolution="4K") <= cap() + 2 * 4096 * 4096 * 5
    # A 1024x1024 RGBA PNG of pure noise (the largest it can be) still fits.
    assert cap(width=1024, height=1024) > 1024 * 1024 * 4 * 1.01


def _png(mode: str = "RGB", size: tuple[int, int] = (40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, "red" if mode != "P" else 1).save(out, "PNG")
    return out.getvalue()


def test_png_structure_check_reads_size_and_alpha_without_decoding() -> None:
    info = check_png_structure(_png(), max_pixels=10_000)
    assert (info.format, info.width, info.height, info.has_alpha) == ("png", 40, 30, False)
    assert check_png_structure(_png("RGBA"), max_pixels=10_000).has_alpha


@pytest.mark.parametrize("where", [8, 20, 40, -20, -5])
def test_png_structure_check_catches_any_flipped_byte(where: int) -> None:
    data = bytearray(_png())
    data[where] ^= 0x10
    with pytest.raises(UpstreamProtocolError) as caught:
        check_png_structure(bytes(data), max_pixels=10_000)
    assert caught.value.code == "upstream_invalid_image"


@pytest.mark.parametrize("cut", [0, 8, 30, -13, -1])
def test_png_structure_check_catches_truncation_and_trailing_bytes(cut: int) -> None:
    data = _png()
    with pytest.raises(UpstreamProtocolError, match=r"truncated|signature|IEND|unexpected"):
        check_png_structure(data[:cut] if cut else b"", max_pixels=10_000)
    with pytest.raises(UpstreamProtocolError, match="after its IEND"):
        check_png_structure(data + b"junk", max_pixels=10_000)


def test_png_structure_check_refuses_too_many_pixels_and_a_bad_header() -> None:
    with pytest.raises(UpstreamProtocolError, match="above the limit"):
        check_png_structure(_png(size=(200, 200)), max_pixels=10_000)
    data = bytearray(_png())
    data[24] = 3  # bit depth 3 is not a PNG bit depth; fix the IHDR CRC so only the value is wrong
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    with pytest.raises(UpstreamProtocolError, match="header is invalid"):
        check_png_structure(bytes(data), max_pixels=10_000)


def test_auto_previews_are_jpeg_when_opaque_and_webp_with_transparency() -> None:
    opaque = make_preview(_png("RGB", (300, 200)), max_edge=64, fmt="auto")
    assert opaque.mime_type == "image/jpeg" and sniff(opaque.data) == "jpeg" and opaque.width == 64
    clear = make_preview(_png("RGBA", (300, 200)), max_edge=64, fmt="auto")
    assert clear.mime_type == "image/webp" and sniff(clear.data) == "webp"
