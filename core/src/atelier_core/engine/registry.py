"""The registry: plugins loaded in isolation, providers configured, models indexed.

:func:`build_registry` is the one way to get a registry; there is no global. Tests pass
``plugins=[...]`` and ``entry_points=False`` to get an isolated one.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import inspect
import json
import re
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pluggy
import structlog
from pydantic import ValidationError

from atelier_core.engine import isolation
from atelier_core.plugin import hookspecs
from atelier_core.plugin.checks import plain_problems, provider_problems
from atelier_core.plugin.errors import (
    AtelierError,
    ConfigurationError,
    InvalidParameterError,
    MissingCredentialsError,
    RetiredModelError,
    UnknownModelError,
)
from atelier_core.plugin.provider import Provider, ProviderSettings
from atelier_core.plugin.spec import ModelSpec, RetiredModel
from atelier_core.settings import Settings

__all__ = [
    "APP_DISTRIBUTION",
    "ModelEntry",
    "PluginRecord",
    "Registry",
    "build_plugin_manager",
    "build_registry",
    "built_in_distributions",
]

log = structlog.get_logger("atelier.registry")

ENTRY_POINT_GROUP = hookspecs.PROJECT
#: the application distribution; what it requires are the built-in providers
APP_DISTRIBUTION = "atelier-mcp"


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
    status: str  # "loaded" | "failed" | "refused" | "blocked" | "not allowed"
    error: str | None = None  # every problem, "; "-joined
    providers: list[str] = field(default_factory=list)
    seconds: float = 0.0
    distribution: str | None = None
    problems: list[str] = field(default_factory=list)
    traceback: str | None = None  # with plugins.trace, for an exception while loading


class Registry:
    """Providers and models by canonical id and alias, plus load diagnostics."""

    def __init__(self) -> None:
        self.providers: dict[str, Provider] = {}
        self.models: dict[str, ModelEntry] = {}
        self.aliases: dict[str, str] = {}
        self.retired: dict[str, tuple[Provider, RetiredModel]] = {}
        self.plugins: list[PluginRecord] = []
        self.problems: list[str] = []
        self.built_ins: frozenset[str] = frozenset()
        self._provider_plugin: dict[str, str] = {}
        self._alias_claims: dict[str, list[str]] = {}
        self._built_in_models: set[str] = set()

    # -- building ------------------------------------------------------------------

    def add_provider(
        self,
        provider: Provider,
        plugin: str,
        settings: Settings,
        *,
        configured: bool = False,
        built_in: bool = False,
    ) -> None:
        name = provider.name
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigurationError(f"plugin {plugin} registered a provider with bad name {name!r}")
        if name in self.providers:
            other = self._provider_plugin[name]
            raise ConfigurationError(f"provider name {name!r} is registered by both plugin {other} and plugin {plugin}")
        if not configured:
            provider.configure(_provider_settings(provider, settings))
        self.providers[name] = provider
        self._provider_plugin[name] = plugin
        for spec in provider.catalog():
            self._add_model(provider, spec, plugin, built_in=built_in)
        for retired in provider.retired:
            self.retired.setdefault(retired.id, (provider, retired))
            self.retired.setdefault(f"{name}/{retired.id}", (provider, retired))

    def _add_model(self, provider: Provider, spec: ModelSpec, plugin: str, *, built_in: bool = False) -> None:
        canonical = f"{provider.name}/{spec.id}"
        if canonical in self.models:
            raise ConfigurationError(f"model {canonical} is declared twice by plugin {plugin}")
        entry = ModelEntry(canonical, spec, provider, plugin)
        self.models[canonical] = entry
        if built_in:
            self._built_in_models.add(canonical)
        for alias in dict.fromkeys(a.lower() for a in (spec.id, *spec.aliases)):
            claims = self._alias_claims.setdefault(alias, [])
            claims.append(canonical)
            holder = self.aliases.get(alias)
            if holder is None:
                self.aliases[alias] = canonical
                continue
            owners = [c for c in claims if c in self._built_in_models]
            if len(owners) == 1:
                # A built-in keeps its short name; another plugin's claim is reported.
                self.aliases[alias] = owners[0]
                others = [c for c in claims if c != owners[0]]
                self.problems.append(
                    f"alias {alias!r} belongs to the built-in model {owners[0]}; "
                    f"{', '.join(self._claimant(c) for c in others)} must be called by canonical id"
                )
                continue
            # Two plugins claim the same short name: the name becomes ambiguous and
            # both must be called by canonical id. Reported, never silently resolved.
            self.problems.append(
                f"alias {alias!r} is claimed by {' and '.join(self._claimant(c) for c in claims)}; "
                "use the canonical ids"
            )
            self.aliases[alias] = ""  # ambiguous

    def _claimant(self, canonical: str) -> str:
        entry = self.models.get(canonical)
        return f"{canonical} (plugin {entry.plugin})" if entry else canonical

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
            holders = [
                c for c, e in self.models.items() if lowered in {a.lower() for a in (e.spec.id, *e.spec.aliases)}
            ]
            raise InvalidParameterError(
                "model",
                name,
                f"is ambiguous: it names {' and '.join(holders)}",
                allowed=holders,
                fix="use the canonical id (provider/model)",
                code="ambiguous_model",
            )
        retired = self.retired.get(key) or self.retired.get(lowered)
        if retired:
            provider, info = retired
            raise RetiredModelError(
                name,
                retired_on=info.retired_on,
                replacement=info.replacement,
                provider=provider.name,
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

    def entries(self, provider: str | None = None, capability: str | None = None) -> list[ModelEntry]:
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
                {k: v for k, v in vars_of(record).items() if v not in (None, [], 0.0)} for record in self.plugins
            ],
            "problems": list(self.problems),
        }

    async def aclose(self) -> None:
        for provider in self.providers.values():
            try:
                await provider.aclose()
            except BaseException as exc:  # closing must never mask shutdown (SystemExit included)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                log.warning("provider close failed", provider=provider.name, error=type(exc).__name__)


def vars_of(record: PluginRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "source": record.source,
        "distribution": record.distribution,
        "status": record.status,
        "error": record.error,
        "problems": record.problems if len(record.problems) > 1 else [],
        "providers": record.providers,
        "seconds": round(record.seconds, 4),
        "traceback": record.traceback,
    }


def _availability_fix(entry: ModelEntry, registry: Registry) -> str:
    others = [
        e.canonical_id
        for e in registry.models.values()
        if e.provider is not entry.provider
        and e.unavailable_reason() is None
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


@dataclass(frozen=True, slots=True)
class _Found:
    """One entry point of the ``atelier`` group and the distribution that declares it."""

    entry_point: importlib.metadata.EntryPoint
    distribution: str
    version: str


def _entry_points() -> list[_Found]:
    found: list[_Found] = []
    seen: set[tuple[str, str]] = set()
    for dist in importlib.metadata.distributions():
        dist_name = _canonical(dist.metadata["Name"] or "?")
        for ep in dist.entry_points:
            if ep.group != ENTRY_POINT_GROUP or (dist_name, ep.name) in seen:
                continue  # the same distribution seen twice on sys.path
            seen.add((dist_name, ep.name))
            found.append(_Found(ep, dist_name, dist.version))
    return sorted(found, key=lambda f: (f.entry_point.name, f.distribution))


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def built_in_distributions(app: str = APP_DISTRIBUTION) -> frozenset[str]:
    """The distributions the application itself requires: the built-in providers.

    Read from the installed ``atelier-mcp`` metadata, so the core names no vendor.
    Empty when the application is not installed (the core embedded on its own).
    """
    try:
        requires = importlib.metadata.requires(app) or []
    except importlib.metadata.PackageNotFoundError:
        return frozenset()
    names = {_canonical(re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0]) for req in requires if "extra ==" not in req}
    return frozenset(names - {_canonical(app)})


def _reserved_names(found: Sequence[_Found], built_ins: frozenset[str]) -> dict[str, str]:
    """Provider name -> the built-in distribution it is reserved for.

    A built-in distribution reserves the names of its ``atelier`` entry points (each is
    the name of the provider it registers), whether or not it loads.
    """
    reserved: dict[str, str] = {}
    for item in found:
        if item.distribution in built_ins:
            reserved.setdefault(item.entry_point.name.lower(), item.distribution)
    return reserved


@dataclass(slots=True)
class _Candidate:
    name: str
    source: str
    target: Any
    distribution: str | None
    record: PluginRecord
    offered: list[Provider] = field(default_factory=list)


def build_registry(
    settings: Settings | None = None,
    *,
    plugins: Sequence[tuple[str, object]] | None = None,
    entry_points: bool = True,
    built_ins: frozenset[str] | None = None,
) -> Registry:
    """Load plugins and build the registry.

    ``plugins`` are extra ``(name, plugin)`` pairs registered directly (tests, embedding);
    ``entry_points`` loads the ``atelier`` entry-point group. Each plugin is loaded and
    asked for providers in isolation: a failure (any exception, ``SystemExit`` included)
    is recorded (and logged) and never stops the others, unless ``plugins.strict`` is set.

    Then names are given out (see docs/plugins.md, "Who owns a provider name"): a name
    reserved for a built-in distribution (``built_ins``, by default what ``atelier-mcp``
    requires) goes to it alone; a name two other distributions claim goes to neither
    unless ``plugins.owners`` picks one. Refused plugins are recorded with the reason.
    """
    settings = settings or Settings()
    conf = settings.plugins
    pm = build_plugin_manager()
    registry = Registry()
    allow = {name.lower() for name in conf.allow} if conf.allow is not None else None
    block = {name.lower() for name in conf.block}
    found = _entry_points()
    built_ins = built_in_distributions() if built_ins is None else frozenset(_canonical(b) for b in built_ins)
    reserved = _reserved_names(found, built_ins)
    registry.built_ins = built_ins
    module_dists = {f.entry_point.module.split(".")[0]: f.distribution for f in found}

    candidates: list[_Candidate] = []
    for name, obj in plugins or ():
        dist = module_dists.get(_module_of(obj).split(".")[0])
        source = f"explicit ({dist})" if dist else "explicit"
        candidates.append(_Candidate(name, source, obj, dist, PluginRecord(name, source, "loaded", distribution=dist)))
    if entry_points:
        for item in found:
            source = f"entry point {item.distribution} {item.version}"
            candidates.append(
                _Candidate(
                    item.entry_point.name,
                    source,
                    item.entry_point,
                    item.distribution,
                    PluginRecord(item.entry_point.name, source, "loaded", distribution=item.distribution),
                )
            )

    loaded: list[_Candidate] = []
    for candidate in candidates:
        record = candidate.record
        registry.plugins.append(record)
        if candidate.name.lower() in block:
            record.status = "blocked"
            pm.set_blocked(candidate.name)
            continue
        if allow is not None and candidate.name.lower() not in allow:
            record.status = "not allowed"
            continue
        if _load(pm, candidate, settings):
            loaded.append(candidate)

    for candidate in _owned(loaded, reserved, built_ins, conf.owners):
        _commit(registry, candidate, settings)

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        registry.problems.append(f"unknown hook implementation: {exc}")
        log.warning("plugin declares an unknown hook", error=str(exc))
        if conf.strict:
            raise ConfigurationError(str(exc)) from exc
    for problem in registry.problems:
        log.warning("registry problem", problem=problem)
    if conf.strict:
        for record in registry.plugins:
            if record.status in ("failed", "refused"):
                verb = "failed to load" if record.status == "failed" else "was refused"
                raise ConfigurationError(f"plugin {record.name} {verb}: {record.error}")
    isolation.watchdog(conf.loop_block_s)
    return registry


def _module_of(obj: object) -> str:
    return obj.__name__ if inspect.ismodule(obj) else type(obj).__module__


def _load(pm: pluggy.PluginManager, candidate: _Candidate, settings: Settings) -> bool:
    """Import the plugin, ask it for providers, configure and check them. False on failure."""
    name, record, conf = candidate.name, candidate.record, settings.plugins
    started = time.perf_counter()
    try:
        # A plugin that prints while importing or registering must not corrupt a
        # stdio MCP stream (or `models --json`): its stdout goes to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            target = candidate.target
            plugin = target.load() if isinstance(target, importlib.metadata.EntryPoint) else target
            if pm.is_registered(plugin) or pm.has_plugin(name):
                raise ConfigurationError(f"plugin {name} is registered twice")
            pm.register(plugin, name=name)
            candidate.offered = _offered(pm, name, plugin, settings)
            problems: list[str] = []
            for provider in candidate.offered:
                provider.configure(_provider_settings(provider, settings))
                problems += [f"provider {provider.name}: {p}" for p in provider_problems(provider)]
        if problems:
            _fail(pm, record, problems, None, conf.trace)
            return False
        return True
    except BaseException as exc:  # SystemExit or KeyboardInterrupt at import must not stop the server
        if isinstance(exc, ValidationError):
            lines = plain_problems(exc, _validation_title(exc))
        else:
            lines = [f"{type(exc).__name__}: {_first_line(exc)}"]
        _fail(pm, record, lines, exc, conf.trace)
        return False
    finally:
        record.seconds = time.perf_counter() - started
        if conf.trace:
            log.info(
                "plugin",
                plugin=name,
                source=record.source,
                status=record.status,
                providers=[p.name for p in candidate.offered],
                seconds=round(record.seconds, 4),
            )


def _validation_title(exc: ValidationError) -> str:
    return {"ModelSpec": "a model spec", "Pricing": "a price table"}.get(exc.title, exc.title)


def _fail(
    pm: pluggy.PluginManager, record: PluginRecord, problems: list[str], exc: BaseException | None, trace: bool
) -> None:
    record.status = "failed"
    record.problems = problems
    record.error = "; ".join(problems)
    if pm.has_plugin(record.name):
        pm.unregister(name=record.name)
    if exc is not None and trace:
        record.traceback = "".join(traceback.format_exception(exc))
    log.warning(
        "plugin failed to load",
        plugin=record.name,
        source=record.source,
        problems=problems,
        **({"traceback": record.traceback} if record.traceback else {}),
    )


def _offered(pm: pluggy.PluginManager, name: str, plugin: object, settings: Settings) -> list[Provider]:
    offered: list[Provider] = []

    def register(provider: Provider) -> None:
        if not isinstance(provider, Provider):
            raise TypeError(f"register() expects a Provider instance, got {type(provider).__name__}")
        offered.append(provider)

    hookimpls = [h for h in pm.hook.register_providers.get_hookimpls() if h.plugin is plugin]
    if not hookimpls:
        return offered  # a plugin may implement other hooks only
    # Called per plugin (not through pm.hook) so each provider is attributed to its
    # plugin; the trace therefore logs this call itself.
    trace = settings.plugins.trace
    if trace:
        log.info("hook call", hook="register_providers", plugin=name)
    hookimpls[0].function(register=register)
    if trace:
        log.info("hook done", hook="register_providers", plugin=name, offered=[type(p).__name__ for p in offered])
    names = [p.name for p in offered]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigurationError(f"plugin {name} registers provider name {twice[0]!r} twice")
    return offered


def _owned(
    loaded: list[_Candidate], reserved: dict[str, str], built_ins: frozenset[str], owners: dict[str, str]
) -> list[_Candidate]:
    """The plugins that keep their providers, built-ins first; the others are refused."""
    claims: dict[str, list[_Candidate]] = {}
    for candidate in loaded:
        for provider in candidate.offered:
            claims.setdefault(provider.name.lower(), []).append(candidate)
    picked = {name.lower(): _canonical(dist) for name, dist in owners.items()}
    refused: dict[int, str] = {}
    for name, holders in claims.items():
        owner = reserved.get(name)
        if owner is not None:
            for holder in holders:
                if holder.distribution != owner:
                    refused[id(holder)] = (
                        f"provider name {name!r} is reserved for the built-in distribution {owner}; "
                        f"{_who(holder)} may not register it"
                    )
            continue
        dists = sorted({_who(h) for h in holders})
        if len(dists) < 2:
            continue
        choice = picked.get(name)
        keep = [h for h in holders if choice is not None and (h.distribution or h.name.lower()) == choice]
        if keep:
            for holder in holders:
                if holder not in keep:
                    refused[id(holder)] = (
                        f"provider name {name!r} belongs to {choice} (plugins.owners); {_who(holder)} is refused"
                    )
            continue
        example = holders[0].distribution or holders[0].name
        for holder in holders:
            refused[id(holder)] = (
                f"provider name {name!r} is claimed by {' and '.join(dists)}; both are refused. "
                f'Pick one with the setting plugins.owners, e.g. [plugins.owners] {name} = "{example}" '
                f'or ATELIER_PLUGINS__OWNERS=\'{{"{name}": "{example}"}}\', or uninstall one'
            )
    kept: list[_Candidate] = []
    for candidate in loaded:
        reason = refused.get(id(candidate))
        if reason is None:
            kept.append(candidate)
            continue
        candidate.record.status = "refused"
        candidate.record.error = reason
        candidate.record.problems = [reason]
        log.warning("plugin refused", plugin=candidate.name, source=candidate.record.source, reason=reason)
    # Built-ins first: their short aliases win over any third party's.
    return sorted(kept, key=lambda c: c.distribution not in built_ins)


def _who(candidate: _Candidate) -> str:
    if candidate.distribution:
        return f"distribution {candidate.distribution} (plugin {candidate.name})"
    return f"plugin {candidate.name}"


def _commit(registry: Registry, candidate: _Candidate, settings: Settings) -> None:
    """Add the plugin's providers, all or none."""
    label = f"{candidate.name}" + (f" from {candidate.distribution}" if candidate.distribution else "")
    staged: list[str] = []
    try:
        for provider in candidate.offered:
            isolation.guard(provider, f"{provider.name} (plugin {label})")
            registry.add_provider(
                provider,
                candidate.name,
                settings,
                configured=True,
                built_in=candidate.distribution in registry.built_ins,
            )
            staged.append(provider.name)
    except AtelierError as exc:
        for provider_name in staged:
            _remove_provider(registry, provider_name)
        record = candidate.record
        record.status, record.error, record.problems = "failed", str(exc), [str(exc)]
        log.warning("plugin failed to load", plugin=record.name, source=record.source, problems=record.problems)
        return
    candidate.record.providers = staged


def _remove_provider(registry: Registry, name: str) -> None:
    registry.providers.pop(name, None)
    registry._provider_plugin.pop(name, None)
    for canonical in [c for c, e in registry.models.items() if e.provider_name == name]:
        del registry.models[canonical]
    for alias in [a for a, c in registry.aliases.items() if c.startswith(name + "/")]:
        del registry.aliases[alias]
    for claims in registry._alias_claims.values():
        claims[:] = [c for c in claims if not c.startswith(name + "/")]
