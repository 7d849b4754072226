"""The registry: plugins loaded in isolation, providers configured, models indexed.

:func:`build_registry` is the one way to get a registry; there is no global. Tests pass
``plugins=[...]`` and ``entry_points=False`` to get an isolated one.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pluggy
import structlog

from atelier_core.plugin import hookspecs
from atelier_core.plugin.errors import (
    AtelierError,
    ConfigurationError,
    InvalidParameterError,
    MissingCredentialsError,
    RetiredModelError,
    UnknownModelError,
)
from atelier_core.plugin.provider import Provider, ProviderSettings
from atelier_core.settings import Settings
from atelier_core.plugin.spec import ModelSpec, RetiredModel

__all__ = ["ModelEntry", "PluginRecord", "Registry", "build_plugin_manager", "build_registry"]

log = structlog.get_logger("atelier.registry")

ENTRY_POINT_GROUP = hookspecs.PROJECT


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model as the registry knows it: its spec, provider and canonical id."""

    canonical_id: str
    spec: ModelSpec
    provider: Provider
    plugin: str

    @property
    def provider_name(self) -> str:
        return self.provider.name

    def unavailable_reason(self) -> str | None:
        return self.provider.unavailable_reason(self.spec)


@dataclass(slots=True)
class PluginRecord:
    """What happened to one plugin while loading (for diagnostics and doctor)."""

    name: str
    source: str  # "entry point <dist> <version>" or "explicit"
    status: str  # "loaded" | "failed" | "blocked" | "not allowed"
    error: str | None = None
    providers: list[str] = field(default_factory=list)
    seconds: float = 0.0


class Registry:
    """Providers and models by canonical id and alias, plus load diagnostics."""

    def __init__(self) -> None:
        self.providers: dict[str, Provider] = {}
        self.models: dict[str, ModelEntry] = {}
        self.aliases: dict[str, str] = {}
        self.retired: dict[str, tuple[Provider, RetiredModel]] = {}
        self.plugins: list[PluginRecord] = []
        self.problems: list[str] = []
        self._provider_plugin: dict[str, str] = {}

    # -- building ------------------------------------------------------------------

    def add_provider(self, provider: Provider, plugin: str, settings: Settings) -> None:
        name = provider.name
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigurationError(f"plugin {plugin} registered a provider with bad name {name!r}")
        if name in self.providers:
            other = self._provider_plugin[name]
            raise ConfigurationError(
                f"provider name {name!r} is registered by both plugin {other} and plugin {plugin}"
            )
        provider.configure(_provider_settings(provider, settings))
        self.providers[name] = provider
        self._provider_plugin[name] = plugin
        for spec in provider.catalog():
            self._add_model(provider, spec, plugin)
        for retired in provider.retired:
            self.retired.setdefault(retired.id, (provider, retired))
            self.retired.setdefault(f"{name}/{retired.id}", (provider, retired))

    def _add_model(self, provider: Provider, spec: ModelSpec, plugin: str) -> None:
        canonical = f"{provider.name}/{spec.id}"
        if canonical in self.models:
            raise ConfigurationError(f"model {canonical} is declared twice by plugin {plugin}")
        entry = ModelEntry(canonical, spec, provider, plugin)
        self.models[canonical] = entry
        for alias in (spec.id, *spec.aliases):
            key = alias.lower()
            holder = self.aliases.get(key)
            if holder is None:
                self.aliases[key] = canonical
                continue
            if holder == canonical:
                continue
            # Two plugins claim the same short name: the name becomes ambiguous and
            # both must be called by canonical id. Reported, never silently resolved.
            other = self.models[holder] if holder in self.models else None
            owner = other.plugin if other else "?"
            self.problems.append(
                f"alias {alias!r} is claimed by {holder} (plugin {owner}) and {canonical} "
                f"(plugin {plugin}); use the canonical ids"
            )
            self.aliases[key] = ""  # ambiguous

    # -- lookup --------------------------------------------------------------------

    def resolve(self, name: str) -> ModelEntry:
        """Find a model by canonical id or unambiguous alias (case-insensitive)."""
        key = name.strip()
        if key in self.models:
            return self.models[key]
        lowered = key.lower()
        for canonical in self.models:
            if canonical.lower() == lowered:
                return self.models[canonical]
        target = self.aliases.get(lowered)
        if target:
            return self.models[target]
        if "/" in lowered:  # "provider/alias": scoped, so an alias shared across providers works
            prefix, _, rest = lowered.partition("/")
            for entry in self.models.values():
                if entry.provider_name.lower() == prefix and rest in {
                    a.lower() for a in (entry.spec.id, *entry.spec.aliases)
                }:
                    return entry
        if target == "":
            holders = [c for c, e in self.models.items() if lowered in {a.lower() for a in (e.spec.id, *e.spec.aliases)}]
            raise InvalidParameterError(
                "model", name, f"is ambiguous: it names {' and '.join(holders)}",
                allowed=holders, fix="use the canonical id (provider/model)", code="ambiguous_model",
            )
        retired = self.retired.get(key) or self.retired.get(lowered)
        if retired:
            provider, info = retired
            raise RetiredModelError(
                name, retired_on=info.retired_on, replacement=info.replacement, provider=provider.name,
                guide=info.guide,
            )
        raise UnknownModelError(name, [*self.models, *(a for a, t in self.aliases.items() if t)])

    def require_available(self, entry: ModelEntry) -> None:
        reason = entry.unavailable_reason()
        if reason is not None:
            raise MissingCredentialsError(
                f"{entry.canonical_id} is unavailable: {reason}",
                provider=entry.provider_name,
                fix=_availability_fix(entry, self),
            )

    def entries(
        self, provider: str | None = None, capability: str | None = None
    ) -> list[ModelEntry]:
        out = []
        for entry in self.models.values():
            if provider and entry.provider_name != provider:
                continue
            if capability and capability not in {op.value for op in entry.spec.operations}:
                continue
            out.append(entry)
        return out

    def diagnostics(self) -> dict[str, Any]:
        return {
            "plugins": [
                {k: v for k, v in vars_of(record).items() if v not in (None, [], 0.0)}
                for record in self.plugins
            ],
            "problems": list(self.problems),
        }

    async def aclose(self) -> None:
        for provider in self.providers.values():
            try:
                await provider.aclose()
            except Exception as exc:  # closing must never mask shutdown
                log.warning("provider close failed", provider=provider.name, error=type(exc).__name__)


