"""The model specs as the core enforces them: what each model accepts and how refusals read.

Every case goes through ``validate_call`` (which ends in ``MiniMaxProvider.check``), so
nothing here reaches a server: a refused request costs nothing.
"""

from __future__ import annotations

from typing import Any

import pytest

from atelier_core import AtelierError, InputImage, InputImageError, InvalidParameterError, Operation
from atelier_core.engine.validation import validate_call
from atelier_core.plugin.types import ImageCall
from atelier_core.testing import configured
from atelier_minimax import IMAGE_01, IMAGE_01_LIVE, MODELS, MiniMaxProvider
from atelier_minimax.models import RATIO_SIZES, SEED_MAX

from ._support import KEY, entry, portrait, validated


@pytest.fixture
def offline() -> MiniMaxProvider:
    provider = configured(MiniMaxProvider(), api_key=KEY)
    assert isinstance(provider, MiniMaxProvider)
    return provider


def _refusal(
    provider: MiniMaxProvider, model: str = "image-01", images: list[InputImage] | None = None, **call: Any
) -> AtelierError:
    with pytest.raises(AtelierError) as caught:
        validated(provider, model, images=images, **call)
    return caught.value


def test_catalog() -> None:
    assert [m.id for m in MODELS] == ["image-01", "image-01-live"]
    for spec in MODELS:
        assert spec.operations == frozenset({Operation.GENERATE})
        assert spec.output_formats == ("jpeg",)
        assert spec.n_max == spec.native_batch == 9
        assert spec.prompt_max_chars == 1500
        assert spec.seed
        assert spec.pricing is not None and spec.pricing.as_of and spec.pricing.source
        for ratio, size in spec.sizes.ratio_sizes.items():
            assert RATIO_SIZES[ratio] == size
    assert IMAGE_01.sizes.custom is not None and IMAGE_01_LIVE.sizes.custom is None
    assert IMAGE_01.reference_images is not None and IMAGE_01_LIVE.reference_images is None
    assert not IMAGE_01.styles and IMAGE_01_LIVE.styles


# -- image-01 ----------------------------------------------------------------------


@pytest.mark.parametrize("ratio", list(RATIO_SIZES))
def test_image_01_takes_every_ratio(offline: MiniMaxProvider, ratio: str) -> None:
    assert validated(offline, aspect_ratio=ratio).aspect_ratio == ratio


@pytest.mark.parametrize("size", ["512x512", "2048x2048", "512x2048", "1024x768", "1336x752"])
def test_image_01_takes_custom_sizes(offline: MiniMaxProvider, size: str) -> None:
    request = validated(offline, size=size)
    assert request.size == size and request.aspect_ratio is None


@pytest.mark.parametrize(
    ("size", "problem"),
    [
        ("1001x1000", "multiples of 8"),
        ("504x1024", "512–2048"),
        ("2056x1024", "512–2048"),
    ],
)
def test_image_01_refuses_bad_custom_sizes_with_the_nearest(offline: MiniMaxProvider, size: str, problem: str) -> None:
    error = _refusal(offline, size=size)
    assert isinstance(error, InvalidParameterError) and error.parameter == "size"
    assert problem in str(error) and "nearest valid size" in str(error)


def test_image_01_default_is_1_to_1(offline: MiniMaxProvider) -> None:
    request = validated(offline)
    assert request.aspect_ratio == "1:1" and request.size is None
    assert request.output_format == "jpeg"


@pytest.mark.parametrize("n", [0, 10])
def test_n_is_1_to_9(offline: MiniMaxProvider, n: int) -> None:
    error = _refusal(offline, n=n)
    assert error.parameter == "n" and "1–9" in str(error)
    assert validated(offline, n=9).n == 9


def test_prompt_is_at_most_1500_characters(offline: MiniMaxProvider) -> None:
    assert validated(offline, prompt="x" * 1500).prompt == "x" * 1500
    error = _refusal(offline, prompt="x" * 1501)
    assert error.parameter == "prompt" and "1500" in str(error)


def test_output_is_jpeg_only(offline: MiniMaxProvider) -> None:
    assert validated(offline, output_format="jpg").output_format == "jpeg"
    error = _refusal(offline, output_format="png")
    assert error.parameter == "output_format" and "jpeg" in str(error)


def test_image_01_options(offline: MiniMaxProvider) -> None:
    request = validated(offline, options={"prompt_optimizer": True, "aigc_watermark": True})
    assert request.options == {"prompt_optimizer": True, "aigc_watermark": True}
    error = _refusal(offline, options={"style_weight": 0.5})
    assert error.parameter == "options.style_weight" and "not an option" in str(error)


def test_image_01_has_no_styles(offline: MiniMaxProvider) -> None:
    error = _refusal(offline, style="watercolor")
    assert error.parameter == "style" and "minimax/image-01" in str(error)


