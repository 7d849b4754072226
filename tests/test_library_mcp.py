"""The image library through MCP alone: find_images, paged resources/list, metadata
reads, list-changed notifications, the viewer resource, and traversal refused."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError
from PIL import Image

import atelier_placeholder
from atelier_core.mcp.library import FIND_BUDGET_BYTES, VIEWER_URI
from atelier_core.testing.harness import build_test_atelier, connect


def _text(result: Any) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


async def _make(client: Any, prompt: str, **extra: Any) -> dict[str, Any]:
    result = await client.call_tool(
        "generate_image", {"prompt": prompt, "model": "placeholder", "size": "256x256", "return_image": "none", **extra}
    )
    assert not result.is_error, _text(result)
    return result.structured_content


@pytest.mark.parametrize("era", ["auto", "legacy"])
async def test_an_agent_finds_earlier_images_by_words_model_date_and_session(tmp_path: Path, era: str) -> None:
    atelier = build_test_atelier(tmp_path, [atelier_placeholder])
    async with connect(atelier, mode=era) as client:
        fox = await _make(client, "a red fox in deep snow")
        await _make(client, "a lighthouse at night", n=2)
        session = await client.call_tool(
            "edit_session",
            {"action": "start", "prompt": "a harbour at dawn", "model": "placeholder", "size": "256x256"},
        )
        session_id = session.structured_content["session"]["session_id"]
        turn1 = await client.call_tool(
            "edit_session", {"action": "continue", "session_id": session_id, "prompt": "add fishing boats"}
        )
        assert not turn1.is_error

        found = await client.call_tool("find_images", {"query": "fox snow"})
        assert not found.is_error, _text(found)
        images = found.structured_content["images"]
        assert [i["uri"] for i in images] == [fox["images"][0]["resource_uri"]]
        assert images[0]["model"] == "placeholder/placeholder" and images[0]["applied"]["size"] == "256x256"
        assert images[0]["prompt"] == "a red fox in deep snow"

        by_model = await client.call_tool("find_images", {"model": "placeholder"})  # alias resolved
        assert len(by_model.structured_content["images"]) == 5
        today = await client.call_tool("find_images", {"since": "2000-01-01", "until": "2999-12-31"})
        assert len(today.structured_content["images"]) == 5
        none = await client.call_tool("find_images", {"until": "2001-01-01"})
        assert none.structured_content["images"] == [] and "No images match" in _text(none)

        in_session = await client.call_tool("find_images", {"session_id": session_id})
        turns = in_session.structured_content["images"]
        assert [(i["turn"], i["prompt"]) for i in turns] == [(1, "add fishing boats"), (0, "a harbour at dawn")]
        lineage = await client.call_tool("find_images", {"edited_from": turns[1]["uri"]})
        assert [i["uri"] for i in lineage.structured_content["images"]] == [turns[0]["uri"]]
        assert turns[0]["edited_from"] == turns[1]["uri"]

        page1 = await client.call_tool("find_images", {"limit": 2})
        cursor = page1.structured_content["next_cursor"]
        page2 = await client.call_tool("find_images", {"limit": 2, "cursor": cursor})
        page3 = await client.call_tool("find_images", {"limit": 2, "cursor": page2.structured_content["next_cursor"]})
        uris = [i["uri"] for p in (page1, page2, page3) for i in p.structured_content["images"]]
        assert len(uris) == len(set(uris)) == 5 and page3.structured_content["next_cursor"] is None


async def test_bad_filters_get_clear_errors(tmp_path: Path) -> None:
    atelier = build_test_atelier(tmp_path, [atelier_placeholder])
    async with connect(atelier) as client:
        await _make(client, "anything")
        cases = {
            "since": ("last tuesday", "since"),
            "model": ("no/such-model", "model"),
            "provider": ("nobody", "provider"),
            "cursor": ("%%%", "cursor"),
            "edited_from": ("atelier://images/../../etc/passwd.png", "edited_from"),
        }
        for key, (value, named) in cases.items():
            result = await client.call_tool("find_images", {key: value})
            assert result.is_error, key
            text = _text(result)
            assert named in text and ("fix" in text.lower() or "pass" in text), text
        swapped = await client.call_tool("find_images", {"since": "2026-02-01", "until": "2026-01-01"})
        assert swapped.is_error and "swap" in _text(swapped)
        extra = await client.call_tool("find_images", {"prompt": "x"})
        assert extra.is_error


async def test_pages_stay_under_20_kb_even_with_thumbnails(tmp_path: Path) -> None:
    atelier = build_test_atelier(tmp_path, [atelier_placeholder])
    async with connect(atelier) as client:
        for i in range(6):
            await _make(client, f"an intricate scene number {i} " + "with many details " * 60)
        result = await client.call_tool("find_images", {"limit": 100, "thumbnails": True})
        size = len(json.dumps(result.model_dump(mode="json", by_alias=True, exclude_none=True)))
        assert size <= FIND_BUDGET_BYTES
        thumbs = [b for b in result.content if getattr(b, "type", "") == "image"]
        assert thumbs and len(thumbs) == len(result.structured_content["images"])
        rest = await client.call_tool(
            "find_images", {"limit": 100, "thumbnails": True, "cursor": result.structured_content["next_cursor"]}
        )
        total = len(result.structured_content["images"]) + len(rest.structured_content["images"])
        assert total == 6 or rest.structured_content["next_cursor"]


@pytest.mark.parametrize("era", ["auto", "legacy"])
async def test_resources_list_pages_newest_first_and_reads_image_and_metadata(tmp_path: Path, era: str) -> None:
    atelier = build_test_atelier(tmp_path, [atelier_placeholder])
    made: list[str] = []
    async with connect(atelier, mode=era) as client:
        for i in range(3):
            made.append((await _make(client, f"picture {i}"))["images"][0]["resource_uri"])
        first = await client.list_resources()
        uris = [str(r.uri) for r in first.resources]
        assert VIEWER_URI in uris
        images = [u for u in uris if u.startswith("atelier://images/")]
        assert images == list(reversed(made))
        read = await client.read_resource(made[0])
        blob = read.contents[0]
        assert blob.mime_type == "image/png"
        import base64

        data = base64.b64decode(blob.blob)
        with Image.open(io.BytesIO(data)) as image:
            assert image.text["prompt"] == "picture 0"  # type: ignore[attr-defined]
            assert "trainedAlgorithmicMedia" in image.text["XML:com.adobe.xmp"]  # type: ignore[attr-defined]
        meta = await client.read_resource(made[0] + "?meta")
        described = json.loads(meta.contents[0].text)
        assert described["prompt"] == "picture 0" and described["model"] == "placeholder/placeholder"
        assert described["metadata_embedded"] is True and len(described["sha256"]) == 64
        view = await client.read_resource(VIEWER_URI)
        html = view.contents[0].text
        assert view.contents[0].mime_type == "text/html;profile=mcp-app"
        assert (
            "Content-Security-Policy" in html
            and "default-src 'none'" in html
            and "http" not in html.split("<script>")[1].split("postMessage")[0]
        )


async def test_more_than_a_page_of_resources_pages_with_next_cursor(tmp_path: Path) -> None:
    atelier = build_test_atelier(tmp_path, [atelier_placeholder])
    async with connect(atelier) as client:
        for _ in range(6):
            await _make(client, "many", n=10)
        first = await client.list_resources()
        assert first.next_cursor
        second = await client.list_resources(cursor=first.next_cursor)
        images = [str(r.uri) for r in [*first.resources, *second.resources] if str(r.uri).startswith("atelier://")]
        assert len(images) == len(set(images)) == 60 and second.next_cursor is None


async def test_list_changed_is_sent_after_new_images(tmp_path: Path) -> None:
    from mcp.client.session import ClientSession  # noqa: F401  (the handler type below)

    seen: list[str] = []

    async def on_message(message: Any) -> None:
        method = getattr(getattr(message, "root", message), "method", None)
        if method:
            seen.append(method)

    atelier = build_test_atelier(tmp_path, [atelier_placeholder])
    async with connect(atelier, mode="legacy", message_handler=on_message) as client:
        caps = client.initialize_result.capabilities if hasattr(client, "initialize_result") else None
        if caps is not None:
            assert caps.resources is not None and caps.resources.list_changed
        await _make(client, "notify me")
        await client.list_resources()  # a round trip: the notification was sent before the result
    assert "notifications/resources/list_changed" in seen


@pytest.mark.parametrize(
    "uri",
    [
        "atelier://images/../outside.png",
        "atelier://images/%2E%2E/outside.png",
        "atelier://images/..%2Foutside.png",
        "atelier://images//etc/passwd.png",
        "atelier://images/../outside.png?meta",
        "atelier://images/%2e%2e%2foutside.png?meta",
    ],
)
async def test_traversal_through_image_uris_is_refused(tmp_path: Path, uri: str) -> None:
    atelier = build_test_atelier(tmp_path, [atelier_placeholder])
    outside = atelier.store.root.parent / "outside.png"
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    outside.write_bytes(buffer.getvalue())
    async with connect(atelier) as client:
        with pytest.raises(MCPError) as caught:
            await client.read_resource(uri)
        message = str(caught.value).lower()
        assert any(word in message for word in ("unknown resource", "not a valid", "no such image")), message


async def test_image_tools_name_the_viewer_and_plain_clients_see_results_unchanged(tmp_path: Path) -> None:
    from atelier_core.mcp.library import VIEWER_TOOLS

    atelier = build_test_atelier(tmp_path, [atelier_placeholder])
    async with connect(atelier) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        for name in VIEWER_TOOLS:
            assert tools[name].meta == {"ui": {"resourceUri": VIEWER_URI}}, name
        assert tools["get_usage"].meta is None
        result = await client.call_tool(
            "generate_image", {"prompt": "plain", "model": "placeholder", "size": "256x256"}
        )
        kinds = [block.type for block in result.content]
        assert kinds == ["text", "image", "resource_link"]  # what a client without MCP Apps always got
        assert "ui" not in (result.meta or {})
        listing = await client.list_resources()
        view = next(r for r in listing.resources if str(r.uri) == VIEWER_URI)
        assert view.mime_type == "text/html;profile=mcp-app"


async def test_embedding_can_be_switched_off(tmp_path: Path) -> None:
    atelier = build_test_atelier(tmp_path, [atelier_placeholder], library={"embed_metadata": False})
    async with connect(atelier) as client:
        made = await _make(client, "no metadata please")
        path = Path(made["images"][0]["path"])
        with Image.open(path) as image:
            assert "prompt" not in image.text and "XML:com.adobe.xmp" not in image.text  # type: ignore[attr-defined]
        meta = json.loads((await client.read_resource(made["images"][0]["resource_uri"] + "?meta")).contents[0].text)
        assert meta["metadata_embedded"] is False and meta["prompt"] == "no metadata please"


async def test_listen_streams_get_resources_changed_after_new_images(tmp_path: Path) -> None:
    """2026-07-28 era: change events go to subscriptions/listen streams."""
    import anyio

    atelier = build_test_atelier(tmp_path, [atelier_placeholder])
    async with connect(atelier) as client:
        async with client.listen(resources_list_changed=True) as subscription:
            await _make(client, "announce me")
            with anyio.fail_after(10):
                event = await subscription.__anext__()
        assert "resource" in type(event).__name__.lower()


async def test_find_images_on_both_state_backends(tmp_path: Path, state_url: str) -> None:
    """The index lives in the state database: SQLite by default, PostgreSQL by state.url."""
    atelier = build_test_atelier(tmp_path, [atelier_placeholder], state={"url": state_url})
    async with connect(atelier) as client:
        fox = await _make(client, "a sly fox at dusk")
        await _make(client, "a quiet lake")
        found = await client.call_tool("find_images", {"query": "fox", "model": "placeholder"})
        assert [i["uri"] for i in found.structured_content["images"]] == [fox["images"][0]["resource_uri"]]
        listed = await client.list_resources()
        assert sum(str(r.uri).startswith("atelier://images/") for r in listed.resources) == 2
