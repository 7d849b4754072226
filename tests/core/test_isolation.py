"""Isolation: nothing a plugin raises stops or wedges the server, and a blocking provider
is named (by the loop watchdog, and by the contract kit)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import atelier_placeholder
from atelier_core import CallContext, ImageRequest, Provider, ProviderResult, hookimpl
from atelier_core.engine import isolation
from atelier_core.engine.registry import build_registry
from atelier_core.settings import Settings
from atelier_core.testing import FakeProvider, build_test_atelier, connect, fake_spec

pytestmark = pytest.mark.anyio


class Doom(BaseException):
    """Neither an Exception nor a system exit: a plugin's own BaseException."""


RAISERS: dict[str, Callable[[], BaseException]] = {
    "SystemExit": lambda: SystemExit(1),
    "KeyboardInterrupt": lambda: KeyboardInterrupt(),
    "Doom": lambda: Doom("the end"),
    "RuntimeError": lambda: RuntimeError("a bug"),
}


class Crashing(FakeProvider):
    def __init__(self, make: Callable[[], BaseException]) -> None:
        super().__init__("crashy", models=[fake_spec("m")])
        self.make = make

    async def generate(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
        await asyncio.sleep(0)
        raise self.make()


@pytest.mark.parametrize("kind", sorted(RAISERS))
async def test_whatever_generate_raises_the_call_fails_and_the_server_keeps_serving(kind: str, tmp_path: Path) -> None:
    atelier = build_test_atelier(tmp_path, [Crashing(RAISERS[kind]), atelier_placeholder])
    async with connect(atelier) as client:
        failed = await asyncio.wait_for(
            client.call_tool("generate_image", {"prompt": "a fox", "model": "crashy/m"}), 20
        )
        assert failed.is_error
        text = " ".join(getattr(c, "text", "") for c in failed.content)
        assert "crashy" in text and "plugin" in text, text
        assert kind.split("(")[0] in text, text
        # The same server still answers: a listing and a real call.
        await asyncio.wait_for(client.list_tools(), 5)
        ok = await asyncio.wait_for(
            client.call_tool("generate_image", {"prompt": "a fox", "model": "placeholder/placeholder"}), 20
        )
        assert not ok.is_error, ok.content


@pytest.mark.parametrize("kind", ["SystemExit", "KeyboardInterrupt", "Doom"])
def test_a_plugin_raising_a_base_exception_at_registration_is_recorded(kind: str) -> None:
    class Plugin:
        @hookimpl
        def register_providers(self, register: Callable[[Provider[Any]], None]) -> None:
            raise RAISERS[kind]()

    registry = build_registry(
        Settings(), plugins=[("evil", Plugin()), ("placeholder", atelier_placeholder)], entry_points=False
    )
    evil, good = registry.plugins
    assert evil.status == "failed" and kind in (evil.error or "")
    assert good.status == "loaded"


def test_a_plugin_calling_sys_exit_at_import_is_recorded_and_traced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = tmp_path / "atelier_exits-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: atelier-exits\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[atelier]\nexits = atelier_exits_mod\n")
    (tmp_path / "atelier_exits_mod.py").write_text("import sys\n\ndef helper():\n    sys.exit(3)\n\nhelper()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    quiet = build_registry(Settings())
    record = next(r for r in quiet.plugins if r.name == "exits")
    assert record.status == "failed" and "SystemExit" in (record.error or "")
    assert record.traceback is None  # tracebacks only under plugins.trace
    assert "placeholder/placeholder" in quiet.models
    traced = build_registry(Settings(plugins={"trace": True}))
    record = next(r for r in traced.plugins if r.name == "exits")
    assert record.traceback is not None
    assert "atelier_exits_mod.py" in record.traceback and "in helper" in record.traceback


class Blocking(FakeProvider):
    def __init__(self, seconds: float) -> None:
        super().__init__("blocky", models=[fake_spec("m")])
        self.seconds = seconds

    async def generate(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
        time.sleep(self.seconds)  # the bug under test: a synchronous wait
        return await super().generate(request, ctx)


async def test_the_watchdog_names_a_provider_that_blocks_the_event_loop(tmp_path: Path) -> None:
    atelier = build_test_atelier(tmp_path, [Blocking(0.8)], plugin_settings={"loop_block_s": 0.3})
    isolation.BLOCKED.clear()
    isolation.BLOCKING.clear()
    async with connect(atelier) as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox", "model": "blocky/m"})
        assert not result.is_error, result.content
    # Named while it blocked (by the watchdog thread), and measured when it let go.
    assert any(label.startswith("blocky") and 0.3 <= seconds < 0.8 for label, seconds in isolation.BLOCKING)
    assert any(step.label.startswith("blocky") and step.seconds >= 0.7 for step in isolation.BLOCKED)


async def test_a_provider_that_behaves_is_not_reported(tmp_path: Path) -> None:
    atelier = build_test_atelier(tmp_path, [FakeProvider("calm", latency_s=0.4)], plugin_settings={"loop_block_s": 0.3})
    isolation.BLOCKED.clear()
    async with connect(atelier) as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox", "model": "calm/fake-image"})
        assert not result.is_error, result.content
    assert not [s for s in isolation.BLOCKED if s.label.startswith("calm")]


def test_doctor_shows_the_traceback_of_a_plugin_that_fails_to_import_under_trace(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    info = tmp_path / "atelier_exits-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: atelier-exits\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[atelier]\nexits = atelier_exits_mod\n")
    (tmp_path / "atelier_exits_mod.py").write_text("def helper():\n    raise SystemExit(3)\n\nhelper()\n")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "ATELIER_PLUGINS__TRACE": "true",
        "ATELIER_CONFIG": str(tmp_path / "none.toml"),
        "ATELIER_DATA_DIR": str(tmp_path / "data"),
        "HOME": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "atelier_core", "doctor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "exits: failed" in done.stdout and "SystemExit" in done.stdout
    assert "atelier_exits_mod.py" in done.stdout and "in helper" in done.stdout
    assert "placeholder: loaded" in done.stdout
