"""The router: one call from ImageCall to verified, saved files (placeholder + a scripted fake)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

import atelier_placeholder
from atelier_core import (
    CallContext,
    ImageRequest,
    InputImageRules,
    MaskRules,
    ModelSpec,
    Operation,
    Pricing,
    Provider,
    ProviderImage,
    ProviderResult,
    SizeRules,
    Usage,
    hookimpl,
)
from atelier_core.engine.pipeline import CallOutcome, Pipeline
from atelier_core.plugin.errors import (
    InvalidParameterError,
    OutputPathError,
    RateLimitedError,
    SafetyRefusalError,
    UnknownModelError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from atelier_core.plugin.types import ImageCall, ItemFailure
from atelier_core.settings import Settings
from atelier_core.testing import make_image, make_mask

pytestmark = pytest.mark.anyio

PNG = make_image(64, 64)

Step = Callable[[ImageRequest], Any] | Exception | str | None


class Scripted(Provider):
    """A provider whose answers are scripted per call: an exception, "hang", "corrupt",
    "short" (one image fewer, unexplained), "partial" (one image fewer, with a failure),
    or None (all images)."""

    name: ClassVar[str] = "fake"
    needs_key: ClassVar[bool] = False
    models = (
        ModelSpec(
            id="m1",
            aliases=("one",),
            operations=frozenset({Operation.GENERATE, Operation.EDIT}),
            sizes=SizeRules(presets=("64x64",), default="64x64"),
            output_formats=("png",),
            n_max=8,
            n_native_max=2,
            seed=True,
            input_images=InputImageRules(max_count=2, mask=MaskRules()),
            pricing=Pricing(per_image=0.04, as_of="2026-11-01"),
        ),
    )

    def __init__(self, *steps: Step) -> None:
        super().__init__()
        self.steps = list(steps)
        self.calls: list[ImageRequest] = []
        self.in_flight = 0
        self.peak = 0
        self.delay = 0.005

    async def generate(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
        self.calls.append(request)
        number = len(self.calls)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            step = self.steps.pop(0) if self.steps else None
            await asyncio.sleep(self.delay)
            if isinstance(step, Exception):
                raise step
            if step == "hang":
                await asyncio.sleep(30)
            images = [ProviderImage(data=PNG, seed=(request.seed or 0) + i) for i in range(request.n)]
            failures: list[ItemFailure] = []
            if step == "corrupt":
                images[-1] = ProviderImage(data=PNG[: len(PNG) // 2])
            elif step == "all-corrupt":
                images = [ProviderImage(data=b"\x89PNG\r\n\x1a\nnot really") for _ in images]
            elif step == "short":
                images = images[:-1]
            elif step == "partial":
                images = images[:-1]
                failures = [ItemFailure(index=request.n - 1, code="safety_refusal", message="blocked")]
            elif callable(step):
                return step(request)  # type: ignore[no-any-return]
            return ProviderResult(
                images=images,
                failures=failures,
                usage=Usage(output_tokens=10 * len(images)),
                request_id=f"req-{number}",
            )
        finally:
            self.in_flight -= 1

    async def edit(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
        return await self.generate(request, ctx)


class Plugin:
    def __init__(self, provider: Provider) -> None:
        self.provider = provider

    @hookimpl
    def register_providers(self, register: Callable[[Provider[Any]], None]) -> None:
        register(self.provider)


def build(tmp_path: Path, provider: Provider | None = None, **settings: Any) -> Pipeline:
    fake_settings = {"backoff_base_s": 0.001, "retry_after_cap_s": 1.0, "max_retries": 2}
    fake_settings.update(settings.pop("fake", {}))
    values: dict[str, Any] = {
        "storage": {"output_dir": str(tmp_path / "out")},
        "providers": {"fake": fake_settings},
    }
    values.update(settings)
    plugins: list[tuple[str, object]] = [("placeholder", atelier_placeholder)]
    if provider is not None:
        plugins.append(("fake", Plugin(provider)))
    return Pipeline.build(Settings(**values), plugins=plugins, entry_points=False)


def image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".json")


# -- the happy path ------------------------------------------------------------------


async def test_placeholder_generate_saves_verified_file_with_sidecar(tmp_path: Path) -> None:
    atelier = build(tmp_path)
    outcome = await atelier.execute(
        ImageCall(model="placeholder", prompt="a red fox", size="256x256", seed=7), Operation.GENERATE
    )
    assert outcome.model == "placeholder/placeholder" and outcome.provider == "placeholder"
    (image,) = outcome.images
    path = Path(image.path)
    assert path.is_file() and path.is_relative_to((tmp_path / "out").resolve())
    assert (image.width, image.height, image.format) == (256, 256, "png")
    assert image.resource_uri.startswith("atelier://images/") and image.uri.startswith("file://")
    assert image.seed == 7
    sidecar = json.loads(Path(image.sidecar or "").read_text())
    assert sidecar["prompt"] == "a red fox" and sidecar["model"] == "placeholder/placeholder"
    assert sidecar["applied"]["size"] == "256x256" and sidecar["seed"] == 7
    assert outcome.requested == {"model": "placeholder", "size": "256x256", "seed": 7}
    assert outcome.cost.estimate_usd == 0.0 and outcome.cost.pricing_as_of
    assert outcome.elapsed_s > 0 and not outcome.dry_run


async def test_outcome_round_trips_through_json(tmp_path: Path) -> None:
    atelier = build(tmp_path, Scripted("partial"))
    outcome = await atelier.execute(ImageCall(model="fake/m1", prompt="x", n=2), Operation.GENERATE)
    again = CallOutcome.model_validate_json(outcome.model_dump_json())
    assert again == outcome
    assert CallOutcome.model_validate(json.loads(json.dumps(outcome.model_dump(mode="json")))) == outcome


async def test_default_model_is_used_when_none_is_given(tmp_path: Path) -> None:
    atelier = build(tmp_path, default_model="offline")
    outcome = await atelier.execute(ImageCall(prompt="x", size="256x256"), Operation.GENERATE)
    assert outcome.model == "placeholder/placeholder"


async def test_no_model_and_no_default_lists_available_models(tmp_path: Path) -> None:
    atelier = build(tmp_path)
    with pytest.raises(InvalidParameterError) as caught:
        await atelier.execute(ImageCall(prompt="x"), Operation.GENERATE)
    message = str(caught.value)
    assert "model" in message and "placeholder/placeholder" in message and "ATELIER_DEFAULT_MODEL" in message


async def test_unknown_model_suggests(tmp_path: Path) -> None:
    atelier = build(tmp_path)
    with pytest.raises(UnknownModelError) as caught:
        await atelier.execute(ImageCall(model="placeholdr", prompt="x"), Operation.GENERATE)
    assert "placeholder" in str(caught.value)


async def test_edit_without_prompt_routes_to_variation(tmp_path: Path) -> None:
    source = tmp_path / "in.png"
    source.write_bytes(make_image(128, 128))
    atelier = build(tmp_path, storage={"output_dir": str(tmp_path / "out"), "input_dirs": [str(tmp_path)]})
    outcome = await atelier.execute(ImageCall(model="placeholder", images=[str(source)]), Operation.EDIT)
    assert outcome.operation is Operation.VARIATION
    assert any("variation" in note for note in outcome.notes)
    assert len(outcome.images) == 1


async def test_edit_with_mask_from_a_previous_result(tmp_path: Path) -> None:
    atelier = build(tmp_path)
    first = await atelier.execute(ImageCall(model="placeholder", prompt="a room", size="256x256"), Operation.GENERATE)
    mask = tmp_path / "out" / "mask.png"
    mask.write_bytes(make_mask(256, 256))
    edited = await atelier.execute(
        ImageCall(model="placeholder", prompt="add a window", images=[first.images[0].resource_uri], mask=str(mask)),
        Operation.EDIT,
    )
    assert edited.operation is Operation.EDIT and edited.applied.get("mask") is True
    assert edited.images[0].sha256 != first.images[0].sha256


# -- dry run and refusals before spending ----------------------------------------------


async def test_dry_run_quotes_and_spends_nothing(tmp_path: Path) -> None:
    fake = Scripted()
    atelier = build(tmp_path, fake)
    outcome = await atelier.execute(ImageCall(model="one", prompt="x", n=3), Operation.GENERATE, dry_run=True)
    assert outcome.dry_run and outcome.images == [] and fake.calls == []
    assert outcome.cost.estimate_usd == pytest.approx(0.12) and outcome.cost.basis == "price table"
    assert outcome.applied["n"] == 3
    assert image_files(tmp_path / "out") == []


async def test_taken_filename_is_refused_before_the_provider_is_called(tmp_path: Path) -> None:
    fake = Scripted()
    atelier = build(tmp_path, fake)
    await atelier.execute(ImageCall(model="one", prompt="x"), Operation.GENERATE, filename="cat.png")
    with pytest.raises(OutputPathError):
        await atelier.execute(ImageCall(model="one", prompt="x"), Operation.GENERATE, filename="cat.png")
    assert len(fake.calls) == 1
    again = await atelier.execute(
        ImageCall(model="one", prompt="x"), Operation.GENERATE, filename="cat.png", overwrite=True
    )
    assert Path(again.images[0].path).name == "cat.png"


async def test_filenames_are_numbered_for_several_images(tmp_path: Path) -> None:
    atelier = build(tmp_path, Scripted())
    outcome = await atelier.execute(ImageCall(model="one", prompt="x", n=3), Operation.GENERATE, filename="set/cat.png")
    assert [Path(i.path).name for i in outcome.images] == ["cat.png", "cat-2.png", "cat-3.png"]


# -- retries ------------------------------------------------------------------------------


async def test_rate_limit_is_retried_after_the_wait(tmp_path: Path) -> None:
    fake = Scripted(RateLimitedError("slow down", retry_after_s=0.02))
    atelier = build(tmp_path, fake)
    outcome = await atelier.execute(ImageCall(model="one", prompt="x"), Operation.GENERATE)
    assert len(fake.calls) == 2 and len(outcome.images) == 1


async def test_rate_limit_over_the_cap_is_returned_with_the_wait(tmp_path: Path) -> None:
    fake = Scripted(RateLimitedError("slow down", retry_after_s=90.0))
    atelier = build(tmp_path, fake)
    with pytest.raises(RateLimitedError) as caught:
        await atelier.execute(ImageCall(model="one", prompt="x"), Operation.GENERATE)
    assert caught.value.retry_after_s == 90.0 and len(fake.calls) == 1


async def test_unavailable_is_retried_with_backoff_then_fails(tmp_path: Path) -> None:
    fake = Scripted(*[UpstreamUnavailableError("503")] * 5)
    atelier = build(tmp_path, fake, fake={"max_retries": 2})
    with pytest.raises(UpstreamUnavailableError):
        await atelier.execute(ImageCall(model="one", prompt="x"), Operation.GENERATE)
    assert len(fake.calls) == 3


async def test_safety_refusal_is_never_retried(tmp_path: Path) -> None:
    fake = Scripted(SafetyRefusalError("refused: violence"))
    atelier = build(tmp_path, fake)
    with pytest.raises(SafetyRefusalError, match="violence"):
        await atelier.execute(ImageCall(model="one", prompt="x"), Operation.GENERATE)
    assert len(fake.calls) == 1


async def test_timeout_is_reported_and_not_resubmitted(tmp_path: Path) -> None:
    fake = Scripted("hang")
    atelier = build(tmp_path, fake, fake={"timeout_s": 0.05})
    with pytest.raises(UpstreamTimeoutError) as caught:
        await atelier.execute(ImageCall(model="one", prompt="x"), Operation.GENERATE)
    assert len(fake.calls) == 1
    assert "not resubmitted" in str(caught.value) and "billed" in str(caught.value)


# -- partial results and verification ---------------------------------------------------


async def test_partial_failure_keeps_the_images_that_came_back(tmp_path: Path) -> None:
    atelier = build(tmp_path, Scripted("partial"))
    outcome = await atelier.execute(ImageCall(model="one", prompt="x", n=2), Operation.GENERATE)
    assert len(outcome.images) == 1
    assert [(f.index, f.code) for f in outcome.failures] == [(1, "safety_refusal")]
    assert any("do not pay" in note for note in outcome.notes)
    assert outcome.cost.cost_usd == pytest.approx(0.04)  # half the 0.08 quote: one of two delivered


async def test_unexplained_missing_images_are_accounted_as_failures(tmp_path: Path) -> None:
    atelier = build(tmp_path, Scripted("short"))
    outcome = await atelier.execute(ImageCall(model="one", prompt="x", n=2), Operation.GENERATE)
    assert len(outcome.images) == 1
    assert [(f.index, f.code) for f in outcome.failures] == [(1, "missing_image")]


async def test_corrupt_image_is_a_failure_and_never_a_file(tmp_path: Path) -> None:
    atelier = build(tmp_path, Scripted("corrupt"))
    outcome = await atelier.execute(ImageCall(model="one", prompt="x", n=2), Operation.GENERATE)
    assert len(outcome.images) == 1 and len(outcome.failures) == 1
    assert outcome.failures[0].index == 1
    assert image_files(tmp_path / "out") == [Path(outcome.images[0].path)]


async def test_all_corrupt_raises_protocol_error_and_writes_nothing(tmp_path: Path) -> None:
    atelier = build(tmp_path, Scripted("all-corrupt"))
    with pytest.raises(UpstreamProtocolError):
        await atelier.execute(ImageCall(model="one", prompt="x", n=2), Operation.GENERATE)
    assert image_files(tmp_path / "out") == []


async def test_all_parts_failing_raises_the_most_meaningful_error(tmp_path: Path) -> None:
    fake = Scripted(
        UpstreamUnavailableError("503"),
        SafetyRefusalError("refused"),
        UpstreamUnavailableError("503"),
        UpstreamUnavailableError("503"),
    )
    atelier = build(tmp_path, fake, fake={"max_retries": 0})
    with pytest.raises(SafetyRefusalError):
        await atelier.execute(ImageCall(model="one", prompt="x", n=4), Operation.GENERATE)


# -- fan-out and limits ------------------------------------------------------------------


async def test_fan_out_above_the_native_batch(tmp_path: Path) -> None:
    fake = Scripted()
    atelier = build(tmp_path, fake)
    outcome = await atelier.execute(ImageCall(model="one", prompt="x", n=5, seed=100), Operation.GENERATE)
    assert sorted(r.n for r in fake.calls) == [1, 2, 2]
    assert sorted(r.seed or 0 for r in fake.calls) == [100, 102, 104]
    assert len(outcome.images) == 5 and outcome.failures == []
    assert outcome.usage is not None and outcome.usage.output_tokens == 50
    assert sorted(i.seed or 0 for i in outcome.images) == [100, 101, 102, 103, 104]
    assert any("3 parallel calls" in note for note in outcome.notes)
    assert len(set((outcome.request_id or "").split(", "))) == 3


async def test_fan_out_part_failure_is_partial(tmp_path: Path) -> None:
    fake = Scripted(None, SafetyRefusalError("refused"))
    atelier = build(tmp_path, fake)
    outcome = await atelier.execute(ImageCall(model="one", prompt="x", n=4), Operation.GENERATE)
    assert len(outcome.images) == 2 and len(outcome.failures) == 2
    assert {f.code for f in outcome.failures} == {"safety_refusal"}


@pytest.mark.parametrize("cap", [1, 2])
async def test_concurrency_cap_per_provider(tmp_path: Path, cap: int) -> None:
    fake = Scripted()
    fake.delay = 0.2  # long enough that all four calls are waiting even on a loaded machine
    atelier = build(tmp_path, fake, fake={"max_concurrency": cap})
    await asyncio.gather(
        *(atelier.execute(ImageCall(model="one", prompt="x", n=2), Operation.GENERATE) for _ in range(4))
    )
    assert len(fake.calls) == 4 and fake.peak == cap


async def test_requests_per_minute_limits_call_starts(tmp_path: Path) -> None:
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    fake = Scripted()
    values = {"storage": {"output_dir": str(tmp_path / "out")}, "providers": {"fake": {"requests_per_minute": 2}}}
    atelier = Pipeline.build(Settings(**values), plugins=[("fake", Plugin(fake))], entry_points=False, sleep=fake_sleep)
    # The limiter owns its own clock; give it a fake one that advances on sleep.
    now = [0.0]

    async def tick(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    _ = atelier.registry  # built lazily; the provider's settings are configured then
    limiter = atelier.limits.get("fake", fake.settings)
    limiter._clock = lambda: now[0]
    limiter._sleep = tick
    for _ in range(3):
        await atelier.execute(ImageCall(model="one", prompt="x"), Operation.GENERATE)
    await atelier.aclose()
    assert sleeps == [pytest.approx(60.0)]


# -- progress and catalogue --------------------------------------------------------------


async def test_progress_is_reported_in_increasing_stages(tmp_path: Path) -> None:
    seen: list[tuple[float, str]] = []

    async def progress(fraction: float, message: str) -> None:
        seen.append((fraction, message))

    atelier = build(tmp_path)
    await atelier.execute(
        ImageCall(model="placeholder", prompt="x", size="256x256", n=2), Operation.GENERATE, progress=progress
    )
    fractions = [f for f, _ in seen]
    assert fractions == sorted(set(fractions)) and fractions[-1] == 1.0
    messages = " ".join(m for _, m in seen)
    assert "validated" in messages and "calling" in messages and "saving" in messages


async def test_describe_models(tmp_path: Path) -> None:
    atelier = build(tmp_path, Scripted())
    data = atelier.describe_models()
    by_id = {m["id"]: m for m in data["models"]}
    placeholder = by_id["placeholder/placeholder"]
    assert placeholder["available"] is True
    assert placeholder["operations"] == ["edit", "generate", "variation"]
    assert "1024x1024" in placeholder["sizes"]["presets"] and placeholder["sizes"]["auto"] is True
    assert placeholder["inputs"]["mask"] is True and placeholder["price_usd"]["as_of"]
    assert set(placeholder["supports"]) == {"seed", "negative_prompt"}
    assert [m["id"] for m in atelier.describe_models(provider="fake")["models"]] == ["fake/m1"]
    assert {m["id"] for m in atelier.describe_models(capability="variation")["models"]} == {"placeholder/placeholder"}
    with pytest.raises(InvalidParameterError):
        atelier.describe_models(capability="paint")
    with pytest.raises(InvalidParameterError):
        atelier.describe_models(provider="nobody")


async def test_unavailable_model_is_listed_with_reason_and_refused(tmp_path: Path) -> None:
    class Keyed(Scripted):
        needs_key = True
        key_env_vars = ("FAKE_API_KEY",)

    atelier = build(tmp_path, Keyed())
    (model,) = atelier.describe_models(provider="fake")["models"]
    assert model["available"] is False and "FAKE_API_KEY" in model["reason"]
    from atelier_core.plugin.errors import MissingCredentialsError

    with pytest.raises(MissingCredentialsError, match="FAKE_API_KEY"):
        await atelier.execute(ImageCall(model="one", prompt="x"), Operation.GENERATE)


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "garbage"])
async def test_without_a_preview_a_corrupt_png_is_still_never_a_file(tmp_path: Path, damage: str) -> None:
    # return_image=none: the PNG is checked by its structure and checksums, not decoded.
    middle = len(PNG) // 2
    bad = {
        "truncated": PNG[:middle],
        "flipped byte": PNG[:middle] + bytes([PNG[middle] ^ 0x01]) + PNG[middle + 1 :],
        "garbage": b"\x89PNG\r\n\x1a\nnot really",
    }[damage]

    def answer(request: ImageRequest) -> ProviderResult:
        return ProviderResult(images=[ProviderImage(data=PNG), ProviderImage(data=bad)])

    atelier = build(tmp_path, Scripted(answer))
    plan = await atelier.plan(ImageCall(model="one", prompt="x", n=2), Operation.GENERATE)
    plan.want_preview = False
    outcome = await atelier.run(plan)
    assert len(outcome.images) == 1 and [f.index for f in outcome.failures] == [1]
    assert outcome.failures[0].code == "upstream_invalid_image"
    assert image_files(tmp_path / "out") == [Path(outcome.images[0].path)]
    assert atelier.previews.take(outcome.images[0].path, outcome.images[0].sha256) is None  # none made


async def test_decodes_of_returned_images_are_bounded_across_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 4 calls of 4 images each arrive together: at most one decode per core (at least 2)
    # runs at once, each holding a decoded frame; the rest wait with their encoded bytes.
    import os
    import threading
    import time

    from atelier_core.media import images

    running = peak = 0
    lock = threading.Lock()
    real = images.decode_image

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            time.sleep(0.02)  # long enough for the others to pile up
            return real(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(images, "decode_image", counting)
    atelier = build(tmp_path, Scripted())
    outcomes = await asyncio.gather(
        *(atelier.execute(ImageCall(model="one", prompt="x", n=4), Operation.GENERATE) for _ in range(4))
    )
    assert sum(len(o.images) for o in outcomes) == 16
    assert 2 <= peak <= max(2, os.cpu_count() or 2)
