"""The atelier-mcp command: models, doctor, generate, edit in-process; demo, the progress
display and the terminal hint in subprocesses (the last two on a pseudo-terminal)."""

from __future__ import annotations

import argparse
import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from atelier_core.cli import _parser, main
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


def test_doctor_reports_without_spending(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
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
    code, out, _ = run(
        capsys, "generate", "x", "--model", "placeholder", "--size", "256x256", "--json", "--filename", "cli/fox.png"
    )
    assert code == 0 and json.loads(out)["images"][0]["path"].endswith("cli/fox.png")


def test_generate_refusal_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "generate", "x", "--model", "placeholder", "--size", "999x3")
    assert code == 1 and out == ""
    assert "--size 999x3" in err and "Traceback" not in err


def test_edit_reads_files_from_the_command_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "photo.png").write_bytes(make_image(128, 128))
    (tmp_path / "mask.png").write_bytes(make_mask(128, 128))
    code, out, err = run(
        capsys,
        "edit",
        str(tmp_path / "photo.png"),
        "--prompt",
        "add a hat",
        "--mask",
        str(tmp_path / "mask.png"),
        "--model",
        "placeholder",
    )
    assert code == 0, err
    assert Path(out.strip()).is_file()


@pytest.mark.slow
def test_demo_runs_offline_end_to_end(isolated_env: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "atelier_core", "demo"],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "NOT AI images" in out and "not AI images" in out
    assert "generate_image" in out and "placeholder/placeholder" in out
    paths = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith(("3. generated", "4. edited"))]
    assert len(paths) == 2 and all(Path(p).is_file() for p in paths)
    assert all(Path(p).is_relative_to(isolated_env / "data" / "images") for p in paths)
    assert out.count("inline preview") == 2


# -- help ------------------------------------------------------------------------------------


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    [sub] = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_command_and_option_has_help() -> None:
    parser = _parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helped = {action.dest: action.help for action in sub._choices_actions}
    assert (
        set(helped)
        == set(sub.choices)
        == {"serve", "models", "generate", "edit", "doctor", "usage", "demo", "gallery", "prune"}
    )
    for name, command in sub.choices.items():
        assert helped[name] and command.description, name
        for action in command._actions:
            assert action.help and action.help != argparse.SUPPRESS, f"{name} {action.option_strings or action.dest}"


