"""A lean start: tools/list is answered without the registry, the vendor SDKs or Pillow;
they are built in the background right after, so the first call does not wait for them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest
from mcp import Client

import atelier_placeholder
from atelier_core import ModelSpec, Provider, hookimpl
from atelier_core.engine.pipeline import Pipeline
from atelier_core.mcp.app import build_server
from atelier_core.plugin.spec import Operation, SizeRules
from atelier_core.settings import ExplicitSettings

pytestmark = pytest.mark.anyio

WARMED: list[str] = []
BUILT: list[str] = []


class _Warming(Provider):
    name: ClassVar[str] = ""
    needs_key: ClassVar[bool] = False
    unpriced: ClassVar[frozenset[str]] = frozenset({"m"})

    def warm_up(self) -> None:
        WARMED.append(self.name)


class Usable(_Warming):
    name = "usable"
    models = (
        ModelSpec(
            id="m", operations=frozenset({Operation.GENERATE}), sizes=SizeRules(presets=("64x64",), default="64x64")
        ),
    )


class Disabled(_Warming):
    name = "disabled"
    needs_key = True  # and no key: nothing of it can be called, so its SDK can wait
    models = (
        ModelSpec(
            id="m", operations=frozenset({Operation.GENERATE}), sizes=SizeRules(presets=("64x64",), default="64x64")
        ),
    )


class Plugin:
    @hookimpl
    def register_providers(self, register: Callable[[Provider[Any]], None]) -> None:
        BUILT.append("registry")
        register(Usable())
        register(Disabled())


async def _warmed() -> None:
    """Until the warm-up (a worker thread) has run."""
    while not WARMED:
        await anyio.sleep(0.01)


def _pipeline(tmp_path: Path) -> Pipeline:
    settings = ExplicitSettings(data_dir=tmp_path / "data", storage={"output_dir": str(tmp_path / "out")})
    return Pipeline.build(
        settings, plugins=[("warming", Plugin()), ("placeholder", atelier_placeholder)], entry_points=False
    )


async def test_tools_are_listed_before_the_registry_is_built_and_warm_up_follows(tmp_path: Path) -> None:
    WARMED.clear()
    BUILT.clear()
    pipeline = _pipeline(tmp_path)
    server = build_server(pipeline, configure_logs=False)
    assert not pipeline.registry_built and BUILT == []  # building the server built no registry
    async with Client(server, mode="legacy") as client:
        tools = await client.list_tools()
        assert "generate_image" in {t.name for t in tools.tools}
        with anyio.fail_after(10):
            await _warmed()
        assert pipeline.registry_built and BUILT == ["registry"]
        assert WARMED == ["usable"]  # the provider nothing can be called on was not warmed
        listed = await client.call_tool("list_available_models", {})
        assert not listed.is_error
    assert BUILT == ["registry"]  # built once


async def test_a_call_before_the_warm_up_builds_the_registry_itself(tmp_path: Path) -> None:
    BUILT.clear()
    pipeline = _pipeline(tmp_path)
    assert not pipeline.registry_built
    assert pipeline.resolve("usable/m").canonical_id == "usable/m"
    assert pipeline.registry_built and BUILT == ["registry"]
    pipeline.warm_up()
    assert BUILT == ["registry"]
