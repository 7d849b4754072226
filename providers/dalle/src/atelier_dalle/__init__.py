"""Atelier provider plugin for the DALL·E image API shape.

OpenAI retired dall-e-2 and dall-e-3 on its own API on 2026-05-12, but the API shape
lives on in Azure OpenAI deployments and OpenAI-compatible self-hosted servers (LocalAI
and similar). This plugin reaches those: generate, edit (with a mask) and variations,
with extra model ids declared in configuration. See docs/providers/dalle.md.

The openai SDK is imported lazily, inside the provider's async methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from atelier_core import Provider, hookimpl

from .models import DALL_E_2, DALL_E_3, ExtraModel
from .provider import DalleProvider
from .settings import DalleSettings

__all__ = ["DALL_E_2", "DALL_E_3", "DalleProvider", "DalleSettings", "ExtraModel", "register_providers"]


@hookimpl
def register_providers(register: Callable[[Provider[Any]], None]) -> None:
    """Offer the DALL·E-shape provider (no I/O, no SDK client here)."""
    register(DalleProvider())
