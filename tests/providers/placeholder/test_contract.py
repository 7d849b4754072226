"""The placeholder provider passes the provider contract (it has no safety system)."""

from __future__ import annotations

import pytest

import atelier_placeholder
from atelier_core import Provider
from atelier_core.testing import ProviderContract, configured
from atelier_placeholder import PlaceholderProvider


class TestPlaceholderContract(ProviderContract):
    refusals = False  # draws locally: nothing can refuse

    @pytest.fixture
    def plugin(self) -> object:
        return atelier_placeholder

    @pytest.fixture
    def provider(self) -> Provider:
        return configured(PlaceholderProvider())
