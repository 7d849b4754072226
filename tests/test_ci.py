"""CI runs exactly the README's commands: .ci/run executes the README's test command."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = "python -m pip install uv && python -m uv run atelier-mcp demo"
TESTS = "python -m pip install uv && python -m uv run pytest"


def code_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.M | re.S)]


def test_readme_gives_the_two_commands_first() -> None:
    blocks = code_blocks((ROOT / "README.md").read_text())
    assert blocks[:2] == [DEMO, TESTS]


def test_ci_script_runs_the_readme_test_command(tmp_path: Path) -> None:
    script = ROOT / ".ci" / "run"
    assert script.stat().st_mode & stat.S_IXUSR
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    # A fake `python` records what CI would run instead of installing anything.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "calls.txt"
    fake = bin_dir / "python"
    fake.write_text(f'#!/bin/sh\necho "python $*" >> "{record}"\n')
    fake.chmod(0o755)
    done = subprocess.run(
        ["bash", str(script)], env={**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin", "CI": "true"},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"+ {TESTS}" in done.stdout
    assert record.read_text().splitlines() == ["python -m pip install uv", "python -m uv run pytest"]


def test_documentation_links_resolve() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to missing {target}"
