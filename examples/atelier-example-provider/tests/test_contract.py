"""Pixel Forge passes Atelier's provider contract: a few lines, every check."""

from __future__ import annotations

from collections.abc import Callable

import atelier_pixelart
import pytest
from atelier_pixelart import PixelArtProvider
from fake_pixelforge import FakePixelForge

from atelier_core import Provider
from atelier_core.testing import ProviderContract


class TestPixelArtContract(ProviderContract):
    @pytest.fixture
    def plugin(self) -> object:
        return atelier_pixelart

    @pytest.fixture
    def provider(self, pixelart: PixelArtProvider) -> Provider:
        return pixelart

    @pytest.fixture
    def refuse(self, forge: FakePixelForge) -> Callable[[], None]:
        return forge.refuse_next
