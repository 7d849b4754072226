"""The registry: entry-point discovery, isolation of broken plugins, allow/block lists,
conflicts, alias resolution and hook validation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

import atelier_placeholder
from atelier_core import ModelSpec, Provider, RetiredModel, hookimpl
from atelier_core.engine.registry import build_registry
from atelier_core.plugin.errors import (
    ConfigurationError,
    InvalidParameterError,
    MissingCredentialsError,
    RetiredModelError,
    UnknownModelError,
)
from atelier_core.settings import Settings

BUILT_IN = {"placeholder", "openai", "dalle", "gemini", "minimax"}


def provider_class(name: str, *model_ids: str, aliases: tuple[str, ...] = (), key: bool = False) -> type[Provider]:
    specs = tuple(ModelSpec(id=model_id, aliases=aliases) for model_id in model_ids)

    class Made(Provider):
        models: ClassVar[tuple[ModelSpec, ...]] = specs
        needs_key: ClassVar[bool] = key
        key_env_vars: ClassVar[tuple[str, ...]] = ("MADE_KEY",) if key else ()
        unpriced: ClassVar[frozenset[str]] = frozenset(model_ids)

    Made.name = name  # type: ignore[misc]
    return Made


class Plugin:
    def __init__(self, *providers: Provider) -> None:
        self.providers = providers

    @hookimpl
    def register_providers(self, register: Callable[[Provider[Any]], None]) -> None:
        for provider in self.providers:
            register(provider)


class RaisesInHook:
    @hookimpl
    def register_providers(self, register: Callable[[Provider[Any]], None]) -> None:
        raise RuntimeError("cannot register today")


class Misspelled:
    @hookimpl
    def register_provider(self, register: Callable[[Provider[Any]], None]) -> None:  # sic
        raise AssertionError("never called")


def write_distribution(root: Path, name: str, module: str, source: str) -> None:
    """A minimal installed distribution with an ``atelier`` entry point, on ``root``."""
    info = root / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[atelier]\n{name.replace('-', '_')} = {module}\n")
    (root / f"{module}.py").write_text(source)


def test_built_in_providers_are_discovered_through_entry_points() -> None:
    registry = build_registry(Settings())
    records = {r.name: r for r in registry.plugins}
    assert set(records) >= BUILT_IN
    for name in BUILT_IN:
        assert records[name].source.startswith(f"entry point atelier-{name} "), records[name]
        assert records[name].status == "loaded", records[name]
    assert "placeholder/placeholder" in registry.models
    assert registry.resolve("offline").canonical_id == "placeholder/placeholder"


def test_a_plugin_that_fails_to_import_is_recorded_and_isolated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_distribution(
        tmp_path,
        "atelier-brokenimport",
        "atelier_brokenimport_mod",
        "raise ImportError('needs the frobnicator package')\n",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = build_registry(Settings())
    record = next(r for r in registry.plugins if r.name == "atelier_brokenimport")
    assert record.status == "failed"
    assert record.error is not None and "frobnicator" in record.error and "ImportError" in record.error
    assert "placeholder/placeholder" in registry.models  # the others still load
    assert record.source == "entry point atelier-brokenimport 0.1"


def test_a_plugin_whose_hook_raises_is_recorded_and_isolated() -> None:
    registry = build_registry(
        Settings(), plugins=[("bad", RaisesInHook()), ("placeholder", atelier_placeholder)], entry_points=False
    )
    bad, good = registry.plugins
    assert bad.status == "failed" and "cannot register today" in (bad.error or "")
    assert good.status == "loaded" and good.providers == ["placeholder"]
    diagnostics = registry.diagnostics()
    assert {"name": "bad", "source": "explicit", "status": "failed"}.items() <= diagnostics["plugins"][0].items()


def test_strict_mode_stops_on_a_broken_plugin() -> None:
    with pytest.raises(ConfigurationError, match="bad"):
        build_registry(Settings(plugins={"strict": True}), plugins=[("bad", RaisesInHook())], entry_points=False)


def test_allow_and_block_lists() -> None:
    allowed = build_registry(Settings(plugins={"allow": ["placeholder"]}))
    statuses = {r.name: r.status for r in allowed.plugins}
    assert statuses["placeholder"] == "loaded"
    assert {statuses[name] for name in BUILT_IN - {"placeholder"}} == {"not allowed"}
    assert set(allowed.providers) == {"placeholder"}

    blocked = build_registry(Settings(plugins={"block": ["placeholder"]}))
    assert {r.name: r.status for r in blocked.plugins}["placeholder"] == "blocked"
    assert "placeholder" not in blocked.providers


def test_allow_and_block_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_PLUGINS__BLOCK", '["openai", "dalle"]')
    registry = build_registry(Settings())
    statuses = {r.name: r.status for r in registry.plugins}
    assert statuses["openai"] == statuses["dalle"] == "blocked"


def test_two_third_parties_claiming_one_name_are_both_refused_whatever_the_order() -> None:
    for order in ((0, 1), (1, 0)):
        plugins = [("one", Plugin(provider_class("twin", "a")())), ("two", Plugin(provider_class("twin", "b")()))]
        registry = build_registry(Settings(), plugins=[plugins[i] for i in order], entry_points=False)
        for record in registry.plugins:
            assert record.status == "refused"
            assert "plugin one" in (record.error or "") and "plugin two" in (record.error or "")
            assert "plugins.owners" in (record.error or "") and "ATELIER_PLUGINS__OWNERS" in (record.error or "")
        assert "twin" not in registry.providers and not registry.models


def test_plugins_owners_picks_the_owner_of_a_contested_name() -> None:
    plugins = [("one", Plugin(provider_class("twin", "a")())), ("two", Plugin(provider_class("twin", "b")()))]
    registry = build_registry(Settings(plugins={"owners": {"twin": "two"}}), plugins=plugins, entry_points=False)
    statuses = {r.name: r.status for r in registry.plugins}
    assert statuses == {"one": "refused", "two": "loaded"}
    assert list(registry.models) == ["twin/b"]
    assert "plugins.owners" in (registry.plugins[0].error or "")


def test_a_built_in_name_is_reserved_for_its_distribution_whatever_the_order() -> None:
    # An explicit plugin object is no distribution's: it may not take a built-in's name.
    for name in ("aaa_clash", "zzz_clash"):
        impostor = provider_class("placeholder", "placeholder", aliases=("offline",))()
        registry = build_registry(
            Settings(),
            plugins=[(name, Plugin(impostor)), ("placeholder", atelier_placeholder)],
            entry_points=False,
        )
        records = {r.name: r for r in registry.plugins}
        assert records["placeholder"].status == "loaded"
        assert records[name].status == "refused"
        assert "reserved for the built-in distribution atelier-placeholder" in (records[name].error or "")
        assert registry.resolve("offline").provider is registry.providers["placeholder"]
        assert type(registry.providers["placeholder"]).__module__.startswith("atelier_placeholder")


def test_a_failing_second_provider_rolls_back_the_whole_plugin() -> None:
    ok = provider_class("fine", "a")()
    broken = provider_class("Bad Name", "b")()
    registry = build_registry(Settings(), plugins=[("mixed", Plugin(ok, broken))], entry_points=False)
    (mixed,) = registry.plugins
    assert mixed.status == "failed" and "lowercase slug" in (mixed.error or "")
    assert "fine" not in registry.providers and "fine/a" not in registry.models


def test_duplicate_aliases_are_ambiguous_and_name_both_plugins() -> None:
    left = provider_class("left", "m1", aliases=("shared",))()
    right = provider_class("right", "m2", aliases=("shared",))()
    registry = build_registry(Settings(), plugins=[("lp", Plugin(left)), ("rp", Plugin(right))], entry_points=False)
    (problem,) = registry.problems
    assert "shared" in problem and "left/m1" in problem and "right/m2" in problem
    assert "plugin lp" in problem and "plugin rp" in problem
    with pytest.raises(InvalidParameterError) as caught:
        registry.resolve("shared")
    assert caught.value.code == "ambiguous_model"
    assert "left/m1" in str(caught.value) and "right/m2" in str(caught.value)
    assert registry.resolve("left/m1").canonical_id == "left/m1"
    assert registry.resolve("right/shared").canonical_id == "right/m2"


def test_resolution_by_canonical_id_alias_and_case() -> None:
    registry = build_registry(Settings(), plugins=[("placeholder", atelier_placeholder)], entry_points=False)
    for name in (
        "placeholder/placeholder",
        "PLACEHOLDER/Placeholder",
        "offline",
        "placeholder/offline",
        "placeholder-image",
    ):
        assert registry.resolve(name).canonical_id == "placeholder/placeholder"
    with pytest.raises(UnknownModelError, match="placeholder"):
        registry.resolve("placehold")


def test_retired_models_explain_the_replacement() -> None:
    class Old(provider_class("vendor", "new-model")):  # type: ignore[misc]
        retired = (RetiredModel(id="old-model", retired_on="2026-05-12", replacement="vendor/new-model"),)

    registry = build_registry(Settings(), plugins=[("vendor", Plugin(Old()))], entry_points=False)
    with pytest.raises(RetiredModelError) as caught:
        registry.resolve("old-model")
    assert "2026-05-12" in str(caught.value) and "vendor/new-model" in str(caught.value)


def test_check_pending_reports_a_misspelled_hook() -> None:
    registry = build_registry(
        Settings(), plugins=[("typo", Misspelled()), ("placeholder", atelier_placeholder)], entry_points=False
    )
    assert any("register_provider" in p and "unknown hook" in p for p in registry.problems)
    assert "placeholder/placeholder" in registry.models
    with pytest.raises(ConfigurationError):
        build_registry(Settings(plugins={"strict": True}), plugins=[("typo", Misspelled())], entry_points=False)


def test_unavailable_models_are_listed_and_refused_with_the_variable_to_set() -> None:
    keyed = provider_class("keyed", "k1", key=True)()
    registry = build_registry(
        Settings(), plugins=[("keyed", Plugin(keyed)), ("placeholder", atelier_placeholder)], entry_points=False
    )
    entry = registry.resolve("keyed/k1")
    reason = entry.unavailable_reason()
    assert reason is not None and "MADE_KEY" in reason and "ATELIER_PROVIDERS__KEYED__API_KEY" in reason
    with pytest.raises(MissingCredentialsError) as caught:
        registry.require_available(entry)
    assert "placeholder/placeholder" in str(caught.value)  # suggests an available model


def test_provider_settings_come_from_env_and_config_table(monkeypatch: pytest.MonkeyPatch) -> None:
    keyed = provider_class("keyed", "k1", key=True)()
    monkeypatch.setenv("ATELIER_PROVIDERS__KEYED__API_KEY", "from-env")
    registry = build_registry(
        Settings(providers={"keyed": {"timeout_s": 9}}), plugins=[("keyed", Plugin(keyed))], entry_points=False
    )
    settings = registry.providers["keyed"].settings
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "from-env"
    assert settings.timeout_s == 9
    assert registry.resolve("k1").unavailable_reason() is None


def test_invalid_provider_settings_fail_that_plugin_only() -> None:
    keyed = provider_class("keyed", "k1")()
    registry = build_registry(
        Settings(providers={"keyed": {"timeout_s": "soon"}}),
        plugins=[("keyed", Plugin(keyed)), ("placeholder", atelier_placeholder)],
        entry_points=False,
    )
    record = registry.plugins[0]
    assert record.status == "failed" and "timeout_s" in (record.error or "")
    assert "placeholder/placeholder" in registry.models


def test_entries_filter_by_provider_and_capability() -> None:
    registry = build_registry(
        Settings(),
        plugins=[("placeholder", atelier_placeholder), ("x", Plugin(provider_class("x", "gen-only")()))],
        entry_points=False,
    )
    assert [e.canonical_id for e in registry.entries(capability="edit")] == ["placeholder/placeholder"]
    assert [e.canonical_id for e in registry.entries(provider="x")] == ["x/gen-only"]


def test_provider_settings_from_variables_decode_json_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import Field

    from atelier_core import ProviderSettings
    from atelier_core.testing.fakes import FakeProvider

    class ListSettings(ProviderSettings):
        hosts: list[str] = Field(default_factory=list)

    monkeypatch.setenv("ATELIER_PROVIDERS__FAKE__HOSTS", '["a.example", "b.example"]')
    provider = FakeProvider(settings_class=ListSettings)
    build_registry(Settings(), plugins=[("fake", provider)], entry_points=False)
    assert provider.settings.hosts == ["a.example", "b.example"]  # type: ignore[attr-defined]


TWIN = """
from atelier_core import ModelSpec, Provider, hookimpl

