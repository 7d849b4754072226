"""Guarantee 10: under stdio, stdout carries only MCP messages — across a full flow, with
a badly behaved plugin that prints and warns at import, at registration and while
generating, a broken plugin, Pillow work, and errors. Closing stdin ends the server
cleanly (X2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from stdio_kit import RawStdio, child_env

from atelier_core.testing import make_image

pytestmark = pytest.mark.slow

NOISY = """
import sys, warnings
print("noisy plugin: imported")
warnings.warn("noisy plugin: import-time warning", DeprecationWarning)
from atelier_core import ModelSpec, Provider, ProviderImage, ProviderResult, SizeRules, hookimpl
from atelier_core.testing import make_image

class Noisy(Provider):
    name = "noisy"
    title = "A plugin that prints"
    needs_key = False
    models = (ModelSpec(id="loud", sizes=SizeRules(presets=("64x64",), default="64x64")),)
    unpriced = frozenset({"loud"})

    async def generate(self, request, ctx):
        print("noisy plugin: generating", request.prompt)
        sys.stdout.write("noisy plugin: raw write\\n")
        warnings.warn("noisy plugin: call-time warning", UserWarning)
        return ProviderResult(images=[ProviderImage(data=make_image(64, 64))])

@hookimpl
def register_providers(register):
    print("noisy plugin: registering")
    register(Noisy())
"""

BROKEN = "print('broken plugin: about to fail')\nraise ImportError('needs the frobnicator package')\n"


def _install(root: Path, dist: str, module: str, source: str) -> None:
    info = root / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[atelier]\n{module.removeprefix('atelier_')} = {module}\n")
    (root / f"{module}.py").write_text(source)


def test_every_stdout_line_is_json_rpc(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _install(site, "atelier-noisy", "atelier_noisy", NOISY)
    _install(site, "atelier-frob", "atelier_frob", BROKEN)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    # A palette PNG with transparency: the kind of input that makes Pillow warn.
    from PIL import Image

    Image.new("P", (64, 64)).save(inputs / "palette.png", transparency=0)
    (inputs / "photo.png").write_bytes(make_image(64, 64))
    env = child_env(
        {
            "ATELIER_LOGGING__LEVEL": "DEBUG",
            "ATELIER_STORAGE__INPUT_DIRS": json.dumps([str(inputs)]),
            "PYTHONWARNINGS": "always",
        },
        pythonpath=[site],
    )
    server = RawStdio(env, tmp_path / "stderr.log")
    try:
        init = server.initialize()
        assert init["result"]["serverInfo"]["name"] == "atelier"
        tools = server.request("tools/list")["result"]["tools"]
        assert {"generate_image", "edit_image"} <= {t["name"] for t in tools}
        calls = [
            ("list_available_models", {}),
            ("generate_image", {"prompt": "a loud one", "model": "noisy/loud"}),
            ("generate_image", {"prompt": "a harbour", "model": "placeholder", "size": "256x256"}),
            ("edit_image", {"prompt": "x", "model": "placeholder", "images": [str(inputs / "palette.png")]}),
            (
                "edit_image",
                {
                    "prompt": "x",
                    "model": "placeholder",
                    "images": [str(inputs / "photo.png")],
                    "mask": "data:image/png;base64,AAAA",
                },
            ),
            ("generate_image", {"prompt": "x", "model": "no-such-model"}),
            ("generate_image", {"prompt": "x", "model": "placeholder", "filename": "../escape.png"}),
            ("generate_image", {"prompt": "a job", "model": "placeholder", "size": "256x256", "as_job": True}),
        ]
        answers = [server.request("tools/call", {"name": name, "arguments": args}) for name, args in calls]
        assert answers[1]["result"].get("isError") is not True, answers[1]
        assert answers[2]["result"].get("isError") is not True, answers[2]
        assert answers[5]["result"]["isError"] is True and answers[6]["result"]["isError"] is True
        job = answers[7]["result"]["structuredContent"]["job"]["job_id"]
        server.request("tools/call", {"name": "get_jobs", "arguments": {"job_ids": [job], "wait_s": 10}})
        bad = server.request("tools/call", {"name": "no_such_tool", "arguments": {}})
        assert "error" in bad or bad["result"].get("isError")
    finally:
        code = server.close()
    assert code == 0, (tmp_path / "stderr.log").read_text()[-3000:]
    assert server.stdout_lines, "the server wrote nothing"
    for line in server.stdout_lines:
        message = json.loads(line)  # every line, not just the answers we waited for
        assert isinstance(message, dict) and message.get("jsonrpc") == "2.0", line[:200]
    stderr = (tmp_path / "stderr.log").read_text()
    assert "noisy plugin: generating" in stderr  # what the plugin printed went to stderr
    assert "frobnicator" in stderr  # the broken plugin is reported, on stderr


def test_garbage_and_lone_surrogates_on_stdin_do_not_stop_the_server(tmp_path: Path) -> None:
    """P9 / robustness: a line that is not JSON is dropped, and a JSON string with a lone
    surrogate escape (``"\\ud800"``, which the MCP SDK's strict parser rejects) gets an
    error answer (tests/reliability/test_hostile_input.py); the server keeps answering
    and stdout stays clean."""
    server = RawStdio(child_env(), tmp_path / "stderr.log")
    try:
        server.initialize()
        assert server.process.stdin is not None
        server.process.stdin.write(b"this is not json\n")
        server.process.stdin.write(
            b'{"jsonrpc": "2.0", "id": 99, "method": "tools/call", "params": {"name": '
            b'"generate_image", "arguments": {"prompt": "\\ud800 fox", "model": "placeholder"}}}\n'
        )
        server.process.stdin.flush()
        answer = server.request(
            "tools/call",
            {
                "name": "generate_image",
                "arguments": {"prompt": "still here", "model": "placeholder", "size": "256x256"},
            },
        )
        assert answer["result"].get("isError") is not True, answer
    finally:
        code = server.close()
    assert code == 0
    for line in server.stdout_lines:
        assert json.loads(line).get("jsonrpc") == "2.0", line[:200]
