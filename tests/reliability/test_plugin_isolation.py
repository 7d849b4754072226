"""Guarantee 12: a broken plugin cannot stop the server or other providers.

Several kinds of breakage at once next to working providers: a hook that raises, a hook registering something that is not
a provider, a provider with an invalid model spec, a provider whose call crashes, and a
provider whose ``aclose`` raises. The server starts, lists the problems, and the healthy
providers keep generating. Import errors of installed plugins are covered through real
entry points in ``tests/test_discovery.py`` and ``test_stdio_purity.py`` (a broken and a
printing plugin next to the built-ins); ``tests/core/test_registry.py`` covers each kind
on its own, strict mode and allow/block lists.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import atelier_placeholder
from atelier_core import Provider, hookimpl
from atelier_core.testing import FakeProvider, Outcome, build_test_atelier, connect, fake_spec

pytestmark = pytest.mark.anyio


class RaisesInRegister:
    @hookimpl
    def register_providers(self, register: Callable[[Provider[Any]], None]) -> None:
        raise RuntimeError("boom while registering")


class RegistersJunk:
    @hookimpl
    def register_providers(self, register: Callable[[Any], None]) -> None:
        register(object())


class BadSpec:
    @hookimpl
    def register_providers(self, register: Callable[[Provider[Any]], None]) -> None:
        register(FakeProvider("badspec", models=[fake_spec("x", n_max=0)]))


class CrashingClose(FakeProvider):
    async def aclose(self) -> None:
        raise RuntimeError("boom while closing")


async def test_broken_plugins_do_not_stop_the_server_or_the_others(tmp_path: Path) -> None:
    crashing = FakeProvider("crashy", script=[Outcome(error=ZeroDivisionError("provider bug"))])
    closing = CrashingClose("closer")
    healthy = FakeProvider("healthy")
    atelier = build_test_atelier(
        tmp_path,
        [
            ("raises", RaisesInRegister()),
            ("junk", RegistersJunk()),
            ("badspec", BadSpec()),
            crashing,
            closing,
            healthy,
            ("placeholder", atelier_placeholder),
        ],
    )
    records = {r.name: r for r in atelier.registry.plugins}
    assert {records[n].status for n in ("raises", "junk", "badspec")} == {"failed"}
    async with connect(atelier) as client:
        listed = await client.call_tool("list_available_models", {})
        data = listed.structured_content or {}
        ids = {m["id"] for m in data["models"]}
        assert {"healthy/fake-image", "closer/fake-image", "crashy/fake-image", "placeholder/placeholder"} <= ids
        problems = {p["name"]: p["error"] for p in data["plugin_problems"]["plugins"]}
        assert "boom while registering" in problems["raises"]
        assert set(problems) == {"raises", "junk", "badspec"}
        crashed = await client.call_tool("generate_image", {"prompt": "x", "model": "crashy/fake-image"})
        text = crashed.content[0].text
        # The error names the plugin and the kind of bug; no traceback, no exception details.
        assert crashed.is_error and "plugin crashy" in text and "ZeroDivisionError" in text
        assert "Traceback" not in text and "provider bug" not in text
        assert "provider bug" not in crashed.content[0].text
        for model in ("healthy/fake-image", "closer/fake-image", "placeholder/placeholder", "crashy/fake-image"):
            result = await client.call_tool("generate_image", {"prompt": "x", "model": model, "size": "256x256"})
            assert not result.is_error, (model, result.content)
    # The server's shutdown survived the provider whose aclose raised.
    assert healthy.closed == 1
