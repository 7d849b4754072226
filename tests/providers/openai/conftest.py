"""Fixtures for the OpenAI provider tests: a fake OpenAI Images server on 127.0.0.1 and
registries whose provider points the real SDK at it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from openai_support import KEY, RegistryFactory

import atelier_openai
from atelier_core.engine.registry import Registry, build_registry
from atelier_core.settings import Settings
from atelier_core.testing import FakeUpstream


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture
def make_registry(upstream: FakeUpstream) -> RegistryFactory:
    """A registry with only the OpenAI plugin, pointed at the fake (override any setting)."""

    def make(**overrides: Any) -> Registry:
        values: dict[str, Any] = {"api_key": KEY, "base_url": upstream.url + "/v1", "timeout_s": 5.0}
        values.update(overrides)
        values = {k: v for k, v in values.items() if v is not None}
        return build_registry(
            Settings(providers={"openai": values}), plugins=[("openai", atelier_openai)], entry_points=False
        )

    return make
