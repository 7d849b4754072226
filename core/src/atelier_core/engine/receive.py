"""Receive and store: verify every returned image (one decode), save it with its sidecar, settle the cost."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from atelier_core.media import images as imaging
from atelier_core.plugin.errors import (
    AtelierError,
    AuthenticationError,
    ConfigurationError,
    QuotaExceededError,
    RateLimitedError,
    RequestError,
    SafetyRefusalError,
    StorageError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from atelier_core.engine.registry import ModelEntry
from atelier_core.plugin.types import ItemFailure, Usage
import functools
from typing import TYPE_CHECKING
from atelier_core.engine.outcome import CallOutcome, CostInfo, ImageRecord
from atelier_core.engine.plan import Prepared

if TYPE_CHECKING:
    from atelier_core.engine.send import Batch
    from atelier_core.engine.pipeline import Pipeline

log = structlog.get_logger("atelier.router")


# Most meaningful first when every part of a call failed.
ERROR_RANK: tuple[type[AtelierError], ...] = (
    RequestError,
    ConfigurationError,
    AuthenticationError,
    QuotaExceededError,
    SafetyRefusalError,
    RateLimitedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    UpstreamProtocolError,
    StorageError,
    UpstreamError,
)


def error_rank(error: AtelierError) -> int:
    for index, kind in enumerate(ERROR_RANK):
        if isinstance(error, kind):
            return index
    return len(ERROR_RANK)


async def collect(pipe: Pipeline,
    prepared: Prepared,
    batches: list[Batch],
    notes: list[str],
    filename: str | None,
    overwrite: bool,
) -> CallOutcome:
    entry = prepared.entry
    request = prepared.request
    failures: list[ItemFailure] = []
    errors: list[AtelierError] = []
    usage: Usage | None = None
    texts: list[str] = []
    request_ids: list[str] = []
    applied = dict(prepared.validated.applied)
    continuation: dict[str, Any] = {}
    provider_cost: float | None = None
    records: list[ImageRecord] = []
    pending: list[tuple[int, Any]] = []  # (global index, ProviderImage)
    for batch in batches:
        if batch.error is not None:
            errors.append(batch.error)
            failures.extend(
                ItemFailure(index=batch.start + i, code=batch.error.code, message=str(batch.error))
                for i in range(batch.request.n)
            )
            continue
        result = batch.result
        assert result is not None
        usage = result.usage.merged(usage) if result.usage else usage
        texts.extend(result.texts)
        if result.request_id:
            request_ids.append(result.request_id)
        applied.update(result.applied)
        continuation.update(result.continuation)
        if result.cost_usd is not None:
            provider_cost = (provider_cost or 0.0) + result.cost_usd
        for failure in result.failures:
            failures.append(failure.model_copy(update={"index": batch.start + failure.index}))
        for local, image in enumerate(result.images[: batch.request.n]):
            pending.append((batch.start + local, image))
        accounted = min(len(result.images), batch.request.n) + len(result.failures)
        for missing in range(accounted, batch.request.n):
            failures.append(ItemFailure(
                index=batch.start + missing, code="missing_image",
                message=f"{entry.provider_name} returned {len(result.images)} of "
                f"{batch.request.n} requested image(s) without saying why",
            ))
    request_id = ", ".join(dict.fromkeys(request_ids)) or None
    saved_count = 0
    for index, image in pending:
        try:
            decoded = await asyncio.to_thread(functools.partial(verify, pipe), image.data, entry.provider_name)
        except AtelierError as exc:
            log.warning("provider returned an invalid image", provider=entry.provider_name,
                        index=index, error=exc.code)
            failures.append(ItemFailure(index=index, code=exc.code, message=str(exc)))
            errors.append(exc)
            continue
        info = decoded.info
        metadata = sidecar_metadata(pipe, prepared, image, index, request_id, usage)
        name = numbered(filename, saved_count) if filename else None
        # Verified: the file is written while another thread makes the preview from
        # the same decode (both release the GIL for most of their work).
        shrinking = asyncio.ensure_future(asyncio.to_thread(functools.partial(preview_of, pipe), decoded, entry.provider_name))
        try:
            saved = await asyncio.to_thread(
                pipe.store.save, image.data, info.format, filename=name, overwrite=overwrite,
                metadata=metadata, width=info.width, height=info.height,
            )
        except AtelierError as exc:
            failures.append(ItemFailure(index=index, code=exc.code, message=str(exc)))
            errors.append(exc)
            continue
        finally:
            preview = await shrinking  # never raises: a failed preview is None
            decoded.image.close()
        saved_count += 1
        if prepared.on_saved is not None:
            await prepared.on_saved(str(saved.path))
        if preview is not None:
            pipe.previews.put(str(saved.path), saved.sha256, preview)
        records.append(ImageRecord(
            path=str(saved.path), uri=saved.uri, resource_uri=saved.resource_uri,
            width=saved.width, height=saved.height, format=saved.format, bytes=saved.bytes,
            sha256=saved.sha256, seed=image.seed, revised_prompt=image.revised_prompt,
            sidecar=str(saved.sidecar) if saved.sidecar else None,
        ))
    failures.sort(key=lambda f: f.index)
    if not records:
        raise most_meaningful(errors, entry, request.n, failures)
    if failures:
        notes.append(f"{len(records)} of {request.n} image(s) produced; {len(failures)} failed "
                     "(see failures); the saved ones are kept — do not pay for them again")
    cost = settle(pipe, prepared, usage, provider_cost, len(records))
    return CallOutcome(
        model=entry.canonical_id,
        provider=entry.provider_name,
        operation=prepared.operation,
        images=records,
        failures=failures,
        requested=prepared.validated.requested,
        applied=applied,
        notes=notes,
        usage=usage,
        cost=cost,
        texts=texts,
        request_id=request_id,
        elapsed_s=round(time.perf_counter() - prepared.started, 4),
        continuation=continuation,
    )


def verify(pipe: Pipeline, data: bytes, provider: str) -> imaging.DecodedImage:
    """Fully decode a returned image (worker thread: a 4K PNG takes a third of a
    second); raises UpstreamProtocolError when it is not a complete image. The caller
    makes the preview from this decode and closes it."""
    return imaging.decode_image(
        data, max_pixels=pipe.settings.storage.max_input_pixels, upstream=True, provider=provider
    )


def preview_of(pipe: Pipeline, decoded: imaging.DecodedImage, provider: str) -> imaging.Preview | None:
    """The default preview from an existing decode (worker thread); None if it fails."""
    settings = pipe.settings.preview
    try:
        return imaging.make_preview(decoded, max_edge=settings.max_edge,
                                    max_bytes=settings.max_bytes, fmt=settings.format)
    except Exception as exc:  # a preview is a convenience; the MCP layer retries from the file
        log.warning("preview failed", provider=provider, error=type(exc).__name__)
        return None


def settle(pipe: Pipeline, prepared: Prepared, usage: Usage | None, provider_cost: float | None, delivered: int
) -> CostInfo:
    """The cost after the call: provider's figure, else from usage, else the estimate pro rata."""
    entry = prepared.entry
    request = prepared.request
    quote = prepared.cost
    if provider_cost is not None:
        return quote.model_copy(update={"cost_usd": round(provider_cost, 6), "basis": "provider"})
    if usage is not None:
        from_usage = entry.provider.cost_from_usage(usage, request, entry.spec, delivered)
        if from_usage is not None:
            return quote.model_copy(update={"cost_usd": from_usage, "basis": "usage"})
    if quote.estimate_usd is not None:
        share = quote.estimate_usd * delivered / max(1, request.n)
        return quote.model_copy(update={"cost_usd": round(share, 6)})
    return quote


