"""The MCP layer: the only module that imports the MCP SDK.

:func:`build_server` turns an :class:`~atelier_core.engine.pipeline.Atelier` into an ``MCPServer``
with three tools (``generate_image``, ``edit_image``, ``list_available_models``) and a
resource template that serves every saved image (``atelier://images/<path>``).

Tool bodies are a few lines: build an :class:`ImageCall`, call the router, render the
:class:`CallOutcome` (a text line, a bounded preview, a resource link per image, and the
outcome as structured content). Errors become tool errors with the router's message;
anything unexpected is logged here and reported as a generic internal error.

Adding a tool (jobs, sessions, usage): write the function, then add it in
:func:`_tools` with :func:`compact_tool` so its schema stays small — every client sends
the whole ``tools/list`` to its model on every turn.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import functools
import json
import hmac
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import structlog
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CallToolRequestParams,
    CallToolResult,
    ImageContent,
    RequestParams,
    ResourceLink,
    TextContent,
    ToolAnnotations,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, Field, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from atelier_core import __version__
from atelier_core.media import images as imaging
from atelier_core.mcp.host_check import AllowedOrigins, HostOriginCheck
from atelier_core.plugin.errors import AtelierError, ConfigurationError, InvalidParameterError, NotFoundError
from atelier_core.logging import add_secret, configure_logging, scrub
from atelier_core.mcp.protocol import protocol_compat
from atelier_core.engine.cost import usage_report
from atelier_core.state.jobs import Job, JobManager, JobRun, JobState, Runner, iso_utc, validate_job_ids
from atelier_core.engine.pipeline import SAVING_FRACTION, SENT_FRACTION, Atelier, CallOutcome, ImageRecord, PreviewCache
from atelier_core.engine.sessions import SessionManager, SessionView
from atelier_core.settings import Settings
from atelier_core.plugin.spec import Operation
from atelier_core.media.storage import RESOURCE_PREFIX
from atelier_core.plugin.types import ImageCall

__all__ = [
    "TasksExtension",
    "build_jobs",
    "build_server",
    "compact_schema",
    "compact_tool",
    "job_runner",
    "serve_http",
    "serve_stdio",
]

log = structlog.get_logger("atelier.server")

ReturnImage = Literal["preview", "full", "none"]

_MIME_BY_EXT = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg",
                "webp": "image/webp", "gif": "image/gif"}

INSTRUCTIONS = (
    "Atelier generates and edits images with many providers. Call list_available_models to "
    "see models and what each accepts; name one in model. Results are saved as files: each "
    "image comes back as a small preview plus a resource link (atelier://images/...) that "
    "edit_image accepts as input. The placeholder model draws placeholders, not AI images."
)

# Published outputSchema: a compact description of CallOutcome (results are still
# validated against the full CallOutcome model).
OUTCOME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "model": {"type": "string"},
        "images": {"type": "array", "items": {"type": "object"}},
        "failures": {"type": "array"},
        "applied": {"type": "object"},
        "cost": {"type": "object"},
    },
    "required": ["model", "images"],
}


# -- schema compaction ---------------------------------------------------------------


def compact_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Shrink a pydantic JSON schema without changing what it accepts in practice.

    Drops ``title``s, turns ``anyOf: [X, {type: null}]`` into ``X`` (an omitted argument
    means "not set", so advertising ``null`` only costs bytes), drops ``default: null``
    and ``additionalProperties: true``. Arguments are still validated by the full model.
    """

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "title" and isinstance(value, str):
                continue
            if key == "properties" and isinstance(value, dict):
                out[key] = {name: walk(prop) for name, prop in value.items()}
                continue
            out[key] = walk(value)
        options = out.get("anyOf")
        if isinstance(options, list):
            kept = [o for o in options if o != {"type": "null"}]
            if len(kept) == 1 and len(kept) < len(options):
                del out["anyOf"]
                out = {**kept[0], **out}
        if "default" in out and out["default"] is None:
            del out["default"]
        if out.get("additionalProperties") is True:
            del out["additionalProperties"]
        return out

    result: dict[str, Any] = walk(copy.deepcopy(schema))
    return result


def _scrub_result(result: Any) -> Any:
    """Mask secrets in a tool result's text and structured content (defence in depth: a
    provider error that echoes the key must not reach the client)."""
    if not isinstance(result, CallToolResult):
        return result
    for block in result.content:
        if isinstance(block, TextContent):
            block.text = scrub(block.text)
    if result.structured_content is not None:
        result.structured_content = json.loads(scrub(json.dumps(result.structured_content)))
    return result


