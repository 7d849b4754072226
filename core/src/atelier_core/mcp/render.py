"""A :class:`CallOutcome` as an MCP tool result: text, bounded previews, resource links."""

from __future__ import annotations

import base64
import functools
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread
import structlog
from mcp_types import (
    CallToolResult,
    ImageContent,
    ResourceLink,
    TextContent,
)

from atelier_core.engine.pipeline import CallOutcome, ImageRecord, PreviewCache
from atelier_core.media import images as imaging
from atelier_core.media.thumbnails import Thumbnails
from atelier_core.settings import Settings

log = structlog.get_logger("atelier.server")

ReturnImage = Literal["preview", "full", "none"]


def _summary(outcome: CallOutcome) -> str:
    if outcome.dry_run:
        cost = outcome.cost.estimate_usd
        price = f" Estimated cost: ${cost:.4f}." if cost is not None else " No price known."
        lines = [
            f"Dry run for {outcome.model}: valid; nothing was sent.{price}",
            f"Would apply: {_applied(outcome.applied)}",
        ]
    else:
        count = len(outcome.images)
        lines = [f"{count} image(s) from {outcome.model}."]
        for index, image in enumerate(outcome.images):
            lines.append(f"[{index}] {image.width}x{image.height} {image.format} {image.path} ({image.resource_uri})")
            if image.object_uri:
                lines.append(f"    stored at {image.object_uri}" + (f"; download: {image.url}" if image.url else ""))
            if image.revised_prompt:
                lines.append(f"    revised prompt: {image.revised_prompt}")
        for failure in outcome.failures:
            lines.append(f"[{failure.index}] failed ({failure.code}): {failure.message}")
        if outcome.cost.cost_usd is not None:
            lines.append(f"Cost: ${outcome.cost.cost_usd:.4f} ({outcome.cost.basis}).")
    lines.extend(f"Note: {note}" for note in outcome.notes)
    lines.extend(f"Model said: {text}" for text in outcome.texts[:3])
    return "\n".join(lines)


def _applied(applied: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in applied.items() if k != "model") or "defaults"


def _inline(
    record: ImageRecord, mode: ReturnImage, settings: Settings, thumbnails: Thumbnails | None = None
) -> tuple[ImageContent, str | None]:
    """The inline image for one record (runs in a worker thread)."""
    preview = settings.preview
    if mode == "preview" and thumbnails is not None:
        small = thumbnails.get(
            Path(record.path), max_edge=preview.max_edge, max_bytes=preview.max_bytes, fmt=preview.format
        )
        return ImageContent(type="image", data=base64.b64encode(small.data).decode(), mime_type=small.mime_type), None
    data = Path(record.path).read_bytes()
    if mode == "full" and len(data) <= preview.max_full_inline_bytes:
        return ImageContent(
            type="image", data=base64.b64encode(data).decode(), mime_type=f"image/{record.format}"
        ), None
    if mode == "full":
        small = imaging.make_preview(
            data, max_edge=max(record.width, record.height), max_bytes=preview.max_full_inline_bytes, fmt=preview.format
        )
        note = (
            f"[{record.path}] is {record.bytes:,} bytes, over the inline limit of "
            f"{preview.max_full_inline_bytes:,}; inlined a {small.width}x{small.height} "
            f"{small.mime_type} copy. Read {record.resource_uri} for the original."
        )
    else:
        small = imaging.make_preview(data, max_edge=preview.max_edge, max_bytes=preview.max_bytes, fmt=preview.format)
        note = None
    return ImageContent(type="image", data=base64.b64encode(small.data).decode(), mime_type=small.mime_type), note


async def render(
    outcome: CallOutcome,
    mode: ReturnImage,
    settings: Settings,
    previews: PreviewCache | None = None,
    thumbnails: Thumbnails | None = None,
) -> CallToolResult:
    """A CallOutcome as a tool result: text, inline image(s), resource links, structured data.

    ``previews``: previews the router made while verifying the images; a preview found
    there is used as is (the file is not read and decoded a second time), and kept in
    ``thumbnails`` for later listings (a job collected again, a session's history).
    """
    content: list[Any] = []
    notes: list[str] = []
    blocks: list[Any] = []
    preview = settings.preview
    for record in outcome.images:
        cached = previews.take(record.path, record.sha256) if previews is not None else None
        if cached is not None and thumbnails is not None:
            await anyio.to_thread.run_sync(
                functools.partial(
                    thumbnails.put,
                    Path(record.path),
                    cached,
                    max_edge=preview.max_edge,
                    max_bytes=preview.max_bytes,
                    fmt=preview.format,
                )
            )
        if mode == "preview" and cached is None and thumbnails is not None:
            cached = thumbnails.remembered(
                Path(record.path), max_edge=preview.max_edge, max_bytes=preview.max_bytes, fmt=preview.format
            )
        if mode == "preview" and cached is not None:
            blocks.append(
                ImageContent(type="image", data=base64.b64encode(cached.data).decode(), mime_type=cached.mime_type)
            )
        elif mode != "none":
            try:
                image, note = await anyio.to_thread.run_sync(_inline, record, mode, settings, thumbnails)
                blocks.append(image)
                if note:
                    notes.append(note)
            except Exception as exc:  # a preview is a convenience; the file is what matters
                log.warning("preview failed", path=record.path, error=type(exc).__name__)
                notes.append(f"no preview for {record.path}; read {record.resource_uri}")
        blocks.append(
            ResourceLink(
                type="resource_link",
                uri=record.resource_uri,
                name=Path(record.path).name,
                mime_type=f"image/{record.format}",
                size=record.bytes,
                description=f"{record.width}x{record.height} {record.format}",
            )
        )
    text = _summary(outcome)
    if notes:
        text += "\n" + "\n".join(f"Note: {n}" for n in notes)
    content.append(TextContent(type="text", text=text))
    content.extend(blocks)
    return CallToolResult(content=content, structured_content=outcome.model_dump(mode="json"))
