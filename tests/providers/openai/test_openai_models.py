"""The catalogue is data; these tests hold it to the installed SDK's facts."""

from __future__ import annotations

import typing
from pathlib import Path

import openai
import pytest
from pydantic import ValidationError

from atelier_core import Operation
from atelier_openai.models import CATALOGUE, CUSTOM_SIZES, FAMILIES, RETIRED, caps_for

SPECS = {spec.id: spec for spec in CATALOGUE}
IDS = list(SPECS)
SDK_DIR = Path(openai.__file__).parent


def _literal_values() -> set[str]:
    from openai.types.image_model import ImageModel

    return set(typing.get_args(ImageModel))


def _docstring(name: str) -> str:
    return (SDK_DIR / "types" / name).read_text()


def test_catalogue_is_every_served_gpt_image_model_the_sdk_knows() -> None:
    literal = _literal_values()
    served = {m for m in literal if not m.startswith("dall-e") and m != "gpt-image-1"}
    assert set(IDS) == served
    # the SDK's own list of supported models (generate docstring) names each of them
    generate_doc = _docstring("image_generate_params.py")
    edit_doc = _docstring("image_edit_params.py")
    for model_id in IDS:
        assert f"`{model_id}`" in generate_doc
        assert f"`{model_id}`" in edit_doc


def test_retired_models_are_explained_not_listed() -> None:
    assert [r.id for r in RETIRED] == ["gpt-image-1"]
    retired = RETIRED[0]
    assert retired.retired_on == "2026-10-23"
    assert "gpt-image-2.5-sunburst" in retired.replacement and "gpt-image-2.5-flare" in retired.replacement
    assert "GPT Image 1 was shut down on October 23, 2026" in _docstring("image_model.py")
    assert "gpt-image-1" not in SPECS
    # dall-e-2/3 belong to the separate atelier-dalle plugin
    assert not any(r.id.startswith("dall-e") for r in RETIRED)


@pytest.mark.parametrize("model_id", IDS)
def test_common_facts(model_id: str) -> None:
    spec = SPECS[model_id]
    assert spec.operations == frozenset({Operation.GENERATE, Operation.EDIT})
    assert spec.n_max == 10 and spec.native_batch == 10  # "Must be between 1 and 10."
    assert spec.prompt_max_chars == 32_000  # "The maximum length is 32000 characters"
    assert set(spec.sizes.presets) == {"1024x1024", "1536x1024", "1024x1536"}
    assert spec.sizes.allow_auto and spec.sizes.default == "auto"
    assert {"low", "medium", "high", "auto"} <= set(spec.qualities)
    assert spec.output_formats[:3] == ("png", "jpeg", "webp")
    assert spec.compression_formats == ("jpeg", "webp")
    assert spec.default_output_format == "png"
    assert spec.input_images is not None
    assert spec.input_images.max_count == 16
    assert spec.input_images.formats == ("png", "jpeg", "webp")
    assert spec.input_images.max_bytes < 50 * 1024 * 1024
    mask = spec.input_images.mask
    assert mask is not None and mask.formats == ("png",) and mask.max_bytes < 4 * 1024 * 1024
    assert mask.same_size_as_first_image
    assert spec.streams_partial_images
    assert not spec.returns_revised_prompt  # "Not returned by GPT image models."
    assert spec.pricing is not None and spec.pricing.as_of and spec.pricing.source
    assert spec.options is not None and spec.options.model_config.get("extra") == "forbid"


@pytest.mark.parametrize("model_id", IDS)
def test_custom_sizes_only_where_the_sdk_allows_them(model_id: str) -> None:
    spec = SPECS[model_id]
    doc = _docstring("image_generate_params.py").split("size: Union[")[1].split("style:")[0]
    in_sdk_list = f"`{model_id}`" in doc
    if model_id.startswith("gpt-image-2.6"):
        assert spec.sizes.custom is CUSTOM_SIZES  # launch notes; see docs/providers/openai.md
    else:
        assert (spec.sizes.custom is not None) is in_sdk_list


@pytest.mark.parametrize("model_id", IDS)
def test_quality_tiers(model_id: str) -> None:
    spec = SPECS[model_id]
    top = {"xhigh", "max"} <= set(spec.qualities)
    assert top is (model_id.startswith("gpt-image-2.5") or model_id.startswith("gpt-image-2.6"))
    assert "standard" not in spec.qualities and "hd" not in spec.qualities  # DALL·E only


@pytest.mark.parametrize("model_id", IDS)
def test_backgrounds(model_id: str) -> None:
    spec = SPECS[model_id]
    transparent = "transparent" in spec.backgrounds
    # "For gpt-image-2 and gpt-image-2-2026-04-21, this support is in preview."
    assert transparent is (not model_id.startswith("gpt-image-2-") and model_id != "gpt-image-2")
    assert {"auto", "opaque"} <= set(spec.backgrounds)