def _guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a tool body: Atelier errors become tool errors, and nothing that leaves the
    server carries a secret."""

    @functools.wraps(fn)
    async def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            result = await fn(*args, **kwargs)
        except (ToolError, AtelierError) as exc:
            raise ToolError(scrub(str(exc))) from None
        return _scrub_result(result)

    return guarded


def compact_tool(
    fn: Callable[..., Any],
    *,
    name: str,
    description: str,
    annotations: ToolAnnotations,
    output_schema: dict[str, Any] | None = None,
) -> Tool:
    """A tool whose published input schema is compacted (see :func:`compact_schema`).

    ``output_schema`` replaces the schema derived from the return annotation; results
    are still validated against the annotated model.
    """
    tool = Tool.from_function(_guarded(fn), name=name, description=description, annotations=annotations)
    # Unknown arguments are refused, not silently dropped (MCP hardening checklist): a
    # misspelt parameter, or an "api_key" the model tries to pass, must not be ignored.
    # Argument errors name the argument but never echo its value (it may be a secret,
    # and these errors are raised before our own scrubbing runs).
    strict = type(tool.fn_metadata.arg_model.__name__, (tool.fn_metadata.arg_model,),
                  {"model_config": {**tool.fn_metadata.arg_model.model_config, "extra": "forbid",
                                    "hide_input_in_errors": True}})
    tool.fn_metadata.arg_model = strict
    tool.parameters = {**compact_schema(tool.parameters), "additionalProperties": False}
    if output_schema is not None:
        tool.fn_metadata.output_schema = output_schema
    return tool


# -- rendering results ------------------------------------------------------------------


def _summary(outcome: CallOutcome) -> str:
    if outcome.dry_run:
        cost = outcome.cost.estimate_usd
        price = f" Estimated cost: ${cost:.4f}." if cost is not None else " No price known."
        lines = [f"Dry run for {outcome.model}: valid; nothing was sent.{price}",
                 f"Would apply: {_applied(outcome.applied)}"]
    else:
        count = len(outcome.images)
        lines = [f"{count} image(s) from {outcome.model}."]
        for index, image in enumerate(outcome.images):
            lines.append(
                f"[{index}] {image.width}x{image.height} {image.format} {image.path} "
                f"({image.resource_uri})"
            )
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


def _inline(record: ImageRecord, mode: ReturnImage, settings: Settings) -> tuple[ImageContent, str | None]:
    """The inline image for one record (runs in a worker thread)."""
    preview = settings.preview
    data = Path(record.path).read_bytes()
    if mode == "full" and len(data) <= preview.max_full_inline_bytes:
        return ImageContent(type="image", data=base64.b64encode(data).decode(),
                            mime_type=f"image/{record.format}"), None
    if mode == "full":
        small = imaging.make_preview(data, max_edge=max(record.width, record.height),
                                     max_bytes=preview.max_full_inline_bytes, fmt=preview.format)
        note = (f"[{record.path}] is {record.bytes:,} bytes, over the inline limit of "
                f"{preview.max_full_inline_bytes:,}; inlined a {small.width}x{small.height} "
                f"{small.mime_type} copy. Read {record.resource_uri} for the original.")
    else:
        small = imaging.make_preview(data, max_edge=preview.max_edge, max_bytes=preview.max_bytes,
                                     fmt=preview.format)
        note = None
    return ImageContent(type="image", data=base64.b64encode(small.data).decode(),
                        mime_type=small.mime_type), note


async def render(outcome: CallOutcome, mode: ReturnImage, settings: Settings,
                 previews: PreviewCache | None = None) -> CallToolResult:
    """A CallOutcome as a tool result: text, inline image(s), resource links, structured data.

    ``previews``: previews the router made while verifying the images; a preview found
    there is used as is (the file is not read and decoded a second time).
    """
    content: list[Any] = []
    notes: list[str] = []
    blocks: list[Any] = []
    for record in outcome.images:
        cached = previews.take(record.path, record.sha256) if previews is not None else None
        if mode == "preview" and cached is not None:
            blocks.append(ImageContent(type="image", data=base64.b64encode(cached.data).decode(),
                                       mime_type=cached.mime_type))
        elif mode != "none":
            try:
                image, note = await asyncio.to_thread(_inline, record, mode, settings)
                blocks.append(image)
                if note:
                    notes.append(note)
            except Exception as exc:  # a preview is a convenience; the file is what matters
                log.warning("preview failed", path=record.path, error=type(exc).__name__)
                notes.append(f"no preview for {record.path}; read {record.resource_uri}")
        blocks.append(ResourceLink(
            type="resource_link", uri=record.resource_uri, name=Path(record.path).name,
            mime_type=f"image/{record.format}", size=record.bytes,
            description=f"{record.width}x{record.height} {record.format}",
        ))
    text = _summary(outcome)
    if notes:
        text += "\n" + "\n".join(f"Note: {n}" for n in notes)
    content.append(TextContent(type="text", text=text))
    content.extend(blocks)
    return CallToolResult(content=content, structured_content=outcome.model_dump(mode="json"))


# -- the tools ------------------------------------------------------------------------


async def _approved(message: str) -> bool:
    """A confirmation already given by the user (before the call became a job)."""
    return True


async def _ask_user(ctx: Context, message: str) -> bool | None:
    """Ask the user to confirm through MCP elicitation; None when the client cannot ask."""
    caps = ctx.client_capabilities
    if caps is None or caps.elicitation is None:
        return None
    answer = await ctx.elicit(message, _Confirmation)
    return answer.action == "accept" and bool(getattr(answer.data, "confirm", False))


def _live_confirm(ctx: Context) -> Callable[[str], Awaitable[bool]] | None:
    """A confirm callback for calls made within this request (None if the client cannot ask)."""
    caps = ctx.client_capabilities
    if caps is None or caps.elicitation is None:
        return None

    async def confirm(message: str) -> bool:
        return bool(await _ask_user(ctx, message))

    return confirm


class _Confirmation(BaseModel):
    confirm: bool = Field(description="Go ahead with this paid call?")


@dataclass(slots=True)
class _Tools:
    atelier: Atelier
    jobs: JobManager | None = None
    sessions: SessionManager | None = None

    async def _confirm_spend(self, ctx: Context, call: ImageCall, operation: Operation) -> bool:
        """Ask first when the quote is above cost.ask_above_usd; raise if the user says no.

        Returns True when the user confirmed (the call may then run unattended, e.g. as a
        job). Hard limits are enforced again by the router when the call is sent.
        """
        atelier = self.atelier
        if atelier.settings.cost.ask_above_usd is None:
            return False
        prepared = await atelier.prepare(call, operation)
        if atelier.spend.check(prepared.quote, prepared.entry.canonical_id) != "ask":
            return False
        message = (f"Generate {prepared.request.n} image(s) with {prepared.entry.canonical_id} "
                   f"for an estimated ${prepared.quote.estimate_usd or 0:.4f}?")
        answer = await _ask_user(ctx, message)
        if not answer:
            raise atelier.spend.ask_refusal(prepared.quote, asked=answer is not None)
        return True

    async def _run(self, ctx: Context, call_args: dict[str, Any], operation: Operation,
                   filename: str | None, overwrite: bool, return_image: ReturnImage | None,
                   dry_run: bool, as_job: bool = False,
                   idempotency_key: str | None = None) -> CallToolResult:
        settings = self.atelier.settings
        mode: ReturnImage = return_image or settings.preview.default

        async def progress(fraction: float | None, message: str) -> None:
            if fraction is not None:  # stage-only updates carry no fraction
                await ctx.report_progress(fraction, 1.0, message)

        try:
            call = ImageCall(**{k: v for k, v in call_args.items() if v is not None})
            confirmed = False if dry_run else await self._confirm_spend(ctx, call, operation)
            if self.jobs is not None and not dry_run:
                # Through the job machinery: a long call is handed off, never re-sent.
                return await self._run_job(call, operation, filename, overwrite, mode, as_job,
                                           progress, confirmed, idempotency_key)
            outcome = await self.atelier.execute(
                call, operation, filename=filename, overwrite=overwrite, progress=progress,
                dry_run=dry_run, confirm=_approved if confirmed else None,
            )
        except AtelierError as exc:
            log.info("tool call refused", operation=operation.value, code=exc.code)
            raise ToolError(str(exc)) from None
        return await render(outcome, mode, settings, self.atelier.previews)

    async def generate_image(
        self,
        ctx: Context,
        prompt: Annotated[str, Field(description="What to draw.")],
        model: Annotated[str | None, Field(description="Model id or alias; see list_available_models.")] = None,
        size: Annotated[str | None, Field(description="'WxH', 'auto', or 'W:H'.")] = None,
        aspect_ratio: Annotated[str | None, Field(description="'W:H'.")] = None,
        resolution: Annotated[str | None, Field(description="Tier, e.g. 1K, 2K, 4K.")] = None,
        quality: Annotated[str | None, Field(description="e.g. low, medium, high.")] = None,
        n: Annotated[int, Field(ge=1, description="Number of images.")] = 1,
        output_format: Annotated[str | None, Field(description="png, jpeg, webp.")] = None,
        output_compression: Annotated[int | None, Field(ge=0, le=100, description="jpeg/webp, 0-100.")] = None,
        background: Annotated[str | None, Field(description="auto, opaque, transparent.")] = None,
        seed: int | None = None,
        negative_prompt: Annotated[str | None, Field(description="What to avoid.")] = None,
        style: str | None = None,
        options: Annotated[dict[str, Any] | None, Field(description="Model-specific extras.")] = None,
        images: Annotated[list[str] | None, Field(description="Reference images (e.g. a subject portrait) for models that take them.")] = None,
        filename: Annotated[str | None, Field(description="Output path under the output dir.")] = None,
        overwrite: Annotated[bool, Field(description="Replace an existing file.")] = False,
        return_image: Annotated[ReturnImage | None, Field(description="Inline image: preview (default), full, none.")] = None,
        dry_run: Annotated[bool, Field(description="Validate and price only; nothing sent.")] = False,
        as_job: Annotated[bool, Field(description=_AS_JOB_DOC)] = False,
        idempotency_key: Annotated[str | None, Field(max_length=200, description=_IDEMPOTENCY_DOC)] = None,
    ) -> Annotated[CallToolResult, CallOutcome]:
        args = dict(prompt=prompt, model=model, size=size, aspect_ratio=aspect_ratio,
                    resolution=resolution, quality=quality, n=n, output_format=output_format,
                    output_compression=output_compression, background=background, seed=seed,
                    negative_prompt=negative_prompt, style=style, options=options, images=images)
        return await self._run(ctx, args, Operation.GENERATE, filename, overwrite, return_image, dry_run,
                               as_job, idempotency_key)

    async def edit_image(
        self,
        ctx: Context,
        images: Annotated[list[str], Field(min_length=1, description="First is edited. Path, file:// or https URL, data URL, base64, or atelier:// URI.")],
        prompt: Annotated[str | None, Field(description="The change to make.")] = None,
        mask: Annotated[str | None, Field(description="PNG; transparent pixels mark the area to change.")] = None,
        model: str | None = None,
        size: str | None = None,
        aspect_ratio: str | None = None,
        resolution: str | None = None,
        quality: str | None = None,
        n: Annotated[int, Field(ge=1)] = 1,
        output_format: str | None = None,
        output_compression: Annotated[int | None, Field(ge=0, le=100)] = None,
        background: str | None = None,
        seed: int | None = None,
        negative_prompt: str | None = None,
        style: str | None = None,
        options: dict[str, Any] | None = None,
        filename: str | None = None,
        overwrite: bool = False,
        return_image: ReturnImage | None = None,
        dry_run: bool = False,
        as_job: bool = False,
        idempotency_key: Annotated[str | None, Field(max_length=200)] = None,
    ) -> Annotated[CallToolResult, CallOutcome]:
        args = dict(prompt=prompt, images=images, mask=mask, model=model, size=size,
                    aspect_ratio=aspect_ratio, resolution=resolution, quality=quality, n=n,
                    output_format=output_format, output_compression=output_compression,
                    background=background, seed=seed, negative_prompt=negative_prompt,
                    style=style, options=options)
        return await self._run(ctx, args, Operation.EDIT, filename, overwrite, return_image, dry_run,
                               as_job, idempotency_key)

    # -- background jobs --------------------------------------------------------------

    async def _run_job(self, call: ImageCall, operation: Operation, filename: str | None,
                       overwrite: bool, mode: ReturnImage, as_job: bool,
                       progress: Callable[[float | None, str], Awaitable[None]],
                       confirmed: bool = False, idempotency_key: str | None = None) -> CallToolResult:
        assert self.jobs is not None
        entry = self.atelier.resolve(call.model)
        request = {"model": entry.canonical_id,
                   "call": call.model_dump(mode="json", exclude_defaults=True),
                   "filename": filename, "overwrite": overwrite, "return_image": mode,
                   "confirmed": confirmed}
        slot = _task_slot.get()
        if as_job or slot is not None:
            # Refuse a bad call now, before a job exists; the job validates again when it runs.
            prepared = await self.atelier.prepare(call, operation)
            if filename is not None:
                self.atelier.check_filename(prepared, filename, overwrite)
            job = await self.jobs.submit(operation.value, request,
                                         origin="task" if slot is not None else "job",
                                         idempotency_key=idempotency_key)
            if slot is not None:
                slot.job = job
            ticket = CallOutcome(
                model=prepared.entry.canonical_id, provider=prepared.entry.provider_name,
                operation=prepared.operation, requested=prepared.validated.requested,
                applied=prepared.validated.applied, notes=prepared.notes, cost=prepared.cost,
            )
            return _job_ticket(job, ticket, handed_off=False)
        job = await self.jobs.call(operation.value, request, on_progress=progress,
                                   idempotency_key=idempotency_key)
        if job.terminal:
            return await self._finished(job, mode)
        ticket = CallOutcome(model=entry.canonical_id, provider=entry.provider_name,
                             operation=operation, requested=call.requested())
        return _job_ticket(job, ticket, handed_off=True,
                           after_s=self.atelier.settings.jobs.handoff_after_s)

    async def _finished(self, job: Job, mode: ReturnImage) -> CallToolResult:
        """A terminal job as the synchronous call would have answered."""
        if job.state is JobState.DONE and job.outcome is not None:
            try:
                outcome = CallOutcome.model_validate(job.outcome)
            except ValidationError:
                # Recorded by another Atelier release: report what is known, do not fail.
                log.warning("stored job result does not match this release", job_id=job.id)
                files = "\n".join(job.files) or "none recorded"
                return CallToolResult(
                    content=[TextContent(type="text", text=f"{job.id} finished (recorded by another "
                                         f"Atelier version; no preview). Files:\n{files}")],
                    structured_content=job.outcome)
            if job.reused:
                outcome.notes.append(f"idempotency_key matched job {job.id}: this is its result; "
                                     "nothing was sent again")
            return await render(outcome, mode, self.atelier.settings, self.atelier.previews)
        raise ToolError(_job_error_text(job))

    def _require_jobs(self) -> JobManager:
        if self.jobs is None:
            raise ToolError("background jobs are not enabled on this server")
        return self.jobs

    async def get_jobs(
        self,
        job_ids: Annotated[list[str] | None, Field(description="Omit to list recent jobs.")] = None,
        wait_s: Annotated[float, Field(ge=0, description="Wait up to this long (max 45 s) for all to finish.")] = 0,
    ) -> CallToolResult:
        jobs = self._require_jobs()
        settings = self.atelier.settings
        try:
            if not job_ids:
                recent = await jobs.recent(limit=20)
                lines = [_job_line(job) for job in recent] or ["No jobs yet."]
                return CallToolResult(content=[TextContent(type="text", text="\n".join(lines))],
                                      structured_content={"jobs": [j.summary() for j in recent]})
            ids = validate_job_ids(job_ids)
            limit = settings.jobs.handoff_after_s or _MAX_WAIT_S
            found = await jobs.wait(ids, min(wait_s, limit, _MAX_WAIT_S))
        except AtelierError as exc:
            raise ToolError(str(exc)) from None
        content: list[Any] = []
        entries: list[dict[str, Any]] = []
        budget = settings.preview.max_full_inline_bytes  # inline images over all jobs
        for job in found:
            entry = job.summary()
            content.append(TextContent(type="text", text=_job_line(job)))
            if job.state is JobState.DONE and job.outcome is not None:
                wanted = job.request.get("return_image") or settings.preview.default
                mode: ReturnImage = wanted if budget > 0 else "none"
                rendered = await self._finished(job, mode)
                for block in rendered.content:
                    if isinstance(block, ImageContent):
                        budget -= len(block.data)
                content.extend(rendered.content)
                entry["result"] = job.outcome
            elif not job.terminal and job.partial and job.partial_mime and budget > len(job.partial):
                data = base64.b64encode(job.partial).decode()
                budget -= len(data)
                content.append(ImageContent(type="image", data=data, mime_type=job.partial_mime))
            entries.append(entry)
        pending = [job.id for job in found if not job.terminal]
        return CallToolResult(content=content, structured_content={
            "jobs": entries, "all_finished": not pending, "pending": pending})

    async def cancel_job(self, job_id: str) -> CallToolResult:
        jobs = self._require_jobs()
        try:
            (job_id,) = validate_job_ids([job_id])
            job, message = await jobs.cancel(job_id)
        except AtelierError as exc:
            raise ToolError(str(exc)) from None
        return CallToolResult(content=[TextContent(type="text", text=f"{job_id}: {message}")],
                              structured_content={**job.summary(), "message": message})

    # -- edit sessions ------------------------------------------------------------------

    async def edit_session(
        self,
        ctx: Context,
        action: Annotated[Literal["start", "continue", "history", "list", "end"], Field(description=_SESSION_ACTION_DOC)],
        session_id: str | None = None,
        prompt: str | None = None,
        image: Annotated[str | None, Field(description="start from this image instead of a prompt")] = None,
        from_turn: Annotated[int | None, Field(description="continue from this turn (branch); default the latest")] = None,
        model: Annotated[str | None, Field(description="switch model (any that can edit)")] = None,
        images: Annotated[list[str] | None, Field(description="extra reference images")] = None,
        mask: str | None = None,
        size: str | None = None,
        quality: str | None = None,
        output_format: str | None = None,
        options: dict[str, Any] | None = None,
        return_image: ReturnImage | None = None,
    ) -> CallToolResult:
        sessions = self.sessions
        if sessions is None:
            raise ToolError("edit sessions are not enabled on this server")
        settings = self.atelier.settings
        mode: ReturnImage = return_image or settings.preview.default
        call = ImageCall(**{k: v for k, v in dict(
            model=model, prompt=prompt, images=images or [], mask=mask, size=size,
            quality=quality, output_format=output_format, options=options or {},
        ).items() if v is not None})
        try:
            if action in ("continue", "history", "end") and not session_id:
                raise InvalidParameterError("session_id", None, f"is required for action={action}",
                                            fix="pass the session_id returned by action=start")
            if action == "list":
                views = sessions.list(include_ended=True, limit=20)
                lines = [_session_line(v) for v in views] or ["No sessions yet."]
                return CallToolResult(content=[TextContent(type="text", text="\n".join(lines))],
                                      structured_content={"sessions": [v.summary() for v in views]})
            if action == "history":
                assert session_id is not None
                return await _history(sessions.get(session_id), settings)
            if action == "end":
                assert session_id is not None
                view = sessions.end(session_id)
                text = f"{_session_line(view)}. Its files stay in the output directory."
                return CallToolResult(content=[TextContent(type="text", text=text)],
                                      structured_content={"session": view.summary()})
            confirm = _live_confirm(ctx)  # sessions run in this request: ask when needed
            if action == "start":
                view, outcome = await sessions.start(prompt=prompt, image=image, call=call, confirm=confirm)
            else:
                assert session_id is not None
                view, outcome = await sessions.continue_(session_id, call=call, from_turn=from_turn,
                                                         confirm=confirm)
        except AtelierError as exc:
            raise ToolError(str(exc)) from None
        head = view.turns[view.head] if view.head is not None else None
        line = (f"Session {view.id}: turn {head.turn if head else 0}"
                + (f" (from turn {head.parent})" if head and head.parent is not None else "")
                + f"; continue with edit_session(action=\"continue\", session_id=\"{view.id}\", prompt=...).")
        if outcome is None:  # started from an existing image: nothing generated yet
            assert head is not None
            return CallToolResult(
                content=[TextContent(type="text", text=line + f" Turn 0 is {head.image_path}."),
                         ResourceLink(type="resource_link", uri=head.resource_uri or "", name=Path(head.image_path).name)],
                structured_content={"session": view.summary(), "turn": head.summary()})
        rendered = await render(outcome, mode, settings, self.atelier.previews)
        rendered.content.insert(0, TextContent(type="text", text=line))
        rendered.structured_content = {"session": view.summary(), "turn": head.summary() if head else None,
                                       "outcome": rendered.structured_content}
        return rendered

    # -- cost ---------------------------------------------------------------------------

    async def get_usage(
        self, days: Annotated[int, Field(ge=1, le=366, description="Days back (UTC).")] = 30,
    ) -> CallToolResult:
        atelier = self.atelier
        report = await asyncio.to_thread(usage_report, atelier.ledger, days=days)
        limits = atelier.settings.cost.model_dump(exclude={"prices"}, exclude_none=True)
        report["limits"] = limits
        report["spent_this_run_usd"] = round(await asyncio.to_thread(
            atelier.ledger.spent, run_id=atelier.spend.run_id), 6)
        lines = [f"Spent ${report['total_usd']:.4f} on {report['images']} image(s) in "
                 f"{report['calls']} call(s) over the last {days} day(s) (estimates where the "
                 "provider reports no cost)."]
        lines += [f"  {model}: ${v['usd']:.4f}, {v['images']} image(s)" for model, v in report["by_model"].items()]
        if limits:
            lines.append("Limits: " + ", ".join(f"{k}={v}" for k, v in limits.items()))
        return CallToolResult(content=[TextContent(type="text", text="\n".join(lines))],
                              structured_content=report)

    async def list_available_models(
        self,
        provider: Annotated[str | None, Field(description="Only this provider.")] = None,
        capability: Annotated[Literal["generate", "edit", "variation"] | None, Field(description="Only models that can do this.")] = None,
    ) -> CallToolResult:
        try:
            data = self.atelier.describe_models(provider=provider, capability=capability)
        except AtelierError as exc:
            raise ToolError(str(exc)) from None
        models = data["models"]
        ready = [m["id"] for m in models if m["available"]]
        text = (f"{len(models)} model(s), {len(ready)} available: {', '.join(ready) or 'none'}."
                " Details in structured content.")
        if "plugin_problems" in data:
            text += " Some plugins failed to load (see plugin_problems)."

        return CallToolResult(
            content=[TextContent(type="text", text=text + "\n" + json.dumps(data, separators=(",", ":")))],
            structured_content=data,
        )


_GENERATE_DOC = (
    "Generate images from a prompt with any model. Saves full-size files; returns per image "
    "a small preview and a resource link, plus metadata (paths, applied parameters, cost). "
    "Unsupported parameters are refused with the allowed values."
)
_EDIT_DOC = (
    "Edit images (mask inpainting, composing several, restyling) with any model that can "
    "edit. Options and result as generate_image. No prompt: a variation, where supported."
)
_IDEMPOTENCY_DOC = "Same key + same request = the earlier result, never billed twice."
_AS_JOB_DOC = "Return a job id at once; collect with get_jobs."
_GET_JOBS_DOC = (
    "Status and results of background jobs (as_job, or calls still running after 45 s). "
    "Finished jobs return images like a direct call. The barrier: wait_s waits for all."
)
_CANCEL_JOB_DOC = (
    "Cancel a background job. A queued job is never sent; a running one is abandoned, but "
    "the provider may still bill it."
)
_LIST_DOC = (
    "List models: availability (or why not), operations, sizes, qualities, formats, limits, "
    "options, prices; and plugins that failed to load."
)


_SESSION_DOC = (
    "Multi-turn editing with any model that can edit, kept across restarts. start (prompt, or "
    "image) then continue with short prompts: each turn edits the latest output, or from_turn "
    "to branch. Also history, list, end. Defaults (size, quality, format) carry over."
)
_SESSION_ACTION_DOC = "start | continue | history | list | end"
_USAGE_DOC = "Spend so far (USD) by day, provider and model, and the configured limits."


def _session_line(view: SessionView) -> str:
    state = view.status if view.status == "open" else f"ended ({view.ended_reason})"
    model = view.defaults.get("model", "?")
    return f"{view.id}: {state}, {len(view.turns)} turn(s), model {model}"


async def _history(view: SessionView, settings: Settings) -> CallToolResult:
    """Each turn: prompt, model, parameters, resource link and (within budget) a thumbnail."""
    content: list[Any] = [TextContent(type="text", text=_session_line(view))]
    budget = settings.preview.max_full_inline_bytes
    for turn in reversed(view.turns):  # newest first: the budget favours recent turns
        text = (f"turn {turn.turn}" + (f" (from {turn.parent})" if turn.parent is not None else "")
                + f": {turn.operation} {turn.model or ''} {turn.prompt or ''}".rstrip())
        content.append(TextContent(type="text", text=text))
        if budget > 0 and Path(turn.image_path).is_file():
            try:
                thumb = await asyncio.to_thread(
                    imaging.make_preview, Path(turn.image_path).read_bytes(),
                    max_edge=min(256, settings.preview.max_edge), max_bytes=30_000, fmt=settings.preview.format)
                encoded = base64.b64encode(thumb.data).decode()
                if len(encoded) <= budget:
                    budget -= len(encoded)
                    content.append(ImageContent(type="image", data=encoded, mime_type=thumb.mime_type))
            except AtelierError:
                content.append(TextContent(type="text", text=f"(no preview: {turn.image_path} unreadable)"))
        if turn.resource_uri:
            content.append(ResourceLink(type="resource_link", uri=turn.resource_uri,
                                        name=Path(turn.image_path).name))
    return CallToolResult(content=content, structured_content={
        "session": view.summary(), "turns": [t.summary() for t in view.turns]})


def _tools(atelier: Atelier, jobs: JobManager | None = None,
           sessions: SessionManager | None = None) -> list[Tool]:
    tools = _Tools(atelier, jobs, sessions)
    # Not read-only (writes files, may spend money); destructive only with overwrite=true,
    # but the hint says "may", so it is set; open world: calls external providers.
    writes = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False,
                             open_world_hint=True)
    return [
        compact_tool(tools.generate_image, name="generate_image", description=_GENERATE_DOC,
                     annotations=ToolAnnotations(title="Generate image", **_hints(writes)),
                     output_schema=OUTCOME_SCHEMA),
        compact_tool(tools.edit_image, name="edit_image", description=_EDIT_DOC,
                     annotations=ToolAnnotations(title="Edit image", **_hints(writes)),
                     output_schema=OUTCOME_SCHEMA),
        compact_tool(tools.list_available_models, name="list_available_models",
                     description=_LIST_DOC,
                     annotations=ToolAnnotations(title="List models", read_only_hint=True,
                                                 open_world_hint=False)),
        *([] if jobs is None else [
            compact_tool(tools.get_jobs, name="get_jobs", description=_GET_JOBS_DOC,
                         annotations=ToolAnnotations(title="Get jobs", read_only_hint=True,
                                                     open_world_hint=False)),
            compact_tool(tools.cancel_job, name="cancel_job", description=_CANCEL_JOB_DOC,
                         annotations=ToolAnnotations(title="Cancel job", read_only_hint=False,
                                                     destructive_hint=True, idempotent_hint=True,
                                                     open_world_hint=False)),
        ]),
        *([] if sessions is None else [
            compact_tool(tools.edit_session, name="edit_session", description=_SESSION_DOC,
                         annotations=ToolAnnotations(title="Edit session", **_hints(writes))),
        ]),
        compact_tool(tools.get_usage, name="get_usage", description=_USAGE_DOC,
                     annotations=ToolAnnotations(title="Usage and spend", read_only_hint=True,
                                                 open_world_hint=False)),
    ]


def _hints(annotations: ToolAnnotations) -> dict[str, Any]:
    return annotations.model_dump(exclude={"title"}, exclude_none=True)


# -- background jobs and MCP tasks ------------------------------------------------------

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
_TASK_TOOLS = frozenset({"generate_image", "edit_image"})
_MAX_WAIT_S = 45.0
_POLL_INTERVAL_MS = 1000


@dataclass(slots=True)
class _TaskSlot:
    """Set while a task-capable client's tools/call runs: the tool submits a job here."""

    job: Job | None = None


