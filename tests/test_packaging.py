"""Ready to publish: every distribution's metadata, READMEs, licence and the MCP Registry entry.

The slow test builds every wheel and sdist with ``uv build``, checks them with ``twine check``,
reads their metadata back, installs the wheels into a fresh virtual environment with plain pip
and runs ``atelier-mcp demo`` from there.
"""

from __future__ import annotations

import email.parser
import json
import os
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest

from uv_kit import uv_command

ROOT = Path(__file__).resolve().parents[1]
REPO = "https://github.com/atelier-mcp/atelier"
PROJECTS = [ROOT, ROOT / "core", *sorted(p for p in (ROOT / "providers").iterdir() if (p / "pyproject.toml").is_file())]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def project(directory: Path) -> dict[str, Any]:
    table: dict[str, Any] = tomllib.loads((directory / "pyproject.toml").read_text())["project"]
    return table


VERSIONS = {project(d)["name"]: project(d)["version"] for d in PROJECTS}


@pytest.mark.parametrize("directory", PROJECTS, ids=lambda d: d.name)
def test_every_distribution_has_complete_metadata(directory: Path) -> None:
    meta = project(directory)
    assert meta["license"] == "MIT" and meta["license-files"] == ["LICENSE"]
    assert (directory / "LICENSE").read_bytes() == (ROOT / "LICENSE").read_bytes()
    assert meta["authors"] and meta["keywords"] and "mcp" in meta["keywords"]
    assert "Programming Language :: Python :: 3.11" in meta["classifiers"]
    assert any(c.startswith("Development Status ::") for c in meta["classifiers"])
    assert {"Homepage", "Documentation", "Source", "Issues"} <= set(meta["urls"])
    assert all(url.startswith(REPO) for url in meta["urls"].values())
    # Workspace members are required at exactly the version built beside them.
    for requirement in meta["dependencies"]:
        name = re.split(r"[=<>!~ \[;]", requirement)[0]
        if name in VERSIONS:
            assert requirement == f"{name}=={VERSIONS[name]}", requirement


@pytest.mark.parametrize("directory", PROJECTS[1:], ids=lambda d: d.name)
def test_sub_package_readmes_link_only_outside_the_repository(directory: Path) -> None:
    assert project(directory)["readme"] == "README.md"
    text = (directory / "README.md").read_text()
    assert text.startswith(f"# {project(directory)['name']}\n")
    links = LINK.findall(text)
    assert links and all(link.startswith("https://") for link in links), links


def test_server_json_describes_the_pypi_package_and_every_variable() -> None:
    server = json.loads((ROOT / "server.json").read_text())
    root = project(ROOT)
    assert server["version"] == root["version"] and len(server["description"]) <= 100
    assert server["repository"] == {"url": REPO, "source": "github"}
    [package] = server["packages"]
    assert package["registryType"] == "pypi" and package["identifier"] == root["name"]
    assert package["version"] == root["version"] and package["runtimeHint"] == "uvx"
    assert package["transport"] == {"type": "stdio"}
    # Generated from docs/configuration.md: every documented variable is offered.
    current = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "server_json.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert current.returncode == 0, current.stderr
    variables = {v["name"]: v for v in package["environmentVariables"]}
    for documented in (
        "OPENAI_API_KEY",
        "GEMINI_API_KEY",
        "MINIMAX_API_KEY",
        "ATELIER_DEFAULT_MODEL",
        "ATELIER_STORAGE__OUTPUT_DIR",
        "ATELIER_HTTP__AUTH_TOKEN",
        "ATELIER_CONFIG",
    ):
        assert documented in variables, documented
    for name, variable in variables.items():
        assert variable["description"] and variable["isRequired"] is False, name
        secret = bool(re.search(r"API_KEY|TOKEN|SECRET", name))
        assert variable["isSecret"] is secret, name
    # PyPI ownership: the packaged README carries the registry name.
    hook = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["metadata"]["hooks"]
    texts = [fragment.get("text", "") for fragment in hook["fancy-pypi-readme"]["fragments"]]
    assert any(f"mcp-name: {server['name']}" in text for text in texts)


def _run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False, **kwargs)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def wheel_metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(archive.read(name).decode())


@pytest.mark.slow
def test_built_packages_install_with_plain_pip_and_run_the_demo(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    _run([*uv_command(), "build", "--all-packages", "--quiet", "--out-dir", str(dist)], cwd=ROOT)
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    assert len(wheels) == len(sdists) == len(PROJECTS)
    _run([sys.executable, "-m", "twine", "check", "--strict", *map(str, wheels + sdists)])

    for wheel in wheels:
        meta = wheel_metadata(wheel)
        assert meta["License-Expression"] == "MIT" and meta["License-File"] == "LICENSE"
        assert meta.get_all("Classifier") and meta.get_all("Project-URL") and meta["Author"]
        assert meta["Keywords"] and meta["Description-Content-Type"] == "text/markdown"
        for requirement in meta.get_all("Requires-Dist") or []:
            name = re.split(r"[=<>!~ \[;]", requirement)[0]
            if name in VERSIONS:
                assert requirement == f"{name}=={VERSIONS[name]}", requirement
        relative = [link for link in LINK.findall(meta.get_payload()) if "://" not in link and not link.startswith("#")]
        assert not relative, f"{wheel.name}: links that only work in the repository: {relative}"
    for sdist in sdists:
        with tarfile.open(sdist) as archive:
            names = {Path(n).name for n in archive.getnames()}
        assert {"LICENSE", "README.md", "pyproject.toml"} <= names, sdist.name

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    # Our wheels from dist/ only; third-party dependencies from the package index (or pip's cache).
    _run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps", *map(str, wheels)]
    )
    _run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--find-links",
            str(dist),
            f"atelier-mcp=={VERSIONS['atelier-mcp']}",
        ]
    )
    _run([str(python), "-m", "pip", "check"])

    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATELIER_", "VIRTUAL_ENV"))}
    env.update(
        HOME=str(tmp_path / "home"),
        ATELIER_DATA_DIR=str(tmp_path / "data"),
        ATELIER_CONFIG=str(tmp_path / "absent.toml"),
    )
    demo = _run([str(venv / "bin" / "atelier-mcp"), "demo"], env=env, cwd=tmp_path)
    assert "Reminder: these are placeholder drawings, not AI images." in demo.stdout
    saved = [
        Path(line.split(": ", 1)[1]) for line in demo.stdout.splitlines() if re.match(r"\d\. (generated|edited) ", line)
    ]
    assert len(saved) == 2 and all(path.is_file() and path.is_relative_to(tmp_path / "data") for path in saved)
    assert "docs/configuration.md" not in demo.stdout.replace(f"{REPO}/blob/main/docs/configuration.md", "")