def test_help_output_shows_every_option_with_its_text(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert "--negative-prompt NEGATIVE_PROMPT\n" in out or "--negative-prompt NEGATIVE_PROMPT " in out
    assert "what to keep out of the picture" in out and "validate and price the call" in out


# -- numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "option", "shown", "allowed"),
    [
        (["usage", "--days", "-3"], "--days", "-3", "1 to 3650 days"),
        (["usage", "--days", "0"], "--days", "0", "1 to 3650 days"),
        (["usage", "--days", "many"], "--days", "'many'", "1 to 3650 days"),
        (["generate", "x", "--n", "0"], "--n", "0", "1 to 100 images"),
        (["generate", "x", "--n", "100000"], "--n", "100000", "1 to 100 images"),
        (["edit", "a.png", "--output-compression", "101"], "--output-compression", "101", "0 to 100"),
        (["generate", "x", "--seed", "-1"], "--seed", "-1", "0 to 4294967295"),
        (["serve", "--http", "--port", "70000"], "--port", "70000", "1 to 65535"),
    ],
)
def test_negative_or_absurd_numbers_are_refused(
    capsys: pytest.CaptureFixture[str], argv: list[str], option: str, shown: str, allowed: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert f"argument {option}: {shown} is not" in err and allowed in err


# -- models, doctor ----------------------------------------------------------------------------


def test_models_table_says_when_sizes_are_cut_short(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models", "--json", "--provider", "placeholder")
    sizes = json.loads(out)["models"][0]["sizes"]
    listed = [*sizes["presets"], *sizes["aspect_ratios"]]
    code, out, _ = run(capsys, "models", "--provider", "placeholder")
    assert code == 0
    [row] = [line for line in out.splitlines() if line.startswith("placeholder/placeholder")]
    assert row.endswith(f"{', '.join(listed[:3])}, … (+{len(listed) - 3} more) + custom WxH")
    assert "atelier-mcp models --json lists every size" in out


def test_doctor_shows_the_placeholder_needs_no_key(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "doctor")
    assert code == 0
    [placeholder] = [line for line in out.splitlines() if line.startswith("  placeholder: {")]
    assert json.loads(placeholder.split(": ", 1)[1])["api_key"] == "not needed"
    [openai] = [line for line in out.splitlines() if line.startswith("  openai: {")]
    assert json.loads(openai.split(": ", 1)[1])["api_key"] == "missing"


# -- settings warnings ---------------------------------------------------------------------------


def test_a_misspelt_config_key_is_warned_with_the_closest_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "atelier.toml"
    config.write_text('defualt_model = "placeholder"\ncolour = "blue"\n')
    monkeypatch.setenv("ATELIER_CONFIG", str(config))
    monkeypatch.setenv("ATELIER_DEFAULT_MODLE", "placeholder")
    monkeypatch.setenv("ATELIER_TEST_SOMETHING", "1")  # a tool's own variable: not a setting, not warned
    code, _, err = run(capsys, "models", "--json")
    assert code == 0
    assert f"{config}: unknown key 'defualt_model' is ignored; did you mean 'default_model'?" in err
    assert f"{config}: unknown key 'colour' is ignored; known keys: " in err
    assert "ATELIER_DEFAULT_MODLE sets nothing and is ignored; did you mean ATELIER_DEFAULT_MODEL?" in err
    assert "ATELIER_TEST_SOMETHING" not in err


def test_known_settings_give_no_warning(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "atelier.toml"
    config.write_text('default_model = "placeholder"\n[storage]\nmax_input_bytes = 1000000\n')
    monkeypatch.setenv("ATELIER_CONFIG", str(config))
    monkeypatch.setenv("ATELIER_LOGGING__LEVEL", "warning")
    code, _, err = run(capsys, "models", "--json")
    assert code == 0 and "warning" not in err


# -- errors in CLI words ---------------------------------------------------------------------------


def test_errors_name_options_and_commands_not_tool_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "generate", "x", "--model", "placehold")
    assert code == 1
    assert "did you mean 'placeholder'" in err and "Run `atelier-mcp models`" in err
    code, _, err = run(capsys, "generate", "x")
    assert code == 1
    assert "--model is required" in err and "pass --model (see `atelier-mcp models`)" in err
    code, _, err = run(capsys, "generate", "x", "--model", "placeholder", "--quality", "ultra")
    assert code == 1 and "--quality ultra is not allowed" in err and "allowed values for --quality" in err
    code, _, err = run(capsys, "generate", "x", "--model", "openai/gpt-image-2")
    assert code == 1 and "OPENAI_API_KEY" in err
    for text in (err,):
        assert "restart the server" not in text
    assert "list_available_models" not in err and "model=" not in err


def test_a_missing_input_file_names_the_file_it_looked_for(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "edit", "nothere.png", "--model", "placeholder", "--prompt", "x")
    assert code == 2 and out == ""
    assert err.strip() == f"atelier-mcp edit: IMAGE nothere.png: no such file (looked for {tmp_path / 'nothere.png'})"
    # A relative path that exists is read from the current folder.
    (tmp_path / "here.png").write_bytes(make_image(64, 64))
    code, out, err = run(capsys, "edit", "here.png", "--model", "placeholder", "--prompt", "x")
    assert code == 0, err
    assert Path(out.strip()).is_file()


# -- terminals ------------------------------------------------------------------------------------


def _read_until(fd: int, needle: bytes, timeout_s: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout_s
    while needle not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the other side closed
                break
            if not chunk:
                break
            seen += chunk
    return seen


def test_no_progress_display_when_stderr_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "generate", "a fox", "--model", "placeholder", "--size", "256x256")
    assert code == 0 and "image(s)" not in err and "\x1b[" not in err


@pytest.mark.slow
def test_progress_display_on_a_terminal(isolated_env: Path) -> None:
    primary, secondary = pty.openpty()
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "atelier_core",
                "generate",
                "a fox",
                "--model",
                "placeholder",
                "--size",
                "2048x2048",
                "--n",
                "3",
            ],
            stderr=secondary,
            stdout=subprocess.PIPE,
            env=dict(os.environ),
            timeout=120,
            check=False,
        )
        os.close(secondary)
        shown = _read_until(primary, b"NOT AI images", 10).decode(errors="replace")
    finally:
        os.close(primary)
    assert done.returncode == 0
    assert len(done.stdout.decode().split()) == 3  # stdout: only the three paths
    assert "generate 3 image(s)" in shown and "%" in shown and "━" in shown


@pytest.mark.slow
def test_bare_start_on_a_terminal_prints_a_one_line_hint(isolated_env: Path) -> None:
    primary, secondary = pty.openpty()
    try:
        with subprocess.Popen(
            [sys.executable, "-m", "atelier_core"],
            stdin=secondary,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=dict(os.environ),
        ) as server:
            assert server.stderr is not None
            hint = _read_until(server.stderr.fileno(), b"\n", 60).decode()
            server.kill()
    finally:
        os.close(primary)
        os.close(secondary)
    first = hint.splitlines()[0]
    assert first.startswith("atelier-mcp: serving MCP over stdio, waiting for an MCP client")
    assert "atelier-mcp demo" in first and "atelier-mcp --help" in first


def test_no_hint_when_a_client_starts_the_server(isolated_env: Path) -> None:
    # An MCP client talks through a pipe: the server must not print anything but MCP and logs.
    done = subprocess.run(
        [sys.executable, "-m", "atelier_core"],
        input=b"",
        capture_output=True,
        env={**os.environ, "ATELIER_LOGGING__LEVEL": "WARNING"},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stdout == b""
    assert b"waiting for an MCP client" not in done.stderr
