"""Atelier provider plugin for Pixel Forge, a (fictional) pixel-art API.

The example third-party plugin: everything a provider needs, nothing more.

- ``models.py``: the models, as data;
- ``settings.py``: the settings class with the API key;
- ``translate.py``: pure functions between Atelier's request/result and the API's JSON;
- ``provider.py``: the provider class and its one async HTTP call;
- this module: the hook that hands the provider to Atelier.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from atelier_core import Provider, hookimpl

from .models import MODELS, PixelArtOptions
from .provider import PixelArtProvider
from .settings import PixelArtSettings

__all__ = ["MODELS", "PixelArtOptions", "PixelArtProvider", "PixelArtSettings", "register_providers"]


@hookimpl
def register_providers(register: Callable[[Provider[Any]], None]) -> None:
    """Offer the Pixel Forge provider. Only declares: no I/O, no client, no SDK import."""
    register(PixelArtProvider())
