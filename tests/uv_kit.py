"""How tests find uv: the one running them (``uv run`` sets ``UV``), else uv on PATH or as a module.

Every uv a test starts trusts the machine's certificate store, as the README's commands do
(``uv run --system-certs``): the flag is not inherited by child processes, and behind a
TLS-inspecting proxy uv's own roots fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def uv_command() -> list[str]:
    return [*_uv(), "--system-certs"]


def _uv() -> list[str]:
    running = os.environ.get("UV")
    if running and os.path.isfile(running):
        return [running]
    found = shutil.which("uv")
    if found:
        return [found]
    for python in ("python3", "python"):
        exe = shutil.which(python)
        if exe and subprocess.run([exe, "-m", "uv", "--version"], capture_output=True, check=False).returncode == 0:
            return [exe, "-m", "uv"]
    pytest.fail("uv is needed to build packages and fresh environments: run the tests with `uv run pytest`")
