"""Fixtures for the dalle provider tests: a fake DALL·E-style server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from dalle_support import ImagesServer, make_provider

from atelier_core.testing import FakeUpstream
from atelier_dalle import DalleProvider


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture
def server(upstream: FakeUpstream) -> ImagesServer:
    return ImagesServer(upstream)


@pytest.fixture
def provider_for(upstream: FakeUpstream) -> Callable[..., DalleProvider]:
    """A provider pointed at the fake (``api_key`` and ``base_url`` preset; override freely)."""

    def build(**settings: Any) -> DalleProvider:
        values: dict[str, Any] = {"api_key": "sk-test-dalle", "base_url": f"{upstream.url}/v1", "timeout_s": 5}
        values.update(settings)
        return make_provider(**values)

    return build
