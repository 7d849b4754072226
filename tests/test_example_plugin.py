"""The example plugin, installed the way a user installs a third-party provider.

A fresh virtual environment gets atelier-mcp (root project, core, built-in providers)
and examples/atelier-example-provider from local paths; then that environment's
``atelier-mcp`` runs over stdio with the real MCP client, lists the example's models
and generates through it against a fake Pixel Forge on 127.0.0.1. The example's own
test suite (contract included) also runs inside that environment.

uv builds and installs everything; its cache keeps this fast. It tries ``--offline``
first (hermetic) and falls back to the index only for missing build backends.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from atelier_core.testing import FakeUpstream, read_image
from uv_kit import uv_command

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "atelier-example-provider"
INSTALL_TIMEOUT_S = 300


def _run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, **kwargs)


def _bin(venv: Path, name: str) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin") / name


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, float]]:
    """A new virtualenv with atelier-mcp and the example plugin; yields (venv, seconds)."""
    started = time.perf_counter()
    uv = uv_command()
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    made = _run([*uv, "venv", "--quiet", "--python", sys.executable, str(venv)])
    assert made.returncode == 0, made.stderr
    local = [
        str(ROOT),
        str(ROOT / "core"),
        *sorted(str(p) for p in (ROOT / "providers").iterdir() if (p / "pyproject.toml").is_file()),
    ]
    install = [*uv, "pip", "install", "--quiet", "--python", str(_bin(venv, "python")), *local, f"{EXAMPLE}[test]"]
    done = _run([*install, "--offline"])
    if done.returncode != 0:  # a build backend or test dependency not cached yet
        done = _run(install)
    assert done.returncode == 0, f"install failed:\n{done.stderr[-4000:]}"
    yield venv, time.perf_counter() - started


def _fake_pixelforge() -> ModuleType:
    """The example's own fake Pixel Forge (one copy of the fake, used by both suites)."""
    spec = importlib.util.spec_from_file_location("fake_pixelforge", EXAMPLE / "tests" / "fake_pixelforge.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_is_not_a_workspace_member() -> None:
    import tomllib

    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members = root["tool"]["uv"]["workspace"]["members"]
    assert all(not m.startswith("examples") for m in members)
    example = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    assert example["project"]["entry-points"]["atelier"] == {"pixelart": "atelier_pixelart"}
    assert "atelier-pixelart" not in root["project"]["dependencies"]


def test_entry_point_is_installed(fresh_venv: tuple[Path, float]) -> None:
    venv, seconds = fresh_venv
    print(f"fresh environment built in {seconds:.1f} s")
    script = (
        "import importlib.metadata as m, json\n"
        "print(json.dumps(sorted(ep.name for ep in m.entry_points(group='atelier'))))"
    )
    found = _run([str(_bin(venv, "python")), "-c", script])
    assert found.returncode == 0, found.stderr
    assert {"pixelart", "placeholder"} <= set(json.loads(found.stdout))


def test_doctor_and_trace_show_the_plugin(fresh_venv: tuple[Path, float], tmp_path: Path) -> None:
    """The tutorial's debugging commands, in the fresh environment."""
    venv, _ = fresh_venv
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "ATELIER_CONFIG": str(tmp_path / "no-config.toml"),
        "ATELIER_DATA_DIR": str(tmp_path / "data"),
        "ATELIER_PLUGINS__TRACE": "true",
    }
    done = _run([str(_bin(venv, "atelier-mcp")), "doctor"], env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "pixelart: loaded (entry point atelier-pixelart 0.1.0) providers=pixelart" in done.stdout
    assert "pixelart/pixel-1: unavailable: no API key for pixelart: set PIXELART_API_KEY" in done.stdout
    assert "hook call" in done.stderr and "plugin=pixelart" in done.stderr


def test_example_suite_passes_in_the_fresh_environment(fresh_venv: tuple[Path, float]) -> None:
    """The example's tests (translation, calls, the provider contract) as its author runs them."""
    venv, _ = fresh_venv
    done = _run(
        [str(_bin(venv, "python")), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=EXAMPLE,
    )
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
    assert " passed" in done.stdout and "failed" not in done.stdout


async def test_atelier_mcp_lists_and_generates_with_the_plugin(fresh_venv: tuple[Path, float], tmp_path: Path) -> None:
    from mcp import Client, StdioServerParameters
    from mcp.client.stdio import stdio_client

    venv, _ = fresh_venv
    fake = _fake_pixelforge()
    with FakeUpstream() as upstream:
        forge = fake.FakePixelForge(upstream)
        env = {
            "PIXELART_API_KEY": fake.KEY,
            "ATELIER_PROVIDERS__PIXELART__BASE_URL": forge.url,
            "ATELIER_CONFIG": str(tmp_path / "no-config.toml"),
            "ATELIER_DATA_DIR": str(tmp_path / "data"),
            "ATELIER_STORAGE__OUTPUT_DIR": str(tmp_path / "images"),
            "ATELIER_PLUGINS__STRICT": "true",  # a plugin that fails to load stops start-up
        }
        params = StdioServerParameters(command=str(_bin(venv, "atelier-mcp")), args=[], env=env)
        errpath = tmp_path / "server-stderr.log"
        with errpath.open("w") as errlog:
            async with Client(stdio_client(params, errlog=errlog), read_timeout_seconds=60) as client:
                tools = {tool.name for tool in (await client.list_tools()).tools}
                assert {"generate_image", "list_available_models"} <= tools

                listed = await client.call_tool("list_available_models", {"provider": "pixelart"})
                assert not listed.is_error, listed.content
                models = {m["id"]: m for m in listed.structured_content["models"]}
                assert set(models) == {"pixelart/pixel-1", "pixelart/pixel-1-mini"}
                assert models["pixelart/pixel-1"]["available"] is True

                result = await client.call_tool(
                    "generate_image",
                    {
                        "prompt": "a tiny knight",
                        "model": "pixel-art",
                        "size": "128x128",
                        "options": {"palette": "gameboy"},
                    },
                )
                assert not result.is_error, (result.content, errpath.read_text()[-3000:])
        outcome = result.structured_content
        assert outcome["model"] == "pixelart/pixel-1"
        (image,) = outcome["images"]
        saved = Path(image["path"])
        assert saved.is_relative_to(tmp_path / "images")
        info = read_image(saved.read_bytes())
        assert (info.format, info.size) == ("png", "128x128")
        (sent,) = upstream.requests_to("/v1/images$")
        assert sent.json()["palette"] == "gameboy"
        assert sent.headers["authorization"] == f"Bearer {fake.KEY}"
