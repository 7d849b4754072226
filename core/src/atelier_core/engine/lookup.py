"""The registry's index: models by canonical id and alias, providers, plugin records.

:func:`atelier_core.engine.registry.build_registry` fills a :class:`Registry`; this module
is what the rest of the engine asks (``resolve``, ``entries``, ``require_available``).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import structlog

from atelier_core.plugin.errors import (
    ConfigurationError,
    InvalidParameterError,
    MissingCredentialsError,
    RetiredModelError,
    UnknownModelError,
)
from atelier_core.plugin.provider import Provider, ProviderSettings
from atelier_core.plugin.spec import ModelSpec, RetiredModel
from atelier_core.settings import Settings

__all__ = ["ModelEntry", "PluginRecord", "Registry", "first_line", "provider_settings", "vars_of"]

log = structlog.get_logger("atelier.registry")


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
            provider.configure(provider_settings(provider, settings))
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


def provider_settings(provider: Provider, settings: Settings) -> ProviderSettings:
    values = {key: _decoded(value) for key, value in settings.provider_values(provider.name).items()}
    prefix = f"ATELIER_PROVIDERS__{provider.name.upper()}__"
    try:
        return provider.settings_class(_env_prefix=prefix, **values)
    except Exception as exc:
        # pydantic's message names the field; it never includes secret values for SecretStr.
        raise ConfigurationError(
            f"settings for provider {provider.name} are invalid: {first_line(exc)}",
            fix=f"check [providers.{provider.name}] in the config file and {prefix}* variables",
        ) from None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return " ".join(line.strip() for line in text[:3])[:400]
