"""The provider contract: one test class every provider runs against itself.

Subclass :class:`ProviderContract` in your test suite, supply two or three fixtures,
and pytest runs every check below against your provider. See the class docstring.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import sys
from collections.abc import Callable
from typing import Any, ClassVar

import anyio
import pytest

from atelier_core.engine.registry import build_plugin_manager, build_registry
from atelier_core.plugin.checks import provider_problems
from atelier_core.plugin.errors import AtelierError, SafetyRefusalError
from atelier_core.plugin.provider import Provider
from atelier_core.plugin.spec import Operation
from atelier_core.plugin.types import ProviderResult
from atelier_core.testing.cases import (
    Case,
    assert_refused_before_call,
    cases_for,
    check_case,
    context,
    validated,
)
from atelier_core.testing.harness import isolated_settings
from atelier_core.testing.probes import (
    fresh_instance,
    modules_imported_by,
    queue_request,
    report,
    secrets_of,
    third_party,
    trap_io,
)
from atelier_core.testing.samples import read_image

__all__ = ["ProviderContract", "configured"]

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_ENV_VAR = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+|__[A-Z0-9]+)+\b")


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
    ``queue_based``
        ``True`` for a queue-based vendor (the provider overrides ``submit``, ``poll`` and
        ``cancel``): adds the queue checks — the task id reaches the core, a new instance
        resumes a task from its id, cancelling a call cancels the vendor task (unless the
        server keeps it for resuming). Default ``False`` (the checks are not collected).
    ``max_blocking_s``
        The longest a provider may hold the event loop in one step (between two awaits)
        during a call; default 1.0 s (generous, so a loaded CI machine does not fail a
        good provider; a provider that blocks on I/O usually blocks for longer). Steps that
        import modules (a lazy SDK import) are not counted.
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
    queue_based: ClassVar[bool] = False
    unpriced: ClassVar[frozenset[str]] = frozenset()
    max_blocking_s: ClassVar[float] = 1.0
    allowed_imports: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A provider with no safety system has nothing to refuse: the check is left out
        # of collection rather than skipped (a skip would hide a forgotten fixture).
        if not cls.refusals:
            cls.test_refusal_raises_safety_refusal_error = None  # type: ignore[assignment,method-assign]
        if not cls.queue_based:  # the queue checks only mean something for a queue-based vendor
            for name in (
                "test_queue_task_id_is_handed_to_the_core",
                "test_queue_task_resumes_in_a_new_instance",
                "test_queue_cancel_cancels_the_vendor_task",
            ):
                setattr(cls, name, None)

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
        with trap_io() as attempts:
            pm.hook.register_providers(register=offered.append)
        problems: list[str] = [f"register_providers did I/O: {what}" for what in attempts]
        new = third_party(set(sys.modules) - before) - self._own_packages(plugin)
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
                problems.append(f"provider name {item.name!r} must be a lowercase slug (letters, digits, - or _)")
        if not any(type(item) is type(provider) for item in offered):
            problems.append(
                f"the `provider` fixture is a {type(provider).__name__}, which the plugin does not register"
            )
        report(problems)

    def test_plugin_module_imports_no_vendor_sdk(self, plugin: object) -> None:
        """Importing the plugin (fresh interpreter) pulls in no vendor SDK."""
        module = plugin.__name__ if inspect.ismodule(plugin) else type(plugin).__module__
        new = third_party(modules_imported_by(module)) - self._own_packages(plugin)
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
        report(provider_problems(provider, self.unpriced))

    def test_declared_operations_are_implemented(self, provider: Provider) -> None:
        """A provider overrides the method of every operation one of its models declares."""
        declared = {op for spec in provider.catalog() for op in spec.operations}
        assert declared, f"{provider.name} declares no operations"
        missing = [
            op.value
            for op in sorted(declared)
            if getattr(type(provider), op.value) is getattr(Provider, op.value)
            and not provider.queued  # a queue-based vendor serves every operation by submit/poll
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
    async def test_refusal_raises_safety_refusal_error(self, provider: Provider, refuse: Callable[[], object]) -> None:
        """A safety refusal is a SafetyRefusalError, never a plain exception."""
        try:
            await self._check_refusals(provider, refuse)
        finally:
            await provider.aclose()

    async def _check_refusals(self, provider: Provider, refuse: Callable[[], object]) -> None:
        secrets = secrets_of(provider.settings)
        checked = 0
        for operation in (Operation.GENERATE, Operation.EDIT, Operation.VARIATION):
            spec = next((s for s in provider.catalog() if s.supports(operation)), None)
            if spec is None:
                continue
            case = Case(operation=operation, label=f"{operation.value} refused")
            request = validated(provider, spec, case)
            refuse()
            try:
                result = await provider.run(request, context(provider))
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

    # -- queue-based vendors (submit → poll → fetch) ---------------------------------

    @pytest.mark.anyio
    async def test_queue_task_id_is_handed_to_the_core(self, provider: Provider) -> None:
        """submit's task id reaches the core (ctx.task_started) once, before the result."""
        assert provider.queued, f"{type(provider).__name__} sets queue_based but does not override submit()"
        started: list[str] = []

        async def task_started(task_id: str) -> None:
            started.append(task_id)

        try:
            with anyio.fail_after(60):
                result = await provider.run(queue_request(provider), context(provider, task_started))
        finally:
            await provider.aclose()
        assert len(started) == 1 and isinstance(started[0], str) and started[0].strip(), (
            f"ctx.task_started got {started!r}: submit() must return the vendor's task id (a non-empty string)"
        )
        assert isinstance(result, ProviderResult) and result.images, "the polled task returned no image"
        for image in result.images:
            read_image(image.data)

    @pytest.mark.anyio
    async def test_queue_task_resumes_in_a_new_instance(self, provider: Provider) -> None:
        """A new instance (a restarted server) polls a task from the task id and request alone."""
        request = queue_request(provider)
        fresh = fresh_instance(provider)
        try:
            task_id = await provider.submit(request, context(provider))
            await provider.aclose()  # the first server is gone
            with anyio.fail_after(60):
                result = await fresh.wait(task_id, request, context(fresh))
        except AtelierError as exc:
            pytest.fail(
                f"resuming task {task_id!r} in a new {type(provider).__name__} failed: {exc}; keep "
                "nothing a poll needs in the instance",
                pytrace=False,
            )
        finally:
            await fresh.aclose()
        assert result.images, "the resumed task returned no image"
        for image in result.images:
            read_image(image.data)

    @pytest.mark.anyio
    async def test_queue_cancel_cancels_the_vendor_task(self, provider: Provider) -> None:
        """Cancelling a call cancels the vendor's task, unless the server keeps it to resume."""
        request = queue_request(provider)
        calls: list[str] = []
        original = provider.cancel

        async def spy(task_id: str) -> None:
            calls.append(task_id)
            await original(task_id)

        provider.cancel = spy  # type: ignore[method-assign]
        try:
            kept = await provider.submit(request, context(provider))
            with anyio.CancelScope() as scope:
                scope.cancel()  # as a job is cancelled while it polls
                await provider.wait(kept, request, context(provider, keep_vendor_task=lambda: True))
            assert calls == [], "a task the server keeps for resuming must not be cancelled at the vendor"
            task_id = await provider.submit(request, context(provider))
            with anyio.CancelScope() as scope:
                scope.cancel()
                await provider.wait(task_id, request, context(provider))
        finally:
            await provider.aclose()
        assert calls == [task_id], (
            f"cancelling the call while it polled {task_id!r} called cancel() with {calls!r}; "
            "override cancel(task_id) to cancel the vendor's task"
        )

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
        secrets = secrets_of(provider.settings)
        assert secrets or not provider.needs_key, (
            "configure the `provider` fixture with a key of at least 4 characters "
            '(api_key="test-key"): shorter strings are too common to search for'
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
            assert_refused_before_call(provider, operation)
            return
        problems: list[str] = []
        try:
            for spec in specs:
                for case in cases_for(spec, operation):
                    problems.extend(await check_case(provider, spec, case, self.max_blocking_s))
        finally:
            await provider.aclose()  # clients opened lazily are closed in the same loop
        report(problems)
