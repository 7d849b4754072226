"""The MCP layer through the SDK's in-memory client, in both protocol eras."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp_types import ImageContent, ResourceLink, TextContent
from PIL import Image

import atelier_placeholder
from atelier_core import Provider, hookimpl
from atelier_core.engine.pipeline import CallOutcome, Pipeline
from atelier_core.mcp.app import build_server
from atelier_core.mcp.schema import compact_schema
from atelier_core.settings import Settings
from atelier_core.testing import make_mask

pytestmark = pytest.mark.anyio

TOOLS = {
    "generate_image",
    "edit_image",
    "list_available_models",
    "get_jobs",
    "cancel_job",
    "edit_session",
    "get_usage",
    "health",
    "find_images",
}


class Broken:
    """A plugin whose hook raises: it must show up in diagnostics, not take the server down."""

    @hookimpl
    def register_providers(self, register: Callable[[Provider[Any]], None]) -> None:
        raise RuntimeError("boom in register")


def make_atelier(tmp_path: Path, **settings: Any) -> Pipeline:
    values: dict[str, Any] = {"storage": {"output_dir": str(tmp_path / "out")}}
    values.update(settings)
    return Pipeline.build(
        Settings(**values),
        plugins=[("placeholder", atelier_placeholder), ("broken", Broken())],
        entry_points=False,
    )


@pytest.fixture(params=["auto", "legacy"])
async def client(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Client]:
    server = build_server(make_atelier(tmp_path))
    async with Client(server, mode=request.param) as connected:
        yield connected


def tools_list_bytes(tools: list[Any]) -> int:
    data = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools]
    return len(json.dumps(data, separators=(",", ":")))


async def test_tools_are_listed_small_and_truthfully_annotated(client: Client) -> None:
    tools = (await client.list_tools()).tools
    by_name = {t.name: t for t in tools}
    assert set(by_name) == TOOLS
    size = tools_list_bytes(tools)
    print(f"tools/list for {sorted(by_name)}: {size} bytes")
    assert size < 10 * 1024  # every tool
    image_tools = [by_name[n] for n in ("generate_image", "edit_image", "list_available_models")]
    # What the model reads: hosts keep _meta (the MCP Apps view's URI) for themselves.
    assert tools_list_bytes([t.model_copy(update={"meta": None}) for t in image_tools]) < 5 * 1024
    listing = by_name["list_available_models"].annotations
    assert listing is not None and listing.read_only_hint is True
    for name in ("generate_image", "edit_image"):
        hints = by_name[name].annotations
        # readOnlyHint false is the protocol default, so it is left out (bytes in every tools/list)
        assert hints is not None and not hints.read_only_hint and hints.open_world_hint is True
        schema = by_name[name].input_schema
        text = json.dumps(schema)
        assert '"null"' not in text and "anyOf" not in text and '"title"' not in text
        assert by_name[name].output_schema is not None
    assert by_name["generate_image"].input_schema["required"] == ["prompt"]
    assert by_name["edit_image"].input_schema["required"] == ["images"]
    props = by_name["generate_image"].input_schema["properties"]
    assert props["return_image"]["enum"] == ["preview", "full", "none"]
    assert {
        "size",
        "aspect_ratio",
        "resolution",
        "quality",
        "n",
        "output_format",
        "output_compression",
        "background",
        "seed",
        "negative_prompt",
        "style",
        "options",
        "filename",
        "overwrite",
        "dry_run",
    } <= set(props)


def test_compact_schema_keeps_meaning() -> None:
    schema = {
        "title": "Args",
        "type": "object",
        "properties": {
            "a": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None, "title": "A", "description": "d"},
            "b": {"anyOf": [{"type": "string"}, {"type": "integer"}], "title": "B"},
            "c": {"type": "object", "additionalProperties": True},
            "title": {"type": "string", "title": "Title"},
        },
        "required": ["b"],
    }
    assert compact_schema(schema) == {
        "type": "object",
        "properties": {
            "a": {"type": "string", "description": "d"},
            "b": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "c": {"type": "object"},
            "title": {"type": "string"},
        },
        "required": ["b"],
    }


async def _generate(client: Client, **args: Any) -> Any:
    result = await client.call_tool("generate_image", {"prompt": "a lighthouse", "model": "placeholder", **args})
    assert not result.is_error, result.content
    return result


async def test_generate_returns_preview_link_and_structured_outcome(client: Client, tmp_path: Path) -> None:
    result = await _generate(client, size="1024x1024")
    text, image, link = result.content
    assert isinstance(text, TextContent) and "placeholder/placeholder" in text.text
    assert isinstance(image, ImageContent) and image.mime_type == "image/webp"  # has alpha: auto = WebP
    preview = base64.b64decode(image.data)
    assert len(preview) <= 150_000
    with Image.open(io.BytesIO(preview)) as shown:
        assert max(shown.size) <= 512
    assert isinstance(link, ResourceLink) and link.uri.startswith("atelier://images/")
    outcome = CallOutcome.model_validate(result.structured_content)
    (record,) = outcome.images
    assert record.resource_uri == link.uri and (record.width, record.height) == (1024, 1024)
    assert Path(record.path).is_relative_to((tmp_path / "out").resolve())
    assert record.path in text.text

    read = await client.read_resource(link.uri)
    (contents,) = read.contents
    assert contents.mime_type == "image/png"
    blob = base64.b64decode(contents.blob)  # type: ignore[union-attr]
    assert hashlib.sha256(blob).hexdigest() == record.sha256


async def test_edit_with_mask_through_a_previous_resource_uri(client: Client, tmp_path: Path) -> None:
    first = await _generate(client, size="256x256")
    uri = CallOutcome.model_validate(first.structured_content).images[0].resource_uri
    mask = tmp_path / "out" / "mask.png"
    mask.write_bytes(make_mask(256, 256))
    result = await client.call_tool(
        "edit_image", {"prompt": "add a boat", "images": [uri], "mask": str(mask), "model": "placeholder"}
    )
    assert not result.is_error, result.content
    outcome = CallOutcome.model_validate(result.structured_content)
    assert outcome.operation == "edit" and outcome.applied["mask"] is True
    variation = await client.call_tool("edit_image", {"images": [uri], "model": "placeholder"})
    assert not variation.is_error
    assert CallOutcome.model_validate(variation.structured_content).operation == "variation"


async def test_return_image_none_and_full(client: Client) -> None:
    none = await _generate(client, size="256x256", return_image="none")
    assert [block.type for block in none.content] == ["text", "resource_link"]
    full = await _generate(client, size="256x256", return_image="full")
    image = full.content[1]
    assert isinstance(image, ImageContent) and image.mime_type == "image/png"
    outcome = CallOutcome.model_validate(full.structured_content)
    assert hashlib.sha256(base64.b64decode(image.data)).hexdigest() == outcome.images[0].sha256


async def test_full_image_over_the_inline_limit_is_downscaled_and_said_so(tmp_path: Path) -> None:
    atelier = make_atelier(tmp_path, preview={"max_full_inline_bytes": 8_000})
    async with Client(build_server(atelier)) as client:
        result = await _generate(client, size="512x512", return_image="full", style="dots")
    text, image = result.content[0], result.content[1]
    assert isinstance(image, ImageContent) and len(base64.b64decode(image.data)) <= 8_000
    assert isinstance(text, TextContent) and "over the inline limit" in text.text


async def test_dry_run_through_the_tool(client: Client, tmp_path: Path) -> None:
    result = await _generate(client, n=3, dry_run=True)
    assert [block.type for block in result.content] == ["text"]
    assert result.structured_content is not None and result.structured_content["dry_run"] is True
    assert "nothing was sent" in result.content[0].text  # type: ignore[union-attr]
    assert not list((tmp_path / "out").rglob("*.png"))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"model": "no-such-model"}, "unknown model"),
        ({"size": "1000x333"}, "size=1000x333"),
        ({"quality": "ultra"}, "quality=ultra"),
        ({"prompt": ""}, "prompt"),
    ],
)
async def test_errors_are_tool_errors_with_clear_text(client: Client, args: dict[str, Any], expected: str) -> None:
    result = await client.call_tool("generate_image", {"prompt": "x", "model": "placeholder", **args})
    assert result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    assert expected in text and "Traceback" not in text


async def test_edit_with_an_input_outside_the_roots_is_refused(client: Client, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(make_mask(64, 64))
    result = await client.call_tool("edit_image", {"prompt": "x", "images": [str(outside)], "model": "placeholder"})
    assert result.is_error and "images[0]" in result.content[0].text  # type: ignore[union-attr]


async def test_unexpected_exceptions_are_generic(tmp_path: Path) -> None:
    atelier = make_atelier(tmp_path)

    async def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("internal detail sk-canary-123")

    atelier.run = explode  # type: ignore[method-assign]
    async with Client(build_server(atelier)) as client:
        result = await client.call_tool("generate_image", {"prompt": "x", "model": "placeholder"})
    assert result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    assert "sk-canary" not in text and "internal detail" not in text and "failed unexpectedly" in text
    assert (result.structured_content or {})["error"]["code"] == "internal_error"


async def test_resource_outside_the_root_or_missing_is_refused(client: Client) -> None:
    from mcp import MCPError

    for uri in ("atelier://images/2026-01-01/nothing.png", "atelier://images/../../etc/passwd.png"):
        with pytest.raises(MCPError):
            await client.read_resource(uri)


async def test_progress_notifications_arrive(client: Client) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    result = await client.call_tool(
        "generate_image",
        {"prompt": "x", "model": "placeholder", "size": "256x256", "n": 2},
        progress_callback=on_progress,
    )
    assert not result.is_error
    assert len(seen) >= 3 and seen[-1][0] == 1.0 and seen[0][1] == 1.0
    assert [p for p, _, _ in seen] == sorted(p for p, _, _ in seen)


async def test_list_available_models_with_filters_and_plugin_problems(client: Client) -> None:
    result = await client.call_tool("list_available_models", {})
    assert not result.is_error
    data = result.structured_content
    assert data is not None
    assert [m["id"] for m in data["models"]] == ["placeholder/placeholder"]
    (broken,) = data["plugin_problems"]["plugins"]
    assert broken["name"] == "broken" and "boom in register" in broken["error"]
    filtered = await client.call_tool("list_available_models", {"capability": "variation", "provider": "placeholder"})
    assert [m["id"] for m in filtered.structured_content["models"]] == ["placeholder/placeholder"]  # type: ignore[index]
    bad = await client.call_tool("list_available_models", {"provider": "nobody"})
    assert bad.is_error and "provider=nobody" in bad.content[0].text  # type: ignore[union-attr]


async def test_a_provider_error_echoing_the_key_is_masked(tmp_path: Path) -> None:
    from atelier_core import CallContext, ImageRequest, ModelSpec, ProviderResult
    from atelier_core.plugin.errors import AuthenticationError

    secret = "sk-leaky-secret-4242424242"

    class Leaky(Provider):
        name = "leaky"
        models = (ModelSpec(id="m"),)
        unpriced = frozenset({"m"})

        async def generate(self, request: ImageRequest, ctx: CallContext) -> ProviderResult:
            raise AuthenticationError(f"Incorrect API key provided: {secret}", fix=f"replace {secret}")

    class LeakyPlugin:
        @hookimpl
        def register_providers(self, register: Callable[[Provider[Any]], None]) -> None:
            register(Leaky())

    atelier = Pipeline.build(
        Settings(storage={"output_dir": str(tmp_path / "out")}, providers={"leaky": {"api_key": secret}}),
        plugins=[("leaky", LeakyPlugin())],
        entry_points=False,
    )
    async with Client(build_server(atelier, configure_logs=False)) as client:
        result = await client.call_tool("generate_image", {"prompt": "x", "model": "leaky/m"})
    assert result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    assert "Incorrect API key provided" in text and secret not in text and "[REDACTED]" in text
