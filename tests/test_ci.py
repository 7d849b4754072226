"""CI runs exactly the README's commands, and users get the runtime only.

.ci/run itself runs both commands verbatim under ``env -i`` with the distribution's python3
(a stock machine's environment); these tests pin what it runs and what users are told to run.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UV = "python3 -m venv --without-pip .uv && python3 -m pip --python .uv/bin/python install -q uv"
DEMO = f"{UV} && .uv/bin/uv run --system-certs --no-dev atelier-mcp demo"
TESTS = f"{UV} && .uv/bin/uv run --system-certs pytest"


def code_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)]


def test_readme_gives_the_two_commands_first() -> None:
    blocks = code_blocks((ROOT / "README.md").read_text())
    assert blocks[:2] == [DEMO, TESTS]


def test_ci_script_runs_the_readme_commands_as_written() -> None:
    script = ROOT / ".ci" / "run"
    assert script.stat().st_mode & stat.S_IXUSR
    done = subprocess.run(["bash", str(script), "--print"], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.splitlines() == [DEMO, TESTS]


def test_ci_script_has_no_workaround_the_readme_does_not_show() -> None:
    text = (ROOT / ".ci" / "run").read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    # No `python` shim, no PEP 668 override, no uv setting: the commands run under `env -i`.
    for workaround in ("python()", "PIP_BREAK_SYSTEM_PACKAGES", "export UV_", "export PIP_"):
        assert workaround not in text, workaround
    assert 'env -i PATH=/usr/bin:/bin HOME="${home}"' in text


def launch_args(server: dict[str, object]) -> list[str]:
    command, args = server["command"], server["args"]
    assert isinstance(command, str) and isinstance(args, list)
    return [command, *map(str, args)]


def test_client_configs_start_the_runtime_only() -> None:
    configs = {
        "config/claude_desktop_config.json": "mcpServers",
        "config/cursor-mcp.json": "mcpServers",
        "config/vscode-mcp.json": "servers",
    }
    for name, key in configs.items():
        server = json.loads((ROOT / name).read_text())[key]["atelier"]
        assert launch_args(server) == [
            "/absolute/path/to/atelier/.uv/bin/uv",
            "--directory",
            "/absolute/path/to/atelier",
            "run",
            "--no-dev",
            "atelier-mcp",
        ], name
    for page in ("config/claude-code.md", "README.md"):
        lines = [line for line in (ROOT / page).read_text().splitlines() if "claude mcp add atelier -s" in line]
        assert lines and all(" run --no-dev atelier-mcp" in line for line in lines), page


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.MULTILINE | re.DOTALL)
    return {github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE)}


def test_documentation_links_resolve() -> None:
    """Every relative link in README.md and docs/ points at a file that exists, and at a
    heading of it when it names one."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    broken = []
    for page in pages:
        for target, fragment in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            linked = (page.parent / target) if target else page
            if not linked.exists():
                broken.append(f"{page.relative_to(ROOT)} links to missing {target}")
            elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
                broken.append(f"{page.relative_to(ROOT)} links to {target or page.name}#{fragment}: no such heading")
    assert not broken, "\n".join(broken)
