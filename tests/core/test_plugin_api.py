"""Meta-tests that keep the plugin API honest.

- every hookspec is documented in docs/plugins.md with its exact signature, and has a
  ``test_hook_<name>`` here;
- ``atelier_core.__all__`` is sorted and complete, everything in it is documented, and
  every name the plugin docs use exists; nothing private or internal leaks into them;
- every field and method of the public classes is documented;
- the tutorial's files are the example plugin's files, verbatim;
- docs/providers.md is what the generator makes from the registry;
- the ``plugins.trace`` setting logs plugin loading and hook calls.
"""

from __future__ import annotations

import builtins
import dataclasses
import difflib
import inspect
import re
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import atelier_core
import atelier_core.testing
from atelier_core import ConfigurationError, Provider, hookimpl
from atelier_core.plugin import hookspecs
from atelier_core.testing import FakeProvider, build_test_registry, fake_spec, isolated_settings

ROOT = Path(__file__).resolve().parents[2]
PLUGINS_DOC = ROOT / "docs" / "plugins.md"
TUTORIAL = ROOT / "docs" / "writing-a-provider.md"
PROVIDERS_DOC = ROOT / "docs" / "providers.md"
EXAMPLE = ROOT / "examples" / "atelier-example-provider"


def _hookspecs() -> dict[str, Callable[..., Any]]:
    marker = f"{hookspecs.PROJECT}_spec"
    return {name: fn for name, fn in vars(hookspecs).items() if inspect.isfunction(fn) and hasattr(fn, marker)}


def _signature_text(fn: Callable[..., Any]) -> str:
    """``name(arg: Type, ...) -> Return`` exactly as written in the source."""
    sig = inspect.signature(fn)  # annotations are source strings (from __future__ import annotations)
    params = []
    for param in sig.parameters.values():
        text = param.name
        if param.annotation is not inspect.Parameter.empty:
            text += f": {param.annotation}"
        if param.default is not inspect.Parameter.empty:
            text += f" = {param.default!r}"
        params.append(text)
    result = "" if sig.return_annotation is inspect.Signature.empty else f" -> {sig.return_annotation}"
    return f"{fn.__name__}({', '.join(params)}){result}"


def _doc() -> str:
    return PLUGINS_DOC.read_text(encoding="utf-8")


def _code_spans(text: str) -> set[str]:
    return set(re.findall(r"`([^`\n]+)`", text))


# -- hooks -------------------------------------------------------------------------------


def test_there_is_at_least_one_hookspec() -> None:
    assert "register_providers" in _hookspecs()


@pytest.mark.parametrize("name", sorted(_hookspecs()))
def test_every_hookspec_is_documented_with_its_exact_signature(name: str) -> None:
    doc = _doc()
    assert re.search(rf"^### {re.escape(name)}$", doc, re.MULTILINE), f"docs/plugins.md needs '### {name}'"
    signature = _signature_text(_hookspecs()[name])
    assert f"\n{signature}\n" in doc, f"docs/plugins.md must show the signature exactly: {signature}"


@pytest.mark.parametrize("name", sorted(_hookspecs()))
def test_every_hookspec_has_a_test(name: str) -> None:
    assert callable(globals().get(f"test_hook_{name}")), f"write test_hook_{name} in {__file__}"


class _TwoProviders:
    """A plugin offering two providers through one hook call."""

    @hookimpl
    def register_providers(self, register: Callable[[Provider[Any]], None]) -> None:
        register(FakeProvider("alpha"))
        register(FakeProvider("beta", models=[fake_spec("beta-image")]))


