"""Validate a caller's request against a model spec, before any provider is called.

:func:`validate_call` is pure: it takes the call, the model entry and the already-read
input images, and returns the normalised :class:`~atelier_core.plugin.types.ImageRequest`
with a record of what was requested and what will be applied. Every refusal names the
parameter, the value, what is allowed and a fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from atelier_core.engine.registry import ModelEntry
from atelier_core.engine.sizing import RESOLUTION_LONG_EDGE, size_of
from atelier_core.plugin.errors import InputImageError, InvalidParameterError, UnsupportedCapabilityError
from atelier_core.plugin.spec import InputImageRules, ModelSpec, Operation
from atelier_core.plugin.types import ImageCall, ImageRequest, InputImage

__all__ = ["RESOLUTION_LONG_EDGE", "Validated", "fan_out_seeds", "validate_call"]

_ALPHA_FORMATS = {"png", "webp", "gif"}


@dataclass(slots=True)
class Validated:
    request: ImageRequest
    requested: dict[str, Any]
    applied: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def validate_call(
    call: ImageCall,
    entry: ModelEntry,
    operation: Operation,
    images: Sequence[InputImage] = (),
    mask: InputImage | None = None,
) -> Validated:
    """Check ``call`` against ``entry``'s spec and build the provider request."""
    spec = entry.spec
    name = entry.canonical_id
    if not spec.supports(operation):
        able = sorted(op.value for op in spec.operations)
        raise UnsupportedCapabilityError(
            f"{name} cannot {operation.value}",
            parameter="model",
            value=name,
            allowed=able,
            fix=f"choose a model with the {operation.value} capability "
            f"(list_available_models capability={operation.value})",
        )
    notes: list[str] = []
    prompt = _prompt(call.prompt, spec, operation, name)
    n = _n(call.n, spec, name)
    tier = _choice("resolution", call.resolution, spec.sizes.resolutions, name) if call.resolution else None
    sizing = size_of(call, spec.sizes, name, notes, tier)
    output_format = _choice("output_format", _norm_format(call.output_format), spec.output_formats, name)
    output_format = (
        output_format or spec.default_output_format or (spec.output_formats[0] if spec.output_formats else None)
    )
    background = _choice("background", call.background, spec.backgrounds, name)
    if background == "transparent":
        if call.output_format is None and output_format not in _ALPHA_FORMATS:
            alpha_ok = [f for f in spec.output_formats if f in _ALPHA_FORMATS]
            if alpha_ok:
                output_format = alpha_ok[0]
                notes.append(f"output_format set to {output_format} for a transparent background")
        if output_format not in _ALPHA_FORMATS:
            raise InvalidParameterError(
                "background",
                "transparent",
                f"needs an output format with transparency, not {output_format}",
                allowed=[f for f in spec.output_formats if f in _ALPHA_FORMATS] or "none for this model",
                fix="use output_format=png or webp, or background=opaque",
            )
    compression = call.output_compression
    if compression is not None:
        if not 0 <= compression <= 100:
            raise InvalidParameterError("output_compression", compression, "is out of range", allowed="0–100")
        if output_format not in spec.compression_formats:
            raise InvalidParameterError(
                "output_compression",
                compression,
                f"does not apply to {output_format} output on {name}",
                allowed=f"output_format in {', '.join(spec.compression_formats) or '(none)'}",
                fix="drop output_compression or use output_format=jpeg/webp",
            )
    quality = _choice("quality", call.quality, spec.qualities, name) or spec.default_quality
    style = _choice("style", call.style, spec.styles, name)
    _seed(call.seed, n, spec, name)
    if call.negative_prompt and not spec.negative_prompt:
        raise _unsupported("negative_prompt", call.negative_prompt, name, "negative prompts")
    options, not_applied = _compat_options(call.options, spec, name, notes)
    options = _options(options, spec, name)
    _check_images(images, mask, spec, operation, name)

    request = ImageRequest(
        operation=operation,
        model=spec.id,
        prompt=prompt,
        n=n,
        width=sizing.width,
        height=sizing.height,
        aspect_ratio=sizing.aspect_ratio,
        resolution=sizing.resolution,
        quality=quality,
        output_format=output_format,
        output_compression=compression,
        background=background,
        seed=call.seed,
        negative_prompt=call.negative_prompt or None,
        style=style,
        options=options,
        images=tuple(images),
        mask=mask,
    )
    _applicability(request, spec, name)
    entry.provider.check(request, spec)
    applied = applied_parameters(request, name)
    if not_applied:
        applied["not_applied"] = not_applied
    return Validated(request=request, requested=call.requested(), applied=applied, notes=notes)


