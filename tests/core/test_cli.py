"""The atelier-mcp command: models, doctor, generate, edit in-process; demo in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from atelier_core.cli import main
from atelier_core.logging import reset_logging
from atelier_core.testing import make_image, make_mask


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    yield None
    reset_logging()  # main() configures process-wide logging; leave none behind


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_models_json_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models", "--json", "--provider", "placeholder")
    assert code == 0
    data = json.loads(out)
    assert [m["id"] for m in data["models"]] == ["placeholder/placeholder"]
    code, out, _ = run(capsys, "models")
    assert code == 0
    assert "placeholder/placeholder" in out and "yes" in out
    assert "OPENAI_API_KEY" in out  # why the OpenAI models are unavailable


def test_models_with_a_bad_filter_fails_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "models", "--provider", "nobody")
    assert code == 1 and out == "" and "provider=nobody" in err


def test_doctor_reports_without_spending(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                         isolated_env: Path) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-doctor-secret-123456")
    code, out, _ = run(capsys, "doctor")
    assert code == 0
    assert f"output dir:  {isolated_env / 'data' / 'images'} (writable)" in out
    assert "config file:" in out and "not found" in out
    assert "placeholder: loaded" in out
    assert "placeholder/placeholder: available" in out
    assert '"api_key": "set"' in out and "sk-doctor-secret" not in out
    assert '"auth_token": "missing"' in out
    assert not list((isolated_env / "data" / "images").rglob("*.png"))


def test_generate_prints_the_saved_path(capsys: pytest.CaptureFixture[str], isolated_env: Path) -> None:
    code, out, err = run(capsys, "generate", "a fox", "--model", "placeholder", "--size", "256x256", "--n", "2")
    assert code == 0
    paths = [Path(line) for line in out.splitlines()]
    assert len(paths) == 2 and all(p.is_file() for p in paths)
    assert "NOT AI images" in err


def test_generate_dry_run_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "generate", "x", "--model", "placeholder", "--dry-run")
    assert code == 0 and "dry run" in out and "$0.0000" in out
    code, out, _ = run(capsys, "generate", "x", "--model", "placeholder", "--size", "256x256", "--json",
                       "--filename", "cli/fox.png")
    assert code == 0 and json.loads(out)["images"][0]["path"].endswith("cli/fox.png")


def test_generate_refusal_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "generate", "x", "--model", "placeholder", "--size", "999x3")
    assert code == 1 and out == ""
    assert "size=999x3" in err and "Traceback" not in err


def test_edit_reads_files_from_the_command_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "photo.png").write_bytes(make_image(128, 128))
    (tmp_path / "mask.png").write_bytes(make_mask(128, 128))
    code, out, err = run(capsys, "edit", str(tmp_path / "photo.png"), "--prompt", "add a hat",
                         "--mask", str(tmp_path / "mask.png"), "--model", "placeholder")
    assert code == 0, err
    assert Path(out.strip()).is_file()


@pytest.mark.slow
def test_demo_runs_offline_end_to_end(isolated_env: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "atelier_core", "demo"], env=dict(os.environ),
                          capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "NOT AI images" in out and "not AI images" in out
    assert "generate_image" in out and "placeholder/placeholder" in out
    paths = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith(("3. generated", "4. edited"))]
    assert len(paths) == 2 and all(Path(p).is_file() for p in paths)
    assert all(Path(p).is_relative_to(isolated_env / "data" / "images") for p in paths)
    assert out.count("inline preview") == 2