def sidecar_metadata(pipe: Pipeline, prepared: Prepared, image: Any, index: int, request_id: str | None, usage: Usage | None
) -> dict[str, Any]:
    """The sidecar written beside each image: enough to reproduce and account for it."""
    return {
        "model": prepared.entry.canonical_id,
        "provider": prepared.entry.provider_name,
        "operation": prepared.operation.value,
        "prompt": prepared.request.prompt,
        "requested": prepared.validated.requested,
        "applied": prepared.validated.applied,
        "index": index,
        "seed": image.seed,
        "revised_prompt": image.revised_prompt,
        "request_id": request_id,
        "usage": usage.model_dump(exclude_none=True) if usage else None,
        "cost": prepared.cost.model_dump(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def numbered(filename: str, index: int) -> str:
    """``cat.png`` → ``cat.png``, ``cat-2.png``, ``cat-3.png`` for a multi-image call."""
    if index == 0:
        return filename
    path = Path(filename)
    return str(path.with_name(f"{path.stem}-{index + 1}{path.suffix}"))


def most_meaningful(
    errors: list[AtelierError], entry: ModelEntry, n: int, failures: list[ItemFailure]
) -> AtelierError:
    if errors:
        return min(errors, key=error_rank)
    return UpstreamProtocolError(
        f"{entry.canonical_id} returned no image"
        + (f" ({failures[0].message})" if failures else ""),
        provider=entry.provider_name,
        fix="try again; if it persists, change the prompt or the model",
    )