def applied_parameters(request: ImageRequest, canonical_id: str) -> dict[str, Any]:
    data = request.model_dump(exclude={"images", "mask", "prompt", "operation", "model"}, exclude_none=True)
    data = {k: v for k, v in data.items() if v not in ({}, ())}
    data.pop("width", None)
    data.pop("height", None)
    data["model"] = canonical_id
    data["size"] = request.size or ("auto" if not request.aspect_ratio else None)
    if data["size"] is None:
        del data["size"]
    if request.images:
        data["images"] = len(request.images)
    if request.mask is not None:
        data["mask"] = True
    return data


# -- pieces ------------------------------------------------------------------------


def _unsupported(parameter: str, value: Any, model: str, what: str) -> InvalidParameterError:
    return InvalidParameterError(
        parameter,
        value,
        f"is not supported: {model} does not take {what}",
        fix=f"remove {parameter}, or pick a model that supports it (see list_available_models)",
        code="unsupported_parameter",
    )


def fan_out_seeds(seed: int, n: int, batch: int) -> list[int]:
    """The seeds the core sends when ``n`` images are fanned out in calls of ``batch``."""
    return [seed + start for start in range(0, n, max(1, batch))]


def _seed(seed: int | None, n: int, spec: ModelSpec, name: str) -> None:
    if seed is None:
        return
    if isinstance(seed, bool):
        raise InvalidParameterError("seed", seed, "is not an integer", allowed="an integer")
    if spec.seed is None:
        raise _unsupported("seed", seed, name, "seed")
    low, high = spec.seed
    sent = fan_out_seeds(seed, n, spec.native_batch)
    if low <= sent[0] and sent[-1] <= high:
        return
    last_start = high - (sent[-1] - sent[0])
    fanned = len(sent) > 1
    problem = f"is out of range for {name}" + (
        f": n={n} is sent as {len(sent)} calls with seeds {sent[0]}…{sent[-1]}" if fanned else ""
    )
    raise InvalidParameterError(
        "seed",
        seed,
        problem,
        allowed=f"{low}–{last_start if fanned else high}" + (f" for n={n}" if fanned else ""),
        fix=f"use a seed between {low} and {max(low, last_start)}",
        code="seed_out_of_range",
    )


def _given(request: ImageRequest, key: str) -> tuple[bool, Any]:
    if key.startswith("options."):
        value = request.options.get(key.removeprefix("options."))
    else:
        value = getattr(request, key, None)
    if key in ("images", "mask") and value:
        return True, f"{len(value)} image(s)" if key == "images" else "mask"
    return value not in (None, False, "", (), [], {}), value


def _applicability(request: ImageRequest, spec: ModelSpec, name: str) -> None:
    """Refuse a parameter used where the spec's ``applies`` says it does not apply."""
    for key, rule in spec.applies.items():
        given, value = _given(request, key)
        if not given:
            continue
        problem: str | None = None
        fix: str | None = None
        if rule.operations is not None and request.operation not in rule.operations:
            ops = " or ".join(sorted(op.value for op in rule.operations))
            problem = f"applies to {ops} only on {name}, not {request.operation.value}"
            fix = f"remove {key}" + (", or use edit_image" if Operation.EDIT in rule.operations else "")
        elif rule.mask is True and request.mask is None:
            problem, fix = f"applies only with a mask on {name}", f"pass mask, or remove {key}"
        elif rule.mask is False and request.mask is not None and key != "mask":
            problem, fix = f"cannot be combined with mask on {name}", f"remove mask, or remove {key}"
        elif rule.output_formats is not None and request.output_format not in rule.output_formats:
            formats = "/".join(rule.output_formats)
            problem = f"applies to {formats} output only on {name}, not {request.output_format}"
            fix = f"set output_format={rule.output_formats[0]}, or remove {key}"
        elif rule.input_formats is not None:
            wrong = [i.format for i in request.images if i.format not in rule.input_formats]
            if wrong:
                problem = f"applies to {'/'.join(rule.input_formats)} input images only on {name}, not {wrong[0]}"
                fix = f"pass {'/'.join(rule.input_formats)} images, or remove {key}"
        if problem is not None:
            raise InvalidParameterError(
                key,
                value,
                problem,
                allowed=rule.describe(),
                fix=rule.fix or fix,
                code="unsupported_parameter",
            )


