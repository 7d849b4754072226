"""The image tools: ``generate_image`` and ``edit_image``.

Each builds an :class:`ImageCall`, plans and prices it, asks first above the spend
threshold, then runs it through the job store (or the pipeline when jobs are off) and
renders the outcome.
"""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from mcp.server.mcpserver import Context
from mcp_types import CallToolResult
from pydantic import Field

from atelier_core.engine.pipeline import CallOutcome, OutputRequest
from atelier_core.mcp.render import ReturnImage, render
from atelier_core.mcp.reporting import ProgressReporter
from atelier_core.mcp.tool_base import ToolsBase
from atelier_core.mcp.tool_texts import (
    AS_JOB_DOC,
    COMPRESSION_DOC,
    IDEMPOTENCY_DOC,
    IMAGES_DOC,
    MASK_DOC,
    MODEL_DOC,
    SAME,
)
from atelier_core.plugin.errors import AtelierError
from atelier_core.plugin.spec import Operation
from atelier_core.plugin.types import ImageCall

log = structlog.get_logger("atelier.server")


class ImageTools(ToolsBase):
    """``generate_image`` and ``edit_image``."""

    __slots__ = ()

    async def _run(
        self,
        ctx: Context,
        call_args: dict[str, Any],
        operation: Operation,
        filename: str | None,
        overwrite: bool,
        return_image: ReturnImage | None,
        dry_run: bool,
        as_job: bool = False,
        idempotency_key: str | None = None,
    ) -> CallToolResult:
        pipeline = self.atelier
        mode: ReturnImage = return_image or pipeline.settings.preview.default
        progress = ProgressReporter(ctx)
        try:
            call = ImageCall(**{k: v for k, v in call_args.items() if v is not None})
            # A repeat of a keyed call finds its earlier job even though its files exist now.
            repeat = (
                idempotency_key is not None and self.jobs is not None and await self.jobs.knows_key(idempotency_key)
            )
            plan = await pipeline.plan(
                call,
                operation,
                output=OutputRequest(filename=filename, overwrite=overwrite),
                require_available=not dry_run,
                check_outputs=not repeat,
            )
            if dry_run:
                return await render(
                    await pipeline.dry_run_outcome(plan),
                    mode,
                    pipeline.settings,
                    pipeline.previews,
                    pipeline.thumbnails,
                )
            plan.want_preview = mode != "none"  # nothing inlined: no preview to make
            if await self._confirm_spend(ctx, plan):
                plan.spec.confirmed = True
            if self.jobs is not None:
                # Through the job machinery: a long call is handed off, never re-sent.
                return await self._run_job(plan, mode, as_job, progress, idempotency_key)
            outcome = await pipeline.run(plan, progress=progress)
        except AtelierError as exc:
            log.info("tool call refused", operation=operation.value, code=exc.code)
            raise
        finally:
            await progress.close()  # every notification goes out before the result
        return await render(outcome, mode, pipeline.settings, pipeline.previews, pipeline.thumbnails)

    async def generate_image(
        self,
        ctx: Context,
        prompt: Annotated[str, Field(description="What to draw.")],
        model: Annotated[str | None, Field(description=MODEL_DOC)] = None,
        size: Annotated[str | None, Field(description="WxH, auto, or W:H.")] = None,
        aspect_ratio: Annotated[str | None, Field(description="W:H, for ratio-based models.")] = None,
        resolution: Annotated[str | None, Field(description="Tier: 1K, 2K, 4K.")] = None,
        quality: Annotated[str | None, Field(description="e.g. low, medium, high.")] = None,
        n: Annotated[int, Field(ge=1, description="Images; each is billed.")] = 1,
        output_format: Annotated[str | None, Field(description="png, jpeg, webp.")] = None,
        output_compression: Annotated[int | None, Field(ge=0, le=100, description=COMPRESSION_DOC)] = None,
        background: Annotated[str | None, Field(description="auto, opaque, transparent.")] = None,
        seed: Annotated[int | None, Field(description="Repeatable results, where supported.")] = None,
        negative_prompt: Annotated[str | None, Field(description="What to avoid.")] = None,
        style: Annotated[str | None, Field(description="A model's named style.")] = None,
        options: Annotated[dict[str, Any] | None, Field(description="Model-specific extras.")] = None,
        images: Annotated[list[str] | None, Field(description="Reference images, where taken.")] = None,
        filename: Annotated[str | None, Field(description="Path under the output dir.")] = None,
        overwrite: Annotated[bool, Field(description="Replace that file.")] = False,
        return_image: Annotated[ReturnImage | None, Field(description="Inline image.")] = None,
        dry_run: Annotated[bool, Field(description="Check and price; send nothing.")] = False,
        as_job: Annotated[bool, Field(description=AS_JOB_DOC)] = False,
        idempotency_key: Annotated[str | None, Field(max_length=200, description=IDEMPOTENCY_DOC)] = None,
    ) -> Annotated[CallToolResult, CallOutcome]:
        args = dict(
            prompt=prompt,
            model=model,
            size=size,
            aspect_ratio=aspect_ratio,
            resolution=resolution,
            quality=quality,
            n=n,
            output_format=output_format,
            output_compression=output_compression,
            background=background,
            seed=seed,
            negative_prompt=negative_prompt,
            style=style,
            options=options,
            images=images,
        )
        return await self._run(
            ctx, args, Operation.GENERATE, filename, overwrite, return_image, dry_run, as_job, idempotency_key
        )

    async def edit_image(
        self,
        ctx: Context,
        images: Annotated[list[str], Field(min_length=1, description=IMAGES_DOC)],
        prompt: Annotated[str | None, Field(description="The change; none = a variation.")] = None,
        mask: Annotated[str | None, Field(description=MASK_DOC)] = None,
        model: Annotated[str | None, Field(description=SAME)] = None,
        size: Annotated[str | None, Field(description=SAME)] = None,
        aspect_ratio: Annotated[str | None, Field(description=SAME)] = None,
        resolution: Annotated[str | None, Field(description=SAME)] = None,
        quality: Annotated[str | None, Field(description=SAME)] = None,
        n: Annotated[int, Field(ge=1, description=SAME)] = 1,
        output_format: Annotated[str | None, Field(description=SAME)] = None,
        output_compression: Annotated[int | None, Field(ge=0, le=100, description=SAME)] = None,
        background: Annotated[str | None, Field(description=SAME)] = None,
        seed: Annotated[int | None, Field(description=SAME)] = None,
        negative_prompt: Annotated[str | None, Field(description=SAME)] = None,
        style: Annotated[str | None, Field(description=SAME)] = None,
        options: Annotated[dict[str, Any] | None, Field(description=SAME)] = None,
        filename: Annotated[str | None, Field(description=SAME)] = None,
        overwrite: Annotated[bool, Field(description=SAME)] = False,
        return_image: Annotated[ReturnImage | None, Field(description=SAME)] = None,
        dry_run: Annotated[bool, Field(description=SAME)] = False,
        as_job: Annotated[bool, Field(description=SAME)] = False,
        idempotency_key: Annotated[str | None, Field(max_length=200, description=SAME)] = None,
    ) -> Annotated[CallToolResult, CallOutcome]:
        args = dict(
            prompt=prompt,
            images=images,
            mask=mask,
            model=model,
            size=size,
            aspect_ratio=aspect_ratio,
            resolution=resolution,
            quality=quality,
            n=n,
            output_format=output_format,
            output_compression=output_compression,
            background=background,
            seed=seed,
            negative_prompt=negative_prompt,
            style=style,
            options=options,
        )
        return await self._run(
            ctx, args, Operation.EDIT, filename, overwrite, return_image, dry_run, as_job, idempotency_key
        )
