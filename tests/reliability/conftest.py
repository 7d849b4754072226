"""Fixtures shared by the reliability suite: one fault-injecting fake upstream on
127.0.0.1 and one Atelier wired to every real provider through it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from reliability_kit import build_stack

from atelier_core.engine.pipeline import Pipeline
from atelier_core.testing import FakeUpstream


@pytest.fixture(scope="session", autouse=True)
def _sdks_imported() -> None:
    """Import the vendor SDKs once up front: providers import them lazily inside the
    first call, and that import (seconds on a busy machine) must not eat the small
    per-call timeouts these tests use."""
    import google.genai  # noqa: F401
    import openai  # noqa: F401


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    """The fake vendor: queue replies and faults per route, then read ``.requests``."""
    with FakeUpstream() as up:
        yield up


@pytest.fixture
async def stack(tmp_path: Path, upstream: FakeUpstream) -> AsyncIterator[Pipeline]:
    """OpenAI, Gemini, MiniMax and the placeholder, keyed with the canary, aimed at ``upstream``."""
    atelier = build_stack(tmp_path, upstream)
    try:
        yield atelier
    finally:
        await atelier.aclose()
