"""Input images converted as the API demands (square PNG, RGBA), or refused before any call."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from atelier_core import InputImage, InputImageError
from atelier_core.testing import make_image, make_mask, read_image
from atelier_dalle.convert import quick_check, to_upload

MB4 = 4 * 1024 * 1024


def _image(data: bytes, fmt: str, size: int, alpha: bool) -> InputImage:
    return InputImage(data=data, format=fmt, width=size, height=size, has_alpha=alpha, source=f"x.{fmt}")


def _mode(data: bytes) -> str:
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.format == "PNG"
        return opened.mode


def _upload(image: InputImage, role: str = "image", *, needs_alpha: bool = False, limit: int = MB4) -> bytes:
    return to_upload(
        image,
        role=role,
        where="images[0]",
        model="dall-e-2",  # type: ignore[arg-type]
        max_bytes=limit,
        needs_transparency=needs_alpha,
    )


def test_compliant_png_is_uploaded_unchanged() -> None:
    rgba = make_image(32, 32, "png", alpha=True)
    assert _upload(_image(rgba, "png", 32, True)) == rgba
    mask = make_mask(32, 32)
    assert _upload(_image(mask, "png", 32, True), "mask") == mask
    rgb = make_image(32, 32, "png")
    assert _upload(_image(rgb, "png", 32, False), "variation") == rgb


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "png"])
def test_edit_image_becomes_rgba_png(fmt: str) -> None:
    data = make_image(32, 32, fmt)
    out = _upload(_image(data, fmt, 32, False))
    assert _mode(out) == "RGBA" and read_image(out).size == "32x32"


def test_variation_input_becomes_png_keeping_its_mode() -> None:
    out = _upload(_image(make_image(32, 32, "jpeg"), "jpeg", 32, False), "variation")
    assert _mode(out) == "RGB"


def test_mask_becomes_rgba_and_needs_a_transparent_pixel() -> None:
    webp_mask = io.BytesIO()
    Image.open(io.BytesIO(make_mask(32, 32))).save(webp_mask, "WEBP", lossless=True)
    out = _upload(_image(webp_mask.getvalue(), "webp", 32, True), "mask")
    assert _mode(out) == "RGBA"
    opaque = io.BytesIO()
    Image.new("RGBA", (32, 32), (0, 0, 0, 255)).save(opaque, "PNG")
    with pytest.raises(InputImageError, match="mask has no transparent pixel") as caught:
        _upload(_image(opaque.getvalue(), "png", 32, True), "mask")
    assert caught.value.parameter == "mask"


def test_transparency_rule_when_a_model_declares_it() -> None:
    opaque = make_image(32, 32, "png")
    with pytest.raises(InputImageError, match="no transparency and no mask"):
        quick_check(
            _image(opaque, "png", 32, False), where="images[0]", model="m", max_bytes=MB4, needs_transparency=True
        )
    rgba_opaque = io.BytesIO()
    Image.new("RGBA", (32, 32), (9, 9, 9, 255)).save(rgba_opaque, "PNG")
    with pytest.raises(InputImageError, match="no transparent pixel"):
        _upload(_image(rgba_opaque.getvalue(), "png", 32, True), needs_alpha=True)
    holed = make_image(32, 32, "png", alpha=True)
    assert _upload(_image(holed, "png", 32, True), needs_alpha=True) == holed


def test_too_large_after_conversion_is_refused_with_the_rule() -> None:
    data = make_image(64, 64, "jpeg")
    with pytest.raises(InputImageError, match="over dall-e-2's limit of 100 bytes") as caught:
        _upload(_image(data, "jpeg", 64, False), limit=100)
    assert caught.value.code == "image_file_too_large"
    # An already-compliant PNG is judged in check(), without decoding.
    png = make_image(64, 64, "png")
    with pytest.raises(InputImageError, match="as PNG, over"):
        quick_check(
            _image(png, "png", 64, False), where="images[0]", model="dall-e-2", max_bytes=100, needs_transparency=False
        )


def test_undecodable_input_is_refused() -> None:
    with pytest.raises(InputImageError, match="could not be decoded") as caught:
        _upload(_image(b"\x89PNG\r\n\x1a\nbroken", "png", 32, False))
    assert caught.value.code == "image_parse_error"