def vars_of(record: PluginRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "source": record.source,
        "status": record.status,
        "error": record.error,
        "providers": record.providers,
        "seconds": round(record.seconds, 4),
    }


def _availability_fix(entry: ModelEntry, registry: Registry) -> str:
    others = [
        e.canonical_id
        for e in registry.models.values()
        if e.provider is not entry.provider and e.unavailable_reason() is None
        and set(entry.spec.operations) & set(e.spec.operations)
    ]
    hint = f"; or use an available model such as {', '.join(others[:3])}" if others else ""
    return f"configure the provider and restart the server{hint}"


def _decoded(value: Any) -> Any:
    """A value from an environment variable: JSON lists/objects arrive as text."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _provider_settings(provider: Provider, settings: Settings) -> ProviderSettings:
    values = {key: _decoded(value) for key, value in settings.provider_values(provider.name).items()}
    prefix = f"ATELIER_PROVIDERS__{provider.name.upper()}__"
    try:
        return provider.settings_class(_env_prefix=prefix, **values)
    except Exception as exc:
        # pydantic's message names the field; it never includes secret values for SecretStr.
        raise ConfigurationError(
            f"settings for provider {provider.name} are invalid: {_first_line(exc)}",
            fix=f"check [providers.{provider.name}] in the config file and {prefix}* variables",
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return " ".join(line.strip() for line in text[:3])[:400]


def build_plugin_manager() -> pluggy.PluginManager:
    """The plugin manager with Atelier's hook specs. Hooks are called per plugin (see
    :func:`_collect`), which is where ``plugins.trace`` logs them."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def _entry_points() -> list[tuple[importlib.metadata.EntryPoint, str]]:
    found: list[tuple[importlib.metadata.EntryPoint, str]] = []
    seen: set[str] = set()
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group != ENTRY_POINT_GROUP or ep.name in seen:
                continue
            seen.add(ep.name)
            found.append((ep, f"entry point {dist.metadata['Name']} {dist.version}"))
    return sorted(found, key=lambda item: item[0].name)


