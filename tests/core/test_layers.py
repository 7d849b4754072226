"""The wings of atelier_core keep their order, and only the MCP wing imports the MCP SDK.

The contracts are in pyproject.toml (``[tool.importlinter]``): plugin < media < state <
engine < mcp < cli (settings, logging and identity below them all), checked by
import-linter over every import, lazy and ``TYPE_CHECKING`` ones included.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from importlinter.cli import EXIT_STATUS_SUCCESS, lint_imports

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    status = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True)
    report = capsys.readouterr().out
    assert "Contracts: 2 kept, 0 broken." in report, report[-3000:]
    assert status == EXIT_STATUS_SUCCESS
