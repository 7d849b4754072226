"""Load-time spec checks (the contract kit's static checks), seed ranges, `applies`,
error codes fixed by class, typed settings, the alias line and a blocking provider
failing the contract kit."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict, Field

import atelier_placeholder
from atelier_core import (
    Applies,
    CallContext,
    CustomSizeRule,
    ErrorCode,
    ImageRequest,
    InputImageError,
    InputImageRules,
    InvalidParameterError,
    MaskRules,
    ModelSpec,
    Operation,
    Pricing,
    Provider,
    ProviderResult,
    ProviderSettings,
    SafetyRefusalError,
    SizeRules,
    UpstreamError,
    hookimpl,
)
from atelier_core.engine.registry import ModelEntry, build_registry
from atelier_core.engine.validation import fan_out_seeds, validate_call
from atelier_core.plugin import errors
from atelier_core.plugin.checks import provider_problems
from atelier_core.plugin.types import ImageCall, InputImage
from atelier_core.settings import Settings
from atelier_core.testing import FakeProvider, ProviderContract, fake_spec, make_image, make_mask

PRICE = Pricing(per_image=0.01, as_of="2026-01-01")


class Plugin:
    def __init__(self, *providers: Provider) -> None:
        self.providers = providers

    @hookimpl
    def register_providers(self, register: Callable[[Provider[Any]], None]) -> None:
        for provider in self.providers:
            register(provider)


def provider_with(*specs: ModelSpec, name: str = "third") -> Provider:
    class Made(Provider):
        needs_key: ClassVar[bool] = False
        models: ClassVar[tuple[ModelSpec, ...]] = specs

    Made.name = name  # type: ignore[misc]
    return Made()


# -- 3: load-time validation ------------------------------------------------------------


def test_invalid_specs_fail_the_plugin_at_load_with_every_problem() -> None:
    bad = provider_with(
        ModelSpec(id="bmp-model", output_formats=("bmp",), pricing=PRICE),
        ModelSpec(
            id="preset-outside",
            pricing=PRICE,
            sizes=SizeRules(presets=("1000x1000",), custom=CustomSizeRule(step=16, max_edge=2048)),
        ),
        ModelSpec(id="undated", pricing=Pricing(per_image=0.02, as_of="last week")),
        ModelSpec(id="negative", pricing=Pricing(per_image=-1, as_of="2026-01-01")),
        ModelSpec(id="free"),
    )
    registry = build_registry(Settings(), plugins=[("third", Plugin(bad))], entry_points=False)
    (record,) = registry.plugins
    assert record.status == "failed" and not registry.models
    text = "\n".join(record.problems)
    assert len(record.problems) == 5, text
    assert "bmp-model: output format(s) bmp cannot be verified and stored" in text
    assert "preset-outside: preset 1000x1000 breaks its own custom rule: edges must be multiples of 16" in text
    assert "undated: pricing.as_of 'last week' is not a date; write it as YYYY-MM-DD" in text
    assert "negative: pricing has a negative price" in text
    assert "free: has no pricing" in text and "unpriced" in text
    assert record.error == "; ".join(record.problems)


def test_load_checks_equal_the_contract_kits_static_checks() -> None:
    bad = provider_with(ModelSpec(id="bmp-model", output_formats=("bmp",), pricing=PRICE))
    registry = build_registry(Settings(), plugins=[("third", Plugin(bad))], entry_points=False)
    with pytest.raises(pytest.fail.Exception) as caught:
        ProviderContract().test_declared_capabilities_are_consistent(bad)
    for problem in registry.plugins[0].problems:
        assert problem.removeprefix("provider third: ") in str(caught.value)


def test_a_spec_pydantic_refuses_reports_every_problem_in_plain_words() -> None:
    class Broken:
        @hookimpl
        def register_providers(self, register: Callable[[Provider[Any]], None]) -> None:
            ModelSpec(
                id="x y",
                n_max=0,
                qualities=("hi",),
                default_quality="lo",  # type: ignore[arg-type]
                sizes={"presets": ["big"]},
                seed="yes",
            )

    registry = build_registry(Settings(), plugins=[("broken", Broken())], entry_points=False)
    (record,) = registry.plugins
    assert record.status == "failed"
    text = "\n".join(record.problems)
    assert len(record.problems) >= 4, text
    assert "id: String should match pattern" in text
    assert "n_max: Input should be greater than or equal to 1" in text
    assert "sizes.presets: preset 'big' is not WxH" in text
    assert "seed:" in text
    assert "pydantic.dev" not in text and "For further information" not in text


def test_failed_plugins_show_their_problems_in_models_listing(tmp_path: Any) -> None:
    from atelier_core.testing import build_test_atelier

    bad = provider_with(ModelSpec(id="bmp-model", output_formats=("bmp",), pricing=PRICE))
    atelier = build_test_atelier(tmp_path, [("third", Plugin(bad))])
    listed = atelier.describe_models()
    (problem,) = listed["plugin_problems"]["plugins"]
    assert problem["status"] == "failed" and "bmp" in problem["error"]


# -- 10: the alias line -------------------------------------------------------------------


def test_an_alias_claimed_three_times_names_every_claimant() -> None:
    specs = [ModelSpec(id=f"m{i}", aliases=("shared",), pricing=PRICE) for i in range(3)]
    plugins = [(f"p{i}", Plugin(provider_with(spec, name=f"prov{i}"))) for i, spec in enumerate(specs)]
    registry = build_registry(Settings(), plugins=plugins, entry_points=False)
    last = registry.problems[-1]
    assert "prov0/m0 (plugin p0)" in last and "prov1/m1 (plugin p1)" in last and "prov2/m2 (plugin p2)" in last
    assert "(plugin ?)" not in " ".join(registry.problems) and "by  " not in " ".join(registry.problems)


def test_a_third_party_alias_never_takes_a_built_in_alias() -> None:
    squatter = provider_with(ModelSpec(id="fast", aliases=("offline",), pricing=PRICE), name="squat")
    for plugins in (
        [("aaa", Plugin(squatter)), ("placeholder", atelier_placeholder)],
        [("placeholder", atelier_placeholder), ("zzz", Plugin(squatter))],
    ):
        registry = build_registry(Settings(), plugins=plugins, entry_points=False)
        assert registry.resolve("offline").canonical_id == "placeholder/placeholder"
        assert any("belongs to the built-in model placeholder/placeholder" in p for p in registry.problems)
        assert registry.resolve("squat/offline").canonical_id == "squat/fast"


# -- 4: seed ranges -------------------------------------------------------------------------


SEEDED = fake_spec("seeded", seed=(0, 2**32 - 1), n_max=4, n_native_max=1)


def entry(spec: ModelSpec) -> ModelEntry:
    return ModelEntry(f"t/{spec.id}", spec, FakeProvider("t", models=[spec]), "t")


def test_seed_true_means_the_32_bit_range() -> None:
    assert fake_spec("s", seed=True).seed == (0, 2**32 - 1)
    assert fake_spec("s", seed=False).seed is None


def test_every_seed_a_fan_out_sends_is_checked() -> None:
    assert fan_out_seeds(10, 4, 1) == [10, 11, 12, 13]
    assert fan_out_seeds(10, 4, 2) == [10, 12]
    top = 2**32 - 1
    ok = validate_call(ImageCall(model="seeded", prompt="p", seed=top), entry(SEEDED), Operation.GENERATE)
    assert ok.request.seed == top
    # n=2 fans out as two calls, seeds top and top + 1: the second is out of range.
    with pytest.raises(InvalidParameterError) as caught:
        validate_call(ImageCall(model="seeded", prompt="p", n=2, seed=top), entry(SEEDED), Operation.GENERATE)
    error = caught.value
    assert error.code == "seed_out_of_range" and error.parameter == "seed"
    assert "4294967296" in str(error) and "4294967294" in str(error.fix)
    with pytest.raises(InvalidParameterError, match="out of range"):
        validate_call(ImageCall(model="seeded", prompt="p", seed=-1), entry(SEEDED), Operation.GENERATE)


def test_the_fan_out_sends_seeds_inside_the_range() -> None:
    narrow = fake_spec("narrow", seed=(0, 100), n_max=4, n_native_max=1)
    validate_call(ImageCall(model="narrow", prompt="p", n=4, seed=97), entry(narrow), Operation.GENERATE)
    with pytest.raises(InvalidParameterError):
        validate_call(ImageCall(model="narrow", prompt="p", n=4, seed=98), entry(narrow), Operation.GENERATE)


# -- 7: applies and typed settings --------------------------------------------------------


class Opts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fidelity: str | None = Field(None, description="how closely to keep the input")
    markup: bool = Field(False, description="the last image is a markup overlay")
    frames: int | None = Field(None, description="GIF frames")
    loop: bool = Field(False, description="GIF input loops")


APPLIES = fake_spec(
    "ap",
    operations=frozenset({Operation.GENERATE, Operation.EDIT}),
    output_formats=("png", "gif"),
    compression_formats=(),
    input_images=InputImageRules(max_count=3, formats=("png", "gif"), mask=MaskRules()),
    options=Opts,
    applies={
        "options.fidelity": Applies(operations=frozenset({Operation.EDIT})),
        "options.markup": Applies(operations=frozenset({Operation.EDIT}), mask=False),
        "options.frames": Applies(output_formats=("gif",)),
        "options.loop": Applies(input_formats=("gif",)),
        "mask": Applies(output_formats=("png",)),
    },
)


def _image(fmt: str = "png") -> InputImage:
    return InputImage(data=make_image(64, 64, fmt), format=fmt, width=64, height=64, has_alpha=False)


def _mask() -> InputImage:
    return InputImage(data=make_mask(64, 64), format="png", width=64, height=64, has_alpha=True)


@pytest.mark.parametrize(
    ("operation", "call", "images", "mask", "problem"),
    [
        (Operation.GENERATE, {"options": {"fidelity": "high"}}, [], False, "applies to edit only"),
        (Operation.EDIT, {"options": {"markup": True}}, ["png"], True, "cannot be combined with mask"),
        (Operation.GENERATE, {"options": {"frames": 4}}, [], False, "applies to gif output only"),
        (Operation.EDIT, {"options": {"loop": True}}, ["png"], False, "applies to gif input images only"),
        (Operation.EDIT, {"output_format": "gif"}, ["png"], True, "applies to png output only"),
    ],
)
def test_applies_is_checked_by_the_core(
    operation: Operation, call: dict[str, Any], images: list[str], mask: bool, problem: str
) -> None:
    with pytest.raises(InvalidParameterError, match=problem) as caught:
        validate_call(
            ImageCall(model="ap", prompt="p", **call),
            entry(APPLIES),
            operation,
            [_image(f) for f in images],
            _mask() if mask else None,
        )
    assert caught.value.code == "unsupported_parameter"
    assert caught.value.fix


def test_applies_lets_the_right_uses_through() -> None:
    validate_call(
        ImageCall(model="ap", prompt="p", options={"fidelity": "high", "markup": True}),
        entry(APPLIES),
        Operation.EDIT,
        [_image()],
        None,
    )
    validate_call(
        ImageCall(model="ap", prompt="p", output_format="gif", options={"frames": 4}),
        entry(APPLIES),
        Operation.GENERATE,
    )
    validate_call(
        ImageCall(model="ap", prompt="p", options={"loop": True}), entry(APPLIES), Operation.EDIT, [_image("gif")], None
    )


def test_applies_naming_an_unknown_parameter_is_a_load_problem() -> None:
    spec = fake_spec(
        "typo",
        options=Opts,
        applies={
            "options.fidelty": Applies(operations=frozenset({Operation.EDIT})),
            "colour": Applies(output_formats=("png",)),
        },
    )
    problems = provider_problems(FakeProvider(models=[spec]))
    assert any("no option 'fidelty'" in p for p in problems), problems
    assert any("applies names 'colour'" in p for p in problems), problems


class PixelSettings(ProviderSettings):
    palette: int = 16


class Typed(Provider[PixelSettings]):
    name = "typed"


def test_provider_is_generic_over_its_settings() -> None:
    assert Typed.settings_class is PixelSettings
    provider = Typed()
    provider.configure(PixelSettings(palette=8))
    assert provider.settings.palette == 8  # typed: no downcast needed
    assert Provider.settings_class is ProviderSettings


# -- 5: error codes -----------------------------------------------------------------------


def test_each_error_class_fixes_its_code() -> None:
    with pytest.raises(ValueError, match="SafetyRefusalError cannot carry code 'content_blocked'"):
        SafetyRefusalError("refused", code="content_blocked")
    with pytest.raises(ValueError, match="cannot carry code 'upstream_rejected'"):
        SafetyRefusalError("refused", code="upstream_rejected")  # another class's refinement
    assert SafetyRefusalError("refused").code is ErrorCode.SAFETY_REFUSAL
    assert SafetyRefusalError("refused", code="safety_refusal").code == "safety_refusal"
    assert UpstreamError("no", code="upstream_rejected").code is ErrorCode.UPSTREAM_REJECTED
    assert InputImageError("bad", code=ErrorCode.MASK_NEEDS_ALPHA).to_dict()["code"] == "mask_needs_alpha"


def test_every_code_belongs_to_exactly_one_class() -> None:
    classes = [getattr(errors, n) for n in errors.__all__ if n.endswith("Error")]
    owners: dict[ErrorCode, list[str]] = {}
    for cls in classes:
        for code in {cls.__dict__.get("code"), *cls.__dict__.get("variants", ())} - {None}:
            owners.setdefault(code, []).append(cls.__name__)
    item_only = {ErrorCode.NOT_GENERATED}
    unowned = [c for c in ErrorCode if c not in owners and c not in item_only]
    assert not unowned, unowned
    for code, names in owners.items():
        # Download failures are both the caller's (an input URL) and the vendor's (a result URL).
        assert len(names) == 1 or code in {
            ErrorCode.FAILED_TO_DOWNLOAD_IMAGE,
            ErrorCode.URL_NOT_ALLOWED,
            ErrorCode.IMAGE_FILE_TOO_LARGE,
            ErrorCode.REMOTE_TIMEOUT,
            ErrorCode.UNSUPPORTED_IMAGE_MEDIA_TYPE,
            ErrorCode.IMAGE_PARSE_ERROR,
            ErrorCode.NO_IMAGE_RETURNED,
            ErrorCode.UNSUPPORTED_CAPABILITY,
            ErrorCode.PROVIDER_INTERNAL_ERROR,
        }, (code, names)


def test_every_code_is_documented() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "plugins.md").read_text(encoding="utf-8")
    missing = [code.value for code in ErrorCode if f"`{code.value}`" not in doc]
    assert not missing, f"codes missing from docs/plugins.md: {missing}"


# -- 2: the contract kit fails a provider that blocks ------------------------------------


class Sleepy(FakeProvider):
    async def generate(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
        time.sleep(1.5)  # the bug under test
        return await super().generate(request, ctx)


@pytest.mark.anyio
async def test_the_contract_kit_fails_a_provider_that_blocks_the_event_loop() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"blocked the event loop for (1\.[5-9]|[2-9]\.)"):
        await ProviderContract().test_generate_returns_declared_images(Sleepy(models=[fake_spec("m")]))
    await ProviderContract().test_generate_returns_declared_images(FakeProvider(models=[fake_spec("m")]))


# -- MaskRules.required: the core refuses an edit without a mask; the kit sends one -----------


MASKED = fake_spec("masked", input_images=InputImageRules(max_count=2, mask=MaskRules(required=True)))


def test_a_required_mask_is_checked_by_the_core() -> None:
    with pytest.raises(InvalidParameterError, match=r"mask.*is required") as caught:
        validate_call(ImageCall(model="masked", prompt="p"), entry(MASKED), Operation.EDIT, [_image()], None)
    assert caught.value.parameter == "mask" and "transparent" in str(caught.value.fix)
    validate_call(ImageCall(model="masked", prompt="p"), entry(MASKED), Operation.EDIT, [_image()], _mask())


def test_the_kit_sends_a_mask_in_every_edit_when_the_model_requires_one() -> None:
    from atelier_core.testing.cases import cases_for

    cases = cases_for(MASKED, Operation.EDIT)
    assert cases and all(case.mask for case in cases)
    assert not all(case.mask for case in cases_for(fake_spec("free"), Operation.EDIT))


@pytest.mark.anyio
async def test_a_provider_requiring_a_mask_passes_the_kits_edit_check() -> None:
    await ProviderContract().test_edit_returns_declared_images(FakeProvider(models=[MASKED]))
