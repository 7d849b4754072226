"""Store: publish every received image atomically, its sidecar written from the outcome.

The names were planned (and checked) before the call was sent. An image that arrived in
another format than planned keeps its planned name with its real extension; a planned name
taken in the meantime (a race, or the real extension's name) falls back to a
server-chosen name, with a note: an image that was paid for is never thrown away because
of its name. The sidecar holds the same applied values and cost as the result.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import structlog

from atelier_core.engine.mirror import Mirrored, mirror
from atelier_core.engine.outcome import ImageRecord
from atelier_core.media.embed import embed_metadata
from atelier_core.media.outputs import OutputSlot
from atelier_core.media.storage import SavedImage
from atelier_core.plugin.errors import AtelierError, OutputPathError
from atelier_core.plugin.types import ItemFailure

if TYPE_CHECKING:
    from atelier_core.engine.pipeline import Pipeline
    from atelier_core.engine.plan import Plan
    from atelier_core.engine.receive import Received, ReceivedImage

__all__ = ["Stored", "sidecar_metadata", "store"]

log = structlog.get_logger("atelier.router")

OnSaved = Callable[[str], Awaitable[None]]


@dataclass(slots=True)
class Stored:
    records: list[ImageRecord] = field(default_factory=list)
    failures: list[ItemFailure] = field(default_factory=list)
    errors: list[AtelierError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


async def store(pipe: Pipeline, plan: Plan, received: Received, *, on_saved: OnSaved | None = None) -> Stored:
    """Save each received image (worker thread) with its sidecar; failures are kept per image."""
    out = Stored()
    indexed: list[tuple[SavedImage, dict[str, Any]]] = []
    for image in received.images:
        slot = plan.slots[len(out.records)] if plan.slots else None
        metadata = sidecar_metadata(plan, received, image)
        try:
            saved, note = await anyio.to_thread.run_sync(_save, pipe, plan, slot, image, metadata)
        except AtelierError as exc:
            log.error("a received image could not be saved", index=image.index, error=exc.code)
            out.failures.append(ItemFailure(index=image.index, code=exc.code, message=str(exc)))
            out.errors.append(exc)
            continue
        if note:
            out.notes.append(note)
        indexed.append((saved, metadata))
        if on_saved is not None:
            await on_saved(str(saved.path))
        if image.preview is not None:
            pipe.previews.put(str(saved.path), saved.sha256, image.preview)
        mirrored = Mirrored() if pipe.bucket is None else await mirror(pipe.bucket, pipe.store, saved, metadata)
        if mirrored.note:
            out.notes.append(mirrored.note)
        out.records.append(
            ImageRecord(
                path=str(saved.path),
                uri=saved.uri,
                resource_uri=saved.resource_uri,
                width=saved.width,
                height=saved.height,
                format=saved.format,
                bytes=saved.bytes,
                sha256=saved.sha256,
                seed=image.seed,
                revised_prompt=image.revised_prompt,
                sidecar=str(saved.sidecar) if saved.sidecar else None,
                object_uri=mirrored.object_uri,
                url=mirrored.url,
            )
        )
    await _index(pipe, plan, indexed, received.cost.cost_usd)
    return out


async def _index(
    pipe: Pipeline, plan: Plan, saved: list[tuple[SavedImage, dict[str, Any]]], cost_usd: float | None
) -> None:
    """Add the saved images to the image library (lineage from the first input image).
    Never fails the call: the files are saved and paid for."""
    if not saved:
        return
    share = cost_usd / len(saved) if cost_usd is not None else None
    inputs = [image.data for image in plan.request.images]
    library = pipe.library
    try:
        rows = [
            await library.entry_for(
                item, meta, cost_usd=share, inputs=inputs, embedded=bool(meta.get("metadata_embedded"))
            )
            for item, meta in saved
        ]
    except Exception as exc:
        log.warning("image index lookup failed", error=type(exc).__name__)
        return
    await library.record(rows)


def _with_metadata(pipe: Pipeline, image: ReceivedImage, metadata: dict[str, Any]) -> bytes:
    """The bytes to save: provenance inserted (unless switched off; never into C2PA-signed
    bytes). Records in ``metadata`` whether it went in."""
    embedded = False
    data = image.data
    if pipe.settings.library.embed_metadata:
        from atelier_core import __version__

        fields = {**metadata, "created": metadata.get("created_at"), "software": f"Atelier {__version__}"}
        result = embed_metadata(data, image.format, fields, width=image.width, height=image.height)
        data, embedded = result.data, result.embedded
    metadata["metadata_embedded"] = embedded
    return data


def _save(
    pipe: Pipeline, plan: Plan, slot: OutputSlot | None, image: ReceivedImage, metadata: dict[str, Any]
) -> tuple[SavedImage, str | None]:
    """Publish one image; returns it and a note when it did not go where planned."""
    the_store = pipe.store
    note: str | None = None
    data = _with_metadata(pipe, image, metadata)

    def save(target: OutputSlot | None) -> SavedImage:
        return the_store.save(
            data,
            image.format,
            filename=target.filename if target else None,
            planned=target.parts if target else None,
            overwrite=plan.spec.output.overwrite and target is not None,
            metadata=metadata,
            width=image.width,
            height=image.height,
            sidecar=target.sidecar if target else True,
            tag=plan.job_id,
        )

    if slot is None:
        return save(None), None
    if image.format != plan.planned_format:
        moved = slot.for_format(the_store, image.format)
        note = f"{slot.relative} was planned, but the image is {image.format.upper()}: saved as {moved.relative}"
        slot = moved
    try:
        saved = save(slot)
    except OutputPathError as exc:
        # Checked before the call; taken since (or the real extension's name is taken).
        # The image is paid for: keep it under a fresh name rather than lose it.
        saved = save(None)
        note = f"{slot.relative} could not be used ({exc.message}); saved as {saved.relative} instead"
    if slot.sidecar and saved.sidecar is None and note is None:
        note = f"{saved.relative} has no sidecar: a file that is not Atelier's has its name"
    return saved, note


def sidecar_metadata(plan: Plan, received: Received, image: ReceivedImage) -> dict[str, Any]:
    """The sidecar beside each image: the same applied values and cost as the result,
    plus what is needed to reproduce the image."""
    return {
        "model": plan.entry.canonical_id,
        "provider": plan.entry.provider_name,
        "operation": plan.operation.value,
        "prompt": plan.request.prompt,
        "requested": plan.validated.requested,
        "applied": received.applied,
        "index": image.index,
        "seed": image.seed,
        "revised_prompt": image.revised_prompt,
        "request_id": received.request_id,
        "job": plan.job_id,
        "usage": received.usage.model_dump(exclude_none=True) if received.usage else None,
        "cost": received.cost.model_dump(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