def test_hook_register_providers() -> None:
    # Every registered provider is indexed, attributed to its plugin, and configured.
    registry = build_test_registry([("two", _TwoProviders())])
    assert set(registry.models) == {"alpha/fake-image", "beta/beta-image"}
    assert {e.plugin for e in registry.models.values()} == {"two"}
    assert registry.plugins[0].providers == ["alpha", "beta"]
    assert all(p.settings is not None for p in registry.providers.values())

    # register() with something that is not a Provider instance fails that plugin only.
    class Wrong:
        @hookimpl
        def register_providers(self, register: Callable[[Any], None]) -> None:
            register(FakeProvider)  # the class, not an instance

    mixed = build_test_registry([("wrong", Wrong()), ("ok", FakeProvider())])
    wrong, ok = mixed.plugins
    assert (wrong.status, ok.status) == ("failed", "loaded")
    assert wrong.error is not None and "expects a Provider instance" in wrong.error
    assert list(mixed.providers) == ["fake"]

    # A hook that raises is isolated too, and strict mode turns it into a start-up error.
    class Broken:
        @hookimpl
        def register_providers(self, register: Callable[[Provider[Any]], None]) -> None:
            raise RuntimeError("boom")

    assert build_test_registry([("broken", Broken())]).plugins[0].status == "failed"
    with pytest.raises(ConfigurationError, match="plugin broken failed to load: RuntimeError: boom"):
        build_test_registry([("broken", Broken())], plugin_settings={"strict": True})


# -- the public API ------------------------------------------------------------------------


def test_all_is_sorted_unique_and_importable() -> None:
    names = atelier_core.__all__
    assert names == sorted(names) and len(set(names)) == len(names)
    for name in names:
        assert hasattr(atelier_core, name), name


