"""The Gemini provider passes the provider contract (Vertex express mode, so that the
Gemini image models and Imagen all run against the fake)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from gemini_fake import GEMINI_PATH, PREDICT_PATH, make_provider

import atelier_gemini
from atelier_core import Provider
from atelier_core.testing import FakeUpstream, ProviderContract


class TestGeminiContract(ProviderContract):
    unpriced = frozenset({"gemini-3.1-flash-lite-image"})  # no published price in our table

    @pytest.fixture
    def plugin(self) -> object:
        return atelier_gemini

    @pytest.fixture
    def provider(self, serving: FakeUpstream) -> Provider:
        return make_provider(serving, vertexai=True)

    @pytest.fixture
    def refuse(self, serving: FakeUpstream) -> Callable[[], object]:
        def refuse_next() -> None:
            serving.reply("POST", GEMINI_PATH, json={"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})
            serving.reply("POST", PREDICT_PATH, json={"predictions": [{"raiFilteredReason": "blocked: violence"}]})

        return refuse_next
