"""Retention: `atelier-mcp prune` removes the oldest images beyond the limits and never
one that an open edit session still needs; --dry-run only shows what would go; a
retention limit in the settings applies after new images are indexed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

import atelier_placeholder
from atelier_core.cli import main
from atelier_core.testing.harness import build_test_atelier, connect


def _text(result: Any) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


async def _library(tmp_path: Path) -> tuple[list[str], list[str]]:
    """Two direct images and a two-turn open session; returns (direct paths, session paths)."""
    atelier = build_test_atelier(tmp_path, [atelier_placeholder])
    direct: list[str] = []
    async with connect(atelier) as client:
        for prompt in ("old one", "old two"):
            result = await client.call_tool(
                "generate_image", {"prompt": prompt, "model": "placeholder", "size": "256x256", "return_image": "none"}
            )
            direct.append(result.structured_content["images"][0]["path"])
        started = await client.call_tool(
            "edit_session", {"action": "start", "prompt": "kept", "model": "placeholder", "size": "256x256"}
        )
        session_id = started.structured_content["session"]["session_id"]
        turn = await client.call_tool(
            "edit_session", {"action": "continue", "session_id": session_id, "prompt": "kept too"}
        )
        assert not turn.is_error, _text(turn)
        history = await client.call_tool("edit_session", {"action": "history", "session_id": session_id})
    return direct, [t["path"] for t in history.structured_content["turns"]]


def test_prune_dry_run_then_prune_spare_the_open_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    direct, in_session = asyncio.run(_library(tmp_path))
    monkeypatch.setenv("ATELIER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ATELIER_STORAGE__OUTPUT_DIR", str(tmp_path / "images"))
    capsys.readouterr()

    assert main(["prune", "--dry-run", "--max-total-bytes", "1", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["dry_run"] is True and plan["kept_in_use"] == 2
    root = tmp_path / "images"
    assert sorted(str(root / i["path"]) for i in plan["images"]) == sorted(direct)
    assert all(Path(p).exists() for p in direct + in_session)  # a dry run deletes nothing

    assert main(["prune", "--max-total-bytes", "1"]) == 0
    out = capsys.readouterr().out
    assert "2 image(s)" in out and "2 kept because an open session" in out
    assert not any(Path(p).exists() for p in direct)
    assert not any(Path(p + ".json").exists() for p in direct)
    assert all(Path(p).exists() for p in in_session)

    assert sorted(asyncio.run(_prompts(tmp_path))) == ["kept", "kept too"]


async def _prompts(tmp_path: Path) -> list[str]:
    atelier = build_test_atelier(tmp_path, [atelier_placeholder])
    async with connect(atelier) as client:
        found = await client.call_tool("find_images", {})
    return [i["prompt"] for i in found.structured_content["images"]]


def test_prune_without_a_limit_says_how_to_set_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ATELIER_DATA_DIR", str(tmp_path / "data"))
    assert main(["prune", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "--max-total-bytes" in err and "ATELIER_LIBRARY__MAX_TOTAL_BYTES" in err


async def test_a_size_limit_in_the_settings_prunes_after_each_call(tmp_path: Path) -> None:
    atelier = build_test_atelier(tmp_path, [atelier_placeholder], library={"max_total_bytes": 1})
    async with connect(atelier) as client:
        paths = []
        for prompt in ("first", "second", "third"):
            result = await client.call_tool(
                "generate_image", {"prompt": prompt, "model": "placeholder", "size": "256x256", "return_image": "none"}
            )
            paths.append(result.structured_content["images"][0]["path"])
        # Each pass spares the images its call has just returned, and prunes the older ones.
        assert not Path(paths[0]).exists() and not Path(paths[1]).exists() and Path(paths[2]).exists()
        found = await client.call_tool("find_images", {})
        assert [i["prompt"] for i in found.structured_content["images"]] == ["third"]
