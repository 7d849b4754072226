"""validate_call: every refusal names the parameter, the value, what is allowed and a fix."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict, Field

from atelier_core import (
    CustomSizeRule,
    ImageRequest,
    InputImage,
    InputImageRules,
    MaskRules,
    ModelSpec,
    Operation,
    Provider,
    SizeRules,
    hookimpl,
)
from atelier_core.engine.registry import ModelEntry, build_registry
from atelier_core.engine.validation import validate_call
from atelier_core.plugin.errors import (
    InputImageError,
    InvalidParameterError,
    UnsupportedCapabilityError,
)
from atelier_core.plugin.types import ImageCall
from atelier_core.settings import Settings


class Opts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    moderation: str = Field("auto", pattern="^(auto|low)$", description="moderation strictness")
    steps: int = Field(20, ge=1, le=50, description="sampling steps")


PIXELS = ModelSpec(
    id="pix",
    operations=frozenset({Operation.GENERATE, Operation.EDIT}),
    sizes=SizeRules(
        presets=("1024x1024", "1536x1024"),
        allow_auto=True,
        default="1024x1024",
        custom=CustomSizeRule(step=16, min_edge=256, max_edge=2048, max_aspect=3.0),
    ),
    qualities=("low", "high"),
    output_formats=("png", "jpeg", "webp"),
    compression_formats=("jpeg", "webp"),
    backgrounds=("auto", "opaque", "transparent"),
    n_max=4,
    prompt_max_chars=50,
    input_images=InputImageRules(max_count=2, formats=("png", "jpeg"), mask=MaskRules()),
    options=Opts,
)
RATIOS = ModelSpec(
    id="ratio",
    sizes=SizeRules(
        aspect_ratios=("1:1", "16:9", "9:16"),
        default_aspect_ratio="1:1",
        resolutions=("1K", "2K"),
        default_resolution="1K",
        ratio_sizes={"1:1": "1024x1024", "16:9": "1344x768", "9:16": "768x1344"},
    ),
    output_formats=("png",),
    seed=True,
    negative_prompt=True,
    styles=("photo", "anime"),
)


class Checked(Provider):
    name: ClassVar[str] = "v"
    needs_key: ClassVar[bool] = False
    models = (PIXELS, RATIOS)
    unpriced = frozenset({"pix", "ratio"})
    checked: ClassVar[list[ImageRequest]] = []

    def check(self, request: ImageRequest, spec: ModelSpec) -> None:
        self.checked.append(request)
        if request.prompt == "provider says no":
            raise InvalidParameterError("prompt", request.prompt, "is refused by a model rule")


class Plugin:
    @hookimpl
    def register_providers(self, register: Callable[[Provider[Any]], None]) -> None:
        register(Checked())


@pytest.fixture(scope="module")
def entries() -> dict[str, ModelEntry]:
    registry = build_registry(Settings(), plugins=[("v", Plugin())], entry_points=False)
    return {"pix": registry.resolve("v/pix"), "ratio": registry.resolve("v/ratio")}


def image(fmt: str = "png", width: int = 1024, height: int = 1024, alpha: bool = False, size: int = 100) -> InputImage:
    return InputImage(data=b"x" * size, format=fmt, width=width, height=height, has_alpha=alpha, source=f"in.{fmt}")


def check(
    entries: dict[str, ModelEntry],
    model: str = "pix",
    operation: Operation = Operation.GENERATE,
    images: tuple[InputImage, ...] = (),
    mask: InputImage | None = None,
    **call: Any,
) -> Any:
    call.setdefault("prompt", "a cat")
    return validate_call(ImageCall(model=model, **call), entries[model], operation, images, mask)


def refused(kind: type[Exception], entries: dict[str, ModelEntry], **kw: Any) -> str:
    with pytest.raises(kind) as caught:
        check(entries, **kw)
    return str(caught.value)


def test_defaults_are_applied_and_reported(entries: dict[str, ModelEntry]) -> None:
    result = check(entries)
    request = result.request
    assert (request.width, request.height, request.output_format, request.n) == (1024, 1024, "png", 1)
    assert result.applied == {"n": 1, "output_format": "png", "model": "v/pix", "size": "1024x1024"}
    assert result.requested == {"model": "pix"}


def test_ratio_model_defaults(entries: dict[str, ModelEntry]) -> None:
    request = check(entries, model="ratio").request
    assert (request.aspect_ratio, request.resolution, request.width) == ("1:1", "1K", None)


def test_size_forms(entries: dict[str, ModelEntry]) -> None:
    assert check(entries, size="1536x1024").request.size == "1536x1024"
    assert check(entries, size="1024X1536").request.size == "1024x1536"  # custom rule allows it
    auto = check(entries, size="auto")
    assert auto.request.width is None and auto.applied["size"] == "auto"
    ratio = check(entries, size="16:9")  # W:H in size is an aspect ratio
    assert ratio.request.size is not None and any("16:9" in n for n in ratio.notes)


def test_size_breaking_the_custom_rule_suggests_the_nearest(entries: dict[str, ModelEntry]) -> None:
    text = refused(InvalidParameterError, entries, size="1000x1000")
    assert "size=1000x1000" in text and "multiples of 16" in text
    suggested = text.split("nearest valid size is ")[1].rstrip(".")
    assert suggested in ("992x992", "1008x1008")
    assert check(entries, size=suggested).request.size == suggested


def test_pixel_size_maps_to_an_aspect_ratio_on_ratio_models(entries: dict[str, ModelEntry]) -> None:
    result = check(entries, model="ratio", size="1920x1080")
    assert result.request.aspect_ratio == "16:9" and any("mapped" in n for n in result.notes)
    text = refused(InvalidParameterError, entries, model="ratio", size="1000x300")
    assert "aspect_ratio" in text


def test_size_and_aspect_ratio_together_are_refused(entries: dict[str, ModelEntry]) -> None:
    assert "either size" in refused(InvalidParameterError, entries, size="1024x1024", aspect_ratio="16:9")


def test_unknown_ratio_and_resolution(entries: dict[str, ModelEntry]) -> None:
    assert "1:1, 16:9, 9:16" in refused(InvalidParameterError, entries, model="ratio", aspect_ratio="4:3")
    assert "1K, 2K" in refused(InvalidParameterError, entries, model="ratio", resolution="8K")
    assert check(entries, model="ratio", aspect_ratio="9:16", resolution="2k").request.resolution == "2K"


def test_choices_are_case_insensitive_and_listed_when_wrong(entries: dict[str, ModelEntry]) -> None:
    assert check(entries, quality="HIGH").request.quality == "high"
    assert check(entries, output_format="jpg").request.output_format == "jpeg"
    text = refused(InvalidParameterError, entries, quality="ultra")
    assert "quality=ultra" in text and "low, high" in text


def test_unsupported_parameters_are_named(entries: dict[str, ModelEntry]) -> None:
    assert "does not take seed" in refused(InvalidParameterError, entries, seed=3)
    assert "negative prompts" in refused(InvalidParameterError, entries, negative_prompt="blur")
    assert "style" in refused(InvalidParameterError, entries, style="photo")
    assert "background" in refused(InvalidParameterError, entries, model="ratio", background="opaque")
    ratio = check(entries, model="ratio", seed=5, negative_prompt="blur", style="ANIME").request
    assert (ratio.seed, ratio.negative_prompt, ratio.style) == (5, "blur", "anime")


def test_prompt_rules(entries: dict[str, ModelEntry]) -> None:
    assert "prompt" in refused(InvalidParameterError, entries, prompt="   ")
    text = refused(InvalidParameterError, entries, prompt="x" * 51)
    assert "at most 50 characters" in text and "x" * 51 not in text


def test_n_range(entries: dict[str, ModelEntry]) -> None:
    assert "1–4" in refused(InvalidParameterError, entries, n=5)
    assert "1–4" in refused(InvalidParameterError, entries, n=0)


def test_transparent_background_picks_an_alpha_format(entries: dict[str, ModelEntry]) -> None:
    assert check(entries, background="transparent").request.output_format == "png"
    text = refused(InvalidParameterError, entries, background="transparent", output_format="jpeg")
    assert "transparency" in text


def test_compression_applies_to_lossy_formats_only(entries: dict[str, ModelEntry]) -> None:
    assert check(entries, output_format="webp", output_compression=40).request.output_compression == 40
    assert "does not apply to png" in refused(InvalidParameterError, entries, output_compression=40)
    assert "0–100" in refused(InvalidParameterError, entries, output_format="jpeg", output_compression=101)


def test_options_are_validated_by_the_models_options_model(entries: dict[str, ModelEntry]) -> None:
    assert check(entries, options={"steps": 30}).request.options == {"steps": 30}
    text = refused(InvalidParameterError, entries, options={"stepz": 3})
    assert "options.stepz" in text and "moderation, steps" in text
    assert "options.steps" in refused(InvalidParameterError, entries, options={"steps": 99})
    assert "takes no extra options" in refused(InvalidParameterError, entries, model="ratio", options={"a": 1})


def test_operation_the_model_cannot_do(entries: dict[str, ModelEntry]) -> None:
    text = refused(UnsupportedCapabilityError, entries, model="ratio", operation=Operation.EDIT, images=(image(),))
    assert "cannot edit" in text and "capability=edit" in text


def test_edit_images_count_and_format(entries: dict[str, ModelEntry]) -> None:
    assert "too few" in refused(InvalidParameterError, entries, operation=Operation.EDIT)
    many = (image(), image(), image())
    assert "at most 2" in refused(InvalidParameterError, entries, operation=Operation.EDIT, images=many)
    text = refused(InputImageError, entries, operation=Operation.EDIT, images=(image("webp"),))
    assert "images[0]" in text and "png, jpeg" in text
    assert len(check(entries, operation=Operation.EDIT, images=(image(), image("jpeg"))).request.images) == 2


def test_masks(entries: dict[str, ModelEntry]) -> None:
    edit = {"operation": Operation.EDIT, "images": (image(),)}
    ok = check(entries, mask=image(alpha=True), **edit)
    assert ok.request.mask is not None and ok.applied["mask"] is True
    assert "alpha" in refused(InputImageError, entries, mask=image(alpha=False), **edit)
    assert "PNG" in refused(InputImageError, entries, mask=image("jpeg", alpha=True), **edit)
    assert "512x512" in refused(InputImageError, entries, mask=image(width=512, height=512, alpha=True), **edit)
    assert "edits only" in refused(InvalidParameterError, entries, mask=image(alpha=True))


def test_generate_refuses_reference_images_when_the_model_takes_none(entries: dict[str, ModelEntry]) -> None:
    assert "edit_image" in refused(InvalidParameterError, entries, images=(image(),))


def test_the_providers_own_check_runs_last(entries: dict[str, ModelEntry]) -> None:
    Checked.checked.clear()
    check(entries, prompt="fine")
    assert Checked.checked[-1].prompt == "fine"
    assert "model rule" in refused(InvalidParameterError, entries, prompt="provider says no")


def test_an_aspect_ratio_maps_to_the_closest_preset_within_tolerance() -> None:
    from atelier_core.testing.fakes import FakeProvider, fake_spec

    spec = fake_spec("presets", sizes=SizeRules(presets=("1024x1024", "1792x1024", "1024x1792")))
    registry = build_registry(Settings(), plugins=[("f", FakeProvider(models=[spec]))], entry_points=False)
    validated = validate_call(
        ImageCall(prompt="p", aspect_ratio="16:9"), registry.resolve("fake/presets"), Operation.GENERATE
    )
    assert validated.request.size == "1792x1024"  # 1.75 vs 1.78: within 3 %
    assert any("16:9" in note and "1792x1024" in note for note in validated.notes)
    with pytest.raises(InvalidParameterError, match="aspect_ratio"):
        validate_call(ImageCall(prompt="p", aspect_ratio="21:9"), registry.resolve("fake/presets"), Operation.GENERATE)
