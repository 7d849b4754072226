"""Receive: what the provider's answers hold, each image decoded once and verified.

:func:`receive` turns the send stage's batches into a :class:`Received`: the usable
images (bytes, decoded format and pixel size, and the preview made from that same
decode), the failures, what may have been billed without a usable image, and the values
the whole call reports (applied parameters with what actually came back, cost, usage).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import structlog

from atelier_core.engine.outcome import CostInfo
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
from atelier_core.plugin.types import ItemFailure, Usage

if TYPE_CHECKING:
    from atelier_core.engine.pipeline import Pipeline
    from atelier_core.engine.plan import Plan
    from atelier_core.engine.registry import ModelEntry
    from atelier_core.engine.send import Sent

__all__ = ["Received", "ReceivedImage", "most_meaningful", "receive"]

log = structlog.get_logger("atelier.router")


@dataclass(slots=True)
class ReceivedImage:
    """One usable image: its bytes and what the one decode found."""

    index: int
    data: bytes
    format: str  # sniffed and decoded: what the bytes are, whatever was asked
    width: int
    height: int
    preview: imaging.Preview | None
    seed: int | None = None
    revised_prompt: str | None = None


@dataclass(slots=True)
class Received:
    """Everything the answers hold, ready for the store and account stages."""

    images: list[ReceivedImage]
    failures: list[ItemFailure]
    errors: list[AtelierError]
    applied: dict[str, Any]
    cost: CostInfo
    usage: Usage | None = None
    texts: list[str] = field(default_factory=list)
    request_id: str | None = None
    notes: list[str] = field(default_factory=list)
    continuation: dict[str, Any] = field(default_factory=dict)  # continues this answer (edit sessions)
    #: Images that may have been billed although nothing usable came back for them
    #: (a timeout after sending, an unusable answer, a corrupt image).
    maybe_billed: int = 0
    #: Charges beyond the images (``ProviderResult.extra_cost_usd``), already in ``cost``.
    extra_usd: float = 0.0


async def receive(pipe: Pipeline, plan: Plan, sent: Sent) -> Received:
    """Decode and verify every returned image once (worker threads); settle the cost."""
    entry = plan.entry
    failures: list[ItemFailure] = []
    errors: list[AtelierError] = []
    usage: Usage | None = None
    texts: list[str] = []
    request_ids: list[str] = []
    applied = dict(plan.validated.applied)
    continuation: dict[str, Any] = {}
    provider_notes: list[str] = []
    provider_cost: float | None = None
    extra_cost = 0.0  # charges beyond the images (the provider's extra_cost_usd)
    pending: list[tuple[int, Any]] = []  # (global index, ProviderImage)
    maybe_billed = 0
    for batch in sent.batches:
        if batch.error is not None:
            errors.append(batch.error)
            if batch.may_be_billed:
                maybe_billed += batch.request.n
            failures.extend(
                ItemFailure(index=batch.start + i, code=batch.error.code, message=str(batch.error))
                for i in range(batch.request.n)
            )
            continue
        result = batch.result
        assert result is not None
        usage = result.usage.merged(usage) if result.usage else usage
        texts.extend(result.texts)
        provider_notes.extend(note for note in result.notes if note not in provider_notes)
        if result.request_id:
            request_ids.append(result.request_id)
        applied.update(result.applied)
        continuation.update(result.continuation)
        if result.cost_usd is not None:
            provider_cost = (provider_cost or 0.0) + result.cost_usd
        extra_cost += result.extra_cost_usd or 0.0
        for failure in result.failures:
            failures.append(failure.model_copy(update={"index": batch.start + failure.index}))
        for local, image in enumerate(result.images[: batch.request.n]):
            pending.append((batch.start + local, image))
        accounted = min(len(result.images), batch.request.n) + len(result.failures)
        for missing in range(accounted, batch.request.n):
            failures.append(
                ItemFailure(
                    index=batch.start + missing,
                    code="missing_image",
                    message=f"{entry.provider_name} returned {len(result.images)} of "
                    f"{batch.request.n} requested image(s) without saying why",
                )
            )
    cap = plan.request.max_image_bytes()
    decoded: list[ReceivedImage | AtelierError | None] = [None] * len(pending)

    async def decode(slot: int, index: int, image: Any) -> None:
        decoded[slot] = await anyio.to_thread.run_sync(
            _decode, pipe, image, index, entry.provider_name, cap, plan.want_preview, limiter=pipe.decode_limiter()
        )

    async with anyio.create_task_group() as group:  # worker threads: the decodes overlap
        for slot, (index, image) in enumerate(pending):
            group.start_soon(decode, slot, index, image)
    images: list[ReceivedImage] = []
    for (index, _image), outcome in zip(pending, decoded, strict=True):
        assert outcome is not None
        if isinstance(outcome, AtelierError):
            log.warning(
                "provider returned an invalid image", provider=entry.provider_name, index=index, error=outcome.code
            )
            failures.append(ItemFailure(index=index, code=outcome.code, message=str(outcome)))
            errors.append(outcome)
            maybe_billed += 1  # the provider made it; it is unusable, not unbilled
        else:
            images.append(outcome)
    failures.sort(key=lambda f: f.index)
    notes = [*provider_notes, *_applied_from_images(applied, plan, images)]
    return Received(
        images=images,
        failures=failures,
        errors=errors,
        applied=applied,
        cost=settle(plan, usage, provider_cost, len(images), extra_cost),
        usage=usage,
        texts=texts,
        request_id=", ".join(dict.fromkeys(request_ids)) or None,
        notes=notes,
        maybe_billed=maybe_billed,
        extra_usd=round(extra_cost, 6),
        continuation=continuation,
    )


def _too_large(size: int, cap: int, provider: str) -> UpstreamProtocolError:
    return UpstreamProtocolError(
        f"{provider} returned {size:,} bytes for one image, more than an image of the requested "
        f"size and format can take ({cap:,} bytes); it was not decoded or saved",
        code="upstream_answer_too_large",
        provider=provider,
        retryable=False,
        fix="do not retry blindly (the call may have been billed); report it to the provider, "
        "or ask for a smaller size",
    )


def _decode(
    pipe: Pipeline, image: Any, index: int, provider: str, cap: int, want_preview: bool = True
) -> ReceivedImage | AtelierError:
    """Fully decode one returned image (a 4K PNG takes a third of a second) and make the
    default preview from the same decode. Errors are returned, not raised.

    First, before anything is decoded, the answer is held to what the request can
    produce (``cap``: :meth:`ImageRequest.max_image_bytes`, requested pixels and format).
    Without a preview to make, a PNG is verified by its structure and checksums
    (:func:`~atelier_core.media.images.check_png_structure`, a fraction of a decode)."""
    if len(image.data) > cap:
        return _too_large(len(image.data), cap, provider)
    if not want_preview and imaging.sniff(image.data) == "png":
        try:
            info = imaging.check_png_structure(
                image.data, max_pixels=pipe.settings.storage.max_input_pixels, provider=provider
            )
        except AtelierError as exc:
            return exc
        return ReceivedImage(
            index=index,
            data=image.data,
            format=info.format,
            width=info.width,
            height=info.height,
            preview=None,
            seed=image.seed,
            revised_prompt=image.revised_prompt,
        )
    try:
        decoded = imaging.decode_image(
            image.data, max_pixels=pipe.settings.storage.max_input_pixels, upstream=True, provider=provider
        )
    except AtelierError as exc:
        return exc
    try:
        info = decoded.info
        return ReceivedImage(
            index=index,
            data=image.data,
            format=info.format,
            width=info.width,
            height=info.height,
            preview=_preview(pipe, decoded, provider),
            seed=image.seed,
            revised_prompt=image.revised_prompt,
        )
    finally:
        decoded.image.close()


def _preview(pipe: Pipeline, decoded: imaging.DecodedImage, provider: str) -> imaging.Preview | None:
    settings = pipe.settings.preview
    try:
        return imaging.make_preview(
            decoded, max_edge=settings.max_edge, max_bytes=settings.max_bytes, fmt=settings.format
        )
    except Exception as exc:  # a preview is a convenience; the MCP layer retries from the file
        log.warning("preview failed", provider=provider, error=type(exc).__name__)
        return None


def _applied_from_images(applied: dict[str, Any], plan: Plan, images: list[ReceivedImage]) -> list[str]:
    """Make ``applied`` say what came back (pixel size, format); a note for each difference."""
    notes: list[str] = []
    if not images:
        return notes
    sizes = sorted({(image.width, image.height) for image in images})
    formats = sorted({image.format for image in images})
    if len(sizes) == 1:
        real = f"{sizes[0][0]}x{sizes[0][1]}"
        said = applied.get("size")
        if said is not None and said != real:
            if isinstance(said, str) and "x" in said:
                notes.append(f"size {said} was asked for; the provider returned {real}")
            applied["size"] = real
        elif said is None and plan.validated.requested.get("size") not in (None, real):
            applied["size"] = real
    else:
        notes.append(
            "the images came back in different sizes: " + ", ".join(f"{w}x{h}" for w, h in sizes) + " (see each image)"
        )
    asked = plan.request.output_format or applied.get("output_format")
    if len(formats) == 1:
        if asked is not None and formats[0] != asked:
            notes.append(
                f"{asked.upper()} was asked for; the provider answered {formats[0].upper()}, "
                "saved under its own extension"
            )
        if "output_format" in applied or asked is not None:
            applied["output_format"] = formats[0]
    else:
        notes.append("the images came back in different formats: " + ", ".join(formats))
    return notes


def settle(
    plan: Plan, usage: Usage | None, provider_cost: float | None, delivered: int, extra: float = 0.0
) -> CostInfo:
    """The cost after the call: provider's figure, else from usage, else the estimate pro rata;
    plus ``extra``, the charges beyond the images (billed whether or not an image came back)."""
    cost = _settle_images(plan, usage, provider_cost, delivered)
    if not extra:
        return cost
    return cost.model_copy(update={"cost_usd": round((cost.cost_usd or 0.0) + extra, 6)})


def _settle_images(plan: Plan, usage: Usage | None, provider_cost: float | None, delivered: int) -> CostInfo:
    entry = plan.entry
    request = plan.request
    quote = plan.cost
    if provider_cost is not None:
        return quote.model_copy(update={"cost_usd": round(provider_cost, 6), "basis": "provider"})
    if usage is not None:
        from_usage = entry.provider.cost_from_usage(usage, request, entry.spec, delivered)
        if from_usage is not None:
            return quote.model_copy(update={"cost_usd": from_usage, "basis": "usage"})
    if quote.estimate_usd is not None:
        images_estimate = quote.estimate_usd - (quote.extra_estimate_usd or 0.0)
        share = images_estimate * delivered / max(1, request.n)
        return quote.model_copy(update={"cost_usd": round(share, 6)})
    return quote


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


def _rank(error: AtelierError) -> int:
    for index, kind in enumerate(ERROR_RANK):
        if isinstance(error, kind):
            return index
    return len(ERROR_RANK)


def most_meaningful(errors: list[AtelierError], entry: ModelEntry, failures: list[ItemFailure]) -> AtelierError:
    """The error to raise when a call produced nothing."""
    if errors:
        return min(errors, key=_rank)
    return UpstreamProtocolError(
        f"{entry.canonical_id} returned no image" + (f" ({failures[0].message})" if failures else ""),
        provider=entry.provider_name,
        fix="try again; if it persists, change the prompt or the model",
    )
