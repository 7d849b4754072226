"""The contract's cases: one call per operation and size style a model declares, with
the inputs it needs, validated as the core would, and the checks on what comes back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from atelier_core.engine.isolation import StepTimer
from atelier_core.engine.registry import ModelEntry
from atelier_core.engine.validation import validate_call
from atelier_core.plugin.errors import AtelierError, UnsupportedCapabilityError
from atelier_core.plugin.provider import CallContext, Provider
from atelier_core.plugin.spec import ModelSpec, Operation, parse_ratio, parse_size
from atelier_core.plugin.types import ImageCall, ImageRequest, InputImage, ProviderResult
from atelier_core.testing.samples import make_image, make_mask, read_image

RATIO_TOLERANCE = 0.03
PROMPT = "a red fox sitting in fresh snow, morning light"
EDIT_PROMPT = "make the square blue"


@dataclass(frozen=True, slots=True)
class Case:
    operation: Operation
    label: str
    size: str | None = None
    aspect_ratio: str | None = None
    output_format: str | None = None
    n: int = 1
    mask: bool = False


def cases_for(spec: ModelSpec, operation: Operation) -> list[Case]:
    """A few calls that cover the declared sizes, formats and batch size of ``spec``."""
    op = operation
    rules = spec.sizes
    if op is Operation.GENERATE:
        cases = [Case(op, "defaults")]
    else:
        # Edits send input images: the smallest preset keeps them (and the test) small.
        smallest = min(rules.presets, key=lambda p: area(parse_size(p)), default=None)
        cases = [Case(op, f"size {smallest}" if smallest else "defaults", size=smallest)]
    if op is Operation.GENERATE:
        presets = [p for p in rules.presets if p != rules.default]
        if presets:
            cases.append(Case(op, f"preset size {presets[-1]}", size=presets[-1]))
        if rules.custom is not None:
            near = rules.custom.nearest(768, 512)
            if near is not None and f"{near[0]}x{near[1]}" not in rules.presets:
                cases.append(Case(op, f"custom size {near[0]}x{near[1]}", size=f"{near[0]}x{near[1]}"))
        ratios = [r for r in rules.aspect_ratios if r not in (rules.default_aspect_ratio, "1:1")]
        if ratios and not rules.takes_pixels:
            cases.append(Case(op, f"aspect ratio {ratios[0]}", aspect_ratio=ratios[0]))
    default_format = spec.default_output_format or (spec.output_formats[0] if spec.output_formats else None)
    for fmt in spec.output_formats:
        if fmt != default_format:
            cases.append(Case(op, f"output_format {fmt}", output_format=fmt))
    if spec.native_batch >= 2:
        cases.append(Case(op, "n=2", n=2))
    rules_in = spec.input_images if op is not Operation.GENERATE else None
    if rules_in is not None and rules_in.mask is not None:
        cases.append(Case(op, "with mask", size=cases[0].size, mask=True))
    if op is not Operation.GENERATE:
        cases[1:] = [c if c.size or c.mask else with_size(c, cases[0].size) for c in cases[1:]]
    if op is Operation.EDIT and rules_in is not None and rules_in.mask is not None and rules_in.mask.required:
        # The model cannot edit without a mask: every edit carries one.
        cases = [
            c
            if c.mask
            else Case(c.operation, f"{c.label} with mask", c.size, c.aspect_ratio, c.output_format, c.n, True)
            for c in cases
        ]
    return cases


def with_size(case: Case, size: str | None) -> Case:
    return Case(case.operation, case.label, size, case.aspect_ratio, case.output_format, case.n, case.mask)


def area(size: tuple[int, int] | None) -> int:
    return size[0] * size[1] if size else 0


def input_images(spec: ModelSpec, case: Case, size: tuple[int, int]) -> tuple[list[InputImage], InputImage | None]:
    if case.operation is Operation.GENERATE:
        return [], None
    rules = spec.input_images
    assert rules is not None
    width, height = size
    if rules.must_be_square:
        width = height = min(width, height)
    fmt = next((f for f in ("png", "jpeg", "webp") if f in rules.formats), rules.formats[0])
    images = [
        InputImage(
            data=make_image(width, height, fmt, color=(40 + 60 * i, 120, 200)),
            format=fmt,
            width=width,
            height=height,
            has_alpha=False,
            source=f"contract-{i}.{fmt}",
        )
        for i in range(max(1, rules.min_count))
    ]
    mask = None
    if case.mask and rules.mask is not None:
        mask = InputImage(
            data=make_mask(width, height),
            format="png",
            width=width,
            height=height,
            has_alpha=True,
            source="contract-mask.png",
        )
    return images, mask


def case_call(spec: ModelSpec, case: Case) -> ImageCall:
    prompt = EDIT_PROMPT if case.operation is Operation.EDIT else PROMPT
    if case.operation is Operation.VARIATION and Operation.VARIATION not in spec.prompt_required_for:
        prompt = None  # type: ignore[assignment]
    return ImageCall(
        model=spec.id,
        prompt=prompt,
        n=case.n,
        size=case.size,
        aspect_ratio=case.aspect_ratio,
        output_format=case.output_format,
    )


def validated(provider: Provider, spec: ModelSpec, case: Case) -> ImageRequest:
    entry = ModelEntry(f"{provider.name}/{spec.id}", spec, provider, "contract-plugin")
    call = case_call(spec, case)
    # First pass learns the size the core will ask for; inputs then match it, so an
    # edit that keeps the input's size is also the requested size.
    probe_images, probe_mask = input_images(spec, case, (256, 256))
    request = validate_call(call, entry, case.operation, probe_images, probe_mask).request
    if case.operation is Operation.GENERATE:
        return request
    wanted = (request.width, request.height) if request.width and request.height else None
    images, mask = input_images(spec, case, wanted or (256, 256))
    return validate_call(call, entry, case.operation, images, mask).request


def context(
    provider: Provider,
    task_started: Callable[[str], Awaitable[None]] | None = None,
    keep_vendor_task: Callable[[], bool] | None = None,
) -> CallContext:
    async def progress(fraction: float, message: str) -> None:
        assert 0.0 <= fraction <= 1.0

    async def partial(data: bytes, index: int) -> None:
        read_image(data)

    return CallContext(
        timeout_s=min(provider.settings.timeout_s or 30.0, 30.0),
        progress=progress,
        partial_image=partial,
        task_started=task_started,
        keep_vendor_task=keep_vendor_task,
    )


async def check_case(provider: Provider, spec: ModelSpec, case: Case, max_blocking_s: float) -> list[str]:
    where = f"{spec.id} {case.operation.value} ({case.label})"
    try:
        request = validated(provider, spec, case)
    except AtelierError as exc:
        return [f"{where}: the core refused the spec's own values: {exc}"]
    timer = StepTimer(provider.run(request, context(provider)), provider.name)
    try:
        result = await timer
    except AtelierError as exc:
        return [f"{where}: raised {type(exc).__name__}: {exc}"]
    except Exception as exc:
        return [f"{where}: raised plain {type(exc).__name__}: {exc}; providers raise only atelier_core errors"]
    problems: list[str] = []
    if timer.longest > max_blocking_s and not timer.longest_imported:
        problems.append(
            f"{where}: blocked the event loop for {timer.longest:.2f} s in one step (every other "
            "request waits meanwhile); use async clients, await asyncio.sleep, or run blocking "
            "work with asyncio.to_thread"
        )
    if not isinstance(result, ProviderResult):
        return [*problems, f"{where}: returned {type(result).__name__}, not ProviderResult"]
    if not result.images:
        problems.append(f"{where}: returned no image (failures: {result.failures})")
    if len(result.images) + len(result.failures) != request.n:
        problems.append(
            f"{where}: asked for {request.n} image(s), got {len(result.images)} and "
            f"{len(result.failures)} failure(s); report each missing image in failures"
        )
    expected_format = request.output_format
    for index, image in enumerate(result.images):
        label = f"{where} image {index}"
        try:
            info = read_image(image.data)
        except ValueError as exc:
            problems.append(f"{label}: {exc}")
            continue
        if expected_format and info.format != expected_format:
            problems.append(f"{label}: is {info.format}, but {expected_format} was requested")
        if info.format not in spec.output_formats:
            problems.append(f"{label}: is {info.format}, not a declared output format {spec.output_formats}")
        if image.mime_type and image.mime_type != f"image/{info.format}":
            problems.append(f"{label}: mime_type {image.mime_type} but the bytes are {info.format}")
        size_problem = size_problem_of(request, spec, info.width, info.height)
        if size_problem:
            problems.append(f"{label}: {size_problem}")
        applied = result.applied.get("size")
        if isinstance(applied, str) and parse_size(applied) and parse_size(applied) != (info.width, info.height):
            problems.append(f"{label}: applied size says {applied} but the image is {info.size}")
    for failure in result.failures:
        if not (0 <= failure.index < request.n) or not failure.message.strip():
            problems.append(f"{where}: failure {failure} needs an index < n and a message")
    return problems


def size_problem_of(request: ImageRequest, spec: ModelSpec, width: int, height: int) -> str | None:
    if request.width and request.height:
        if (width, height) != (request.width, request.height):
            return f"is {width}x{height}, but {request.width}x{request.height} was requested"
        return None
    if request.aspect_ratio:
        rules = spec.sizes
        key = f"{request.aspect_ratio}@{request.resolution}" if request.resolution else request.aspect_ratio
        produced = rules.ratio_sizes.get(key) or rules.ratio_sizes.get(request.aspect_ratio)
        if produced and parse_size(produced) != (width, height):
            return f"is {width}x{height}, but ratio_sizes declares {produced} for {key}"
        ratio = parse_ratio(request.aspect_ratio)
        if ratio and abs(width / height - ratio[0] / ratio[1]) / (ratio[0] / ratio[1]) > RATIO_TOLERANCE:
            return f"is {width}x{height}, not aspect ratio {request.aspect_ratio}"
    return None


def assert_refused_before_call(provider: Provider, operation: Operation) -> None:
    """For an undeclared operation, the core must refuse before the provider runs."""
    spec = provider.catalog()[0]
    entry = ModelEntry(f"{provider.name}/{spec.id}", spec, provider, "contract-plugin")
    with pytest.raises(UnsupportedCapabilityError):
        validate_call(ImageCall(model=spec.id, prompt=PROMPT), entry, operation, [], None)
