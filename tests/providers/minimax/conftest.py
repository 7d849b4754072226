"""Fixtures for the MiniMax tests: a fake MiniMax on 127.0.0.1 and providers aimed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from atelier_core.testing import FakeUpstream, configured
from atelier_minimax import MiniMaxProvider

from ._support import KEY


@pytest.fixture(autouse=True)
def _anyio_backend_requested(anyio_backend: str) -> str:
    """Ask for ``anyio_backend`` at collection time.

    The suite marks plain ``async def`` tests for anyio after collection; anyio then
    rebuilds each such item *without* its ``parametrize`` values unless the test already
    depends on ``anyio_backend``. Depending on it here keeps parametrized async tests whole.
    """
    return anyio_backend


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture
async def make_provider(upstream: FakeUpstream) -> AsyncIterator[Callable[..., MiniMaxProvider]]:
    """Build providers pointed at the fake (closed after the test)."""
    made: list[MiniMaxProvider] = []

    def build(**settings: Any) -> MiniMaxProvider:
        settings.setdefault("api_key", KEY)
        settings.setdefault("base_url", upstream.url)
        settings.setdefault("timeout_s", 5.0)
        provider = configured(MiniMaxProvider(), **settings)
        assert isinstance(provider, MiniMaxProvider)
        made.append(provider)
        return provider

    yield build
    for provider in made:
        await provider.aclose()


@pytest.fixture
async def provider(make_provider: Callable[..., MiniMaxProvider]) -> MiniMaxProvider:
    return make_provider()