_task_slot: ContextVar[_TaskSlot | None] = ContextVar("atelier_task_slot", default=None)


def job_runner(atelier: Atelier) -> Runner:
    """The runner for stored jobs: the router's ``execute``, its progress mapped to stages."""

    async def run(job: JobRun) -> CallOutcome:
        stored = job.request

        async def progress(fraction: float, message: str) -> None:
            stage = (JobState.SAVING if fraction >= SAVING_FRACTION
                     else JobState.RUNNING if fraction > SENT_FRACTION else None)
            await job.progress(fraction, message, stage=stage)

        return await atelier.execute(
            ImageCall.model_validate(stored["call"]), Operation(job.operation),
            filename=stored.get("filename"), overwrite=bool(stored.get("overwrite")),
            progress=progress, partial=job.partial, saved=job.saved,
            confirm=_approved if stored.get("confirmed") else None,
        )

    return run


def _job_error_text(job: Job) -> str:
    if job.state is JobState.CANCELLED:
        return f"job {job.id} was cancelled: {job.message}"
    error = job.error or {}
    return str(error.get("message") or f"job {job.id} failed")


def _job_line(job: Job) -> str:
    parts = [f"{job.id}: {job.state.value}"]
    model = job.request.get("model") or job.request.get("call", {}).get("model")
    if model:
        parts.append(f"({model})")
    if job.state is JobState.FAILED or job.state is JobState.CANCELLED:
        parts.append(f"- {_job_error_text(job)}")
    elif not job.terminal and job.message:
        share = f" {job.progress:.0%}" if job.progress is not None else ""
        parts.append(f"- {job.message}{share}")
    if job.may_be_billed:
        parts.append("(the provider may have billed it)")
    return " ".join(parts)


