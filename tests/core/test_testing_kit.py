"""atelier_core.testing: the fake provider, the harness, sample images, and the contract
suite itself — which must pass good providers and catch each kind of bad one."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from atelier_core import (
    CallContext,
    CustomSizeRule,
    ImageRequest,
    InputImage,
    Operation,
    Provider,
    ProviderResult,
    RateLimitedError,
    SafetyRefusalError,
    SizeRules,
    UpstreamUnavailableError,
    hookimpl,
)
from atelier_core.settings import Settings
from atelier_core.testing import (
    FakeProvider,
    Outcome,
    ProviderContract,
    build_test_atelier,
    build_test_registry,
    configured,
    connect,
    fake_spec,
    isolated_settings,
    make_image,
    make_mask,
    plugin_pairs,
    read_image,
)
from atelier_core.testing.probes import trap_io

# -- sample images --------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "gif"])
def test_make_image_round_trips(fmt: str) -> None:
    info = read_image(make_image(96, 48, fmt))
    assert (info.format, info.width, info.height) == (fmt, 96, 48)
    assert info.size == "96x48"


def test_make_image_alpha_and_mask() -> None:
    assert read_image(make_image(32, 32, "png", alpha=True)).has_alpha
    assert not read_image(make_image(32, 32, "jpeg", alpha=True)).has_alpha
    mask = read_image(make_mask(40, 20))
    assert (mask.format, mask.size, mask.has_alpha) == ("png", "40x20", True)


def test_read_image_rejects_truncated_and_garbage() -> None:
    data = make_image(64, 64, "png")
    with pytest.raises(ValueError, match="not a decodable image"):
        read_image(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a decodable image"):
        read_image(b"definitely not an image")
    with pytest.raises(ValueError, match="cannot encode"):
        make_image(8, 8, "bmp")


# -- the fake provider ----------------------------------------------------------------


def _request(**kw: Any) -> ImageRequest:
    values: dict[str, Any] = {"operation": Operation.GENERATE, "model": "fake-image", "prompt": "p"}
    return ImageRequest(**{**values, **kw})


async def test_fake_provider_default_answer_matches_request() -> None:
    fake = FakeProvider()
    result = await fake.run(_request(n=2, width=320, height=240, output_format="webp"), CallContext(timeout_s=5))
    assert [read_image(i.data).size for i in result.images] == ["320x240", "320x240"]
    assert {read_image(i.data).format for i in result.images} == {"webp"}
    assert result.applied == {"size": "320x240"}
    assert [c.operation for c in fake.calls] == ["generate"]
    assert fake.calls[0].request.n == 2 and fake.calls[0].finished is not None


async def test_fake_provider_scripted_outcomes_in_order() -> None:
    fake = FakeProvider().script(
        Outcome(error=RateLimitedError("slow down", retry_after_s=0.5)),
        Outcome(fail=[1], revised_prompt="better", texts=["hello"]),
    )
    ctx = CallContext(timeout_s=5)
    with pytest.raises(RateLimitedError):
        await fake.run(_request(), ctx)
    partial = await fake.run(_request(n=3), ctx)
    assert len(partial.images) == 2
    assert [(f.index, f.code) for f in partial.failures] == [(1, "not_generated")]
    assert partial.images[0].revised_prompt == "better" and partial.texts == ["hello"]
    assert fake.pending == 0
    after = await fake.run(_request(), ctx)
    assert len(after.images) == 1 and not after.failures
    assert len(fake.calls) == 3


async def test_fake_provider_rules_data_and_partials() -> None:
    partials: list[int] = []

    async def on_partial(data: bytes, index: int) -> None:
        partials.append(len(data))

    fake = FakeProvider().when(lambda r: r.quality == "high", Outcome(data=b"corrupt", partials=2))
    ctx = CallContext(timeout_s=5, partial_image=on_partial)
    high = await fake.run(_request(quality="high"), ctx)
    assert high.images[0].data == b"corrupt" and len(partials) == 2
    low = await fake.run(_request(quality="low"), ctx)
    assert read_image(low.images[0].data).format == "png"


async def test_fake_provider_latency_records_concurrency() -> None:
    fake = FakeProvider(latency_s=0.05)
    ctx = CallContext(timeout_s=5)
    await asyncio.gather(*(fake.run(_request(), ctx) for _ in range(3)))
    assert fake.max_in_flight == 3 and fake.in_flight == 0
    assert all(c.finished is not None and c.finished - c.started >= 0.04 for c in fake.calls)


async def test_fake_provider_hang_is_cancellable() -> None:
    fake = FakeProvider().script(Outcome(hang=True))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(fake.run(_request(), CallContext(timeout_s=5)), 0.05)
    assert fake.in_flight == 0


async def test_fake_provider_edit_keeps_input_size() -> None:
    image = InputImage(make_image(200, 100), "png", 200, 100, False)
    result = await FakeProvider().run(_request(operation=Operation.EDIT, images=(image,)), CallContext(timeout_s=5))
    assert read_image(result.images[0].data).size == "200x100"


def test_fake_provider_is_its_own_plugin_and_names_coexist() -> None:
    one, two = FakeProvider("one"), FakeProvider("two", models=[fake_spec("other")])
    registry = build_test_registry([one, two])
    assert set(registry.models) == {"one/fake-image", "two/other"}
    assert registry.providers["one"] is one
    assert [p.status for p in registry.plugins] == ["loaded", "loaded"]
    assert FakeProvider.name == ""  # per-instance names never leak into the class


def test_fake_provider_key_makes_it_unavailable_until_configured() -> None:
    fake = FakeProvider(needs_key=True, key_env_vars=("FAKE_API_KEY",))
    registry = build_test_registry([fake])
    reason = registry.models["fake/fake-image"].unavailable_reason()
    assert reason and "FAKE_API_KEY" in reason
    keyed = build_test_registry([FakeProvider(needs_key=True)], providers={"fake": {"api_key": "k-123"}})
    assert keyed.models["fake/fake-image"].unavailable_reason() is None


# -- harness ------------------------------------------------------------------------------


def test_isolated_settings_ignore_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_DEFAULT_MODEL", "from-env")
    monkeypatch.setenv("ATELIER_PLUGINS__STRICT", "true")
    settings = isolated_settings(tmp_path, cost={"max_per_call_usd": 2}, storage={"max_input_pixels": 10})
    assert isinstance(settings, Settings)
    assert settings.default_model is None and settings.plugins.strict is False
    assert settings.cost.max_per_call_usd == 2
    assert settings.output_dir == tmp_path / "images"
    assert settings.storage.max_input_pixels == 10  # merged with the tmp output dir
    assert settings.resolved_data_dir == tmp_path / "data"
    assert Settings().default_model == "from-env"  # the real settings still read it


def test_plugin_pairs_names() -> None:
    import atelier_placeholder

    fake = FakeProvider("named")
    marker = object()
    assert plugin_pairs([fake, atelier_placeholder, ("x", marker)]) == [
        ("named", fake),
        ("placeholder", atelier_placeholder),
        ("x", marker),
    ]


def test_build_test_registry_loads_only_given_plugins() -> None:
    registry = build_test_registry([FakeProvider()])
    assert list(registry.providers) == ["fake"]


# -- the contract, run on the fake provider ---------------------------------------------


class TestFakeProviderContract(ProviderContract):
    """FakeProvider is a well-behaved provider (with a key, so credentials are checked)."""

    @pytest.fixture
    def fake(self) -> FakeProvider:
        return FakeProvider(needs_key=True, key_env_vars=("FAKE_IMAGE_KEY",))

    @pytest.fixture
    def plugin(self, fake: FakeProvider) -> object:
        return fake

    @pytest.fixture
    def provider(self, fake: FakeProvider) -> Provider:
        return configured(fake, api_key="sk-fake-secret-value")

    @pytest.fixture
    def refuse(self, fake: FakeProvider) -> Callable[[], object]:
        return lambda: fake.script(Outcome(error=SafetyRefusalError("refused: unsafe prompt", provider="fake")))


class TestGenerateOnlyContract(ProviderContract):
    """A generate-only provider: edit/variation checks assert the core refuses them."""

    refusals = False
    unpriced = frozenset({"gen-only"})

    @pytest.fixture
    def plugin(self) -> object:
        return FakeProvider(
            "genonly",
            models=[fake_spec("gen-only", operations=frozenset({Operation.GENERATE}), input_images=None, pricing=None)],
        )

    @pytest.fixture
    def provider(self, plugin: FakeProvider) -> Provider:
        return configured(plugin)


# -- the contract catches bad providers ----------------------------------------------------

CONTRACT = ProviderContract()
Failed = pytest.fail.Exception


def _fails(match: str) -> Any:
    return pytest.raises((Failed, AssertionError), match=match)


class _FileReadingPlugin:
    @hookimpl
    def register_providers(self, register: Callable[[Provider[Any]], None]) -> None:
        try:
            with open(__file__):
                pass
        except OSError:
            pass  # swallowing the trap does not hide the attempt
        register(FakeProvider())


def test_contract_catches_io_during_registration() -> None:
    with _fails(r"register_providers did I/O: open"):
        CONTRACT.test_registration_only_declares(_FileReadingPlugin(), FakeProvider())


def test_contract_catches_network_during_registration() -> None:
    class Dialer:
        @hookimpl
        def register_providers(self, register: Callable[[Provider[Any]], None]) -> None:
            import socket

            try:
                socket.create_connection(("127.0.0.1", 9))
            except OSError:
                pass
            register(FakeProvider())

    with _fails(r"did I/O: socket.create_connection"):
        CONTRACT.test_registration_only_declares(Dialer(), FakeProvider())


def test_contract_catches_non_provider_and_wrong_fixture() -> None:
    class Wrong:
        @hookimpl
        def register_providers(self, register: Callable[[Any], None]) -> None:
            register("not a provider")

    with _fails(r"register\(\) got str[\s\S]*which the plugin does not register"):
        CONTRACT.test_registration_only_declares(Wrong(), FakeProvider())


@pytest.fixture
def vendor_sdk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A throwaway third-party 'vendor SDK' and two plugins on sys.path (and PYTHONPATH)."""
    (tmp_path / "heavy_vendor_sdk.py").write_text("VERSION = 1\n")
    (tmp_path / "eager_plugin.py").write_text(
        textwrap.dedent(
            """
            import heavy_vendor_sdk  # at import time: what the contract forbids
            from atelier_core import hookimpl
            from atelier_core.testing import FakeProvider

            @hookimpl
            def register_providers(register):
                register(FakeProvider())
            """
        )
    )
    (tmp_path / "lazy_in_hook_plugin.py").write_text(
        textwrap.dedent(
            """
            from atelier_core import hookimpl
            from atelier_core.testing import FakeProvider

            @hookimpl
            def register_providers(register):
                import heavy_vendor_sdk  # in the hook: also forbidden
                register(FakeProvider())
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    yield tmp_path
    for name in ("heavy_vendor_sdk", "eager_plugin", "lazy_in_hook_plugin"):
        sys.modules.pop(name, None)


def test_contract_catches_vendor_import_at_module_import(vendor_sdk: Path) -> None:
    import eager_plugin  # type: ignore[import-not-found]

    with _fails(r"importing eager_plugin imports heavy_vendor_sdk"):
        CONTRACT.test_plugin_module_imports_no_vendor_sdk(eager_plugin)


def test_contract_catches_vendor_import_in_hook(vendor_sdk: Path) -> None:
    import lazy_in_hook_plugin  # type: ignore[import-not-found]

    sys.modules.pop("heavy_vendor_sdk", None)
    with _fails(r"register_providers imported heavy_vendor_sdk"):
        CONTRACT.test_registration_only_declares(lazy_in_hook_plugin, FakeProvider())
    # ...and allowed_imports is the escape hatch for light helpers.
    sys.modules.pop("heavy_vendor_sdk", None)

    class Lenient(ProviderContract):
        allowed_imports: ClassVar[frozenset[str]] = frozenset({"heavy_vendor_sdk"})
        refusals = False

    Lenient().test_registration_only_declares(lazy_in_hook_plugin, FakeProvider())


def test_trap_io_restores_everything() -> None:
    import builtins
    import socket

    before = (builtins.open, socket.socket.connect, socket.getaddrinfo)
    with trap_io() as attempts, pytest.raises(OSError):
        open(__file__)  # noqa: SIM115 - it must be refused before a file object exists
    assert attempts == [f"open({__file__!r})"]
    assert (builtins.open, socket.socket.connect, socket.getaddrinfo) == before


class _Opts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pixel_size: int = 4  # no description: list_available_models would show a bare name


class _DescribedOpts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pixel_size: int = Field(4, description="size of one art pixel")


def test_contract_catches_inconsistent_specs() -> None:
    bad = FakeProvider(
        models=[
            fake_spec("a", sizes=SizeRules(presets=("100x100",), custom=CustomSizeRule(step=16, max_edge=2048))),
            fake_spec("b", pricing=None),
            fake_spec("c", aliases=("a",)),
            fake_spec("d", options=_Opts),
            fake_spec("e", sizes=SizeRules(aspect_ratios=("16:9",), ratio_sizes={"16:9": "1024x1024"})),
        ],
        unpriced=(),
    )
    with _fails(r"5 problem") as caught:
        CONTRACT.test_declared_capabilities_are_consistent(bad)
    text = str(caught.value)
    assert "a: preset 100x100 breaks its own custom rule" in text
    assert "b: has no pricing" in text
    assert "c: name 'a' is also used by a" in text
    assert "d: option 'pixel_size' needs a description" in text
    assert "does not have ratio 16:9" in text
    good = FakeProvider(models=[fake_spec("d", options=_DescribedOpts)])
    CONTRACT.test_declared_capabilities_are_consistent(good)


def test_contract_catches_undated_and_future_prices() -> None:
    from atelier_core import Pricing

    bad = FakeProvider(
        models=[
            fake_spec("x", pricing=Pricing(per_image=0.1, as_of="soon")),
            fake_spec("y", pricing=Pricing(per_image=0.1, as_of="2999-01-01")),
            fake_spec("z", pricing=Pricing(per_image_by_quality={"ultra": 1.0, "low": 0.1}, as_of="2026-01-01")),
            fake_spec(
                "w", pricing=Pricing(per_image_by_quality_size={"low@big": 1.0}, per_image=1.0, as_of="2026-01-01")
            ),
        ]
    )
    with _fails(
        r"not a date; write it as YYYY-MM-DD[\s\S]*in the future[\s\S]*quality 'medium' has no price"
        r"[\s\S]*'low@big' must be"
    ):
        CONTRACT.test_declared_capabilities_are_consistent(bad)


def test_contract_catches_unimplemented_operation() -> None:
    class Lazy(Provider):
        name = "lazy"
        models = (fake_spec(),)

        async def generate(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
            return ProviderResult()

    with _fails(r"declares edit, variation but does not implement"):
        CONTRACT.test_declared_operations_are_implemented(Lazy())


@pytest.mark.anyio  # explicit: parametrized async tests need the marker at collection
@pytest.mark.parametrize(
    ("outcome", "problem"),
    [
        (Outcome(format="jpeg"), r"is jpeg, but png was requested"),
        (Outcome(size=(100, 100)), r"is 100x100, but 1024x1024 was requested"),
        (Outcome(data=b"garbage"), r"not a decodable image"),
        (Outcome(images=0), r"returned no image"),
        (Outcome(error=UpstreamUnavailableError("down")), r"raised UpstreamUnavailableError"),
    ],
)
async def test_contract_catches_bad_images(outcome: Outcome, problem: str) -> None:
    fake = FakeProvider().when(lambda r: True, outcome)
    with _fails(problem):
        await CONTRACT.test_generate_returns_declared_images(fake)


async def test_contract_catches_bad_edits_and_plain_exceptions() -> None:
    class Crashy(FakeProvider):
        async def variation(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
            raise KeyError("data")

    crashy = Crashy()
    await CONTRACT.test_edit_returns_declared_images(crashy)
    with _fails(r"raised plain KeyError"):
        await CONTRACT.test_variation_returns_declared_images(crashy)
    wrong = FakeProvider().when(lambda r: r.operation is Operation.EDIT, Outcome(size=(10, 10)))
    with _fails(r"edit \(with mask\) image 0: is 10x10"):
        await CONTRACT.test_edit_returns_declared_images(wrong)


async def test_contract_checks_ratio_models() -> None:
    spec = fake_spec(
        "ratio",
        sizes=SizeRules(aspect_ratios=("1:1", "16:9"), default_aspect_ratio="1:1"),
        operations=frozenset({Operation.GENERATE}),
        input_images=None,
    )
    await CONTRACT.test_generate_returns_declared_images(FakeProvider(models=[spec]))
    squashed = FakeProvider(models=[spec]).when(lambda r: r.aspect_ratio == "16:9", Outcome(size=(512, 512)))
    with _fails(r"is 512x512, not aspect ratio 16:9"):
        await CONTRACT.test_generate_returns_declared_images(squashed)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("error", "problem"),
    [
        (UpstreamUnavailableError("blocked"), r"raised UpstreamUnavailableError .*map the vendor's safety"),
        (RuntimeError("moderation_blocked"), r"raised plain RuntimeError"),
        (None, r"returned 1 image\(s\) instead of raising"),
    ],
)
async def test_contract_catches_bad_refusals(error: Exception | None, problem: str) -> None:
    fake = FakeProvider()

    def refuse() -> None:
        if error is not None:
            fake.script(Outcome(error=error))

    with _fails(problem):
        await CONTRACT.test_refusal_raises_safety_refusal_error(fake, refuse)


def test_contract_catches_unnamed_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    class Vague(FakeProvider):
        def unavailable_reason(self, spec: Any) -> str | None:
            return None if self.settings.api_key else "not configured"

    vague = Vague(needs_key=True)
    with _fails(r"names no variable to set"):
        CONTRACT.test_missing_credentials_name_an_env_var(vague, vague, monkeypatch)

    class Open(FakeProvider):
        def unavailable_reason(self, spec: Any) -> str | None:
            return None

    always = Open(needs_key=True)
    with _fails(r"claims to be available without a key"):
        CONTRACT.test_missing_credentials_name_an_env_var(always, always, monkeypatch)


def test_contract_catches_leaked_secret() -> None:
    class Chatty(FakeProvider):
        def describe(self) -> dict[str, Any]:
            key = self.settings.api_key
            return {"name": self.name, "key": key.get_secret_value() if key else None}

    with _fails(r"a secret appears in provider.describe\(\)"):
        CONTRACT.test_secrets_never_appear(configured(Chatty(needs_key=True), api_key=SecretStr("sk-live-123")))
    with _fails(r"configure the `provider` fixture with a key"):
        CONTRACT.test_secrets_never_appear(configured(FakeProvider(needs_key=True)))


def test_contract_leaves_out_refusal_check_when_disabled() -> None:
    class NoRefusals(ProviderContract):
        refusals = False

    assert NoRefusals.test_refusal_raises_safety_refusal_error is None
    assert callable(ProviderContract.test_refusal_raises_safety_refusal_error)


# -- the service and an MCP client ----------------------------------------------------------


async def test_build_test_atelier_runs_calls_through_the_fake(tmp_path: Path) -> None:
    from atelier_core.plugin.types import ImageCall

    fake = FakeProvider().script(Outcome(error=RateLimitedError("busy", retry_after_s=0.01)))
    atelier = build_test_atelier(tmp_path, [fake, atelier_placeholder_module()])
    try:
        assert set(atelier.registry.providers) == {"fake", "placeholder"}
        outcome = await atelier.execute(
            ImageCall(model="fake/fake-image", prompt="a fox", size="512x512"), Operation.GENERATE
        )
    finally:
        await atelier.aclose()
    assert len(fake.calls) == 2  # the rate-limited call was retried by the core
    (image,) = outcome.images
    assert Path(image.path).is_relative_to(tmp_path / "images")
    assert read_image(Path(image.path).read_bytes()).size == "512x512"
    assert fake.closed == 1


async def test_build_test_atelier_plugin_settings(tmp_path: Path) -> None:
    class Broken:
        @hookimpl
        def register_providers(self, register: Callable[[Provider[Any]], None]) -> None:
            raise RuntimeError("boom")

    from atelier_core import ConfigurationError

    with pytest.raises(ConfigurationError, match="boom"):
        build_test_atelier(tmp_path, [("broken", Broken())], plugin_settings={"strict": True})
    lenient = build_test_atelier(tmp_path, [("broken", Broken()), FakeProvider()])
    assert [p.status for p in lenient.registry.plugins] == ["failed", "loaded"]
    await lenient.aclose()


async def test_connect_gives_an_in_memory_mcp_client(tmp_path: Path) -> None:
    fake = FakeProvider()
    atelier = build_test_atelier(tmp_path, [fake])
    async with connect(atelier) as client:
        listed = await client.call_tool("list_available_models", {})
        assert [m["id"] for m in listed.structured_content["models"]] == ["fake/fake-image"]
        result = await client.call_tool("generate_image", {"prompt": "a fox", "model": "fake-image", "size": "256x256"})
        assert not result.is_error, result.content
        fake.script(Outcome(error=SafetyRefusalError("refused: not allowed", provider="fake")))
        refused = await client.call_tool("generate_image", {"prompt": "a fox", "model": "fake-image"})
        assert refused.is_error and "refused: not allowed" in refused.content[0].text
    assert result.structured_content["images"][0]["width"] == 256
    assert fake.closed >= 1  # the server's lifespan closed the service


def atelier_placeholder_module() -> object:
    import atelier_placeholder

    return atelier_placeholder