def build_registry(
    settings: Settings | None = None,
    *,
    plugins: Sequence[tuple[str, object]] | None = None,
    entry_points: bool = True,
) -> Registry:
    """Load plugins and build the registry.

    ``plugins`` are extra ``(name, plugin)`` pairs registered directly (tests, embedding);
    ``entry_points`` loads the ``atelier`` entry-point group. Each plugin is loaded and
    asked for providers in isolation: a failure is recorded (and logged) and never stops
    the others, unless ``plugins.strict`` is set.
    """
    settings = settings or Settings()
    conf = settings.plugins
    pm = build_plugin_manager()
    registry = Registry()
    allow = {name.lower() for name in conf.allow} if conf.allow is not None else None
    block = {name.lower() for name in conf.block}

    candidates: list[tuple[str, str, Any]] = [(name, "explicit", obj) for name, obj in plugins or ()]
    if entry_points:
        candidates += [(ep.name, source, ep) for ep, source in _entry_points()]

    for name, source, target in candidates:
        record = PluginRecord(name=name, source=source, status="loaded")
        registry.plugins.append(record)
        if name.lower() in block:
            record.status = "blocked"
            pm.set_blocked(name)
            continue
        if allow is not None and name.lower() not in allow:
            record.status = "not allowed"
            continue
        started = time.perf_counter()
        try:
            # A plugin that prints while importing or registering must not corrupt a
            # stdio MCP stream (or `models --json`): its stdout goes to stderr.
            with contextlib.redirect_stdout(sys.stderr):
                plugin = target.load() if isinstance(target, importlib.metadata.EntryPoint) else target
                if pm.is_registered(plugin) or pm.has_plugin(name):
                    raise ConfigurationError(f"plugin {name} is registered twice")
                pm.register(plugin, name=name)
                _collect(pm, name, plugin, registry, settings, record)
        except Exception as exc:
            record.status = "failed"
            record.error = f"{type(exc).__name__}: {_first_line(exc)}"
            if pm.has_plugin(name):
                pm.unregister(name=name)
            log.warning("plugin failed to load", plugin=name, source=source, error=record.error)
            if conf.strict:
                raise ConfigurationError(f"plugin {name} failed to load: {record.error}") from exc
        finally:
            record.seconds = time.perf_counter() - started
            if conf.trace:
                log.info("plugin", plugin=name, source=source, status=record.status,
                         providers=record.providers, seconds=round(record.seconds, 4))
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        registry.problems.append(f"unknown hook implementation: {exc}")
        log.warning("plugin declares an unknown hook", error=str(exc))
        if conf.strict:
            raise ConfigurationError(str(exc)) from exc
    for problem in registry.problems:
        log.warning("registry problem", problem=problem)
    return registry


def _collect(
    pm: pluggy.PluginManager,
    name: str,
    plugin: object,
    registry: Registry,
    settings: Settings,
    record: PluginRecord,
) -> None:
    offered: list[Provider] = []

    def register(provider: Provider) -> None:
        if not isinstance(provider, Provider):
            raise TypeError(f"register() expects a Provider instance, got {type(provider).__name__}")
        offered.append(provider)

    impl = getattr(plugin, "register_providers", None)
    hookimpls = [h for h in pm.hook.register_providers.get_hookimpls() if h.plugin is plugin]
    if impl is None or not hookimpls:
        return  # a plugin may implement other hooks only
    # Called per plugin (not through pm.hook) so each provider is attributed to its
    # plugin; the trace therefore logs this call itself.
    trace = settings.plugins.trace
    if trace:
        log.info("hook call", hook="register_providers", plugin=name)
    hookimpls[0].function(register=register)
    if trace:
        log.info("hook done", hook="register_providers", plugin=name,
                 offered=[type(p).__name__ for p in offered])
    # Stage first, then commit: a plugin whose second provider fails adds nothing.
    staged: list[str] = []
    try:
        for provider in offered:
            registry.add_provider(provider, name, settings)
            staged.append(provider.name)
    except AtelierError:
        for provider_name in staged:
            _remove_provider(registry, provider_name)
        raise
    record.providers = staged


def _remove_provider(registry: Registry, name: str) -> None:
    registry.providers.pop(name, None)
    registry._provider_plugin.pop(name, None)
    for canonical in [c for c, e in registry.models.items() if e.provider_name == name]:
        del registry.models[canonical]
    for alias in [a for a, c in registry.aliases.items() if c.startswith(name + "/")]:
        del registry.aliases[alias]