def _job_ticket(job: Job, outcome: CallOutcome, *, handed_off: bool,
                after_s: float = 0.0) -> CallToolResult:
    """The answer when a call continues as a job: its id and how to collect the result."""
    collect = f'get_jobs(job_ids=["{job.id}"], wait_s=30)'
    if handed_off:
        text = (f"Still running after {after_s:g} s, so it continues in the background as job "
                f"{job.id} ({outcome.model}); it will not be sent again. Collect the result "
                f"with {collect}; cancel with cancel_job.")
    else:
        text = (f"Started background job {job.id} ({outcome.model}). Collect the result with "
                f"{collect}; cancel with cancel_job.")
    outcome = outcome.model_copy(update={"job": {**job.summary(), "handed_off": handed_off,
                                                 "collect_with": collect}})
    return CallToolResult(content=[TextContent(type="text", text=text)],
                          structured_content=outcome.model_dump(mode="json"))


class TaskIdParams(RequestParams):
    task_id: str = Field(alias="taskId")


class TasksExtension(Extension):
    """SEP-2663 tasks (``io.modelcontextprotocol/tasks``, 2026-07-28 era) on the job store.

    When a request declares the extension, ``generate_image``/``edit_image`` answer with a
    task handle (``resultType: "task"``) once the job row is committed; ``tasks/get``
    reports it (the final ``CallToolResult`` inlined when completed), ``tasks/cancel``
    cancels it, ``tasks/update`` is acknowledged (these tasks never ask for input).
    Clients that do not declare it get ordinary results.
    """

    identifier = TASKS_EXTENSION

    def __init__(self, tools: _Tools) -> None:
        self._tools = tools

    def methods(self) -> Sequence[MethodBinding]:
        return [
            MethodBinding("tasks/get", TaskIdParams, self._get),
            MethodBinding("tasks/cancel", TaskIdParams, self._cancel),
            MethodBinding("tasks/update", TaskIdParams, self._update),
        ]

    @staticmethod
    def _declared(ctx: ServerRequestContext[Any, Any]) -> bool:
        caps = ctx.session.client_capabilities
        return (ctx.protocol_version in MODERN_PROTOCOL_VERSIONS and caps is not None
                and bool(caps.extensions) and TASKS_EXTENSION in (caps.extensions or {}))

    async def intercept_tool_call(self, params: CallToolRequestParams,
                                  ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if params.name not in _TASK_TOOLS or self._tools.jobs is None or not self._declared(ctx):
            return await call_next(ctx)
        slot = _TaskSlot()
        token = _task_slot.set(slot)
        try:
            result = await call_next(ctx)
        finally:
            _task_slot.reset(token)
        if slot.job is None:  # refused before a job existed (or a dry run): answer directly
            return result
        return {"resultType": "task", **self._task(slot.job)}

    async def _job(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> Job:
        if not self._declared(ctx):
            raise MCPError(-32021, "Missing required client capability",
                           {"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}})
        jobs = self._tools.jobs
        try:
            if jobs is None:
                raise NotFoundError("background jobs are not enabled")
            (task_id,) = validate_job_ids([params.task_id])
            return await jobs.get(task_id)
        except AtelierError:
            raise MCPError(-32602, "Failed to retrieve task: Task not found") from None

    def _task(self, job: Job) -> dict[str, Any]:
        status = {JobState.DONE: "completed", JobState.CANCELLED: "cancelled"}.get(job.state, "working")
        if job.state is JobState.FAILED:
            # An Atelier error is a tool result (completed, isError); a lost process is not.
            code = (job.error or {}).get("code")
            status = "failed" if code in ("interrupted", "internal_error") else "completed"
        retention_ms = int(self._tools.atelier.settings.jobs.retention_days * 86_400_000)
        task: dict[str, Any] = {
            "taskId": job.id, "status": status, "createdAt": iso_utc(job.created_at),
            "lastUpdatedAt": iso_utc(job.updated_at), "ttlMs": retention_ms,
            "pollIntervalMs": _POLL_INTERVAL_MS,
        }
        message = _job_line(job).split(": ", 1)[1]
        task["statusMessage"] = message
        if status == "failed":
            task["error"] = {"code": -32603, "message": _job_error_text(job)}
        return task

    async def _get(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> dict[str, Any]:
        job = await self._job(ctx, params)
        task = self._task(job)
        if task["status"] == "completed":
            mode = job.request.get("return_image") or self._tools.atelier.settings.preview.default
            try:
                result = await self._tools._finished(job, mode)
            except ToolError as exc:
                result = CallToolResult(content=[TextContent(type="text", text=str(exc))], is_error=True)
            task["result"] = result.model_dump(mode="json", by_alias=True, exclude_none=True)
        return {"resultType": "complete", **task}

    async def _cancel(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> dict[str, Any]:
        job = await self._job(ctx, params)
        assert self._tools.jobs is not None
        await self._tools.jobs.cancel(job.id)
        return {"resultType": "complete"}

    async def _update(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> dict[str, Any]:
        await self._job(ctx, params)  # known task; no input is ever outstanding: ignore
        return {"resultType": "complete"}


# -- server ---------------------------------------------------------------------------


def _secrets(settings: Settings, atelier: Atelier | None = None) -> list[str]:
    """Every configured secret value, for log redaction."""
    found: list[str] = []
    if settings.http.auth_token is not None:
        found.append(settings.http.auth_token.get_secret_value())
    if atelier is not None:
        for provider in atelier.registry.providers.values():
            for value in provider.settings.__dict__.values():
                if hasattr(value, "get_secret_value"):
                    secret = value.get_secret_value()
                    if secret:
                        found.append(secret)
    return found


def build_server(atelier: Atelier, *, configure_logs: bool = True) -> MCPServer[Atelier]:
    """The MCP server for ``atelier`` (logging is configured first: MCPServer's own
    ``basicConfig`` is then a no-op and every log line goes through our redaction)."""
    if configure_logs:
        configure_logging(atelier.settings.logging, secrets=_secrets(atelier.settings, atelier))
    for secret in _secrets(atelier.settings, atelier):
        add_secret(secret)  # results are scrubbed even when logging is configured elsewhere

    jobs = build_jobs(atelier)
    sessions = SessionManager(atelier)

    @asynccontextmanager
    async def lifespan(_: MCPServer[Atelier]) -> AsyncIterator[Atelier]:
        log.debug("server session starting", models=len(atelier.registry.models))
        # Temp files a crash left behind: swept off the event loop, never blocking start-up.
        sweep = asyncio.get_running_loop().run_in_executor(None, atelier.store.sweep_temp)
        try:
            async with jobs.running():  # background jobs live as long as the server
                yield atelier
        finally:
            await sweep
            await atelier.aclose()

    server: MCPServer[Atelier] = MCPServer(
        "atelier",
        title="Atelier",
        version=__version__,
        instructions=INSTRUCTIONS,
        tools=_tools(atelier, jobs, sessions),
        extensions=[TasksExtension(_Tools(atelier, jobs, sessions))],
        lifespan=lifespan,
        log_level=atelier.settings.logging.level,
        middleware=[protocol_compat],
    )
    _add_image_resources(server, atelier)
    return server


def build_jobs(atelier: Atelier) -> JobManager:
    """The job manager on the state database in the data directory."""
    settings = atelier.settings
    preview = settings.preview

    def shrink(data: bytes) -> tuple[bytes, str]:
        small = imaging.make_preview(data, max_edge=preview.max_edge, max_bytes=preview.max_bytes,
                                     fmt=preview.format)
        return small.data, small.mime_type

    return JobManager(atelier.state, job_runner(atelier),
                      settings.jobs, max_partial_bytes=preview.max_bytes, shrink_partial=shrink)


def _add_image_resources(server: MCPServer[Atelier], atelier: Atelier) -> None:
    """``atelier://images/<relative path>``: every saved image, confined to the output root.

    One template per extension because a template's MIME type is fixed.
    """
    from mcp.server.mcpserver.exceptions import ResourceError

    def reader(ext: str) -> Callable[[str], bytes]:
        def read(path: str) -> bytes:
            try:
                file = atelier.store.resolve_resource(f"{RESOURCE_PREFIX}{path}.{ext}")
            except AtelierError as exc:
                raise ResourceError(str(exc)) from None
            return file.read_bytes()

        return read

    for ext, mime in _MIME_BY_EXT.items():
        server.resource(
            f"{RESOURCE_PREFIX}{{+path}}.{ext}", name=f"image-{ext}", mime_type=mime,
            description=f"A saved {ext} image",
        )(reader(ext))


# -- transports -----------------------------------------------------------------------


def serve_stdio(atelier: Atelier) -> None:
    """Serve over stdio until the client disconnects."""
    build_server(atelier).run("stdio")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def transport_security(settings: Settings, host: str) -> TransportSecuritySettings:
    """Host/Origin validation for the bind address (always on, also for non-loopback)."""
    hosts = ["127.0.0.1", "127.0.0.1:*", "localhost", "localhost:*", "[::1]", "[::1]:*"]
    origins = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*",
               "http://127.0.0.1", "http://localhost"]
    if not _is_loopback(host) and host not in ("0.0.0.0", "::"):
        shown = f"[{host}]" if ":" in host else host
        hosts += [shown, f"{shown}:*"]
    hosts += settings.http.allowed_hosts
    origins += settings.http.allowed_origins
    return TransportSecuritySettings(enable_dns_rebinding_protection=True,
                                     allowed_hosts=hosts, allowed_origins=origins)


class BearerAuth:
    """Require ``Authorization: Bearer <token>`` on every HTTP request (constant-time)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = b""
            for key, value in scope.get("headers", ()):
                if key == b"authorization":
                    given = value
            if not hmac.compare_digest(given, self._expected):
                await send({"type": "http.response.start", "status": 401, "headers": [
                    (b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": b"missing or wrong bearer token"})
                return
        await self.app(scope, receive, send)


def http_app(atelier: Atelier, *, host: str) -> ASGIApp:
    """The streamable-HTTP ASGI app with Host/Origin checks, body limit and token auth."""
    settings = atelier.settings
    token = settings.http.auth_token.get_secret_value() if settings.http.auth_token else None
    if not _is_loopback(host) and not token:
        raise ConfigurationError(
            f"refusing to listen on {host} without an auth token: anyone who can reach it "
            "could spend your provider credits",
            fix="set http.auth_token (ATELIER_HTTP__AUTH_TOKEN), or bind 127.0.0.1",
        )
    server = build_server(atelier)
    security = transport_security(settings, host)
    app: ASGIApp = server.streamable_http_app(
        streamable_http_path=settings.http.path,
        max_request_body_size=settings.http.max_body_bytes,
        transport_security=security,
        host=host,
    )
    # The SDK's check above matches "127.0.0.1:*" as a prefix; ours is exact and runs first.
    app = HostOriginCheck(app, AllowedOrigins.of(security.allowed_hosts, security.allowed_origins))
    if token:
        app = BearerAuth(app, token)
    return app


async def serve_http(atelier: Atelier, *, host: str | None = None, port: int | None = None) -> None:
    """Serve streamable HTTP (default 127.0.0.1:8765/mcp) until interrupted."""
    import uvicorn

    settings = atelier.settings
    host = host or settings.http.host
    port = settings.http.port if port is None else port
    app = http_app(atelier, host=host)
    config = uvicorn.Config(app, host=host, port=port, log_config=None, lifespan="on",
                            log_level=settings.logging.level.lower())
    log.info("serving streamable HTTP", url=f"http://{host}:{port}{settings.http.path}",
             auth="token" if settings.http.auth_token else "none")
    await uvicorn.Server(config).serve()
