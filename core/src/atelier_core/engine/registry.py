"""The registry: plugins loaded in isolation, providers configured, models indexed.

This module loads plugins and gives out provider names; the registry itself (lookups,
aliases, availability) is :mod:`atelier_core.engine.lookup`, its names re-exported here.

:func:`build_registry` is the one way to get a registry; there is no global. Tests pass
``plugins=[...]`` and ``entry_points=False`` to get an isolated one.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import inspect
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
from atelier_core.engine.lookup import ModelEntry, PluginRecord, Registry, first_line, provider_settings
from atelier_core.plugin import hookspecs
from atelier_core.plugin.checks import plain_problems, provider_problems
from atelier_core.plugin.errors import AtelierError, ConfigurationError
from atelier_core.plugin.provider import Provider
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
                provider.configure(provider_settings(provider, settings))
                problems += [f"provider {provider.name}: {p}" for p in provider_problems(provider)]
        if problems:
            _fail(pm, record, problems, None, conf.trace)
            return False
        return True
    except BaseException as exc:  # SystemExit or KeyboardInterrupt at import must not stop the server
        if isinstance(exc, ValidationError):
            lines = plain_problems(exc, _validation_title(exc))
        else:
            lines = [f"{type(exc).__name__}: {first_line(exc)}"]
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
