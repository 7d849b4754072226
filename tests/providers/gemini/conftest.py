"""Fixtures for the Gemini provider tests.

The plugin is made importable even before the shared venv is re-synced (the editable
install of atelier-gemini is only wired up by ``uv sync``).
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import atelier_gemini  # noqa: F401
except ImportError:  # pragma: no cover - depends on the venv's state
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "providers" / "gemini" / "src"))
