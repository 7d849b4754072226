"""Atelier provider plugin: Google Gemini native image models and Imagen.

Registered through the ``atelier`` entry-point group. Importing this package does not
import google-genai; the SDK is loaded on the first call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from atelier_core import Provider, hookimpl

from .models import MODELS
from .provider import GeminiProvider, GeminiSettings

__all__ = ["MODELS", "GeminiProvider", "GeminiSettings", "register_providers"]


@hookimpl
def register_providers(register: Callable[[Provider[Any]], None]) -> None:
    """Offer the Gemini provider (no I/O, no SDK import)."""
    register(GeminiProvider())
