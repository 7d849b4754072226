"""mypy --strict over every Atelier package (the configuration lives in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = [
    "atelier_core",
    "atelier_placeholder",
    "atelier_openai",
    "atelier_dalle",
    "atelier_gemini",
    "atelier_minimax",
]


@pytest.mark.slow
def test_packages_type_check_strictly() -> None:
    args = [sys.executable, "-m", "mypy", "--no-incremental"]
    for package in PACKAGES:
        args += ["-p", package]
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
