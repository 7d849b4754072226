"""Isolated Atelier instances for tests: settings, registry, service and an MCP client.

Everything is built from arguments, never from the environment or a config file, so a
test sees only the plugins it names::

    async def test_my_model(tmp_path):
        atelier = build_test_atelier(tmp_path, plugins=[my_plugin], cost={"max_per_call_usd": 1})
        async with connect(atelier) as client:
            result = await client.call_tool("generate_image", {"prompt": "a fox", "model": "mine/x"})
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atelier_core.engine.registry import Registry, build_registry
from atelier_core.plugin.provider import Provider
from atelier_core.settings import ExplicitSettings, Settings

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from atelier_core.engine.pipeline import Pipeline
    from atelier_core.mcp.client import Client

__all__ = [
    "PluginLike",
    "build_test_atelier",
    "build_test_registry",
    "connect",
    "isolated_settings",
    "plugin_pairs",
]

PluginLike = object
"""A plugin (module or object with ``@hookimpl register_providers``) or a ``(name, plugin)`` pair."""


def isolated_settings(tmp_path: Path | None = None, **overrides: Any) -> Settings:
    """Settings for a test: data and images under ``tmp_path``, plus ``overrides``.

    ``overrides`` use the settings' own shape, e.g. ``cost={"max_per_call_usd": 1}`` or
    ``providers={"mine": {"api_key": "k", "base_url": url}}``. The environment and the
    config file are ignored.
    """
    values: dict[str, Any] = {}
    if tmp_path is not None:
        values["data_dir"] = tmp_path / "data"
        values["storage"] = {"output_dir": tmp_path / "images"}
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(values.get(key), Mapping):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return ExplicitSettings(**values)


def plugin_pairs(plugins: Iterable[PluginLike]) -> list[tuple[str, object]]:
    """Name each plugin: a pair keeps its name, a provider its slug, a module its name."""
    pairs: list[tuple[str, object]] = []
    for plugin in plugins:
        if isinstance(plugin, tuple) and len(plugin) == 2 and isinstance(plugin[0], str):
            pairs.append((plugin[0], plugin[1]))
        elif isinstance(plugin, Provider):
            pairs.append((plugin.name, plugin))
        elif inspect.ismodule(plugin):
            pairs.append((plugin.__name__.removeprefix("atelier_"), plugin))
        else:
            pairs.append((type(plugin).__name__.lower(), plugin))
    return pairs


def build_test_registry(
    plugins: Iterable[PluginLike] = (),
    *,
    settings: Settings | None = None,
    plugin_settings: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> Registry:
    """A registry holding exactly ``plugins`` (no entry points).

    ``overrides`` are settings (see :func:`isolated_settings`); the ``[plugins]`` section
    goes in ``plugin_settings`` (e.g. ``{"strict": True, "trace": True}``) because
    ``plugins`` names the plugins themselves.
    """
    if settings is None:
        if plugin_settings is not None:
            overrides["plugins"] = dict(plugin_settings)
        settings = isolated_settings(**overrides)
    return build_registry(settings, plugins=plugin_pairs(plugins), entry_points=False)


def build_test_atelier(
    tmp_path: Path,
    plugins: Iterable[PluginLike] = (),
    *,
    entry_points: bool = False,
    plugin_settings: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> Pipeline:
    """The full service with exactly ``plugins``, its files under ``tmp_path``.

    ``overrides`` are settings (see :func:`isolated_settings`); the ``[plugins]`` section
    goes in ``plugin_settings``. ``entry_points=True`` also loads installed plugins, as
    the real server does.
    """
    from atelier_core.engine.pipeline import Pipeline

    if plugin_settings is not None:
        overrides["plugins"] = dict(plugin_settings)
    settings = isolated_settings(tmp_path, **overrides)
    pipeline = Pipeline.build(settings, plugins=plugin_pairs(plugins), entry_points=entry_points)
    # The server builds its registry lazily; a test wants plugin problems at once.
    _ = pipeline.registry
    return pipeline


def connect(atelier: Pipeline, **client_options: Any) -> AbstractAsyncContextManager[Client]:
    """An in-memory MCP client connected to ``build_server(atelier)`` (see
    :func:`atelier_core.mcp.client.connect`); the MCP SDK is imported on first use."""
    from atelier_core.mcp.client import connect as connect_client

    return connect_client(atelier, **client_options)