@pytest.mark.parametrize("seed", [-1, SEED_MAX + 1])
def test_seed_range(offline: MiniMaxProvider, seed: int) -> None:
    error = _refusal(offline, seed=seed)
    assert error.parameter == "seed" and str(SEED_MAX) in str(error)
    assert validated(offline, seed=SEED_MAX).seed == SEED_MAX
    assert validated(offline, seed=0).seed == 0


# -- subject reference ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_one_portrait_is_accepted(offline: MiniMaxProvider, fmt: str) -> None:
    face = portrait(fmt)
    assert validated(offline, images=[face]).images == (face,)


def test_two_portraits_are_too_many(offline: MiniMaxProvider) -> None:
    error = _refusal(offline, images=[portrait(), portrait("png")])
    assert error.code == "too_many_images" and "at most 1" in str(error)


@pytest.mark.parametrize("fmt", ["webp", "gif"])
def test_portrait_must_be_jpeg_or_png(offline: MiniMaxProvider, fmt: str) -> None:
    face = InputImage(data=b"x" * 10, format=fmt, width=8, height=8, has_alpha=False, source=f"face.{fmt}")
    error = _refusal(offline, images=[face])
    assert isinstance(error, InputImageError) and "jpeg" in str(error) and "png" in str(error)


def test_portrait_must_be_under_10_mb(offline: MiniMaxProvider) -> None:
    big = InputImage(
        data=b"\xff\xd8\xff" + bytes(10 * 1024 * 1024),
        format="jpeg",
        width=8,
        height=8,
        has_alpha=False,
        source="huge.jpg",
    )
    error = _refusal(offline, images=[big])
    assert error.code == "image_file_too_large" and "10,485,760" in str(error)


# -- image-01-live -------------------------------------------------------------------


def test_live_takes_styles_in_english_and_chinese(offline: MiniMaxProvider) -> None:
    assert validated(offline, "image-01-live", style="Watercolor").style == "watercolor"
    assert validated(offline, "image-01-live", style="水彩").style == "水彩"
    error = _refusal(offline, "image-01-live", style="cyberpunk")
    assert error.parameter == "style" and "watercolor" in str(error) and "漫画" in str(error)


@pytest.mark.parametrize("weight", [0.01, 0.5, 1])
def test_live_style_weight_in_range(offline: MiniMaxProvider, weight: float) -> None:
    request = validated(offline, "image-01-live", style="comic", options={"style_weight": weight})
    assert request.options["style_weight"] == weight


@pytest.mark.parametrize("weight", [0, -0.1, 1.01, "heavy"])
def test_live_style_weight_out_of_range(offline: MiniMaxProvider, weight: Any) -> None:
    error = _refusal(offline, "image-01-live", style="comic", options={"style_weight": weight})
    assert error.parameter == "options.style_weight"


def test_live_style_weight_needs_a_style(offline: MiniMaxProvider) -> None:
    error = _refusal(offline, "image-01-live", options={"style_weight": 0.5})
    assert isinstance(error, InvalidParameterError)
    assert error.parameter == "options.style_weight" and "needs a style" in str(error)
    assert "watercolor" in str(error)


def test_live_refuses_21_9(offline: MiniMaxProvider) -> None:
    error = _refusal(offline, "image-01-live", aspect_ratio="21:9")
    assert error.parameter == "aspect_ratio" and "16:9" in str(error)


def test_live_refuses_a_subject_reference_clearly(offline: MiniMaxProvider) -> None:
    error = _refusal(offline, "image-01-live", images=[portrait()])
    assert isinstance(error, InvalidParameterError)
    assert error.parameter == "images" and error.code == "unsupported_parameter"
    assert "not accepted by minimax/image-01-live" in str(error)


def test_live_refuses_a_custom_size_it_cannot_map(offline: MiniMaxProvider) -> None:
    error = _refusal(offline, "image-01-live", size="1000x400")
    assert error.parameter == "size" and "aspect_ratio" in str(error)


def test_live_maps_a_ratio_shaped_size_and_says_so(offline: MiniMaxProvider) -> None:
    # The core's rule for ratio-only models: a WxH within 3% of a ratio becomes that ratio,
    # with a note, and the produced size is reported from ratio_sizes.
    spec_entry = entry(offline, "image-01-live")
    done = validate_call(
        ImageCall(model="image-01-live", prompt="x", size="1280x720"), spec_entry, Operation.GENERATE, []
    )
    assert done.request.aspect_ratio == "16:9" and done.request.size is None
    assert any("16:9" in note for note in done.notes)


def test_live_has_no_custom_size_rule_even_for_valid_image_01_sizes(offline: MiniMaxProvider) -> None:
    error = _refusal(offline, "image-01-live", size="1536x640")
    assert error.parameter == "size"
