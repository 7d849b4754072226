"""The wings of atelier_core keep their order, and only the MCP wing imports the MCP SDK.

The contracts are in pyproject.toml (``[tool.importlinter]``): plugin < media < state <
engine < mcp < cli (settings, logging and identity below them all), checked by
import-linter over every import, lazy and ``TYPE_CHECKING`` ones included. It runs in its
own process: its command line swaps the standard streams, which must not leak into other
tests' captured output.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports_command; "
            "sys.argv = ['lint-imports', '--no-cache']; lint_imports_command()",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Contracts: 2 kept, 0 broken." in done.stdout, (done.stdout + done.stderr)[-3000:]
    assert done.returncode == 0
