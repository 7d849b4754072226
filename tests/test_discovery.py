"""Plugins installed as distributions are found through the ``atelier`` entry-point group,
exactly like a third-party package: a working one is usable end to end through MCP, a broken
one is reported (list_available_models, doctor) and never takes the server down."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from atelier_core.engine.pipeline import Pipeline
from atelier_core.settings import Settings
from atelier_core.testing.harness import connect

pytestmark = pytest.mark.anyio

GOOD = """
from atelier_core import ModelSpec, Provider, ProviderImage, ProviderResult, SizeRules, hookimpl
from atelier_core.testing import make_image

class Tiny(Provider):
    name = "tiny"
    title = "Tiny third-party provider"
    needs_key = False
    models = (ModelSpec(id="dot", aliases=("tiny-dot",), sizes=SizeRules(presets=("64x64",), default="64x64")),)
    unpriced = frozenset({"dot"})

    async def generate(self, request, ctx):
        return ProviderResult(images=[ProviderImage(data=make_image(64, 64))])

@hookimpl
def register_providers(register):
    register(Tiny())
"""

BROKEN = "import atelier_core\nraise ImportError('needs the frobnicator package')\n"


def install(root: Path, dist: str, module: str, source: str) -> None:
    info = root / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[atelier]\n{module.removeprefix('atelier_')} = {module}\n")
    (root / f"{module}.py").write_text(source)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "site"
    install(root, "atelier-tiny", "atelier_tiny", GOOD)
    install(root, "atelier-frob", "atelier_frob", BROKEN)
    monkeypatch.syspath_prepend(str(root))
    return root


async def test_third_party_plugins_through_mcp(site: Path, tmp_path: Path) -> None:
    atelier = Pipeline.build(Settings(storage={"output_dir": str(tmp_path / "out")}))
    records = {r.name: r for r in atelier.registry.plugins}
    assert records["tiny"].status == "loaded" and records["tiny"].source == "entry point atelier-tiny 1.0"
    assert records["frob"].status == "failed" and "frobnicator" in (records["frob"].error or "")
    assert records["placeholder"].status == "loaded"
    async with connect(atelier) as client:
        listed = await client.call_tool("list_available_models", {})
        data = listed.structured_content or {}
        assert "tiny/dot" in [m["id"] for m in data["models"]]
        problems = {p["name"]: p for p in data["plugin_problems"]["plugins"]}
        assert "frobnicator" in problems["frob"]["error"] and "tiny" not in problems
        result = await client.call_tool("generate_image", {"prompt": "a dot", "model": "tiny-dot"})
        assert not result.is_error, result.content
        assert (result.structured_content or {})["model"] == "tiny/dot"


def test_doctor_and_models_report_the_broken_plugin(site: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    doctor = subprocess.run(
        [sys.executable, "-m", "atelier_core", "doctor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert doctor.returncode == 0, doctor.stderr
    assert "frob: failed" in doctor.stdout and "frobnicator" in doctor.stdout
    assert "tiny: loaded" in doctor.stdout and "tiny/dot: available" in doctor.stdout
    models = subprocess.run(
        [sys.executable, "-m", "atelier_core", "models"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert models.returncode == 0 and "tiny/dot" in models.stdout and "plugin frob: failed" in models.stdout
