"""The MiniMax provider passes the core's provider contract against a fake MiniMax."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

import atelier_minimax
from atelier_core import Provider
from atelier_core.testing import FakeUpstream, ProviderContract, configured
from atelier_minimax import MiniMaxProvider

from ._support import KEY, PATH, draw, failure


@pytest.fixture
def contract_upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        up.handle("POST", PATH, draw)
        yield up


class TestMiniMaxContract(ProviderContract):
    @pytest.fixture
    def plugin(self) -> object:
        return atelier_minimax

    @pytest.fixture
    def provider(self, contract_upstream: FakeUpstream) -> Provider:
        return configured(MiniMaxProvider(), api_key=KEY, base_url=contract_upstream.url, timeout_s=10)

    @pytest.fixture
    def refuse(self, contract_upstream: FakeUpstream) -> Callable[[], object]:
        # MiniMax refuses for safety with HTTP 200 and base_resp 1026.
        return lambda: contract_upstream.reply("POST", PATH, json=failure(1026, "input new_sensitive"))
