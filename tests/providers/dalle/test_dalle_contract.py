"""The core's provider contract, run against the dalle provider and a fake server.

Named test_dalle_contract.py (not test_contract.py): test folders here are not packages,
so module basenames must be unique across the suite.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from dalle_support import ImagesServer

import atelier_dalle
from atelier_core import Provider
from atelier_core.testing import ProviderContract, configured
from atelier_dalle import DalleProvider


class TestDalleContract(ProviderContract):
    @pytest.fixture
    def plugin(self) -> object:
        return atelier_dalle

    @pytest.fixture
    def provider(self, server: ImagesServer) -> Provider:
        # Answers in base64, as the provider asks by default (the contract's context
        # cannot download; URL answers are covered in test_dalle_wire / test_dalle_router).
        return configured(DalleProvider(), api_key="sk-contract", base_url=f"{server.up.url}/v1", timeout_s=5)

    @pytest.fixture
    def refuse(self, server: ImagesServer) -> Callable[[], object]:
        return server.refuse_next
