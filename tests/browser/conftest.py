"""Real headless Chromium for the viewer and gallery tests (Debian's ``chromium``).

The fixture installs what is missing on a fresh Debian machine (``apt-get install
chromium`` when running as root; the Python ``playwright`` package comes from the dev
group), launches it with the sandbox flags a container needs, and fails, never skips,
when that is impossible, saying what to install. Screenshots go to
``tmp/artifacts/`` at the repository root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tmp" / "artifacts"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
]


def chromium_path() -> str:
    """Debian's chromium, installed with apt-get when missing (root only)."""
    for candidate in (os.environ.get("ATELIER_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return candidate
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=False, env=env, capture_output=True, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "chromium"], check=False, env=env, capture_output=True, timeout=900
        )
        if Path("/usr/bin/chromium").exists():
            return "/usr/bin/chromium"
    pytest.fail(
        "the browser tests need Chromium: `apt-get install chromium` (Debian), or set "
        "ATELIER_CHROMIUM to a Chromium binary"
    )


@pytest.fixture(scope="session")
def chromium_binary() -> str:
    return chromium_path()


@pytest.fixture
async def browser(chromium_binary: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium_binary, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
