"""Atelier provider plugin for MiniMax: ``image-01`` and ``image-01-live``.

MiniMax has no Python SDK, so this package is a thin async ``httpx2`` adapter:

- :mod:`.models` — the two models, declared as data;
- :mod:`.settings` — key, region/host, rate limit;
- :mod:`.translate` — pure request/answer translation and the ``base_resp`` error table;
- :mod:`.client` — one lazily created HTTP client, one attempt per call;
- :mod:`.provider` — the :class:`MiniMaxProvider` that ties them together.

Registered through the ``atelier`` entry-point group as ``minimax``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from atelier_core import Provider, hookimpl

from .models import IMAGE_01, IMAGE_01_LIVE, MODELS
from .provider import MiniMaxProvider
from .settings import HOSTS, MiniMaxSettings, resolve_base_url

__all__ = [
    "HOSTS",
    "IMAGE_01",
    "IMAGE_01_LIVE",
    "MODELS",
    "MiniMaxProvider",
    "MiniMaxSettings",
    "register_providers",
    "resolve_base_url",
]


@hookimpl
def register_providers(register: Callable[[Provider[Any]], None]) -> None:
    """Offer the MiniMax provider (no I/O, no HTTP client yet)."""
    register(MiniMaxProvider())
