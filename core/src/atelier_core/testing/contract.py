"""The provider contract: one test class every provider runs against itself.

Subclass :class:`ProviderContract` in your test suite, supply two or three fixtures,
and pytest runs every check below against your provider. See the class docstring.
"""

from __future__ import annotations

import builtins
import inspect
import io
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from pydantic import SecretStr

from atelier_core.engine.isolation import StepTimer
from atelier_core.engine.registry import ModelEntry, build_plugin_manager, build_registry
from atelier_core.engine.validation import validate_call
from atelier_core.plugin.checks import provider_problems
from atelier_core.plugin.errors import AtelierError, SafetyRefusalError, UnsupportedCapabilityError
from atelier_core.plugin.provider import CallContext, Provider, ProviderSettings
from atelier_core.plugin.spec import ModelSpec, Operation, parse_ratio, parse_size
from atelier_core.plugin.types import ImageCall, ImageRequest, InputImage, ProviderResult
from atelier_core.testing.harness import isolated_settings
from atelier_core.testing.samples import make_image, make_mask, read_image

__all__ = ["ProviderContract", "configured"]

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_ENV_VAR = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+|__[A-Z0-9]+)+\b")
_RATIO_TOLERANCE = 0.03
_PROMPT = "a red fox sitting in fresh snow, morning light"
_EDIT_PROMPT = "make the square blue"


def configured(provider: Provider, **settings: Any) -> Provider:
    """Configure ``provider`` with its own settings class built from ``settings``.

    The same path the registry takes, minus the environment prefix: handy for a
    ``provider`` fixture, e.g. ``configured(MyProvider(), api_key="k", base_url=up.url)``.
    """
    provider.configure(provider.settings_class(**settings))
    return provider


