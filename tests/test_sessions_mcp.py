"""Edit sessions through MCP (in-memory client, both protocol eras), across a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp_types import ImageContent, ResourceLink

import atelier_placeholder
from atelier_core.testing.fakes import FakeProvider, fake_spec
from atelier_core.testing.harness import build_test_atelier, connect


def _text(result: Any) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


@pytest.mark.parametrize("era", ["auto", "legacy"])
async def test_session_lifecycle_through_mcp(tmp_path: Path, era: str) -> None:
    other = FakeProvider("other", models=[fake_spec("editor")])
    atelier = build_test_atelier(tmp_path, [atelier_placeholder, other])
    async with connect(atelier, mode=era) as client:
        started = await client.call_tool(
            "edit_session",
            {"action": "start", "prompt": "a harbour at dawn", "model": "placeholder", "size": "256x256"},
        )
        assert not started.is_error, _text(started)
        session_id = started.structured_content["session"]["session_id"]
        assert session_id.startswith("ses_") and len(session_id) > 20
        assert any(isinstance(b, ImageContent) for b in started.content)
        assert any(isinstance(b, ResourceLink) for b in started.content)

        turn1 = await client.call_tool(
            "edit_session", {"action": "continue", "session_id": session_id, "prompt": "add boats"}
        )
        assert not turn1.is_error and turn1.structured_content["turn"]["parent"] == 0
        turn2 = await client.call_tool(
            "edit_session",
            {"action": "continue", "session_id": session_id, "prompt": "make it night", "model": "other/editor"},
        )
        assert turn2.structured_content["outcome"]["model"] == "other/editor"
        branch = await client.call_tool(
            "edit_session",
            {
                "action": "continue",
                "session_id": session_id,
                "prompt": "snow instead",
                "from_turn": 1,
                "model": "placeholder",
            },
        )
        assert branch.structured_content["turn"]["parent"] == 1

        history = await client.call_tool("edit_session", {"action": "history", "session_id": session_id})
        turns = history.structured_content["turns"]
        assert [t["parent"] for t in turns] == [None, 0, 1, 1]
        assert [t["model"] for t in turns][1:] == ["placeholder/placeholder", "other/editor", "placeholder/placeholder"]
        links = [b for b in history.content if isinstance(b, ResourceLink)]
        assert len(links) == 4
        read = await client.read_resource(links[0].uri)
        assert read.contents

        listing = await client.call_tool("edit_session", {"action": "list"})
        assert session_id in _text(listing)
        ended = await client.call_tool("edit_session", {"action": "end", "session_id": session_id})
        assert "ended" in _text(ended)
        again = await client.call_tool("edit_session", {"action": "continue", "session_id": session_id, "prompt": "x"})
        assert again.is_error and "has ended" in _text(again)


async def test_errors_are_clear_tool_errors(tmp_path: Path) -> None:
    gen_only = FakeProvider("gen", models=[fake_spec("draw", operations=frozenset({"generate"}), input_images=None)])
    atelier = build_test_atelier(tmp_path, [atelier_placeholder, gen_only])
    async with connect(atelier) as client:
        unknown = await client.call_tool(
            "edit_session", {"action": "continue", "session_id": "ses_missing", "prompt": "x"}
        )
        assert unknown.is_error and "unknown session" in _text(unknown)
        missing = await client.call_tool("edit_session", {"action": "continue", "prompt": "x"})
        assert missing.is_error and "session_id" in _text(missing)
        started = await client.call_tool(
            "edit_session", {"action": "start", "prompt": "p", "model": "placeholder", "size": "256x256"}
        )
        session_id = started.structured_content["session"]["session_id"]
        no_edit = await client.call_tool(
            "edit_session", {"action": "continue", "session_id": session_id, "prompt": "x", "model": "gen/draw"}
        )
        assert no_edit.is_error and "cannot edit" in _text(no_edit)


async def test_sessions_survive_a_server_restart(tmp_path: Path) -> None:
    first = build_test_atelier(tmp_path, [atelier_placeholder])
    async with connect(first) as client:
        started = await client.call_tool(
            "edit_session", {"action": "start", "prompt": "p", "model": "placeholder", "size": "256x256"}
        )
        session_id = started.structured_content["session"]["session_id"]
    second = build_test_atelier(tmp_path, [atelier_placeholder])  # same data dir, new process state
    async with connect(second) as client:
        resumed = await client.call_tool(
            "edit_session", {"action": "continue", "session_id": session_id, "prompt": "after restart"}
        )
        assert not resumed.is_error, _text(resumed)
        assert resumed.structured_content["session"]["turns"] == 2


async def test_a_long_history_is_a_bounded_reply_with_thumbnails_made_once(tmp_path: Path) -> None:
    from atelier_core.mcp.session_tools import HISTORY_INLINE_BYTES

    atelier = build_test_atelier(tmp_path, [atelier_placeholder])
    async with connect(atelier) as client:
        started = await client.call_tool(
            "edit_session",
            {
                "action": "start",
                "prompt": "a harbour",
                "model": "placeholder",
                "size": "1024x1024",
                "return_image": "none",
            },
        )
        session_id = started.structured_content["session"]["session_id"]
        for turn in range(11):
            await client.call_tool(
                "edit_session",
                {"action": "continue", "session_id": session_id, "prompt": f"change {turn}", "return_image": "none"},
            )
        first = await client.call_tool("edit_session", {"action": "history", "session_id": session_id})
        made = atelier.thumbnails.made
        again = await client.call_tool("edit_session", {"action": "history", "session_id": session_id})
    for reply in (first, again):
        inline = [b for b in reply.content if isinstance(b, ImageContent)]
        assert inline and sum(len(b.data) for b in inline) <= HISTORY_INLINE_BYTES
        assert len([b for b in reply.content if isinstance(b, ResourceLink)]) == 12  # every turn linked
    assert made >= 1 and atelier.thumbnails.made == made  # the second history made none
    assert [b.data for b in again.content if isinstance(b, ImageContent)] == [
        b.data for b in first.content if isinstance(b, ImageContent)
    ]