def _prompt(prompt: str | None, spec: ModelSpec, operation: Operation, name: str) -> str | None:
    text = prompt.strip() if prompt is not None else None
    if not text:
        if operation in spec.prompt_required_for:
            raise InvalidParameterError("prompt", prompt or "", "is empty", fix="describe the image you want in prompt")
        return None
    if spec.prompt_max_chars and len(text) > spec.prompt_max_chars:
        raise InvalidParameterError(
            "prompt",
            f"<{len(text)} characters>",
            f"is too long for {name}: {len(text)} characters",
            allowed=f"at most {spec.prompt_max_chars} characters",
            fix="shorten the prompt",
        )
    return text


def _n(n: int, spec: ModelSpec, name: str) -> int:
    if isinstance(n, bool) or not 1 <= n <= spec.n_max:
        raise InvalidParameterError(
            "n",
            n,
            f"is out of range for {name}",
            allowed=f"1–{spec.n_max}",
            fix=f"ask for at most {spec.n_max} image(s) per call",
        )
    return n


def _norm_format(value: str | None) -> str | None:
    if value is None:
        return None
    lowered = value.strip().lower()
    return "jpeg" if lowered == "jpg" else lowered


def _choice(parameter: str, value: str | None, allowed: Sequence[str], name: str) -> str | None:
    if value is None:
        return None
    if not allowed:
        raise _unsupported(parameter, value, name, parameter.replace("_", " "))
    for option in allowed:
        if option.lower() == value.strip().lower():
            return option
    raise InvalidParameterError(
        parameter,
        value,
        f"is not allowed for {name}",
        allowed=list(allowed),
        fix=f"use one of the allowed values for {parameter}",
    )