class ProviderContract:
    """The checks every Atelier provider passes. Subclass it in a test module.

    Supply these fixtures (plain pytest fixtures defined on the subclass):

    ``plugin``
        The plugin: the module (or object) whose ``@hookimpl register_providers`` offers
        your provider — what your ``atelier`` entry point names.
    ``provider``
        A configured provider instance (the same class the plugin registers) pointed at
        a fake upstream that serves valid images: of the requested size and format, and
        as many as requested. Configure it with a key of at least 4 characters (e.g.
        ``"test-key"``) so it is available; the secrets check searches for that string.
    ``refuse``
        A callable with no arguments that makes the *next* upstream call be refused by
        the vendor's safety system (e.g. queue a 400 ``moderation_blocked`` reply).
        Required unless the class sets ``refusals = False`` (a provider with no safety
        system, like the offline placeholder); then the refusal check is not collected.

    Class attributes tune the checks:

    ``refusals``
        ``False`` when the upstream has no safety system (default ``True``).
    ``unpriced``
        Extra model ids that may declare no price (``pricing=None``), besides the
        provider's own ``unpriced``. Every other model must carry a dated
        :class:`~atelier_core.Pricing` (the registry refuses it otherwise).
    ``max_blocking_s``
        The longest a provider may hold the event loop in one step (between two awaits)
        during a call; default 0.5 s. Steps that import modules (a lazy SDK import) are
        not counted.
    ``allowed_imports``
        Top-level packages (besides the standard library, ``atelier_core`` and the
        plugin's own package) the plugin may import when it is imported or registers —
        keep it to light, pure-Python helpers; vendor SDKs belong inside async methods.

    What is checked:

    - registration only declares: the hook runs with network, file and subprocess access
      trapped, imports no new third-party package, and registers ``Provider`` instances;
      importing the plugin module (in a fresh interpreter) imports no vendor SDK;
    - the registry loads the plugin cleanly (no problems, no conflicts);
    - declared capabilities are consistent — exactly the checks the registry runs when
      it loads the plugin (:func:`atelier_core.plugin.checks.provider_problems`): unique
      ids and aliases, known formats, presets within the custom rule, defaults within
      their choices, ISO-dated non-negative prices, unpriced models declared, options
      models that forbid extra keys and describe each field, ``applies`` rules that name
      real parameters, input rules for edit/variation — and an implementation for every
      declared operation;
    - no call blocks the event loop longer than ``max_blocking_s`` in one step;
    - generate, edit and variation (where declared) go through the core's real path
      (:func:`~atelier_core.engine.validation.validate_call`, then ``provider.run``) and return
      :class:`~atelier_core.ProviderResult` images that decode fully, are in the
      requested format and, for fixed sizes, the requested size; undeclared operations
      are refused before the provider is called;
    - a refusal raises :class:`~atelier_core.SafetyRefusalError` (not retryable), never
      a plain exception;
    - without credentials every model is unavailable with a reason naming an
      environment variable, and configured secrets never appear in reprs, descriptions
      or error messages;
    - ``aclose()`` can be called twice.

    The call checks close the provider (``await provider.aclose()``) when they end, in
    the event loop that opened its clients, so fixtures need no async teardown.

    Example (a complete test module)::

        import pytest
        from atelier_core.testing import FakeUpstream, ProviderContract, Reply, configured, make_image

        import atelier_pixelart
        from atelier_pixelart import PixelArtProvider


        @pytest.fixture
        def upstream():
            with FakeUpstream() as up:
                def draw(request):
                    body = request.json()
                    w, h = (int(v) for v in body["size"].split("x"))
                    return Reply(body=make_image(w, h, body["format"]),
                                 content_type=f"image/{body['format']}")
                up.handle("POST", "/v1/render", draw)
                yield up


        class TestPixelArtContract(ProviderContract):
            @pytest.fixture
            def plugin(self):
                return atelier_pixelart

            @pytest.fixture
            def provider(self, upstream):
                return configured(PixelArtProvider(), api_key="test-key", base_url=upstream.url)

            @pytest.fixture
            def refuse(self, upstream):
                return lambda: upstream.reply(
                    "POST", "/v1/render", status=422, json={"error": "unsafe prompt"}
                )

    Each check reports every problem it finds at once, naming the model and the fix.
    """

    refusals: ClassVar[bool] = True
    unpriced: ClassVar[frozenset[str]] = frozenset()
    max_blocking_s: ClassVar[float] = 0.5
    allowed_imports: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A provider with no safety system has nothing to refuse: the check is left out
        # of collection rather than skipped (a skip would hide a forgotten fixture).
        if not cls.refusals:
            cls.test_refusal_raises_safety_refusal_error = None  # type: ignore[assignment,method-assign]

    # -- fixtures the subclass supplies --------------------------------------------

    @pytest.fixture
    def plugin(self) -> object:
        pytest.fail("define a `plugin` fixture returning the module your entry point names")

    @pytest.fixture
    def provider(self) -> Provider:
        pytest.fail("define a `provider` fixture returning a configured provider instance")

    @pytest.fixture
    def refuse(self) -> Callable[[], object]:
        pytest.fail(
            "define a `refuse` fixture (a callable that makes the next upstream call be "
            "refused for safety), or set `refusals = False` on the class"
        )

    @pytest.fixture
    def anyio_backend(self) -> str:
        # Providers run on asyncio in the server; anyio's default would also try trio.
        return "asyncio"

    # -- registration --------------------------------------------------------------

    def test_registration_only_declares(self, plugin: object, provider: Provider) -> None:
        """The hook does no I/O, imports nothing new and registers Provider instances."""
        pm = build_plugin_manager()
        pm.register(plugin, name="contract-plugin")
        offered: list[object] = []
        before = set(sys.modules)
        with _trap_io() as attempts:
            pm.hook.register_providers(register=offered.append)
        problems: list[str] = [f"register_providers did I/O: {what}" for what in attempts]
        new = _third_party(set(sys.modules) - before) - self._own_packages(plugin)
        if new:
            problems.append(
                f"register_providers imported {', '.join(sorted(new))}; import vendor SDKs "
                "inside the provider's async methods"
            )
        if not offered:
            problems.append("register_providers registered no provider; call register(MyProvider())")
        for item in offered:
            if not isinstance(item, Provider):
                problems.append(f"register() got {type(item).__name__}, not a Provider instance")
            elif not _SLUG.match(item.name):
                problems.append(
                    f"provider name {item.name!r} must be a lowercase slug (letters, digits, - or _)"
                )
        if not any(type(item) is type(provider) for item in offered):
            problems.append(
                f"the `provider` fixture is a {type(provider).__name__}, which the plugin does not register"
            )
        _report(problems)

    def test_plugin_module_imports_no_vendor_sdk(self, plugin: object) -> None:
        """Importing the plugin (fresh interpreter) pulls in no vendor SDK."""
        module = plugin.__name__ if inspect.ismodule(plugin) else type(plugin).__module__
        new = _third_party(_modules_imported_by(module)) - self._own_packages(plugin)
        assert not new, (
            f"importing {module} imports {', '.join(sorted(new))}; import vendor SDKs inside "
            f"the provider's methods (or list light helpers in {type(self).__name__}.allowed_imports)"
        )

    def test_registry_loads_plugin(self, plugin: object, provider: Provider) -> None:
        """The core's registry loads the plugin in isolation without problems."""
        registry = build_registry(isolated_settings(), plugins=[("contract-plugin", plugin)], entry_points=False)
        (record,) = registry.plugins
        assert record.status == "loaded", f"plugin failed to load: {record.error}"
        assert not registry.problems, f"registry problems: {registry.problems}"
        assert provider.name in registry.providers, (
            f"provider {provider.name!r} not registered; registered: {sorted(registry.providers)}"
        )
        loaded = registry.providers[provider.name]
        expected = {f"{provider.name}/{spec.id}" for spec in loaded.catalog()}
        assert expected <= set(registry.models)
        for canonical in expected:
            assert registry.resolve(canonical).canonical_id == canonical

    # -- declarations --------------------------------------------------------------

    def test_declared_capabilities_are_consistent(self, provider: Provider) -> None:
        """Every model spec is internally consistent and complete (the registry's load checks)."""
        _report(provider_problems(provider, self.unpriced))

    def test_declared_operations_are_implemented(self, provider: Provider) -> None:
        """A provider overrides the method of every operation one of its models declares."""
        declared = {op for spec in provider.catalog() for op in spec.operations}
        assert declared, f"{provider.name} declares no operations"
        missing = [
            op.value
            for op in sorted(declared)
            if getattr(type(provider), op.value) is getattr(Provider, op.value)
        ]
        assert not missing, (
            f"{type(provider).__name__} declares {', '.join(missing)} but does not implement "
            f"async def {missing[0]}(self, request, ctx)"
        )

    # -- calls ---------------------------------------------------------------------

    @pytest.mark.anyio
    async def test_generate_returns_declared_images(self, provider: Provider) -> None:
        """generate: images decode, in the requested format and size."""
        await self._run_operation(provider, Operation.GENERATE)

    @pytest.mark.anyio
    async def test_edit_returns_declared_images(self, provider: Provider) -> None:
        """edit: images decode, in the requested format (and size when fixed)."""
        await self._run_operation(provider, Operation.EDIT)

    @pytest.mark.anyio
    async def test_variation_returns_declared_images(self, provider: Provider) -> None:
        """variation: images decode, in the requested format (and size when fixed)."""
        await self._run_operation(provider, Operation.VARIATION)

    @pytest.mark.anyio
    async def test_refusal_raises_safety_refusal_error(
        self, provider: Provider, refuse: Callable[[], object]
    ) -> None:
        """A safety refusal is a SafetyRefusalError, never a plain exception."""
        try:
            await self._check_refusals(provider, refuse)
        finally:
            await provider.aclose()

    async def _check_refusals(self, provider: Provider, refuse: Callable[[], object]) -> None:
        secrets = _secrets(provider.settings)
        checked = 0
        for operation in (Operation.GENERATE, Operation.EDIT, Operation.VARIATION):
            spec = next((s for s in provider.catalog() if s.supports(operation)), None)
            if spec is None:
                continue
            case = _Case(operation=operation, label=f"{operation.value} refused")
            request = _validated(provider, spec, case)
            refuse()
            try:
                result = await provider.run(request, _context(provider))
            except SafetyRefusalError as exc:
                assert not exc.retryable, "SafetyRefusalError must not be retryable"
                assert str(exc).strip(), "the refusal needs a message the caller can read"
                leaked = [s for s in secrets if s in str(exc) or s in json.dumps(exc.to_dict())]
                assert not leaked, "a secret appears in the refusal message"
            except AtelierError as exc:
                pytest.fail(
                    f"{spec.id} {operation.value}: refusal raised {type(exc).__name__} ({exc}); "
                    "map the vendor's safety refusal to SafetyRefusalError"
                )
            except Exception as exc:
                pytest.fail(
                    f"{spec.id} {operation.value}: refusal raised plain {type(exc).__name__}: {exc}; "
                    "providers raise only atelier_core errors (SafetyRefusalError here)"
                )
            else:
                pytest.fail(
                    f"{spec.id} {operation.value}: the refused call returned {len(result.images)} "
                    "image(s) instead of raising SafetyRefusalError"
                )
            checked += 1
        assert checked, f"{provider.name} declares no operation to refuse"

    # -- credentials and secrets ---------------------------------------------------

    def test_missing_credentials_name_an_env_var(
        self, plugin: object, provider: Provider, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without a key, models are unavailable and the reason names the variable to set."""
        prefix = f"ATELIER_PROVIDERS__{provider.name.upper()}__"
        for name in list(os.environ):
            if name in provider.key_env_vars or name.upper().startswith(prefix):
                monkeypatch.delenv(name, raising=False)
        registry = build_registry(isolated_settings(), plugins=[("contract-plugin", plugin)], entry_points=False)
        fresh = registry.providers[provider.name]
        entries = registry.entries(provider=provider.name)
        assert entries, f"{provider.name} offers no models without configuration"
        if not fresh.needs_key:
            # Keyless providers may still be unavailable (e.g. no base_url); the reason,
            # if any, must be words a user can act on.
            for entry in entries:
                reason = entry.unavailable_reason()
                assert reason is None or reason.strip(), f"{entry.canonical_id}: empty reason"
            assert all(e.unavailable_reason() is None for e in entries) or all(
                _ENV_VAR.search(e.unavailable_reason() or "") for e in entries
            ), "an unavailable keyless model must name the setting or variable to set"
            return
        allowed_names = {*fresh.key_env_vars, f"{prefix}API_KEY"}
        for entry in entries:
            reason = entry.unavailable_reason()
            assert reason, f"{entry.canonical_id} claims to be available without a key"
            named = set(_ENV_VAR.findall(reason))
            assert named & allowed_names or any(n.startswith(prefix) for n in named), (
                f"{entry.canonical_id}: the reason {reason!r} names no variable to set "
                f"(expected one of {sorted(allowed_names)})"
            )

    def test_secrets_never_appear(self, provider: Provider) -> None:
        """Configured secrets stay out of reprs, descriptions and the settings dump."""
        secrets = _secrets(provider.settings)
        assert secrets or not provider.needs_key, (
            "configure the `provider` fixture with a key of at least 4 characters "
            "(api_key=\"test-key\"): shorter strings are too common to search for"
        )
        surfaces = {
            "repr(provider)": repr(provider),
            "provider.describe()": json.dumps(provider.describe(), default=str),
            "repr(settings)": repr(provider.settings),
            "settings.model_dump_json()": provider.settings.model_dump_json(),
        }
        leaks = [where for where, text in surfaces.items() for s in secrets if s in text]
        assert not leaks, f"a secret appears in {', '.join(leaks)}; keep keys as SecretStr"

    @pytest.mark.anyio
    async def test_aclose_twice(self, provider: Provider) -> None:
        """Shutdown may close a provider more than once (and before any call)."""
        await provider.aclose()
        await provider.aclose()
        assert provider.catalog(), "a closed provider still declares its models"

    # -- machinery -----------------------------------------------------------------

    def _own_packages(self, plugin: object) -> set[str]:
        module = plugin.__name__ if inspect.ismodule(plugin) else type(plugin).__module__
        return {module.split(".")[0], "atelier_core", *self.allowed_imports}

    async def _run_operation(self, provider: Provider, operation: Operation) -> None:
        specs = [spec for spec in provider.catalog() if spec.supports(operation)]
        if not specs:
            _assert_refused_before_call(provider, operation)
            return
        problems: list[str] = []
        try:
            for spec in specs:
                for case in _cases(spec, operation):
                    problems.extend(await _check_case(provider, spec, case, self.max_blocking_s))
        finally:
            await provider.aclose()  # clients opened lazily are closed in the same loop
        _report(problems)


# -- the cases ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Case:
    operation: Operation
    label: str
    size: str | None = None
    aspect_ratio: str | None = None
    output_format: str | None = None
    n: int = 1
    mask: bool = False


def _cases(spec: ModelSpec, operation: Operation) -> list[_Case]:
    """A few calls that cover the declared sizes, formats and batch size of ``spec``."""
    op = operation
    rules = spec.sizes
    if op is Operation.GENERATE:
        cases = [_Case(op, "defaults")]
    else:
        # Edits send input images: the smallest preset keeps them (and the test) small.
        smallest = min(rules.presets, key=lambda p: _area(parse_size(p)), default=None)
        cases = [_Case(op, f"size {smallest}" if smallest else "defaults", size=smallest)]
    if op is Operation.GENERATE:
        presets = [p for p in rules.presets if p != rules.default]
        if presets:
            cases.append(_Case(op, f"preset size {presets[-1]}", size=presets[-1]))
        if rules.custom is not None:
            near = rules.custom.nearest(768, 512)
            if near is not None and f"{near[0]}x{near[1]}" not in rules.presets:
                cases.append(_Case(op, f"custom size {near[0]}x{near[1]}", size=f"{near[0]}x{near[1]}"))
        ratios = [r for r in rules.aspect_ratios if r not in (rules.default_aspect_ratio, "1:1")]
        if ratios and not rules.takes_pixels:
            cases.append(_Case(op, f"aspect ratio {ratios[0]}", aspect_ratio=ratios[0]))
    default_format = spec.default_output_format or (spec.output_formats[0] if spec.output_formats else None)
    for fmt in spec.output_formats:
        if fmt != default_format:
            cases.append(_Case(op, f"output_format {fmt}", output_format=fmt))
    if spec.native_batch >= 2:
        cases.append(_Case(op, "n=2", n=2))
    rules_in = spec.input_images if op is not Operation.GENERATE else None
    if rules_in is not None and rules_in.mask is not None:
        cases.append(_Case(op, "with mask", size=cases[0].size, mask=True))
    if op is not Operation.GENERATE:
        cases[1:] = [c if c.size or c.mask else _with_size(c, cases[0].size) for c in cases[1:]]
    if op is Operation.EDIT and rules_in is not None and rules_in.mask is not None and rules_in.mask.required:
        # The model cannot edit without a mask: every edit carries one.
        cases = [c if c.mask else _Case(c.operation, f"{c.label} with mask", c.size, c.aspect_ratio,
                                        c.output_format, c.n, True) for c in cases]
    return cases


def _with_size(case: _Case, size: str | None) -> _Case:
    return _Case(case.operation, case.label, size, case.aspect_ratio, case.output_format, case.n, case.mask)


def _area(size: tuple[int, int] | None) -> int:
    return size[0] * size[1] if size else 0


def _input_images(spec: ModelSpec, case: _Case, size: tuple[int, int]) -> tuple[list[InputImage], InputImage | None]:
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
            format=fmt, width=width, height=height, has_alpha=False, source=f"contract-{i}.{fmt}",
        )
        for i in range(max(1, rules.min_count))
    ]
    mask = None
    if case.mask and rules.mask is not None:
        mask = InputImage(
            data=make_mask(width, height), format="png", width=width, height=height,
            has_alpha=True, source="contract-mask.png",
        )
    return images, mask


def _call(spec: ModelSpec, case: _Case) -> ImageCall:
    prompt = _EDIT_PROMPT if case.operation is Operation.EDIT else _PROMPT
    if case.operation is Operation.VARIATION and Operation.VARIATION not in spec.prompt_required_for:
        prompt = None  # type: ignore[assignment]
    return ImageCall(
        model=spec.id, prompt=prompt, n=case.n, size=case.size, aspect_ratio=case.aspect_ratio,
        output_format=case.output_format,
    )


def _validated(provider: Provider, spec: ModelSpec, case: _Case) -> ImageRequest:
    entry = ModelEntry(f"{provider.name}/{spec.id}", spec, provider, "contract-plugin")
    call = _call(spec, case)
    # First pass learns the size the core will ask for; inputs then match it, so an
    # edit that keeps the input's size is also the requested size.
    probe_images, probe_mask = _input_images(spec, case, (256, 256))
    request = validate_call(call, entry, case.operation, probe_images, probe_mask).request
    if case.operation is Operation.GENERATE:
        return request
    wanted = (request.width, request.height) if request.width and request.height else None
    images, mask = _input_images(spec, case, wanted or (256, 256))
    return validate_call(call, entry, case.operation, images, mask).request


def _context(provider: Provider) -> CallContext:
    async def progress(fraction: float, message: str) -> None:
        assert 0.0 <= fraction <= 1.0

    async def partial(data: bytes, index: int) -> None:
        read_image(data)

    return CallContext(
        timeout_s=min(provider.settings.timeout_s or 30.0, 30.0), progress=progress, partial_image=partial
    )


async def _check_case(provider: Provider, spec: ModelSpec, case: _Case, max_blocking_s: float) -> list[str]:
    where = f"{spec.id} {case.operation.value} ({case.label})"
    try:
        request = _validated(provider, spec, case)
    except AtelierError as exc:
        return [f"{where}: the core refused the spec's own values: {exc}"]
    timer = StepTimer(provider.run(request, _context(provider)), provider.name)
    try:
        result = await timer
    except AtelierError as exc:
        return [f"{where}: raised {type(exc).__name__}: {exc}"]
    except Exception as exc:
        return [
            f"{where}: raised plain {type(exc).__name__}: {exc}; providers raise only "
            "atelier_core errors"
        ]
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
        size_problem = _size_problem(request, spec, info.width, info.height)
        if size_problem:
            problems.append(f"{label}: {size_problem}")
        applied = result.applied.get("size")
        if isinstance(applied, str) and parse_size(applied) and parse_size(applied) != (info.width, info.height):
            problems.append(f"{label}: applied size says {applied} but the image is {info.size}")
    for failure in result.failures:
        if not (0 <= failure.index < request.n) or not failure.message.strip():
            problems.append(f"{where}: failure {failure} needs an index < n and a message")
    return problems


def _size_problem(request: ImageRequest, spec: ModelSpec, width: int, height: int) -> str | None:
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
        if ratio and abs(width / height - ratio[0] / ratio[1]) / (ratio[0] / ratio[1]) > _RATIO_TOLERANCE:
            return f"is {width}x{height}, not aspect ratio {request.aspect_ratio}"
    return None


def _assert_refused_before_call(provider: Provider, operation: Operation) -> None:
    """For an undeclared operation, the core must refuse before the provider runs."""
    spec = provider.catalog()[0]
    entry = ModelEntry(f"{provider.name}/{spec.id}", spec, provider, "contract-plugin")
    with pytest.raises(UnsupportedCapabilityError):
        validate_call(ImageCall(model=spec.id, prompt=_PROMPT), entry, operation, [], None)


# -- helpers -------------------------------------------------------------------------


def _report(problems: Sequence[str]) -> None:
    if problems:
        pytest.fail(f"{len(problems)} problem(s):\n- " + "\n- ".join(problems), pytrace=False)


def _secrets(settings: ProviderSettings) -> list[str]:
    out = []
    for name in type(settings).model_fields:
        value = getattr(settings, name, None)
        if isinstance(value, SecretStr) and len(value.get_secret_value()) >= 4:
            out.append(value.get_secret_value())
    return out


_IMPORTED: dict[str, frozenset[str]] = {}


def _modules_imported_by(module: str) -> frozenset[str]:
    """Modules a fresh interpreter adds when importing ``module`` after atelier_core.

    Cached per process: the answer cannot change while the test session runs.
    """
    if module not in _IMPORTED:
        script = (
            "import json, sys\n"
            "import atelier_core, atelier_core.engine.registry, atelier_core.engine.validation\n"
            "before = set(sys.modules)\n"
            f"import {module}\n"
            "print(json.dumps(sorted(set(sys.modules) - before)))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            pytest.fail(f"importing {module} failed:\n{done.stderr[-2000:]}", pytrace=False)
        _IMPORTED[module] = frozenset(json.loads(done.stdout.strip().splitlines()[-1]))
    return _IMPORTED[module]


def _third_party(modules: set[str] | frozenset[str]) -> set[str]:
    tops = {name.split(".")[0] for name in modules}
    return {
        top for top in tops
        if top not in sys.stdlib_module_names and not top.startswith("_") and top != "__main__"
    }


class _Trapped(OSError):
    """Raised inside register_providers when it attempts I/O."""


@contextmanager
def _trap_io() -> Iterator[list[str]]:
    """Make network, file and subprocess access fail (and record each attempt)."""
    attempts: list[str] = []

    def trap(what: str) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            target = args[1] if what == "socket.connect" and len(args) > 1 else (args[0] if args else "")
            attempts.append(f"{what}({target!r})")
            raise _Trapped(f"{what} is not allowed while registering providers")

        return refuse

    patches: list[tuple[Any, str, Any]] = [
        (socket.socket, "connect", trap("socket.connect")),
        (socket.socket, "connect_ex", trap("socket.connect")),
        (socket, "create_connection", trap("socket.create_connection")),
        (socket, "getaddrinfo", trap("socket.getaddrinfo")),
        (builtins, "open", trap("open")),
        (io, "open", trap("open")),
        (os, "open", trap("os.open")),
        (subprocess.Popen, "__init__", trap("subprocess")),
    ]
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    try:
        for obj, name, replacement in patches:
            setattr(obj, name, replacement)
        yield attempts
    finally:
        for obj, name, original in saved:
            setattr(obj, name, original)
