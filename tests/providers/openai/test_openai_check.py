"""Model-specific rules, refused before any call, and availability without a key."""

from __future__ import annotations

from typing import Any

import pytest
from openai_support import KEY, input_image, validated

import atelier_openai
from atelier_core import InvalidParameterError, MissingCredentialsError, Operation
from atelier_core.engine.registry import ModelEntry, build_registry
from atelier_core.settings import PluginSettings, Settings
from atelier_openai.models import CATALOGUE


def _entry(model_id: str, **settings: Any) -> ModelEntry:
    registry = build_registry(
        Settings(providers={"openai": {"api_key": KEY, **settings}}),
        plugins=[("openai", atelier_openai)],
        entry_points=False,
    )
    return registry.resolve(model_id)


def _refused(
    entry: ModelEntry,
    operation: Operation = Operation.GENERATE,
    images: tuple[Any, ...] = (),
    mask: Any = None,
    **call: Any,
) -> InvalidParameterError:
    with pytest.raises(InvalidParameterError) as caught:
        validated(entry, operation, images, mask, **call)
    return caught.value


def test_moderation_is_generate_only() -> None:
    error = _refused(_entry("gpt-image-2"), Operation.EDIT, (input_image(),), options={"moderation": "low"})
    assert error.parameter == "options.moderation" and "generate only" in str(error)


def test_input_fidelity_is_edit_only_and_per_model() -> None:
    error = _refused(_entry("gpt-image-1.5"), options={"input_fidelity": "high"})
    assert error.parameter == "options.input_fidelity"
    # gpt-image-2 fixes it ("For gpt-image-2, omit this parameter"): accepted, not sent, reported
    # (the servers people migrate from ignore it there).
    checked = validated(_entry("gpt-image-2"), Operation.EDIT, (input_image(),), options={"input_fidelity": "low"})
    assert "input_fidelity" not in checked.request.options
    assert checked.applied["not_applied"] == {"options.input_fidelity": "low"}
    assert any("not applied" in note for note in checked.notes)
    error = _refused(_entry("gpt-image-1-mini"), Operation.EDIT, (input_image(),), options={"input_fidelity": "high"})
    assert error.parameter == "options.input_fidelity"


def test_transparent_is_refused_on_gpt_image_2_unless_preview_enabled() -> None:
    error = _refused(_entry("gpt-image-2"), background="transparent")
    assert error.parameter == "background" and "opaque" in str(error)
    request = validated(_entry("gpt-image-2", transparent_preview=True), background="transparent").request
    assert request.background == "transparent" and request.output_format == "png"


@pytest.mark.parametrize("fmt", ["jpeg", "gif"])
def test_transparent_needs_png_or_webp(fmt: str) -> None:
    error = _refused(_entry("gpt-image-2.6-flare"), background="transparent", output_format=fmt)
    assert error.parameter == "background"


def test_markup_rules() -> None:
    entry = _entry("gpt-image-2.5-flare")
    base, overlay = input_image(16, 16), input_image(16, 16, alpha=True)
    mask = input_image(16, 16, alpha=True)
    assert "mask" in str(_refused(entry, Operation.EDIT, (base, overlay), mask, options={"markup": True}))
    assert "at least two" in str(_refused(entry, Operation.EDIT, (base,), options={"markup": True}))
    opaque = input_image(16, 16)
    assert "transparency" in str(_refused(entry, Operation.EDIT, (base, opaque), options={"markup": True}))
    small = input_image(8, 8, alpha=True)
    assert "size of the first" in str(_refused(entry, Operation.EDIT, (base, small), options={"markup": True}))
    assert "applies to edit only" in str(_refused(entry, options={"markup": True}))
    # not offered where the SDK does not list it
    assert "not an option" in str(
        _refused(_entry("gpt-image-2"), Operation.EDIT, (base, overlay), options={"markup": True})
    )


def test_gif_and_svg_rules() -> None:
    gif = _entry("gpt-image-2.6-sunburst")
    assert _refused(gif, options={"frame_count": 3}).parameter == "options.frame_count"
    assert "cannot be streamed" in str(_refused(gif, output_format="gif", options={"partial_images": 2}))
    error = _refused(gif, Operation.EDIT, (input_image(),), input_image(alpha=True), output_format="gif")
    assert error.parameter == "mask"
    assert _refused(gif, output_format="gif", output_compression=50).parameter == "output_compression"
    svg = _entry("gpt-image-2.6-sunburst", svg_output=True)
    assert _refused(svg, output_format="svg", n=2).parameter == "n"
    assert _refused(svg, options={"svg_model": "x"}).parameter == "options.svg_model"
    # SVG is not offered unless enabled
    assert _refused(gif, output_format="svg").parameter == "output_format"


@pytest.mark.parametrize("model_id", [spec.id for spec in CATALOGUE])
def test_core_rules_apply_to_every_model(model_id: str) -> None:
    entry = _entry(model_id)
    assert _refused(entry, n=11).parameter == "n"
    assert _refused(entry, quality="hd").parameter == "quality"
    assert _refused(entry, output_format="png", output_compression=10).parameter == "output_compression"
    assert _refused(entry, style="vivid").parameter == "style"
    assert _refused(entry, seed=3).parameter == "seed"
    assert _refused(entry, size="1000x1000").parameter == "size"
    too_many = tuple(input_image() for _ in range(17))
    assert _refused(entry, Operation.EDIT, too_many).parameter == "images"


# -- availability -------------------------------------------------------------------------


def test_without_a_key_every_model_is_unavailable_naming_openai_api_key() -> None:
    registry = build_registry(plugins=[("openai", atelier_openai)], entry_points=False)
    entries = registry.entries(provider="openai")
    assert len(entries) == len(CATALOGUE)
    for entry in entries:
        reason = entry.unavailable_reason()
        assert reason is not None and "OPENAI_API_KEY" in reason
        with pytest.raises(MissingCredentialsError, match="OPENAI_API_KEY"):
            registry.require_available(entry)


def test_a_key_makes_them_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-0000")
    registry = build_registry(plugins=[("openai", atelier_openai)], entry_points=False)
    assert all(entry.unavailable_reason() is None for entry in registry.entries(provider="openai"))


def test_disabled_provider_says_so() -> None:
    entry = _entry("gpt-image-2", enabled=False)
    assert "disabled" in (entry.unavailable_reason() or "")


def test_loaded_through_the_entry_point_like_any_plugin() -> None:
    registry = build_registry(Settings(plugins=PluginSettings(allow=["openai"])))
    [record] = [r for r in registry.plugins if r.name == "openai"]
    assert record.status == "loaded" and record.source.startswith("entry point atelier-openai")
    assert registry.resolve("openai/gpt-image-2").provider.name == "openai"
