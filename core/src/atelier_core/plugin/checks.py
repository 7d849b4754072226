"""Static checks of what a provider declares: one list, used at load time and by the kit.

The registry runs :func:`provider_problems` on every provider it loads (a provider with
problems is refused and its plugin marked failed, every problem listed in plain words),
and the contract kit's ``test_declared_capabilities_are_consistent`` runs the same
function, so a plugin that passes the kit loads, and one that loads passes those checks.
:func:`plain_problems` turns a pydantic ``ValidationError`` (a spec that cannot even be
built) into the same kind of lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import date

from pydantic import ValidationError

from atelier_core.plugin.spec import ModelSpec, Operation, parse_ratio, parse_size

__all__ = [
    "KNOWN_INPUT_FORMATS",
    "KNOWN_OUTPUT_FORMATS",
    "plain_problems",
    "provider_problems",
    "spec_problems",
]

KNOWN_INPUT_FORMATS = frozenset({"png", "jpeg", "webp", "gif"})
KNOWN_OUTPUT_FORMATS = KNOWN_INPUT_FORMATS | {"svg"}
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_RATIO_TOLERANCE = 0.03
_OPTION_KEY = re.compile(r"^options\.([A-Za-z_][A-Za-z0-9_]*)$")
#: request fields an ``applies`` key may name besides ``options.<name>``
APPLICABLE_FIELDS = frozenset(
    {
        "mask",
        "background",
        "quality",
        "style",
        "seed",
        "negative_prompt",
        "output_compression",
        "images",
        "size",
        "aspect_ratio",
        "resolution",
    }
)


def plain_problems(exc: ValidationError, where: str = "") -> list[str]:
    """Every error of a pydantic ``ValidationError``, one plain line each."""
    lines: list[str] = []
    prefix = f"{where}: " if where else ""
    for error in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in error.get("loc", ()) if p != "__root__")
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        received = error.get("input")
        shown = (
            ""
            if error.get("type") in ("missing", "value_error") or isinstance(received, dict)
            else (f" (got {received!r})" if len(repr(received)) < 80 else "")
        )
        lines.append(f"{prefix}{loc + ': ' if loc else ''}{message}{shown}")
    return lines


def provider_problems(provider: object, unpriced: Iterable[str] = ()) -> list[str]:
    """Every problem in what ``provider`` declares (name, settings class, model specs).

    ``unpriced`` adds model ids that may carry no price besides the provider's own
    ``unpriced`` declaration.
    """
    from atelier_core.plugin.provider import Provider, ProviderSettings

    problems: list[str] = []
    if not isinstance(provider, Provider):
        return [f"register() got {type(provider).__name__}, not a Provider instance"]
    if not provider.name or not _SLUG.match(provider.name):
        problems.append(f"provider name {provider.name!r} must be a lowercase slug (letters, digits, - or _)")
    if not (isinstance(provider.settings_class, type) and issubclass(provider.settings_class, ProviderSettings)):
        problems.append("settings_class must subclass atelier_core.ProviderSettings")
    try:
        specs = tuple(provider.catalog())
    except Exception as exc:  # a catalog that cannot be listed is a problem, not a crash
        return [*problems, f"catalog() raised {type(exc).__name__}: {exc}"]
    if not specs:
        problems.append(f"{provider.name} declares no models")
    allowed_unpriced = frozenset(unpriced) | frozenset(getattr(provider, "unpriced", ()))
    seen: dict[str, str] = {}
    for spec in specs:
        if not isinstance(spec, ModelSpec):
            problems.append(f"catalog() holds a {type(spec).__name__}, not a ModelSpec")
            continue
        for name in (spec.id, *spec.aliases):
            key = name.lower()
            if key in seen and not (seen[key] == spec.id and name == spec.id):
                problems.append(f"{spec.id}: name {name!r} is also used by {seen[key]}")
            seen[key] = spec.id
        problems.extend(f"{spec.id}: {p}" for p in spec_problems(spec, allowed_unpriced))
    live = {spec.id.lower() for spec in specs if isinstance(spec, ModelSpec)}
    for retired in provider.retired:
        if retired.id.lower() in live:
            problems.append(f"retired model {retired.id} is also declared as live")
        if _parse_date(retired.retired_on) is None:
            problems.append(f"retired model {retired.id}: retired_on {retired.retired_on!r} is not YYYY-MM-DD")
    for model_id in sorted(allowed_unpriced & frozenset(getattr(provider, "unpriced", ()))):
        if model_id.lower() not in live:
            problems.append(f"unpriced lists {model_id!r}, which is not one of the provider's models")
    return problems


def spec_problems(spec: ModelSpec, unpriced: frozenset[str] = frozenset()) -> Iterator[str]:
    """The problems of one model spec (without its id), in plain words."""
    if not spec.operations:
        yield "declares no operations"
    if len(set(spec.aliases)) != len(spec.aliases) or spec.id in spec.aliases:
        yield "aliases repeat (or repeat the id)"
    unknown = sorted(set(spec.output_formats) - KNOWN_OUTPUT_FORMATS)
    if unknown or not spec.output_formats:
        yield (
            f"output format(s) {', '.join(unknown) or '(none)'} cannot be verified and stored by the core; "
            f"declare output_formats from {', '.join(sorted(KNOWN_OUTPUT_FORMATS))}"
        )
    for field_name in ("qualities", "output_formats", "backgrounds", "styles"):
        values = getattr(spec, field_name)
        if len(set(values)) != len(values):
            yield f"{field_name} has duplicates: {values}"
    yield from _size_problems(spec)
    ops = spec.operations
    if (Operation.EDIT in ops or Operation.VARIATION in ops) and spec.input_images is None:
        yield "declares edit/variation but no input_images rules"
    for which in ("input_images", "reference_images"):
        image_rules = getattr(spec, which)
        if image_rules is None:
            continue
        if image_rules.min_count > image_rules.max_count:
            yield f"{which}: min_count exceeds max_count"
        if not image_rules.formats or set(image_rules.formats) - KNOWN_INPUT_FORMATS:
            yield f"{which}.formats {image_rules.formats} must be within {sorted(KNOWN_INPUT_FORMATS)}"
    if spec.options is not None:
        if spec.options.model_config.get("extra") != "forbid":
            yield "options model must set extra='forbid'"
        for name, info in spec.options.model_fields.items():
            if not info.description:
                yield f"option {name!r} needs a description (list_available_models shows it)"
        try:
            spec.describe_options()
        except Exception as exc:  # a schema that cannot render breaks list_available_models
            yield f"options schema does not render: {exc}"
    yield from _applies_problems(spec)
    yield from _pricing_problems(spec, unpriced)


def _size_problems(spec: ModelSpec) -> Iterator[str]:
    rules = spec.sizes
    if rules.custom is not None:
        for preset in rules.presets:
            w, h = parse_size(preset) or (0, 0)
            broken = rules.custom.problems(w, h)
            if broken:
                yield f"preset {preset} breaks its own custom rule: {'; '.join(broken)}"
    if rules.default and rules.default != "auto":
        w, h = parse_size(rules.default) or (0, 0)
        if rules.default not in rules.presets and (rules.custom is None or rules.custom.problems(w, h)):
            yield f"default size {rules.default} is neither a preset nor allowed by the custom rule"
    if rules.default == "auto" and not rules.allow_auto:
        yield "default size is auto but allow_auto is false"
    for key, produced in rules.ratio_sizes.items():
        ratio, _, tier = key.partition("@")
        if ratio not in rules.aspect_ratios:
            yield f"ratio_sizes key {key!r}: {ratio} is not in aspect_ratios"
        if tier and tier not in rules.resolutions:
            yield f"ratio_sizes key {key!r}: {tier} is not in resolutions"
        size = parse_size(produced)
        parsed = parse_ratio(ratio)
        if size is None:
            yield f"ratio_sizes[{key!r}] = {produced!r} is not WxH"
        elif parsed and abs(size[0] / size[1] - parsed[0] / parsed[1]) / (parsed[0] / parsed[1]) > _RATIO_TOLERANCE:
            yield f"ratio_sizes[{key!r}] = {produced} does not have ratio {ratio}"


def _applies_problems(spec: ModelSpec) -> Iterator[str]:
    option_names = set(spec.options.model_fields) if spec.options is not None else set()
    for key, rule in spec.applies.items():
        option = _OPTION_KEY.match(key)
        if option is not None:
            if option[1] not in option_names:
                yield f"applies names {key!r}, but the model has no option {option[1]!r}"
        elif key not in APPLICABLE_FIELDS:
            yield (f"applies names {key!r}; use options.<name> or one of {', '.join(sorted(APPLICABLE_FIELDS))}")
        if rule.operations is not None and not rule.operations & spec.operations:
            yield f"applies[{key!r}] allows operations the model does not declare"
        if rule.output_formats is not None and not set(rule.output_formats) & set(spec.output_formats):
            yield f"applies[{key!r}] allows output formats the model does not declare"
        if rule.input_formats is not None and set(rule.input_formats) - KNOWN_INPUT_FORMATS:
            yield f"applies[{key!r}].input_formats must be within {sorted(KNOWN_INPUT_FORMATS)}"
        if rule.mask is True and not (spec.input_images and spec.input_images.mask):
            yield f"applies[{key!r}] needs a mask, but the model takes no mask"


def _pricing_problems(spec: ModelSpec, unpriced: frozenset[str]) -> Iterator[str]:
    pricing = spec.pricing
    if pricing is None:
        if spec.id not in unpriced:
            yield (
                "has no pricing; declare Pricing(..., as_of='YYYY-MM-DD', source=...) or list "
                "the id in the provider's `unpriced`"
            )
        return
    if spec.id in unpriced:
        yield "is listed as unpriced but declares pricing"
    as_of = _parse_date(pricing.as_of)
    if as_of is None:
        yield f"pricing.as_of {pricing.as_of!r} is not a date; write it as YYYY-MM-DD"
    elif as_of > date.today():
        yield f"pricing.as_of {pricing.as_of} is in the future"
    has_price = (
        pricing.per_image is not None
        or pricing.per_image_by_quality
        or pricing.per_image_by_size
        or pricing.per_image_by_quality_size
        or pricing.output_image_per_mtok is not None
    )
    if not has_price:
        yield "pricing declares no price at all"
    # A price table may be shared by a model family, so keys for qualities this model
    # lacks are fine; a declared quality without any price is not (a typo, usually).
    priced_qualities = set(pricing.per_image_by_quality) | {
        key.partition("@")[0] for key in pricing.per_image_by_quality_size
    }
    if priced_qualities and pricing.per_image is None:
        for quality in spec.qualities:
            if quality != "auto" and quality not in priced_qualities:
                yield f"quality {quality!r} has no price in the by-quality tables (and no per_image)"
    for key in pricing.per_image_by_size:
        if parse_size(key) is None and key not in spec.sizes.resolutions:
            yield f"pricing.per_image_by_size key {key!r} is neither WxH nor a declared resolution"
    for key in pricing.per_image_by_quality_size:
        quality, _, size = key.partition("@")
        if not quality or not size or not (parse_size(size) or size in spec.sizes.resolutions):
            yield f"pricing.per_image_by_quality_size key {key!r} must be '<quality>@<WxH or resolution>'"
    values = [
        pricing.per_image,
        *pricing.per_image_by_quality.values(),
        *pricing.per_image_by_size.values(),
        *pricing.per_image_by_quality_size.values(),
        pricing.input_text_per_mtok,
        pricing.input_image_per_mtok,
        pricing.output_image_per_mtok,
    ]
    if any(v is not None and v < 0 for v in values):
        yield "pricing has a negative price"


def _parse_date(text: str) -> date | None:
    try:
        return date.fromisoformat(text) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) else None
    except ValueError:
        return None
