"""The plugin hooks. Hooks only declare: no I/O, no SDK clients, no vendor imports.

A plugin is a module (or object) with ``@hookimpl`` functions, found through the
``atelier`` entry-point group::

    [project.entry-points.atelier]
    myvendor = "atelier_myvendor"
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from atelier_core.plugin.provider import Provider

__all__ = ["PROJECT", "hookimpl", "hookspec", "register_providers"]

PROJECT = "atelier"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_providers(register: Callable[[Provider[Any]], None]) -> None:
    """Offer provider objects to Atelier.

    Called once, when the registry is built (at server start, and by ``atelier-mcp
    models`` / ``doctor``). Call ``register(provider)`` once per provider instance.

    May: construct provider objects and declare their model specs.
    May not: do I/O, read files or the network, build SDK clients, or import a vendor
    SDK — those belong inside the provider's async methods.

    :param register: callback taking one :class:`~atelier_core.Provider` instance.
    """
