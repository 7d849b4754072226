"""Fixtures for the Gemini provider tests.

The plugin is made importable even before the shared venv is re-synced (the editable
install of atelier-gemini is only wired up by ``uv sync``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

try:
    import atelier_gemini  # noqa: F401
except ImportError:  # pragma: no cover - depends on the venv's state
    _SRC = str(Path(__file__).resolve().parents[3] / "providers" / "gemini" / "src")
    sys.path.insert(0, _SRC)
    # The contract imports the plugin in a fresh interpreter too.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [_SRC, os.environ.get("PYTHONPATH")]))

from collections.abc import Iterator

import pytest

from atelier_core import Provider
from atelier_core.testing import FakeUpstream

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gemini_fake import GEMINI_PATH, PREDICT_PATH, gemini_reply, imagen_reply, make_provider


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture
def serving(upstream: FakeUpstream) -> FakeUpstream:
    """The fake answering every model well (queued replies still come first)."""
    upstream.handle("POST", GEMINI_PATH, gemini_reply)
    upstream.handle("POST", PREDICT_PATH, imagen_reply)
    return upstream


@pytest.fixture
def developer(serving: FakeUpstream) -> Iterator[Provider]:
    """Gemini Developer API mode."""
    yield make_provider(serving)


@pytest.fixture
def vertex(serving: FakeUpstream) -> Iterator[Provider]:
    """Vertex AI express mode (vertexai=True with an API key): no ADC needed."""
    yield make_provider(serving, vertexai=True)