def test_all_is_complete() -> None:
    public = {
        name
        for name, value in vars(atelier_core).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(atelier_core.__all__), "atelier_core's public names and __all__ differ"


def test_testing_all_is_sorted_and_complete() -> None:
    names = atelier_core.testing.__all__
    assert names == sorted(names)
    for name in names:
        assert getattr(atelier_core.testing, name) is not None


def _documented_words(doc: str) -> set[str]:
    """Words in inline code, fenced code and headings: where API names are written."""
    fenced = re.findall(r"```\w*\n(.*?)```", doc, re.DOTALL)
    headings = re.findall(r"^#+ (.*)$", doc, re.MULTILINE)
    return set(re.findall(r"[A-Za-z_]\w*", " ".join([*_code_spans(doc), *fenced, *headings])))


def test_everything_exported_is_documented() -> None:
    words = _documented_words(_doc())
    missing = [n for n in [*atelier_core.__all__, *atelier_core.testing.__all__] if n not in words]
    assert not missing, f"document these in docs/plugins.md: {missing}"


def test_every_name_the_docs_use_exists() -> None:
    known = set(atelier_core.__all__) | set(atelier_core.testing.__all__)
    for spans in (_code_spans(_doc()), _code_spans(TUTORIAL.read_text(encoding="utf-8"))):
        camel = {w for span in spans for w in re.findall(r"\b[A-Z][a-z]+(?:[A-Z][a-z0-9]*)+\b", span)}
        ours = {
            w
            for w in camel
            if w.endswith(
                (
                    "Error",
                    "Spec",
                    "Rules",
                    "Rule",
                    "Settings",
                    "Context",
                    "Result",
                    "Request",
                    "Provider",
                    "Image",
                    "Contract",
                    "Upstream",
                )
            )
        }
        example_names = {"PixelArtProvider", "PixelArtSettings", "PixelArtOptions", "FakePixelForge"}
        unknown = ours - known - example_names - set(dir(builtins))
        assert not unknown, f"the docs name things atelier_core does not export: {sorted(unknown)}"


def test_nothing_private_or_internal_leaks_into_the_plugin_docs() -> None:
    doc = _doc()
    private = sorted(s for s in _code_spans(doc) if re.match(r"_[a-z]", s) or "._" in s)
    assert not private, f"private names in docs/plugins.md: {private}"
    modules = set(re.findall(r"atelier_core\.([a-z_]+)", doc)) - set(atelier_core.__all__)
    assert modules <= {"testing"}, f"internal modules in docs/plugins.md: {modules}"
    for internal in ("router", "server", "registry", "validation", "storage", "jobs", "build_registry"):
        assert not re.search(rf"`{internal}\b|{internal}\.py", doc), internal


def _section(doc: str, heading: str) -> str:
    start = doc.index(heading)
    following = re.search(r"^#{2,3} ", doc[start + len(heading) :], re.MULTILINE)
    return doc[start : start + len(heading) + following.start()] if following else doc[start:]


@pytest.mark.parametrize(
    ("cls", "heading"),
    [
        (atelier_core.ModelSpec, "### ModelSpec"),
        (atelier_core.SizeRules, "### SizeRules"),
        (atelier_core.CustomSizeRule, "### CustomSizeRule"),
        (atelier_core.InputImageRules, "### InputImageRules and MaskRules"),
        (atelier_core.MaskRules, "### InputImageRules and MaskRules"),
        (atelier_core.Pricing, "### Pricing"),
        (atelier_core.RetiredModel, "### RetiredModel"),
        (atelier_core.ImageRequest, "### ImageRequest"),
        (atelier_core.ProviderResult, "### ProviderResult"),
        (atelier_core.ProviderImage, "### ProviderResult"),
        (atelier_core.ItemFailure, "### ProviderResult"),
        (atelier_core.Usage, "### ProviderResult"),
        (atelier_core.ProviderSettings, "## ProviderSettings"),
    ],
)
def test_every_field_is_documented(cls: Any, heading: str) -> None:
    section = _section(_doc(), heading)
    missing = [name for name in cls.model_fields if f"`{name}`" not in section]
    assert not missing, f"{cls.__name__} fields missing under '{heading}': {missing}"


def test_input_image_and_call_context_are_documented() -> None:
    doc = _doc()
    image = _section(doc, "### InputImage\n")
    assert all(f"`{f.name}`" in image for f in dataclasses.fields(atelier_core.InputImage))
    context = _section(doc, "## CallContext")
    for name in ("timeout_s", "progress", "partial_image", "download"):
        assert name in context, name


def test_every_provider_member_is_documented() -> None:
    section = _section(_doc(), "## The provider protocol")
    members = [m for m in dir(Provider) if not m.startswith("_")] + ["settings"]
    missing = [
        m for m in members if f"`{m}`" not in section and f"`{m}(" not in section and f"`async {m}(" not in section
    ]
    assert not missing, f"Provider members missing from docs/plugins.md: {missing}"


def test_every_error_is_in_the_documented_tree() -> None:
    section = _section(_doc(), "## Errors")
    errors = [n for n in atelier_core.__all__ if n.endswith("Error")]
    missing = [n for n in errors if n not in section]
    assert not missing, missing
    for name in errors:  # the tree matches the class hierarchy
        cls = getattr(atelier_core, name)
        assert issubclass(cls, atelier_core.AtelierError)


def test_docs_mention_every_loading_setting() -> None:
    doc = _doc()
    for setting in (
        "plugins.allow",
        "plugins.block",
        "plugins.strict",
        "plugins.trace",
        "ATELIER_PLUGINS__TRACE",
        "ATELIER_PLUGINS__STRICT",
        "doctor",
        "list_available_models",
    ):
        assert setting in doc, setting
    tutorial = TUTORIAL.read_text(encoding="utf-8")
    for text in (
        "uvx --with",
        "pipx inject",
        "ATELIER_PLUGINS__TRACE",
        "ATELIER_PLUGINS__STRICT",
        "atelier-mcp doctor",
        "ProviderContract",
        "FakeUpstream",
    ):
        assert text in tutorial, text


# -- the tutorial mirrors the example --------------------------------------------------------


def test_tutorial_files_are_the_example_files() -> None:
    tutorial = TUTORIAL.read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)\n```", tutorial, re.DOTALL)
    assert len(blocks) >= 9, "the tutorial should show the example's files"
    for path, body in blocks:
        actual = (EXAMPLE / path).read_text(encoding="utf-8").rstrip("\n")
        assert body == actual, f"docs/writing-a-provider.md shows an outdated {path}"
    shown = {path for path, _ in blocks}
    sources = {str(p.relative_to(EXAMPLE)) for p in (EXAMPLE / "src").rglob("*.py")}
    assert sources <= shown, f"the tutorial skips {sorted(sources - shown)}"


# -- docs/providers.md -----------------------------------------------------------------------


def test_providers_doc_matches_the_registry() -> None:
    from atelier_core.engine.catalog_docs import REGENERATE, builtin_plugins, catalog_registry, providers_markdown

    builtins = builtin_plugins()
    assert {"placeholder", "openai", "dalle", "gemini", "minimax"} <= set(builtins)
    try:
        registry = catalog_registry(builtins)
    except ConfigurationError as exc:  # strict: a built-in that cannot load is a real failure
        pytest.fail(f"a built-in provider did not load, so docs/providers.md cannot be checked: {exc}")
    page = providers_markdown(registry)
    current = PROVIDERS_DOC.read_text(encoding="utf-8") if PROVIDERS_DOC.is_file() else ""
    if page != current:
        diff = "".join(
            list(
                difflib.unified_diff(
                    current.splitlines(keepends=True),
                    page.splitlines(keepends=True),
                    "docs/providers.md (committed)",
                    "generated",
                    n=1,
                )
            )[:80]
        )
        pytest.fail(f"docs/providers.md is out of date. Regenerate it: {REGENERATE}\n{diff}", pytrace=False)
    assert REGENERATE in page


def test_providers_doc_generator_covers_every_model() -> None:
    from atelier_core.engine.catalog_docs import providers_markdown

    registry = build_test_registry([FakeProvider("one"), FakeProvider("two", models=[fake_spec("x", aliases=("ex",))])])
    page = providers_markdown(registry)
    for canonical in registry.models:
        assert f"`{canonical}`" in page
    assert "## one" in page and "## two" in page and "`ex`" in page
    assert "low $0.005, medium $0.01, high $0.04 per image (as of 2026-01-01)" in page


def test_providers_doc_check_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from atelier_core.engine import catalog_docs

    stale = tmp_path / "providers.md"
    stale.write_text("old\n")
    try:
        assert catalog_docs.main(["--check", str(stale)]) == 1
    except ConfigurationError as exc:
        pytest.fail(f"a built-in provider did not load: {exc}")
    assert "out of date" in capsys.readouterr().err
    assert catalog_docs.main(["--write", str(stale)]) == 0
    assert catalog_docs.main(["--check", str(stale)]) == 0


# -- tracing ---------------------------------------------------------------------------------


def test_plugins_trace_logs_loading_and_hook_calls() -> None:
    settings = isolated_settings(plugins={"trace": True})
    with capture_logs() as logs:
        build_test_registry([("two", _TwoProviders())], settings=settings)
    events = [(e["event"], e.get("plugin")) for e in logs]
    assert ("hook call", "two") in events
    done = next(e for e in logs if e["event"] == "hook done")
    assert done["offered"] == ["FakeProvider", "FakeProvider"]
    loaded = next(e for e in logs if e["event"] == "plugin")
    assert (loaded["status"], loaded["providers"], loaded["source"]) == ("loaded", ["alpha", "beta"], "explicit")
    assert all(e["log_level"] == "info" for e in logs if e["event"] in {"hook call", "hook done", "plugin"})


def test_plugins_trace_is_off_by_default() -> None:
    with capture_logs() as logs:
        build_test_registry([("two", _TwoProviders())])
    assert not [e for e in logs if e["event"] in {"hook call", "hook done", "plugin"}]


def test_plugins_trace_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from atelier_core.settings import Settings

    monkeypatch.setenv("ATELIER_PLUGINS__TRACE", "true")
    assert Settings().plugins.trace is True


def test_testing_kit_imports_neither_pytest_nor_mcp_until_asked() -> None:
    # Plugin packages import atelier_core.testing in tests only, but it must stay light:
    # ProviderContract pulls in pytest and connect() the MCP SDK only when used.
    import subprocess

    script = (
        "import sys, atelier_core.testing as t\n"
        "print(sorted(m for m in ('pytest', 'mcp') if m in sys.modules))\n"
        "t.ProviderContract\n"
        "print('pytest' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "True"]