@pytest.mark.parametrize("model_id", IDS)
def test_options_per_model(model_id: str) -> None:
    spec = SPECS[model_id]
    assert spec.options is not None
    fields = set(spec.options.model_fields)
    assert {"moderation", "partial_images", "safety_identifier"} <= fields
    caps = caps_for(model_id)
    assert ("input_fidelity" in fields) is (model_id in ("gpt-image-1.5", "gpt-image-1-mini"))
    assert ("markup" in fields) is caps.markup
    assert ("complexity" in fields) is caps.complexity
    assert ("frame_count" in fields) is ("gif" in spec.output_formats)
    assert ("svg_model" in fields) is ("svg" in spec.output_formats)
    spec.options.model_validate({"moderation": "low", "partial_images": 3})
    with pytest.raises(ValidationError):
        spec.options.model_validate({"partial_images": 4})  # "between 0 and 3"
    with pytest.raises(ValidationError):
        spec.options.model_validate({"moderation": "high"})
    with pytest.raises(ValidationError):
        spec.options.model_validate({"style": "vivid"})  # legacy DALL·E parameter: refused


def test_input_fidelity_choices() -> None:
    # "Supports high and low on gpt-image-1.5; gpt-image-1-mini supports only low."
    full = SPECS["gpt-image-1.5"].options
    mini = SPECS["gpt-image-1-mini"].options
    assert full is not None and mini is not None
    full.model_validate({"input_fidelity": "high"})
    mini.model_validate({"input_fidelity": "low"})
    with pytest.raises(ValidationError):
        mini.model_validate({"input_fidelity": "high"})


def test_svg_is_opt_in() -> None:
    from atelier_openai.models import build_spec

    assert "svg" not in SPECS["gpt-image-2.6-flare"].output_formats
    assert "gif" in SPECS["gpt-image-2.6-flare"].output_formats
    opted = build_spec("gpt-image-2.6-flare", caps_for("gpt-image-2.6-flare"), svg_output=True)
    assert "svg" in opted.output_formats and opted.options is not None
    assert "svg_model" in opted.options.model_fields
    # models that cannot author SVG never get it
    assert "svg" not in build_spec("gpt-image-2", caps_for("gpt-image-2"), svg_output=True).output_formats


def test_transparent_preview_setting_adds_transparent_to_gpt_image_2() -> None:
    from atelier_openai.models import build_spec

    spec = build_spec("gpt-image-2", caps_for("gpt-image-2"), transparent_preview=True)
    assert "transparent" in spec.backgrounds


def test_gif_options_bounds() -> None:
    options = SPECS["gpt-image-2.6-flare"].options
    assert options is not None
    options.model_validate({"frame_count": 2, "frame_duration_ms": 200})
    for bad in ({"frame_count": 1}, {"frame_count": 17}, {"frame_duration_ms": 655_351}):
        with pytest.raises(ValidationError):
            options.model_validate(bad)


@pytest.mark.parametrize(
    ("size", "ok"),
    [
        ("1536x864", True),  # the SDK's own example
        ("3840x2160", True),  # "the maximum supported resolution is 3840x2160"
        ("2160x3840", True),
        ("1008x1008", True),
        ("1000x1000", False),  # not multiples of 16
        ("3856x1296", False),  # edge over 3840
        ("3840x1264", False),  # wider than 3:1
        ("512x512", False),  # under the pixel band
        ("3840x2176", False),  # over 8,294,400 pixels
    ],
)
def test_custom_size_rule(size: str, ok: bool) -> None:
    w, h = (int(v) for v in size.split("x"))
    assert (not CUSTOM_SIZES.problems(w, h)) is ok


def test_every_family_row_is_used() -> None:
    assert {caps.family for caps, _ in FAMILIES.values()} == {
        "gpt-image-2",
        "gpt-image-2.5",
        "gpt-image-2.6",
        "gpt-image-1.5",
        "gpt-image-1-mini",
        "chatgpt-image-latest",
    }


@pytest.mark.parametrize("model_id", IDS)
def test_price_table_covers_every_quality_and_preset(model_id: str) -> None:
    spec = SPECS[model_id]
    pricing = spec.pricing
    assert pricing is not None and pricing.as_of == "2026-11-21"
    assert pricing.output_image_per_mtok and pricing.input_text_per_mtok and pricing.input_image_per_mtok
    for quality in spec.qualities:
        for size in spec.sizes.presets:
            price = pricing.image_price(quality, size)
            assert price is not None and 0 < price < 1
    # estimates never rank a better tier cheaper than a lower one
    for size in spec.sizes.presets:
        prices = [pricing.image_price(q, size) or 0 for q in ("low", "medium", "high")]
        assert prices == sorted(prices)
    if "xhigh" in spec.qualities:
        assert pricing.image_price("max", None) == pricing.image_price("high", None)