class Twin(Provider):
    name = "twin"
    needs_key = False
    unpriced = frozenset({"{model}"})
    models = (ModelSpec(id="{model}"),)

@hookimpl
def register_providers(register):
    register(Twin())
"""


def test_two_installed_distributions_claiming_one_name_are_both_refused_until_one_is_picked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_distribution(tmp_path, "atelier-twin-a", "atelier_twin_a", TWIN.replace("{model}", "a"))
    write_distribution(tmp_path, "atelier-twin-b", "atelier_twin_b", TWIN.replace("{model}", "b"))
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = build_registry(Settings())
    records = {r.distribution: r for r in registry.plugins if r.distribution in ("atelier-twin-a", "atelier-twin-b")}
    for record in records.values():
        assert record.status == "refused"
        assert "atelier-twin-a" in (record.error or "") and "atelier-twin-b" in (record.error or "")
        assert "plugins.owners" in (record.error or "")
    assert "twin" not in registry.providers
    assert "placeholder/placeholder" in registry.models
    picked = build_registry(Settings(plugins={"owners": {"twin": "atelier-twin-b"}}))
    assert list(picked.entries(provider="twin")) and picked.resolve("twin/b").canonical_id == "twin/b"
    statuses = {r.distribution: r.status for r in picked.plugins if r.distribution and "twin" in r.distribution}
    assert statuses == {"atelier-twin-a": "refused", "atelier-twin-b": "loaded"}
