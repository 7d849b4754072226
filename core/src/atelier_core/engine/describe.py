"""The model catalogue as ``list_available_models`` reports it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from atelier_core.engine.registry import ModelEntry
from atelier_core.plugin.errors import (
    InvalidParameterError,
)
from atelier_core.plugin.spec import Operation

if TYPE_CHECKING:
    from atelier_core.engine.pipeline import Pipeline


def describe_models(pipe: Pipeline, provider: str | None = None, capability: str | None = None) -> dict[str, Any]:
    """Data for ``list_available_models``: every model, compactly, plus diagnostics."""
    if capability is not None and capability not in {op.value for op in Operation}:
        raise InvalidParameterError(
            "capability",
            capability,
            "is not a capability",
            allowed=[op.value for op in Operation],
        )
    if provider is not None and provider not in pipe.registry.providers:
        raise InvalidParameterError(
            "provider",
            provider,
            "is not a loaded provider",
            allowed=sorted(pipe.registry.providers) or "none loaded",
        )
    models = [describe_entry(entry) for entry in pipe.registry.entries(provider, capability)]
    out: dict[str, Any] = {"models": models}
    if pipe.settings.default_model:
        out["default_model"] = pipe.settings.default_model
    diagnostics = pipe.registry.diagnostics()
    problems = [p for p in diagnostics.get("plugins", []) if p.get("status") != "loaded"]
    if problems or diagnostics.get("problems"):
        out["plugin_problems"] = {"plugins": problems, "problems": diagnostics.get("problems", [])}
    return out


def describe_entry(entry: ModelEntry) -> dict[str, Any]:
    """One model for ``list_available_models``: only what is set, compactly."""
    spec = entry.spec
    reason = entry.unavailable_reason()
    out: dict[str, Any] = {"id": entry.canonical_id}
    if spec.aliases:
        out["aliases"] = list(spec.aliases)
    out["provider"] = entry.provider_name
    out["available"] = reason is None
    if reason:
        out["reason"] = reason
    if spec.title:
        out["title"] = spec.title
    out["operations"] = sorted(op.value for op in spec.operations)
    sizes: dict[str, Any] = {}
    rules = spec.sizes
    if rules.presets:
        sizes["presets"] = list(rules.presets)
    if rules.allow_auto:
        sizes["auto"] = True
    if rules.custom:
        sizes["custom"] = rules.custom.describe()
    if rules.aspect_ratios:
        sizes["aspect_ratios"] = list(rules.aspect_ratios)
    if rules.resolutions:
        sizes["resolutions"] = list(rules.resolutions)
    if rules.default:
        sizes["default"] = rules.default
    out["sizes"] = sizes
    for key in ("qualities", "backgrounds", "styles"):
        value = getattr(spec, key)
        if value:
            out[key] = list(value)
    out["formats"] = list(spec.output_formats)
    out["n_max"] = spec.n_max
    if spec.prompt_max_chars:
        out["prompt_max"] = spec.prompt_max_chars
    for key, rules_ in (("inputs", spec.input_images), ("references", spec.reference_images)):
        if rules_ is not None:
            info: dict[str, Any] = {"max": rules_.max_count, "formats": list(rules_.formats)}
            if rules_.must_be_square:
                info["square"] = True
            if rules_.mask is not None:
                info["mask"] = True
            out[key] = info
    flags = [name for name in ("seed", "negative_prompt") if getattr(spec, name)]
    if flags:
        out["supports"] = flags
    options = spec.describe_options()
    if options:
        out["options"] = options
    if spec.pricing is not None:
        price: dict[str, Any] = {
            k: v for k, v in spec.pricing.model_dump(exclude_defaults=True).items() if k not in ("source",)
        }
        out["price_usd"] = price
    return out
