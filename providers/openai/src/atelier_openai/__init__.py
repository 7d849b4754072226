"""Atelier provider plugin: OpenAI GPT Image models through the official ``openai`` SDK.

Registered through the ``atelier`` entry-point group like any third-party plugin. The hook
only declares the provider; the SDK is imported inside the provider's async methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from atelier_core import Provider, hookimpl

from .models import CATALOGUE, RETIRED
from .provider import OpenAIProvider
from .settings import OpenAISettings

__all__ = ["CATALOGUE", "RETIRED", "OpenAIProvider", "OpenAISettings", "register_providers"]


@hookimpl
def register_providers(register: Callable[[Provider[Any]], None]) -> None:
    """Offer the OpenAI provider (no I/O, no SDK client)."""
    register(OpenAIProvider())