def _compat_options(
    options: dict[str, Any], spec: ModelSpec, name: str, notes: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Options other servers use: renamed ones are sent under this model's name, ignored
    ones are dropped (the model fixes them). Both are reported, never silent."""
    if not options or not (spec.option_renames or spec.ignored_options):
        return options, {}
    kept: dict[str, Any] = {}
    not_applied: dict[str, Any] = {}
    for key, value in options.items():
        if key in spec.ignored_options:
            if value is not None:
                not_applied[f"options.{key}"] = value
                notes.append(f"options.{key}={value} accepted but not applied: {spec.ignored_options[key]}")
            continue
        target = spec.option_renames.get(key)
        if target is None:
            kept[key] = value
            continue
        if options.get(target) not in (None, value):
            raise InvalidParameterError(
                f"options.{key}",
                value,
                f"conflicts with options.{target} ({name} sends {key} as {target})",
                allowed=f"options.{target} alone, or both with the same value",
                fix=f"drop options.{key} and keep options.{target}",
            )
        kept[target] = value
        notes.append(f"options.{key} was sent as options.{target} ({name} takes {target} in its place)")
    return kept, not_applied


def _options(options: dict[str, Any], spec: ModelSpec, name: str) -> dict[str, Any]:
    if not options:
        return {}
    if spec.options is None:
        raise InvalidParameterError(
            "options",
            options,
            f"are not supported: {name} takes no extra options",
            fix="remove options",
            code="unsupported_parameter",
        )
    try:
        parsed = spec.options.model_validate(options)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "options"
        allowed_keys = list(spec.options.model_fields)
        problem = first["msg"]
        if first["type"] == "extra_forbidden":
            problem = "is not an option of this model"
        raise InvalidParameterError(
            f"options.{where}",
            first.get("input"),
            f"{problem} ({name})",
            allowed=f"options: {', '.join(allowed_keys)}" if allowed_keys else "no options",
            fix="see list_available_models for each option's allowed values",
        ) from None
    return parsed.model_dump(exclude_unset=True, mode="json")


def _check_images(
    images: Sequence[InputImage],
    mask: InputImage | None,
    spec: ModelSpec,
    operation: Operation,
    name: str,
) -> None:
    rules: InputImageRules | None
    if operation is Operation.GENERATE:
        rules = spec.reference_images
        if images and rules is None:
            raise InvalidParameterError(
                "images",
                f"{len(images)} image(s)",
                f"are not accepted by {name} when generating",
                fix="remove images, pick a model that takes reference images "
                "(list_available_models), or use edit_image to change an image",
                code="unsupported_parameter",
            )
        if mask is not None:
            raise InvalidParameterError("mask", "mask", "applies to edits only", fix="use edit_image")
        if rules is None:
            return
    else:
        rules = spec.input_images
        assert rules is not None  # guaranteed by ModelSpec validation
        if len(images) < max(rules.min_count, 1):
            raise InvalidParameterError(
                "images",
                len(images),
                f"are too few for {name}",
                allowed=f"{max(rules.min_count, 1)}–{rules.max_count} image(s)",
                fix="pass the image to edit in images",
            )
    if len(images) > rules.max_count:
        raise InvalidParameterError(
            "images",
            f"{len(images)} images",
            f"are too many for {name}",
            allowed=f"at most {rules.max_count}",
            fix=f"pass at most {rules.max_count} image(s)",
            code="too_many_images",
        )
    for index, image in enumerate(images):
        where = f"images[{index}]"
        if image.format not in rules.formats:
            raise InputImageError(
                f"{where} ({image.source}) is {image.format}, which {name} does not accept",
                parameter=where,
                allowed=list(rules.formats),
                fix="convert the image to an accepted format",
                code="unsupported_image_format",
            )
        if len(image.data) > rules.max_bytes:
            raise InputImageError(
                f"{where} ({image.source}) is {len(image.data):,} bytes, over {name}'s limit",
                parameter=where,
                allowed=f"at most {rules.max_bytes:,} bytes",
                fix="downscale or compress the image",
                code="image_file_too_large",
            )
        if rules.must_be_square and image.width != image.height:
            raise InputImageError(
                f"{where} ({image.source}) is {image.width}x{image.height}; {name} needs a square image",
                parameter=where,
                fix="crop or pad the image to a square",
                code="image_not_square",
            )
    if mask is None:
        if operation is Operation.EDIT and rules.mask is not None and rules.mask.required:
            raise InvalidParameterError(
                "mask",
                None,
                f"is required: {name} edits only the area a mask marks",
                fix="pass mask: a PNG of the image's size, transparent where the image should change",
            )
        return
    mask_rules = rules.mask
    if mask_rules is None:
        raise InvalidParameterError(
            "mask",
            mask.source,
            f"is not supported by {name}",
            fix="remove mask, or choose a model that supports masks",
            code="unsupported_parameter",
        )
    if mask.format not in mask_rules.formats:
        raise InputImageError(
            f"mask ({mask.source}) is {mask.format}",
            parameter="mask",
            allowed=list(mask_rules.formats),
            fix="save the mask as PNG with an alpha channel",
            code="mask_must_be_png",
        )
    if len(mask.data) > mask_rules.max_bytes:
        raise InputImageError(
            f"mask is {len(mask.data):,} bytes",
            parameter="mask",
            allowed=f"at most {mask_rules.max_bytes:,} bytes",
            code="image_file_too_large",
            fix="compress the mask",
        )
    if mask_rules.needs_alpha and not mask.has_alpha:
        raise InputImageError(
            "mask has no alpha channel",
            parameter="mask",
            fix="use a PNG whose fully transparent pixels mark the area to change",
            code="mask_needs_alpha",
        )
    first = images[0]
    if mask_rules.same_size_as_first_image and (mask.width, mask.height) != (first.width, first.height):
        raise InputImageError(
            f"mask is {mask.width}x{mask.height} but the image is {first.width}x{first.height}",
            parameter="mask",
            fix="resize the mask to the image's size",
            code="mask_size_mismatch",
        )
