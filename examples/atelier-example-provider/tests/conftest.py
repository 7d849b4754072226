from __future__ import annotations

from collections.abc import Iterator

import pytest
from atelier_pixelart import PixelArtProvider
from fake_pixelforge import KEY, FakePixelForge

from atelier_core.testing import FakeUpstream, configured


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture
def forge(upstream: FakeUpstream) -> FakePixelForge:
    """Pixel Forge's endpoints, served by the fake upstream."""
    return FakePixelForge(upstream)


@pytest.fixture
def pixelart(forge: FakePixelForge) -> PixelArtProvider:
    """The provider, configured with a key and pointed at the fake Pixel Forge.

    Async tests close it themselves (``await pixelart.aclose()``), in their own loop;
    the contract suite does that for its checks.
    """
    provider = configured(PixelArtProvider(), api_key=KEY, base_url=forge.url)
    assert isinstance(provider, PixelArtProvider)
    return provider
